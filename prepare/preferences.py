"""
Preference pairs for feedback/reward.py and feedback/dpo.py, made from the task suite and an SFT model's own answers.

    python -m prepare.preferences --from_dir=out-sft-tasks              # -> data/preferences/
    python -m prepare.preferences --from_dir=out-sft-tasks --n_train=2000 --samples=8

For each question (the first --n_train of data/tasks' train split and --n_val of its val split), the model
answers --samples times at --temperature, and prepare/tasks.py's check judges each answer. A pair is
  chosen:   the right answer (the suite's own);
  rejected: one of the model's wrong answers, when it made one: what a reward model most needs to learn
            to score low; else a near miss made by a rule (a number off by 1 or 10, two letters swapped).
On the suite with tools an answer is the whole assistant side after the question: the call, the tool's
result and the final answer, as messages (the model's answers run their tools, seedgpt/agent.py); a near
miss keeps the call and its result and miscopies the final answer, as a careless model would.
Output, written to a temp dir and renamed when whole:
  {train,val}.jsonl  {"prompt": [messages], "chosen": str, "rejected": str, "meta": {task, answer, ...,
                     "rejected_from": "model" or "rule"}}; with tools, chosen and rejected are [messages]
  meta.json          the suite's tokenizer (the model's), format 'pairs', counts and settings, and data_dir:
                     the suite the pairs come from, which chat.eval answers for a model trained on them (DPO)
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.preferences ...")

import json
import os
import random
import re
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import render_chat, render_prompt
from seedgpt.checkpoint import load_checkpoint, load_model
from seedgpt.config import load_config
from seedgpt.dataset import DATA_ROOT, publish, write_tokenizer
from seedgpt.generate import generate_replies, reply_text
from seedgpt.runtime import setup_runtime
from seedgpt.tasks import check, question



def near_miss(task, answer, rng):
    """A wrong answer close to the right one: what a careless model might write."""
    if re.fullmatch(r'-?\d+', answer):  # a whole number: off by 1 or 10 (never below 0 unless it was)
        n = int(answer)
        return str(rng.choice([m for m in (n - 10, n - 1, n + 1, n + 10) if m >= 0 or n < 0]))
    if re.fullmatch(r'-?\d+\.\d+', answer):  # a decimal: its last digit off by one
        return answer[:-1] + str((int(answer[-1]) + rng.choice((1, 9))) % 10)
    if len(set(answer)) > 1:  # swap two different letters
        i, j = rng.sample([k for k in range(len(answer))], 2)
        while answer[i] == answer[j]:
            i, j = rng.sample(range(len(answer)), 2)
        w = list(answer)
        w[i], w[j] = w[j], w[i]
        return ''.join(w)
    return answer + answer[0]  # 'aaa': one letter too many


def answers(model, tok, prompts, max_new_tokens, tools, **sampling):
    """(final answer, the assistant side as messages) of each prompt: one round of plain replies, or
    generation that runs the tools (calls, results, then the answer)."""
    if tools:
        return [(t.answer, t.messages) for t in generate_with_tools(model, tok, prompts, max_new_tokens, **sampling)]
    texts = [reply_text(tok, ids) for ids in generate_replies(model, tok, prompts, max_new_tokens, **sampling)]
    return [(a, a) for a in texts]


def fits(tok, prompt, side, block_size):
    """Whether prompt and an answer (text or messages) render within block_size tokens."""
    side = side if isinstance(side, list) else [{'role': 'assistant', 'content': side}]
    return len(render_chat(tok, prompt + side)[0]) <= block_size


def make_pairs(model, tok, records, samples, temperature, batch_size, seed, max_new_tokens=32, quiet=False,
               tools=False):
    """One pair per record; the model answers every question `samples` times."""
    rng = random.Random(seed)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    pairs = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [render_prompt(tok, question(r)) for r in chunk]
        said = [[] for _ in chunk]
        for _ in range(samples):
            for k, a in enumerate(answers(model, tok, prompts, max_new_tokens, tools, temperature=temperature,
                                          generator=g)):
                said[k].append(a)
        for r, mine in zip(chunk, said):
            meta, asked = r['meta'], question(r)
            # the model's wrong answers that fit its context once rendered as a conversation (a rambling
            # trace may not: it is cut where the context ends, and its messages render without the cut)
            wrong = [side for a, side in mine if not check(meta['task'], meta, a)
                     and fits(tok, asked, side, model.config.block_size)]
            chosen = r['messages'][len(asked):] if tools else meta['answer']
            miss = near_miss(meta['task'], meta['answer'], rng)
            rejected = rng.choice(wrong) if wrong else (chosen[:-1] + [{**chosen[-1], 'content': miss}] if tools
                                                        else miss)
            pairs.append({'prompt': asked, 'chosen': chosen, 'rejected': rejected,
                          'meta': {**meta, 'rejected_from': 'model' if wrong else 'rule',
                                   'model_right': len(mine) - len(wrong), 'samples': len(mine)}})
        if not quiet:
            sys.stderr.write(f"\rpreferences: {len(pairs)}/{len(records)} questions")
            sys.stderr.flush()
    if not quiet:
        sys.stderr.write('\n')
    return pairs


def prepare(from_dir, data_dir=None, out_dir=None, n_train=8000, n_val=250, samples=4, temperature=1.0,
            batch_size=64, seed=1337, device='auto', quiet=False):
    """Write the pairs to out_dir (default data/preferences); returns the meta dict."""
    if not os.path.exists(os.path.join(from_dir, 'ckpt.pt')) and not from_dir.endswith('.pt'):
        raise SystemExit(f"error: --from_dir={from_dir}: no checkpoint there; train one first: "
                         "python train.py config/sft_tasks.py")
    data_dir = data_dir or load_checkpoint(from_dir)['config'].get('data_dir', 'data/tasks')
    out_dir = out_dir or os.path.join(DATA_ROOT, 'preferences')
    rt = setup_runtime(device, 'float32', seed)
    model, tok = load_model(from_dir, rt.device, torch.float32)
    meta = json.load(open(os.path.join(data_dir, 'meta.json'), encoding='utf-8'))
    tools = bool(meta.get('settings', {}).get('tools'))  # answers through tool calls: pairs of message lists
    tmp_dir = out_dir.rstrip('/') + f'.tmp{os.getpid()}'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        counts = {}
        for split, n in (('train', n_train), ('val', n_val)):
            with open(os.path.join(data_dir, f'{split}.jsonl'), encoding='utf-8') as f:
                records = [json.loads(line) for line in f if line.strip()][:n]
            pairs = make_pairs(model, tok, records, samples, temperature, batch_size, seed, quiet=quiet, tools=tools)
            with open(os.path.join(tmp_dir, f'{split}.jsonl'), 'w', encoding='utf-8') as f:
                for p in pairs:
                    f.write(json.dumps(p, ensure_ascii=False) + '\n')
            right = sum(p['meta']['model_right'] for p in pairs)
            counts[split] = dict(pairs=len(pairs), **Counter(p['meta']['rejected_from'] for p in pairs),
                                 model_accuracy=right / max(1, samples * len(pairs)))
        keep = ('tokenizer', 'vocab_size', 'special_tokens', 'chars', 'eot_token', 'tasks', 'tokenizer_json')
        out_meta = {**{k: meta[k] for k in keep if k in meta}, 'format': 'pairs', 'counts': counts,
                    'source': 'prepare/preferences.py', 'from': from_dir, 'data_dir': data_dir,
                    'settings': dict(n_train=n_train, n_val=n_val, samples=samples, temperature=temperature, seed=seed)}
        if 'tokenizer_json' in out_meta:  # a learned BPE: its file goes with the pairs too
            write_tokenizer(tmp_dir, out_meta)
        publish(tmp_dir, out_dir, out_meta)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not quiet:
        for split, c in counts.items():
            print(f"{split}: {c['pairs']:,} pairs, rejected from the model's own mistakes {c.get('model', 0):,}, "
                  f"by rule {c.get('rule', 0):,}; the model was right on {c['model_accuracy']:.1%} of its samples")
        print(f"wrote {out_dir}")
    return out_meta


@dataclass
class Config:
    from_dir: str = ''  # the SFT run (out_dir) whose answers to judge
    data_dir: str = ''  # the task suite; '' is the one the SFT run trained on
    out_dir: str = ''  # output directory; '' is data/preferences
    n_train: int = 8000  # train questions, hence pairs
    n_val: int = 250  # val (held-out) questions, hence pairs
    samples: int = 4  # answers sampled per question
    temperature: float = 1.0  # of the sampled answers
    batch_size: int = 64  # questions answered together
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'


def main(cfg):
    if not cfg.from_dir:
        raise SystemExit("error: name the SFT run, e.g. python -m prepare.preferences --from_dir=out-sft-tasks")
    if min(cfg.n_train, cfg.n_val, cfg.samples) < 1 or cfg.temperature < 0:
        raise SystemExit("error: n_train, n_val and samples must be at least 1, temperature at least 0")
    prepare(**{**asdict(cfg), 'data_dir': cfg.data_dir or None, 'out_dir': cfg.out_dir or None})


if __name__ == '__main__':
    main(load_config(Config))
