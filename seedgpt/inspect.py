"""
Looking inside a model, for explain/attention.py (one checkpoint, step by step) and explain/stages.py (one
prompt, several checkpoints): each block's attention written out, the likeliest next tokens, and the
terminal's colours.

    logits, att = trace(model, ids)     # (T, V) and (L, nh, T, T) from one forward of the model's own modules
    probs, top = candidates(logits, 5)  # (T, k) each: the 5 likeliest tokens after each position
    a = pick(att, layer, head)          # (T, T): one block's map, one head or the mean of its heads

The weights come out of the real model: its modules run, and each block's attention is written out as
softmax(q k^T / sqrt(hs)) under the causal mask, the computation model.py leaves to SDPA (tests/test_explain.py
checks that both give the same output).
"""
import math
import os
import sys
import unicodedata

import torch
from torch.nn import functional as F

from model import apply_rope

# -----------------------------------------------------------------------------
# attention out of the real model


def explicit_attention(attn, x, rope=None):
    """model.CausalSelfAttention's forward over a fresh sequence, its attention written out:
    the output (B, T, C), as the module gives it, and the attention weights (B, nh, T, T)."""
    B, T, C = x.size()
    hs = C // attn.n_head
    q, k, v = attn.c_attn(x).split(attn.n_embd, dim=2)
    q, k, v = (t.view(B, T, attn.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    if attn.qk_norm:
        q, k = F.rms_norm(q, (hs,), eps=1e-5), F.rms_norm(k, (hs,), eps=1e-5)  # model.py's epsilon
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T): how well query i matches key j
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
    att = F.softmax(scores.masked_fill(future, float('-inf')), dim=-1)  # row i: weights over tokens 0..i, sum 1
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # each head's weighted mean of values, side by side
    return attn.resid_dropout(attn.c_proj(y)), att


@torch.no_grad()
def trace(model, ids):
    """One forward pass over the token ids (a list of at most block_size): the logits at every position
    (T, V) and every block's attention (L, nh, T, T), each block's attention computed explicitly."""
    maps = []

    def explicit(attn, args, out):
        y, att = explicit_attention(attn, args[0], args[1])  # args: (x, rope, cache, layer)
        maps.append(att[0])
        return y  # the rest of the model runs on the explicit output

    hooks = [block.attn.register_forward_hook(explicit) for block in model.transformer.h]
    try:
        idx = torch.tensor([ids], dtype=torch.long, device=model.lm_head.weight.device)
        logits, _ = model(idx, idx)  # given targets, forward returns every position's logits; the loss is unused
    finally:
        for h in hooks:
            h.remove()
    return logits[0].float(), torch.stack(maps)


def candidates(logits, k):
    """The k likeliest next tokens at each position: (probs, ids), each (T, k), from softmax(logits)."""
    return torch.softmax(logits, dim=-1).topk(min(k, logits.size(-1)), dim=-1)


def pieces(tok, ids):
    """Each token's own text. A BPE token can hold part of a character: its bytes then show as U+FFFD."""
    return [tok.decode([i]) for i in ids]


def pick(att, layer, head):
    """(L, nh, T, T) -> (T, T): one block's map, one head or the mean over heads."""
    a = att[layer]
    return a.mean(0) if head < 0 else a[head]


def describe(att, layer, head):
    L, nh = att.shape[:2]
    return f"layer {layer % L + 1} of {L}, " + (f"mean of {nh} heads" if head < 0 else f"head {head + 1} of {nh}")


def check_layer_head(model, layer, head, name='the model'):
    """A one-line error unless --layer and --head name a block and a head (or -1) of this model."""
    L, nh = model.config.n_layer, model.config.n_head
    if not -L <= layer < L or not -1 <= head < nh:
        raise SystemExit(f"error: {name} has {L} layers (--layer=0..{L - 1}, -1 the last) and {nh} heads "
                         f"(--head=0..{nh - 1}, -1 their mean)")

# -----------------------------------------------------------------------------
# the terminal


def colour_on(setting, stream=None):
    """Whether to print in colour: 'always', 'never', or 'auto': on a terminal, unless the NO_COLOR
    variable is set to anything but '' (https://no-color.org). Piped or redirected text stays plain."""
    if setting not in ('auto', 'always', 'never'):
        raise SystemExit(f"error: color must be auto, always or never, got {setting!r}")
    if setting != 'auto':
        return setting == 'always'
    return (stream or sys.stdout).isatty() and not os.environ.get('NO_COLOR')


def visible(s, space=False):
    """A token's text on one line: newline as ↵, tab as ⇥, (with space=True) space as ␣, control codes escaped."""
    s = s.replace('\n', '↵').replace('\t', '⇥').replace('\r', '␍')
    if space:
        s = s.replace(' ', '␣')
    return ''.join(c if c.isprintable() or c in '↵⇥␍' else repr(c)[1:-1] for c in s)


def width(s):
    return sum(2 if unicodedata.east_asian_width(c) in 'WF' else 1 for c in s)  # CJK takes two columns


def rgb(text, colour, bold=False):
    return f"\x1b[{'1;' if bold else ''}38;2;{colour[0]};{colour[1]};{colour[2]}m{text}\x1b[0m"


GREY, BLUE, RED = (120, 120, 120), (30, 110, 255), (235, 50, 50)


def shade(w):
    """Grey for a weight of 0, blue for 1, straight between."""
    return tuple(round(g + (b - g) * w) for g, b in zip(GREY, BLUE))


def candidate_cells(tok, probs, k, chosen, colour):
    """One position's k likeliest next tokens as table cells, 'label  12.3%', from its probabilities (V,):
    the chosen id marked with < (red in colour), and added with its rank when it is not among them."""
    top_p, top = probs.topk(min(k, probs.size(-1)))
    cells = []
    for p, i in zip(top_p.tolist(), top.tolist()):
        label = visible(tok.decode([i]), space=True)
        cell = f"{label}{' ' * max(0, 4 - width(label))} {p:6.1%}{' <' if i == chosen else '  '}"
        cells.append(rgb(cell, RED, bold=True) if colour and i == chosen else cell)
    if chosen not in top.tolist():  # sampled from outside the table
        rank = int((probs > probs[chosen]).sum()) + 1
        cell = f"{visible(tok.decode([chosen]), space=True)} {probs[chosen].item():6.1%} < (rank {rank})"
        cells.append(rgb(cell, RED, bold=True) if colour else cell)
    return cells
