"""
One prompt, several checkpoints side by side: one model at iteration 0, halfway and at the end of its training
(train.py --keep_every=N keeps those), or the stages of its making: base, SFT, RL, DPO, int8, pruned, distilled.
For each: its answer, the likeliest next tokens at every step of the answer, the log-probability of a reference
answer, and an attention heat map over the prompt and the answer.

    python -m explain.stages --out_dirs="out-stdlib-char/snapshots/*" --prompt="def main("      # one run, learning
    python -m explain.stages --out_dirs="out-stdlib-char,out-stdlib-char-int8,out-stdlib-char-p50" --prompt="import "
    python -m explain.stages --out_dirs="out-sft-tasks,out-rl-tasks,out-dpo-tasks" --prompt="What is 48+75?" \\
        --reference=123 --html=stages.html                                                    # one page, no network
    python -m explain.stages --out_dirs="out-sft-tasks,out-rl-tasks" --prompt="Reverse cat." --layer=0 --head=1

A chat model (one with chat tokens) gets the prompt as a user turn and answers as the assistant, running the
tools it calls (seedgpt/agent.py); a base model continues the prompt. Each checkpoint reads the prompt with its
own tokenizer, so models of different tokenizers stand side by side. Answers are greedy unless --temperature > 0.
A glob in --out_dirs lists its checkpoints in the order of the numbers in their names (iter_000500 before
iter_001000). In a terminal the answer's tokens are shaded by the probability the model gave them, and the
heat map in blue; piped, redirected or with NO_COLOR set, the same in plain text.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m explain.stages ...")

import glob
import html
import os
import re
import sys
from dataclasses import dataclass

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import CHAT_SPECIALS, chat_ids, knows_tools, render_prompt
from seedgpt.checkpoint import checkpoint_path, load_checkpoint, load_model
from seedgpt.config import load_config
from seedgpt.generate import generate
from seedgpt.inspect import (GREY, candidate_cells, candidates, check_layer_head, colour_on, describe, pick,
                             pieces, rgb, shade, trace, visible, width)
from seedgpt.objectives import token_logprobs
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    out_dirs: str = ''  # checkpoints, comma-separated: run or snapshot directories, .pt files, globs (out/snapshots/*)
    prompt: str = ''  # asked of every checkpoint: a chat model's user turn, the text a base model continues
    reference: str = ''  # an answer to score: each checkpoint's log-probability of it after the prompt, per token
    max_new_tokens: int = 40  # of each answer (a model that runs tools: of each of its turns)
    temperature: float = 0.0  # 0 is greedy: each checkpoint's likeliest answer
    top_k: int = 5  # the likeliest next tokens shown at each step of an answer
    layer: int = -1  # the block whose attention the heat map shows; -1 the last
    head: int = -1  # one head of that block, or -1 for the mean over its heads
    max_calls: int = 3  # a model that knows tools: at most this many calls per answer
    color: str = 'auto'  # 'auto' (colour on a terminal unless NO_COLOR is set, else plain), 'always', 'never'
    html: str = ''  # a file: one self-contained page, the checkpoints in columns
    seed: int = 1337  # the same for every checkpoint: at temperature > 0 each draws from the same numbers
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'; the weights are float32, to show exact numbers


@dataclass
class View:
    """What one checkpoint made of the prompt."""
    name: str  # the checkpoint, as named
    kind: str  # what it is: base or chat, RL, DPO, int8, pruned, ...
    tok: object  # its own tokenizer
    ids: list  # prompt, then answer
    text: list  # each token's text
    n_prompt: int
    given: list  # one per answer token: True where a tool's turn gave it, not the model
    answer: str  # what a reader gets: a base model's continuation, a chat model's last turn
    logits: torch.Tensor  # (A, V): before each of the A answer tokens
    att: torch.Tensor  # (T, T): the chosen layer's (and head's) attention over prompt and answer
    where: str  # which layer and head
    reference: list  # [(token's text, log-probability)] of the reference answer; [] without one

    def total(self):
        return sum(lp for _, lp in self.reference)


def in_order(path):
    """A sort key: the numbers in a name compare as numbers (iter_999 before iter_1000)."""
    return [int(s) if s.isdigit() else s for s in re.split(r'(\d+)', path)]


def checkpoints(out_dirs):
    """The checkpoints --out_dirs names, in its order; a glob's matches in the order of their numbers."""
    found = []
    for item in filter(None, (s.strip() for s in out_dirs.split(','))):
        if glob.has_magic(item):
            matches = sorted((m for m in glob.glob(item) if os.path.isfile(checkpoint_path(m))), key=in_order)
            if not matches:
                raise SystemExit(f"error: no checkpoint matches {item}")
            found += matches
        elif os.path.isfile(checkpoint_path(item)):
            found.append(item)
        else:
            raise SystemExit(f"error: no checkpoint at {checkpoint_path(item)}; --out_dirs takes run or snapshot "
                             "directories and .pt files")
    if not found:
        raise SystemExit("error: name the checkpoints to compare: --out_dirs=out-a,out-b or "
                         "--out_dirs='out-a/snapshots/*'")
    return found


