"""
See how a trained GPT thinks: what each new token attends to, and which tokens it chose among.

    python -m explain.attention --out_dir=out-stdlib-char --prompt="def main(" --tokens=40        # terminal, top-k
    python -m explain.attention --out_dir=out-zh --prompt="都是勇敢的" --png=explain-out/         # PNG heat maps
    python -m explain.attention --out_dir=out-stdlib-char --prompt="import " --html=explain.html  # one HTML page
    python -m explain.attention --out_dir=out-stdlib-char --layer=0 --head=2 --temperature=0      # one head, greedy
    python -m explain.attention --out_dir=out-sft-tasks --chat --prompt="What is 48+75?"          # a chat model's turn

In a terminal each step prints the context, the token being generated in red, every earlier token
shaded from grey (hardly looked at) to blue (looked at most) by the attention of the position that
predicts it, and a table of the likeliest next tokens with the sampled one marked. Piped or redirected
(or with NO_COLOR set), the same in plain text with the weights as numbers.

The weights come out of the real model: its own modules run, and each block's attention is written out
(seedgpt/inspect.py) as softmax(q k^T / sqrt(hs)) under the causal mask, the computation model.py leaves to SDPA (a test
checks that both give the same output). Prompt and generated tokens together must fit in block_size.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m explain.attention ...")

import html
import json
import math
import os
import sys
from dataclasses import dataclass

import torch

from seedgpt.chat import chat_ids, render_prompt
from seedgpt.charts import figure, save
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.generate import generate_stream
# the attention, the candidates and the colours are seedgpt/inspect.py's, which explain/stages.py shares
from seedgpt.inspect import (BLUE, GREY, RED, candidate_cells, candidates, check_layer_head, colour_on,  # noqa: F401
                             describe, explicit_attention, pick, pieces, rgb, shade, trace, visible)
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    prompt: str = '\n'  # the text to start from
    tokens: int = 40  # tokens to generate after the prompt
    temperature: float = 0.8  # 0 is greedy
    top_k: int = 0  # sample from the k likeliest tokens only; 0 from all
    show_k: int = 5  # candidates shown per step
    layer: int = -1  # the block whose attention shades the terminal text; -1 the last
    head: int = -1  # one head of that block, or -1 for the mean over its heads
    chat: bool = False  # a chat model: the prompt is a user turn, and the answer stops at <|end|>
    color: str = 'auto'  # 'auto' (24-bit colour on a terminal unless NO_COLOR is set, else plain), 'always', 'never'
    png: str = ''  # a directory for heat maps: attention per layer (heads as a grid), probability of each token
    html: str = ''  # a file: one self-contained page, hover or click a token to see its attention and candidates
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'; the weights are float32, to show exact numbers


def generate(model, tok, cfg, device):
    """Prompt ids and generated ids (one list), the prompt's length, and its text as given."""
    ids = render_prompt(tok, [{'role': 'user', 'content': cfg.prompt}]) if cfg.chat else tok.encode(cfg.prompt)
    bs = model.config.block_size
    if cfg.tokens >= bs:
        raise SystemExit(f"error: --tokens={cfg.tokens} must be below the model's block_size {bs}")
    if len(ids) + cfg.tokens > bs:  # everything must fit one window, so every step sees the whole text
        print(f"note: the prompt is cut to its last {bs - cfg.tokens} tokens to fit block_size {bs}", file=sys.stderr)
        ids = ids[len(ids) + cfg.tokens - bs:]
    if not ids:
        raise SystemExit("error: the prompt is empty; pass --prompt=TEXT")
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out = list(ids)
    stop = set(chat_ids(tok).values()) if cfg.chat else set()
    for next_id in generate_stream(model, x, cfg.tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                                   generator=g):
        out.append(next_id.item())
        if out[-1] in stop:
            break
    return out, len(ids)


# -----------------------------------------------------------------------------
# the terminal


