"""
Generation: a model's tokens one at a time through the KV cache, batches of prompts of different lengths,
and chat replies.

    for next_id in generate_stream(model, idx, 100, temperature=0.8, top_k=200):  # (B, 1) at a time
        ...
    out = generate(model, idx, 100, temperature=0)                               # the prompt and 100 tokens

generate_stream feeds the model its prompt once, then one token per step, each step reading the keys and
values of the tokens before it from a KVCache (model.py) instead of recomputing them; seedgpt/sampling.py
picks each token. left_pad lines prompts up on the right so that they decode together, and stream_reply /
generate_replies turn a conversation into the assistant's reply.
"""
import itertools

import torch

from model import KVCache
from seedgpt.chat import chat_ids, render_prompt, stop_ids
from seedgpt.sampling import draws, sample
from seedgpt.speculative import speculative_stream


def left_pad(rows, device='cpu'):
    """Token lists of different lengths as one batch (B, T), each padded on the left with id 0, and
    pad (B,): how many tokens of each row are padding (generate_stream's pad)."""
    T = max(len(r) for r in rows)
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        idx[b, T - len(r):] = torch.tensor(r, dtype=torch.long)
    pad = torch.tensor([T - len(r) for r in rows], dtype=torch.long)
    return idx.to(device), pad.to(device)


def generate_stream(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                    generator=None, compile=False, pad=None, draft=None, draft_tokens=4, stats=None, keep=None):
    """Yield next tokens (B, 1) one at a time after the prompt idx (B, T).

    Prompts of different lengths go in one batch padded on the left, pad (B,) giving each row's padding
    (see left_pad); each row then gets the tokens it would get alone. Such a batch must fit in block_size
    with its new tokens.

    Past block_size the window jumps: it keeps the last block_size // 2 tokens and goes on, so every token
    sees at least half a context. The uncached path (use_cache=False) recomputes the same window each step,
    so both give the same tokens. compile=True runs the one-token steps through torch.compile: one call per
    token instead of many small ops, after a compile of about a minute.

    draft ('ngram' or a smaller model on the same tokenizer) decodes speculatively, checking up to
    draft_tokens guesses per forward (seedgpt/speculative.py): the same tokens at temperature 0, the same
    distribution above it. stats (a dict) then counts forwards, drafted and accepted tokens.

    keep, a function called after each yield, returns which rows go on (indices into the batch just yielded):
    the rows a caller no longer needs (a reply that has ended) leave the batch and cost nothing more, and
    later yields have only the rows kept. Without a draft only.
    """
    bs = model.config.block_size
    B, T = idx.shape
    if pad is not None and T + max_new_tokens > bs:
        raise ValueError(f"a padded batch of {T} + {max_new_tokens} new tokens does not fit in block_size {bs}")
    if draft is not None:
        if keep is not None:
            raise ValueError("keep= needs the plain path: a draft's batch keeps all its rows")
        if not use_cache or compile:
            raise ValueError("a draft needs the KV cache and an eager step (use_cache=True, compile=False)")
        yield from speculative_stream(model, idx, max_new_tokens, draft, draft_tokens, temperature, top_k, top_p,
                                      generator, pad, stats)
        return
    ids = idx.new_empty(B, T + max_new_tokens)  # prompt and output, written in place: no cat per token
    ids[:, :T] = idx
    step = torch.compile(model, dynamic=True) if compile else model
    start = max(0, T - bs)  # a long prompt is cropped to its last block_size tokens
    cache, window = None, None
    for t in range(T, T + max_new_tokens):
        if t - start > bs:
            # the window is full. Sliding it by one token would shift every cached position (learned or
            # rotary), so the cache would have to be recomputed at each step; jumping by half a window
            # recomputes it once per block_size // 2 tokens, and each token still sees at least half a context
            start = t - bs // 2
        # inference mode, not just no_grad: each op skips autograd's bookkeeping, and a one-token step is
        # many small ops. Entered per step, not around the yield: the caller's code stays in its own mode
        with torch.inference_mode():
            if not use_cache:  # the reference: a fresh cache of the whole window at every step
                logits, _ = model(ids[:, start:t], cache=KVCache(model.config, pad))
            elif window != start:  # (re)fill the cache with the whole window
                cache, window = KVCache(model.config, pad), start
                logits, _ = model(ids[:, start:t], cache=cache)
            else:
                logits, _ = step(ids[:, t - 1:t], cache=cache)
            u = draws(generator, B, ids.device) if temperature > 0 else None
            ids[:, t] = sample(logits[:, -1, :], temperature, top_k, top_p, u)
        yield ids[:, t:t + 1]
        rows = keep() if keep is not None else None
        if rows is not None and len(rows) < B:
            if not rows:
                return
            ids, B = ids[rows], len(rows)
            pad = pad[rows] if pad is not None else None
            if cache is not None:
                with torch.inference_mode():  # the cache's tensors are inference tensors
                    cache.keep(rows)