def is_chat(tok):
    """A model with chat tokens answers a user turn (seedgpt.chat.chat_ids); any other continues the text."""
    return all(s in getattr(tok, 'special_ids', {}) for s in CHAT_SPECIALS[:4])


def kind(where, tok):
    """What a checkpoint is, in a few words, from what it holds: e.g. 'chat with tools, RL (ppo), value head'."""
    ckpt = load_checkpoint(where)  # memory-mapped: reading its settings touches no weights
    config, how = ckpt.get('config', {}), ckpt.get('compress', {})
    facts = [(config.get('algo'), f"RL ({config.get('algo')})"), ('beta' in config, 'DPO'),
             (config.get('teacher_dir'), 'distilled'), (ckpt['model_args'].get('value_head'), 'value head'),
             (ckpt.get('quant'), f"{ckpt.get('quant')} weights"),
             (ckpt.get('masks') or how.get('prune') or how.get('prune_pattern'), 'pruned'),
             (True, f"{ckpt['meta']['tokenizer']} tokens"), ('iter_num' in ckpt, f"iter {ckpt.get('iter_num')}")]
    chat = ('chat with tools' if knows_tools(tok) else 'chat') if is_chat(tok) else 'base'
    return ', '.join([chat] + [name for hit, name in facts if hit])


def respond(model, tok, prompt, cfg, chat, where):
    """(the answer's ids, which of them a tool gave rather than the model wrote, the answer's text)."""
    bs = model.config.block_size
    if len(prompt) >= bs - 1:
        raise SystemExit(f"error: {where}: the prompt is {len(prompt)} tokens and block_size {bs}; shorten it")
    if not chat:  # a base model continues the text, as far as its context goes: one window for the heat map
        x = torch.tensor([prompt], dtype=torch.long, device=model.lm_head.weight.device)
        ids = generate(model, x, min(cfg.max_new_tokens, bs - len(prompt)), temperature=cfg.temperature)
        ids = ids[0, len(prompt):].tolist()
        return ids, [False] * len(ids), tok.decode(ids)
    # the agent's rounds keep the whole trace, tool turns included, within block_size
    t = generate_with_tools(model, tok, [prompt], cfg.max_new_tokens, cfg.max_calls, temperature=cfg.temperature)[0]
    return t.ids, [m == 0 for m in t.mask], t.answer


