"""
Generation: choosing the next token, batching prompts of different lengths, and chat replies.

GPT.generate_stream (model.py) runs the KV cache one token at a time; these are what every script puts
around it: sample_next picks a token from the logits, left_pad lines prompts up on the right so that they
decode together, and stream_reply / generate_replies turn a conversation into the assistant's reply.
"""
import torch
from torch.nn import functional as F

from seedgpt.chat import chat_ids, render_prompt, stop_ids


def left_pad(rows, device='cpu'):
    """Token lists of different lengths as one batch (B, T), each padded on the left with id 0, and
    pad (B,): how many tokens of each row are padding (generate_stream's pad)."""
    T = max(len(r) for r in rows)
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        idx[b, T - len(r):] = torch.tensor(r, dtype=torch.long)
    pad = torch.tensor([T - len(r) for r in rows], dtype=torch.long)
    return idx.to(device), pad.to(device)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token (B, 1) from logits (B, V): greedy at temperature 0, else sampled."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if temperature != 1:  # skipped when it changes nothing: a few ops less per token
        logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and 0 < top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    # torch.multinomial's own draw for one sample, every row at once: argmax(p / q) with q ~ Exp(1), which is
    # the Gumbel-max trick. Written out, it skips multinomial's checks of the probabilities: a few ops per
    # token on a CPU, and on a GPU two waits for the device. The same generator gives the same tokens.
    q = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / q).argmax(dim=-1, keepdim=True)



def stream_reply(model, tok, messages, max_new_tokens, **sampling):
    """The assistant's reply to `messages` in text pieces, as it is generated, up to its <|end|>.

    Stops early at any chat token (a model that skips <|end|> and starts a new turn) or an id past the
    tokenizer (a padded vocabulary). `sampling` goes to model.generate_stream (temperature, top_k, ...).
    """
    stop = stop_ids(tok)
    device = next(model.parameters()).device
    x = torch.tensor([render_prompt(tok, messages)], dtype=torch.long, device=device)
    pending = []  # BPE may split a character over tokens: yield only what decodes whole
    for next_id in model.generate_stream(x, max_new_tokens, **sampling):
        i = next_id.item()
        if i in stop or i >= tok.vocab_size:
            break
        pending.append(i)
        text = tok.decode(pending)
        if not text.endswith('\ufffd'):
            yield text
            pending = []
    if pending:
        yield tok.decode(pending)


def generate_replies(model, tok, prompts, max_new_tokens, **sampling):
    """The generated ids of many prompts (lists of ids, e.g. render_prompt's) at once: one left-padded batch
    through the KV cache. Each row's ids end at its first chat token (kept: <|end|> is part of the answer)
    or after max_new_tokens; generation stops when every row has ended. At temperature 0 each row gets
    the same ids as alone."""
    stop = stop_ids(tok)
    device = next(model.parameters()).device
    idx, pad = left_pad(prompts, device)
    # room for every answer and a closing <|end|>: a cut answer, rendered as a turn, still fits the context
    max_new_tokens = min(max_new_tokens, model.config.block_size - idx.size(1) - 1)
    if max_new_tokens <= 0:
        raise ValueError(f"a prompt of {idx.size(1)} tokens leaves no room in block_size {model.config.block_size}")
    out, done = [[] for _ in prompts], [False] * len(prompts)
    for next_ids in model.generate_stream(idx, max_new_tokens, pad=pad, **sampling):
        for b, i in enumerate(next_ids[:, 0].tolist()):
            if not done[b]:
                out[b].append(i)
                done[b] = i in stop or i >= tok.vocab_size
        if all(done):
            break
    return out


def reply_text(tok, ids):
    """The text of a reply's ids from generate_replies, without its closing chat token."""
    stop = set(chat_ids(tok).values())
    return tok.decode([i for i in ids if i not in stop and i < tok.vocab_size])