def generate(model, idx, max_new_tokens, **kwargs):
    """The prompt idx (B, T) followed by max_new_tokens generated tokens (generate_stream's settings)."""
    new = list(generate_stream(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx] + new, dim=1)


def text_pieces(tok, ids):
    """The text of a stream of ids, in pieces as they come: BPE may split a character over tokens, so a
    piece is yielded only once it decodes whole."""
    pending = []
    for i in ids:
        pending.append(i)
        text = tok.decode(pending)
        if not text.endswith('\ufffd'):
            yield text
            pending = []
    if pending:
        yield tok.decode(pending)


def reply_draft(draft, rows, sampling):
    """The draft of a chat reply's decoding: 'auto' is prompt lookup for one greedy row on the eager cached path
    (an answer often copies from the question or a tool's result; it gives the same text as none), None for a
    batch, whose rows would wait on the one whose guesses fail, and for sampling, where a guess holds only as
    often as the model would draw it and checking it measured slower than not guessing."""
    if draft != 'auto':
        return draft
    eager = sampling.get('use_cache', True) and not sampling.get('compile', False)
    return 'ngram' if rows == 1 and eager and sampling.get('temperature', 1.0) == 0 else None


def stream_reply(model, tok, messages, max_new_tokens, draft='auto', **sampling):
    """The assistant's reply to `messages` in text pieces, as it is generated, up to its <|end|>.

    Stops early at any chat token (a model that skips <|end|> and starts a new turn) or an id past the
    tokenizer (a padded vocabulary). `sampling` goes to generate_stream (temperature, top_k, ...), and
    draft too ('auto': reply_draft).
    """
    stop = stop_ids(tok)
    device = next(model.parameters()).device
    x = torch.tensor([render_prompt(tok, messages)], dtype=torch.long, device=device)
    stream = generate_stream(model, x, max_new_tokens, draft=reply_draft(draft, 1, sampling), **sampling)
    ids = (next_id.item() for next_id in stream)
    yield from text_pieces(tok, itertools.takewhile(lambda i: i not in stop and i < tok.vocab_size, ids))


def generate_replies(model, tok, prompts, max_new_tokens, draft='auto', narrow=True, **sampling):
    """The generated ids of many prompts (lists of ids, e.g. render_prompt's) at once: one left-padded batch
    through the KV cache. Each row's ids end at its first chat token (kept: <|end|> is part of the answer)
    or after max_new_tokens; generation stops when every row has ended. At temperature 0 each row gets
    the same ids as alone. draft: generate_stream's, 'auto' as reply_draft decides. narrow: ended rows leave
    the batch (False keeps every row computing to the batch's end: bench.speculative's baseline)."""
    stop, bs = stop_ids(tok), model.config.block_size
    device = next(model.parameters()).device
    idx, pad = left_pad(prompts, device)
    # room for every answer and a closing <|end|>: a cut answer, rendered as a turn, still fits the context
    room = [min(max_new_tokens, bs - len(p) - 1) for p in prompts]
    if min(room) <= 0:
        raise ValueError(f"a prompt of {idx.size(1)} tokens leaves no room in block_size {bs}")
    out, done = [[] for _ in prompts], [False] * len(prompts)
    new = min(max_new_tokens, bs - idx.size(1) - 1)
    how = reply_draft(draft, len(prompts), sampling)
    rows = list(range(len(prompts)))  # the prompts whose rows are in the batch, in its order

    def keep():
        # replies that have ended leave the batch, so a long reply does not keep the short ones computing. Not
        # one at a time: moving the cache costs about what a step's attention reads, so the batch narrows once
        # a quarter of its rows have ended
        nonlocal rows
        going = [j for j, b in enumerate(rows) if not done[b]]
        if len(going) > 0.75 * len(rows):
            return None
        rows = [rows[j] for j in going]
        return going

    for next_ids in generate_stream(model, idx, new, pad=pad, draft=how, keep=keep if how is None and narrow else None,
                                    **sampling):
        for b, i in zip(rows, next_ids[:, 0].tolist()):
            if not done[b]:
                out[b].append(i)
                done[b] = i in stop or i >= tok.vocab_size or len(out[b]) >= room[b]
        if all(done):
            break
    # the padded batch is as long as its longest prompt, so a shorter prompt's reply may have more room than
    # the batch had: it goes on alone, and a row's reply never depends on the rows beside it
    for b in range(len(prompts)):
        if not done[b]:
            out[b] += generate_replies(model, tok, [prompts[b] + out[b]], room[b] - len(out[b]), draft, narrow,
                                       **sampling)[0]
    return out


def reply_text(tok, ids):
    """The text of a reply's ids from generate_replies, without its closing chat token."""
    stop = set(chat_ids(tok).values())
    return tok.decode([i for i in ids if i not in stop and i < tok.vocab_size])