def score(model, tok, prompt, ref, where):
    """[(token's text, log-probability)] of the reference's ids right after the prompt, in one forward."""
    if not ref:
        return []
    if len(prompt) + len(ref) - 1 > model.config.block_size:
        raise SystemExit(f"error: {where}: the prompt and the reference are {len(prompt) + len(ref)} tokens, more "
                         f"than block_size {model.config.block_size}; shorten them")
    device = model.lm_head.weight.device
    x = torch.tensor([prompt + ref[:-1]], device=device)
    y = torch.tensor([[-1] * (len(prompt) - 1) + ref], device=device)  # -1: the prompt is not scored
    with torch.no_grad():
        logp, _ = token_logprobs(model, x, y)
    return list(zip(pieces(tok, ref), logp[0, len(prompt) - 1:].tolist()))


def look(where, cfg, device):
    """Put the prompt to one checkpoint: its View."""
    model, tok = load_model(where, device, torch.float32)
    check_layer_head(model, cfg.layer, cfg.head, where)
    chat = is_chat(tok)
    try:
        prompt = render_prompt(tok, [{'role': 'user', 'content': cfg.prompt}]) if chat else tok.encode(cfg.prompt)
        # a chat model's reference is a whole turn: it must end there, with <|end|>, to be that answer
        ref = (tok.encode(cfg.reference) + ([chat_ids(tok)['end']] if chat else [])) if cfg.reference else []
    except ValueError as e:
        raise SystemExit(f"error: {where}: {e}; change the prompt or the reference")
    torch.manual_seed(cfg.seed)  # at temperature > 0, every checkpoint draws the same numbers
    try:
        answer, given, text = respond(model, tok, prompt, cfg, chat, where)
    except ValueError as e:
        raise SystemExit(f"error: {where}: {e}")
    ids = prompt + answer
    logits, att = trace(model, ids)
    return View(name=where, kind=kind(where, tok), tok=tok, ids=ids, text=pieces(tok, ids), n_prompt=len(prompt),
                given=given, answer=text, logits=logits[len(prompt) - 1:-1], att=pick(att, cfg.layer, cfg.head),
                where=describe(att, cfg.layer, cfg.head), reference=score(model, tok, prompt, ref, where))

# -----------------------------------------------------------------------------
# the terminal

RAMP = ' .:-=+*#%@'  # attention, from hardly looked at to looked at most