def terminal(tok, text, ids, n_prompt, logits, att, cfg, colour, out=sys.stdout):
    """Print one step per generated token: its context shaded by attention, then its candidates."""
    a = pick(att, cfg.layer, cfg.head)
    all_probs = torch.softmax(logits, dim=-1)
    print(f"{len(ids) - n_prompt} tokens after a prompt of {n_prompt}; attention: {describe(att, cfg.layer, cfg.head)}",
          file=out)
    if colour:
        print(f"{rgb('red', RED, True)}: the token being generated; before it, from {rgb('grey', GREY)} (hardly looked "
              f"at) to {rgb('blue', BLUE, True)} (looked at most, relative to the row's largest weight); · is a space",
              file=out)
    for t in range(n_prompt, len(ids)):
        row = a[t - 1, :t].tolist()  # the position before t reads tokens 0..t-1 and predicts token t
        chosen = visible(text[t], space=True)
        if colour:
            scale = max(row)
            dots = lambda s: visible(s).replace(' ', '·')  # a coloured space would not show
            context = ''.join(rgb(dots(text[j]), shade(w / scale), bold=w / scale > 0.5) for j, w in enumerate(row))
            print(f"{t - n_prompt + 1:>3} {context}{rgb(dots(text[t]), RED, bold=True)}", file=out)
        else:
            print(f"step {t - n_prompt + 1}: {chosen!r} after {''.join(text[:t])!r}", file=out)
            print("  attention: " + '  '.join(f"{visible(text[j], space=True)} {w:.2f}" for j, w in enumerate(row)),
                  file=out)
        cells = candidate_cells(tok, all_probs[t - 1], cfg.show_k, ids[t], colour)
        print(("    " if colour else "  candidates: ") + ' '.join(cells), file=out)


# -----------------------------------------------------------------------------
# heat maps


def cjk_font():
    """The family name of a Noto CJK font matplotlib can use (Debian: fonts-noto-cjk), or None."""
    from matplotlib import font_manager
    names = sorted({f.name for f in font_manager.fontManager.ttflist
                    if 'Noto Sans CJK' in f.name or 'Noto Serif CJK' in f.name})
    for want in ('Noto Sans CJK SC', 'Noto Sans CJK JP', 'Noto Sans CJK TC'):
        if want in names:
            return want
    return names[0] if names else None


def labels(text):
    return [visible(s, space=True) for s in text]


def heat_maps(text, ids, n_prompt, logits, att, out_dir):
    """attention_layerN.png (one panel per head: rows read, columns are read) and probability.png."""
    import matplotlib
    import numpy as np
    os.makedirs(out_dir, exist_ok=True)
    font = cjk_font()
    print(f"font: {font} for CJK labels, DejaVu Sans for the rest" if font else
          "font: no Noto CJK font found, CJK labels will show as boxes (Debian: apt install fonts-noto-cjk)")
    families = ['DejaVu Sans'] + ([font] if font else [])  # matplotlib falls back glyph by glyph
    L, nh, T, _ = att.shape
    names = labels(text)
    written = []
    with matplotlib.rc_context({'font.family': families}):
        cols = math.ceil(math.sqrt(nh))
        rows = math.ceil(nh / cols)
        side = max(3.5, 0.16 * T)  # inches per panel: room for one label per token
        fs = 8 if T <= 60 else 6
        for layer in range(L):
            fig = figure(figsize=(cols * side + 1, rows * side + 0.6), layout='constrained')
            axes = fig.subplots(rows, cols, squeeze=False)
            for h in range(rows * cols):
                ax = axes[h // cols][h % cols]
                if h >= nh:
                    ax.axis('off')
                    continue
                a = att[layer, h].cpu().numpy().copy()
                a[np.triu_indices(T, 1)] = np.nan  # the future: never looked at, left blank
                im = ax.imshow(a, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
                ax.set_title(f"head {h + 1}", fontsize=10)
                ax.set_xticks(range(T), names, rotation=90, fontsize=fs)
                ax.set_yticks(range(T), names, fontsize=fs)
                ax.axhline(n_prompt - 0.5, color='tab:red', lw=0.8)  # below this line: generated tokens
                ax.axvline(n_prompt - 0.5, color='tab:red', lw=0.8)
                ax.set_xlabel('is looked at (key)', fontsize=9)
                ax.set_ylabel('looks (query)', fontsize=9)
            fig.colorbar(im, ax=axes, shrink=0.6, label='attention weight')
            fig.suptitle(f"layer {layer + 1} of {L}: row i is how token i spreads its attention over tokens 0..i "
                         f"(red line: end of the prompt)", fontsize=11)
            path = os.path.join(out_dir, f'attention_layer{layer + 1}.png')
            save(fig, path)
            written.append(path)
        # the probability the model gave to each token that came next, in the prompt and in what it wrote
        p = torch.softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:], device=logits.device)[:, None])[:, 0]
        fig = figure(figsize=(max(6, 0.22 * T + 1.5), 3.6), layout='constrained')
        ax = fig.add_subplot()
        colours = ['tab:gray' if t < n_prompt else 'tab:blue' for t in range(1, T)]
        ax.bar(range(1, T), p.cpu().numpy(), color=colours)
        ax.set_xticks(range(1, T), names[1:], fontsize=fs, rotation=0 if T <= 40 else 90)
        ax.set_xlim(0.4, T - 0.4)
        ax.set_ylim(0, 1)
        ax.set_ylabel('probability')
        ax.set_title('the probability the model gave each token before it came (grey: prompt, blue: generated)',
                     fontsize=10)
        ax.grid(axis='y', alpha=0.3)
        path = os.path.join(out_dir, 'probability.png')
        save(fig, path)
        written.append(path)
    return written

