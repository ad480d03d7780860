"""
The report card of a model's life (life.py): what each stage's model is, how well it does, and how it answers.

    evaluate(out_dir, ...)      one model's figures: parameters, size on disk, val bits per byte, accuracy per
                                task on the suite's test and gen splits (python -m chat.eval --json)
    ask_all(out_dirs, prompts)  the same prompts put to every model, greedy: a chat model answers (running
                                its tools), a base model continues the text
    serve_check(out_dir)        the model behind serve.server: one chat request that offers the tools
    write_report(...)           out_dir/report.md, with the pictures pictures() drew into out_dir/report/
"""
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.charts import draw_runs, figure, read_log, save
from seedgpt.chat import is_chat, render_prompt
from seedgpt.checkpoint import checkpoint_path, load_checkpoint, load_model
from seedgpt.generate import generate
from seedgpt.objectives import held_out_pair_accuracy

# what each stage's model is, in the report's words
WHAT = {
    'pretrain': 'base: next-token prediction on raw text (the Python standard library)',
    'sft': 'supervised fine-tuning of the base on the task suite, tools included',
    'scratch': 'the same SFT from scratch, for the base\'s and SFT\'s time together',
    'reward': 'reward model: the SFT model with a scalar head, a scorer of answers, not a writer',
    'rl': 'PPO from the SFT model on the reward model\'s scores, KL-leashed to the SFT model',
    'dpo': 'DPO from the SFT model on the same preference pairs',
    'int8': 'the RL model, block weights in int8',
    'pruned': 'the RL model, smallest weights zeroed',
    'student': 'a smaller model distilled from the RL model',
}


def evaluate(out_dir, cfg, max_examples=0, pairs_dir=None):
    """A model's figures for the report: {'params', 'weights_mb', 'val_bpb', 'splits': {split: chat.eval's
    result}}. weights_mb is the bytes of the weights alone (a training checkpoint also holds the optimizer's).
    A reward model (pairs_dir: its preference pairs) is a scorer, not a chat model: its figure is 'pair_accuracy',
    the share of held-out pairs whose chosen answer it scores above the rejected one."""
    ckpt = load_checkpoint(out_dir)
    # wte is tied to lm_head; an int8 layer's per-row scales are part of its bytes, not parameters
    weights = {k: t for k, t in ckpt['model'].items() if k != 'transformer.wte.weight'}
    row = {'params': sum(t.numel() for k, t in weights.items() if not k.endswith('.scale')),
           'weights_mb': round(sum(t.numel() * t.element_size() for t in weights.values()) / 2 ** 20, 3)}
    evals = [r for r in read_log(out_dir)[1] if r.get('val_bpb') is not None] if has_log(out_dir) else []
    if evals:
        row['val_bpb'] = round(evals[-1]['val_bpb'], 4)
    if 'special_tokens' not in ckpt['meta']:  # a base model: no chat to score, its text's bits per byte say it
        return row
    if pairs_dir:
        model, _ = load_model(out_dir, 'cpu')
        row['pair_accuracy'] = round(held_out_pair_accuracy(model, pairs_dir)[0], 3)
        return row
    argv = [sys.executable, '-m', 'chat.eval', f'--out_dir={out_dir}', '--json', f'--device={cfg.device}',
            f'--max_examples={max_examples}']
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"error: {' '.join(argv[1:])} failed: {p.stderr.strip().splitlines()[-1:]}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    row['splits'] = result.get('splits') or {result['split']: {k: result[k] for k in ('tasks', 'mean', 'n')}}
    return row


def has_log(out_dir):
    return os.path.isfile(os.path.join(out_dir, 'log.jsonl'))


@torch.no_grad()
def answer(model, tok, prompt, max_new_tokens=48):
    """A model's greedy answer to `prompt`: a chat model's reply (its tool calls shown as call -> result), or
    a base model's continuation of the text."""
    try:
        if is_chat(tok):
            (trace,) = generate_with_tools(model, tok, [render_prompt(tok, [{'role': 'user', 'content': prompt}])],
                                           max_new_tokens, temperature=0)
            calls = ''.join(f"{call} -> {result} -> " for call, result in trace.calls)
            return calls + trace.answer
        ids = tok.encode(prompt)
        out = generate(model, torch.tensor([ids]), max_new_tokens, temperature=0)[0, len(ids):].tolist()
        return '(continues) ' + tok.decode([i for i in out if i < tok.vocab_size])
    except ValueError as e:  # a character its tokenizer does not have
        return f"(cannot read the prompt: {e})"