def aligned(rows):
    """Rows of cells as lines of text, each column as wide as its widest cell (CJK counts two)."""
    widths = [max(width(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [' | '.join(cell + ' ' * (w - width(cell)) for cell, w in zip(row, widths)).rstrip() for row in rows]


def heat_rows(view, colour):
    """The attention of the position before each answer token (the one that wrote it), one line each over the
    prompt and the answer: each token's cells as wide as its text, darker where it was looked at more,
    relative to the row's largest weight."""
    labels = [visible(s) or ' ' for s in view.text]
    lines = [' ' * 12 + ''.join(labels)]
    for t in range(view.n_prompt, len(view.ids)):
        row = view.att[t - 1, :t]
        cells = []
        for label, w in zip(labels, (row / row.max()).tolist()):
            cell = RAMP[min(len(RAMP) - 1, int(w * len(RAMP)))] * width(label)
            cells.append(rgb(cell, shade(w), bold=w > 0.5) if colour and cell.strip() else cell)
        name = visible(view.text[t], space=True)
        while width(name) > 6:  # a long token (or a chat token) cut to fit its row's label
            name = name[:-1]
        lines.append(f"{t - view.n_prompt + 1:>4} {name}{' ' * (6 - width(name))} {''.join(cells)}".rstrip())
    return lines


def section(i, v, cfg, colour, out):
    """One checkpoint's answer, step by step, its reference score and its heat map."""
    say = lambda s='': print(s, file=out)
    say(f"\n== {i}. {v.name}: {v.kind} ==")
    say(f"answer: {v.answer!r}")
    probs = torch.softmax(v.logits, dim=-1)
    if colour:  # each token of the answer from grey (unsure) to blue (sure); a tool's turn in grey
        p = [probs[s, v.ids[v.n_prompt + s]].item() for s in range(len(probs))]
        say("tokens: " + ''.join(rgb(visible(s), GREY if g else shade(q)) for s, g, q in
                                 zip(v.text[v.n_prompt:], v.given, p)))
    say(f"the {cfg.top_k} likeliest next tokens at each step, < marking the one that came"
        + (" (* given by a tool, not written)" if any(v.given) else '') + ':')
    for s in range(len(probs)):
        mark = '*' if v.given[s] else ' '
        cells = candidate_cells(v.tok, probs[s], cfg.top_k, v.ids[v.n_prompt + s], colour)
        say(f"{s + 1:>4}{mark} " + ' '.join(cells).rstrip())
    if v.reference:
        say(f"reference {cfg.reference!r}: log p {v.total():.4f} over {len(v.reference)} tokens: "
            + '  '.join(f"{visible(s, space=True)} {lp:.4f}" for s, lp in v.reference))
    if len(v.ids) > v.n_prompt:
        say(f"attention ({v.where}) of the position that wrote each answer token, over prompt and answer:")
        for line in heat_rows(v, colour):
            say(line)


def terminal(views, cfg, colour, out=None):
    """A table of the answers side by side, then each checkpoint in turn."""
    out = out or sys.stdout  # looked up now: a test may have replaced it
    print(f"prompt: {cfg.prompt!r}" + (f"   reference: {cfg.reference!r}" if cfg.reference else ''), file=out)
    rows = [['#', 'checkpoint', 'what it is', 'answer'] + (['log p(reference)'] if cfg.reference else [])]
    for i, v in enumerate(views, 1):
        answer = repr(v.answer)  # quoted: an answer of spaces shows
        rows.append([str(i), v.name, v.kind, answer if len(answer) <= 60 else answer[:59] + '…']
                    + ([f"{v.total():.4f}"] if cfg.reference else []))
    for line in aligned(rows):
        print(line, file=out)
    for i, v in enumerate(views, 1):
        section(i, v, cfg, colour, out)

# -----------------------------------------------------------------------------
# one self-contained HTML page: the checkpoints in columns, no script and nothing fetched

STYLE = """body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; }
.cols { display: flex; gap: 1.5em; overflow-x: auto; align-items: flex-start; }
.col { flex: 1; min-width: 24em; max-width: 40em; border: 1px solid #ddd; border-radius: 6px; padding: 0 0.8em; }
pre, .mono, td { font-family: ui-monospace, 'DejaVu Sans Mono', 'Noto Sans Mono CJK SC', monospace; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.4em; } .kind, .help { color: #666; font-size: 13px; }
.tok { border-radius: 3px; white-space: pre-wrap; } .given { color: #999; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; } td { padding: 1px 6px; vertical-align: top; }
.chosen { color: #e33; font-weight: bold; } svg { max-width: 100%; height: auto; }"""


def esc(s):
    return html.escape(visible(s))


def steps_table(v, k):
    """Each step of the answer: the token that came, its probability, and the k likeliest."""
    probs, top = candidates(v.logits, k)
    rows = []
    for s, (ps, ids) in enumerate(zip(probs.tolist(), top.tolist())):
        chosen = v.ids[v.n_prompt + s]
        p = torch.softmax(v.logits[s], dim=-1)[chosen].item()
        cands = ' '.join(f'<span class="{"chosen" if i == chosen else ""}">{esc(v.tok.decode([i]))}&nbsp;{q:.1%}'
                         '</span>' for q, i in zip(ps, ids))
        rows.append(f'<tr><td>{s + 1}</td><td class="{"given" if v.given[s] else "chosen"}">'
                    f'{esc(v.text[v.n_prompt + s])}</td><td>{p:.1%}</td><td>{cands}</td></tr>')
    return f'<table><tr><th>step</th><th>token</th><th>p</th><th>the {k} likeliest</th></tr>{"".join(rows)}</table>'


def heat_svg(v):
    """The attention map as an SVG: row i is how token i spreads its attention over tokens 0..i; hover a cell
    for the two tokens and the weight; red lines end the prompt."""
    T = len(v.ids)
    s = max(3, min(14, 560 // T))  # pixels per cell
    a = v.att.tolist()
    cells = ''.join(f'<rect x="{j * s}" y="{i * s}" width="{s}" height="{s}" fill-opacity="{a[i][j]:.3f}"><title>'
                    f'{esc(v.text[i])} reads {esc(v.text[j])}: {a[i][j]:.3f}</title></rect>'
                    for i in range(T) for j in range(i + 1) if a[i][j] >= 0.005)  # the rest would not show
    edge = v.n_prompt * s
    return (f'<svg viewBox="0 0 {T * s} {T * s}" width="{T * s}" height="{T * s}" role="img">'
            f'<rect width="{T * s}" height="{T * s}" fill="#fafafa"/><g fill="#1e6eff">{cells}</g>'
            f'<path d="M{edge} 0V{T * s}M0 {edge}H{T * s}" stroke="#e33" stroke-width="1"/></svg>')


def column(i, v, cfg):
    probs = torch.softmax(v.logits, dim=-1)
    answer = ''.join(
        f'<span class="tok{" given" if g else ""}" style="background: rgba(30,110,255,{0.6 * p:.3f})" '
        f'title="{p:.1%}">{html.escape(s)}</span>' for s, g, p in
        zip(v.text[v.n_prompt:], v.given, (probs[s, v.ids[v.n_prompt + s]].item() for s in range(len(probs)))))
    ref = ''
    if v.reference:
        ref = (f'<h4>reference: log p {v.total():.4f}</h4><table>' + ''.join(
            f'<tr><td>{esc(s)}</td><td>{lp:.4f}</td></tr>' for s, lp in v.reference) + '</table>')
    return (f'<section class="col"><h3>{i}. {html.escape(v.name)}</h3><p class="kind">{html.escape(v.kind)}</p>'
            f'<h4>answer</h4><pre class="answer">{html.escape(v.answer)}</pre>'
            f'<p class="help">its tokens, shaded by their probability'
            f'{" (grey italic: given by a tool)" if any(v.given) else ""}:</p>'
            f'<pre>{answer}</pre>{ref}<h4>next tokens</h4>{steps_table(v, cfg.top_k)}'
            f'<h4>attention: {html.escape(v.where)}</h4>{heat_svg(v)}</section>')


def page(views, cfg):
    title = f"seedgpt stages: {cfg.prompt!r}"
    ref = f" &nbsp; reference: <code>{html.escape(cfg.reference)}</code>" if cfg.reference else ''
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><h2>{len(views)} checkpoints, one prompt</h2>'
            f'<p>prompt: <code>{html.escape(cfg.prompt)}</code>{ref}</p><p class="help">The heat maps: row i is '
            'how token i spreads its attention over the tokens before it (darker: more); hover a cell for its '
            'tokens; the red lines end the prompt.</p><div class="cols">'
            + ''.join(column(i, v, cfg) for i, v in enumerate(views, 1)) + '</div></body></html>\n')


def main(cfg):
    """Print the views, write the page; returns the views."""
    colour = colour_on(cfg.color)
    if not cfg.prompt:
        raise SystemExit("error: the prompt is empty; pass --prompt=TEXT")
    if cfg.top_k < 1 or cfg.max_new_tokens < 1:
        raise SystemExit(f"error: top_k and max_new_tokens must be at least 1, got {cfg.top_k}, {cfg.max_new_tokens}")
    paths = checkpoints(cfg.out_dirs)
    rt = setup_runtime(cfg.device, 'float32', cfg.seed)
    views = [look(p, cfg, rt.device) for p in paths]
    terminal(views, cfg, colour)
    if cfg.html:
        with open(cfg.html, 'w', encoding='utf-8') as f:
            f.write(page(views, cfg))
        print(f"wrote {cfg.html}")
    return views


if __name__ == '__main__':
    main(load_config(Config))