# -----------------------------------------------------------------------------
# one self-contained HTML page

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seedgpt explain: __TITLE__</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
#text { font: 20px/1.9 ui-monospace, 'DejaVu Sans Mono', 'Noto Sans Mono CJK SC', monospace; white-space: pre-wrap;
        border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 0.8em; }
.tok { cursor: pointer; border-radius: 3px; padding: 0 1px; }
.gen { text-decoration: underline dotted #999; }
.now { color: #e33 !important; font-weight: bold; outline: 2px solid #e33; }
.future { color: #ccc; }
#panel { display: flex; gap: 2em; margin-top: 1em; flex-wrap: wrap; }
table { border-collapse: collapse; } td { padding: 2px 8px; font-family: ui-monospace, monospace; }
.bar { background: #1e6eff; height: 0.8em; display: inline-block; }
tr.chosen td { color: #e33; font-weight: bold; }
.help { color: #666; font-size: 13px; }
</style></head><body>
<h2>__TITLE__</h2>
<p class="help">Hover over a token, or click it to pin it. The token is red; every token before it is shaded blue by
the attention of the position that predicted it (darker: looked at more; the shade is relative to the largest weight);
tokens after it are grey, not yet written. Underlined: generated by the model; the rest is the prompt.</p>
<p>layer <select id="layer"></select> head <select id="head"></select> <span id="where" class="help"></span></p>
<div id="text">__SPANS__</div>
<div id="panel"><div><b>candidates for this token</b><table id="cands"></table></div>
<div><b>looked at most</b><table id="most"></table></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const D = JSON.parse(document.getElementById('data').textContent);
const spans = [...document.querySelectorAll('.tok')];
const layerSel = document.getElementById('layer'), headSel = document.getElementById('head');
for (let l = 0; l < D.layers; l++) layerSel.add(new Option(l + 1 + ' of ' + D.layers, l));
layerSel.value = D.layers - 1;
headSel.add(new Option('mean of heads', -1));
for (let h = 0; h < D.heads; h++) headSel.add(new Option(h + 1, h));
let pinned = +location.hash.slice(1) || D.tokens.length - 1;  // page.html#12 opens on token 12
function row(l, h, i) {  // attention of position i over 0..i
  if (h >= 0) return D.att[l][h][i];
  const r = new Array(i + 1).fill(0);
  for (let k = 0; k < D.heads; k++) D.att[l][k][i].forEach((w, j) => r[j] += w / D.heads);
  return r;
}
const esc = s => s.replace(/[&<>]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;'}[c]));
function show(t) {
  const l = +layerSel.value, h = +headSel.value;
  document.getElementById('where').textContent = t > 0 ? 'token ' + t + ': ' + JSON.stringify(D.tokens[t]) : '';
  spans.forEach((s, j) => { s.className = 'tok' + (j >= D.prompt ? ' gen' : '');
                            s.style.background = s.style.color = ''; });
  if (t < 1) return;
  const r = row(l, h, t - 1), m = Math.max(...r);
  r.forEach((w, j) => {  // dark blue with white text where the weight is high
    spans[j].style.background = 'rgba(30,110,255,' + (0.85 * w / m).toFixed(3) + ')';
    spans[j].style.color = w / m > 0.6 ? '#fff' : '';
  });
  spans[t].classList.add('now');
  for (let j = t + 1; j < spans.length; j++) spans[j].classList.add('future');
  const c = D.cands[t - 1];
  document.getElementById('cands').innerHTML = c.map(([s, p]) =>
    '<tr' + (s === D.tokens[t] ? ' class="chosen"' : '') + '><td>' + esc(JSON.stringify(s)) + '</td><td>' +
    (100 * p).toFixed(1) + '%</td><td><span class="bar" style="width:' + (150 * p).toFixed(0) + 'px"></span>' +
    (s === D.tokens[t] ? ' chosen' : '') + '</td></tr>').join('') +
    (c.some(([s]) => s === D.tokens[t]) ? '' : '<tr class="chosen"><td>' + esc(JSON.stringify(D.tokens[t])) +
     '</td><td>' + (100 * D.p[t]).toFixed(1) + '%</td><td>chosen, outside the top ' + c.length + '</td></tr>');
  const order = r.map((w, j) => [w, j]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  document.getElementById('most').innerHTML = order.map(([w, j]) => '<tr><td>' + j + '</td><td>' +
    esc(JSON.stringify(D.tokens[j])) + '</td><td>' + w.toFixed(3) + '</td></tr>').join('');
}
spans.forEach((s, j) => {
  s.onmouseenter = () => show(j);
  s.onmouseleave = () => show(pinned);
  s.onclick = () => { pinned = j; show(j); };
});
layerSel.onchange = headSel.onchange = () => show(pinned);
show(pinned);
</script></body></html>
"""


def page(tok, text, ids, n_prompt, logits, att, k, title):
    """The HTML page: the tokens as spans, the data as JSON, a little script; nothing fetched."""
    probs, top = candidates(logits, k)
    L, nh, T, _ = att.shape
    p = torch.softmax(logits, dim=-1)
    data = {
        'tokens': text, 'prompt': n_prompt, 'layers': L, 'heads': nh,
        # only the lower triangle: row i holds the weights over tokens 0..i
        'att': [[[[round(w, 4) for w in att[l, h, i, :i + 1].tolist()] for i in range(T)] for h in range(nh)]
                for l in range(L)],
        'cands': [[[tok.decode([i]), round(q, 5)] for q, i in zip(probs[t].tolist(), top[t].tolist())]
                  for t in range(T)],
        'p': [0.0] + [round(p[t - 1, ids[t]].item(), 5) for t in range(1, T)],  # of token t, before it came
    }
    spans = ''.join(f'<span class="tok{" gen" if i >= n_prompt else ""}" data-i="{i}">'
                    f'{html.escape(visible(s))}</span>' + ('\n' if '\n' in s else '')  # keep the lines
                    for i, s in enumerate(text))
    blob = json.dumps(data, ensure_ascii=False, separators=(',', ':')).replace('</', '<\\/')  # no early </script>
    return (PAGE.replace('__TITLE__', html.escape(title)).replace('__SPANS__', spans).replace('__DATA__', blob))


def main(cfg):
    colour = colour_on(cfg.color)
    rt = setup_runtime(cfg.device, 'float32', cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, torch.float32)
    check_layer_head(model, cfg.layer, cfg.head)
    try:
        ids, n_prompt = generate(model, tok, cfg, rt.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}; change the prompt")
    logits, att = trace(model, ids)
    text = pieces(tok, ids)
    terminal(tok, text, ids, n_prompt, logits, att, cfg, colour)
    if cfg.png:
        try:
            written = heat_maps(text, ids, n_prompt, logits, att, cfg.png)
        except ImportError:
            raise SystemExit("error: --png needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')")
        print("wrote " + ', '.join(written))
    if cfg.html:
        title = f"{os.path.basename(os.path.normpath(cfg.out_dir))}: {''.join(text[:n_prompt])!r}"
        with open(cfg.html, 'w', encoding='utf-8') as f:
            f.write(page(tok, text, ids, n_prompt, logits, att, max(cfg.show_k, 10), title))
        print(f"wrote {cfg.html}")


if __name__ == '__main__':
    main(load_config(Config))