def ask_all(out_dirs, prompts, device='cpu'):
    """{out_dir: [answer to each prompt]} for every checkpoint that exists."""
    answers = {}
    for d in out_dirs:
        if os.path.isfile(checkpoint_path(d)):
            model, tok = load_model(d, 'cpu' if device == 'auto' else device)
            answers[d] = [answer(model, tok, q) for q in prompts]
    return answers


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve_check(out_dir, device='auto', timeout=120):
    """Start serve.server on out_dir, ask it one question with the tools offered, stop it. Returns what came
    back, for the report; raises SystemExit when the server does not answer well-formed JSON."""
    from seedgpt.api import openai_tools
    port = free_port()
    argv = [sys.executable, '-m', 'serve.server', f'--out_dir={out_dir}', f'--port={port}', f'--device={device}']
    print(f"$ python {' '.join(argv[1:])}   (one request, then stopped)", flush=True)
    server = subprocess.Popen(argv)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(timeout * 4):
            try:
                urllib.request.urlopen(f'{url}/health', timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("error: serve.server stopped at start-up (its message is above)") from None
                time.sleep(0.25)
        body = {'messages': [{'role': 'user', 'content': 'What is 2+2?'}], 'max_tokens': 32, 'temperature': 0,
                'tools': openai_tools()}
        ask = urllib.request.Request(f'{url}/v1/chat/completions', json.dumps(body).encode(),
                                     {'Content-Type': 'application/json'})
        reply = json.loads(urllib.request.urlopen(ask, timeout=timeout).read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    message = reply['choices'][0]['message']
    calls = [f"{c['function']['name']}({c['function']['arguments']})" for c in message.get('tool_calls') or []]
    said = f"tool call {', '.join(calls)}" if calls else f"answer {message['content']!r}"
    print(f"the server answered 'What is 2+2?' with this {said}", flush=True)
    return {'served': said}


def pictures(out_dir, state):
    """out_dir/report/: accuracy per stage (test and gen) and the loss curves of the trained stages."""
    where = os.path.join(out_dir, 'report')
    os.makedirs(where, exist_ok=True)
    try:
        stages = [s for s in state if 'splits' in state[s]]
        fig = figure(figsize=(9, 4), layout='constrained')
        ax = fig.add_subplot()
        splits = sorted({sp for s in stages for sp in state[s]['splits']}, key=lambda sp: sp != 'test')
        for k, sp in enumerate(splits):
            ax.bar([i + 0.4 * k for i in range(len(stages))],
                   [state[s]['splits'].get(sp, {}).get('mean', 0) for s in stages], 0.4, label=sp)
        ax.set_xticks([i + 0.2 for i in range(len(stages))], stages)
        ax.set_ylabel('mean accuracy over tasks')
        ax.set_ylim(0, 1)
        ax.legend()
        save(fig, os.path.join(where, 'accuracy.png'))
        runs = [os.path.join(out_dir, s) for s in ('pretrain', 'sft', 'dpo', 'student') if has_log(
            os.path.join(out_dir, s))]
        draw_runs(runs, os.path.join(where, 'loss.png'), x='time')
        return ['accuracy.png', 'loss.png']
    except ImportError:  # matplotlib is optional: pip install matplotlib
        return []


def pretraining_verdict(state):
    """Whether SFT from the base beat SFT from scratch at equal total time (life.py --compare), in figures."""
    if 'splits' not in state.get('scratch', {}) or 'splits' not in state.get('sft', {}):
        return []
    sft, scratch = state['sft']['splits'], state['scratch']['splits']
    both = [sp for sp in ('test', 'gen') if sp in sft and sp in scratch]
    gain = {sp: sft[sp]['mean'] - scratch[sp]['mean'] for sp in both}
    # a difference under two standard errors of a difference of two accuracies is what another seed could give
    se = {sp: math.sqrt(sum(r[sp]['mean'] * (1 - r[sp]['mean']) / max(r[sp].get('n', 1), 1) for r in (sft, scratch)))
          for sp in both}
    verdict = ('made no difference these splits can measure' if all(abs(gain[sp]) < 2 * se[sp] for sp in both) else
               'helped' if all(g > 0 for g in gain.values()) else
               'did not help' if all(g <= 0 for g in gain.values()) else 'gave mixed results')
    figures = '; '.join(f"{sp}: {sft[sp]['mean']:.3f} from the base against {scratch[sp]['mean']:.3f} from scratch, "
                        f"a standard error of {se[sp]:.3f}" for sp in both)
    return ["", f"At equal total time, pretraining {verdict} SFT ({figures})."]


def write_report(cfg, state, answers):
    """out_dir/report.md: one row per stage, then the prompts' answers; returns its path."""
    lines = [f"# The life of a model: {cfg.out_dir} (preset {cfg.preset})", "",
             "| stage | what | training time | parameters | weights | val bits/byte | test accuracy | gen accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for stage, row in state.items():
        splits = row.get('splits', {})
        acc = [f"{splits[sp]['mean']:.3f}" if sp in splits else '' for sp in ('test', 'gen')]
        what = WHAT.get(stage, '') + (f"; it ranks {row['pair_accuracy']:.1%} of held-out pairs right"
                                      if 'pair_accuracy' in row else '')
        lines.append(f"| {stage} | {what} | {row['seconds']:.0f} s | "
                     f"{row['params'] / 1e6:.2f}M | {row['weights_mb']} MB | {row.get('val_bpb', '')} | "
                     f"{acc[0]} | {acc[1]} |" if 'params' in row else
                     f"| {stage} | {row.get('served', '')} | {row['seconds']:.0f} s | | | | | |")
    lines += pretraining_verdict(state)
    lines += ["", "Accuracy per task (test split; gen in brackets):", ""]
    for stage, row in state.items():
        splits = row.get('splits', {})
        if 'test' in splits:
            gen = splits.get('gen', {}).get('tasks', {})
            lines.append(f"- {stage}: " + ', '.join(
                f"{t} {r['accuracy']:.2f}" + (f" ({gen[t]['accuracy']:.2f})" if t in gen else '')
                for t, r in splits['test']['tasks'].items()))
    prompts = cfg.prompts.split('|')
    lines += ["", "The same prompts, answered greedily by each stage's model:", "",
              "| stage | " + ' | '.join(prompts) + " |", "|---|" + "---|" * len(prompts)]
    for d, said in answers.items():
        cells = [a.replace('|', '\\|').replace('\n', ' ')[:80] for a in said]
        lines.append(f"| {os.path.basename(d)} | " + ' | '.join(cells) + " |")
    for png in pictures(cfg.out_dir, state):
        lines += ["", f"![{png}](report/{png})"]
    path = os.path.join(cfg.out_dir, 'report.md')
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(path + '.tmp', path)
    return path
