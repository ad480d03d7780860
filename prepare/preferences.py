"""
Preference pairs for reward.py and dpo.py, made from the task suite and an SFT model's own answers.

    python prepare/preferences.py --from=out-sft-tasks              # -> data/preferences/
    python prepare/preferences.py --from=out-sft-tasks --n_train=2000 --samples=8

For each question (the first --n_train of data/tasks' train split and --n_val of its val split), the model
answers --samples times at --temperature, and prepare/tasks.py's check judges each answer. A pair is
  chosen:   the right answer (the suite's own);
  rejected: one of the model's wrong answers, when it made one: what a reward model most needs to learn
            to score low; else a near miss made by a rule (a number off by 1 or 10, two letters swapped).
Output, written to a temp dir and renamed when whole:
  {train,val}.jsonl  {"prompt": [messages], "chosen": str, "rejected": str, "meta": {task, answer, ...,
                     "rejected_from": "model" or "rule"}}
  meta.json          the suite's tokenizer (the model's), format 'pairs', counts and settings
"""
import argparse
import json
import os
import random
import shutil
import sys
from collections import Counter

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'prepare')]
from common import generate_replies, load_checkpoint, render_prompt, reply_text, setup_runtime  # noqa: E402
from corpus import publish  # noqa: E402
from tasks import check  # noqa: E402


def near_miss(task, answer, rng):
    """A wrong answer close to the right one: what a careless model might write."""
    if task in ('add', 'sub', 'count'):
        n = int(answer)
        return str(rng.choice([m for m in (n - 10, n - 1, n + 1, n + 10) if m >= 0]))
    if len(set(answer)) > 1:  # swap two different letters
        i, j = rng.sample([k for k in range(len(answer))], 2)
        while answer[i] == answer[j]:
            i, j = rng.sample(range(len(answer)), 2)
        w = list(answer)
        w[i], w[j] = w[j], w[i]
        return ''.join(w)
    return answer + answer[0]  # 'aaa': one letter too many


def make_pairs(model, tok, records, samples, temperature, batch_size, seed, max_new_tokens=32, quiet=False):
    """One pair per record; the model answers every question `samples` times."""
    rng = random.Random(seed)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    pairs = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [render_prompt(tok, r['messages'][:-1]) for r in chunk]
        answers = [[] for _ in chunk]
        for _ in range(samples):
            for k, ids in enumerate(generate_replies(model, tok, prompts, max_new_tokens, temperature=temperature,
                                                     generator=g)):
                answers[k].append(reply_text(tok, ids))
        for r, said in zip(chunk, answers):
            meta = r['meta']
            wrong = [a for a in said if not check(meta['task'], meta, a)]
            rejected = rng.choice(wrong) if wrong else near_miss(meta['task'], meta['answer'], rng)
            pairs.append({'prompt': r['messages'][:-1], 'chosen': meta['answer'], 'rejected': rejected,
                          'meta': {**meta, 'rejected_from': 'model' if wrong else 'rule',
                                   'model_right': len(said) - len(wrong), 'samples': len(said)}})
        if not quiet:
            sys.stderr.write(f"\rpreferences: {len(pairs)}/{len(records)} questions")
            sys.stderr.flush()
    if not quiet:
        sys.stderr.write('\n')
    return pairs


def prepare(from_dir, data_dir=None, out_dir=None, n_train=8000, n_val=250, samples=4, temperature=1.0,
            batch_size=64, seed=1337, device='auto', quiet=False):
    """Write the pairs to out_dir (default data/preferences); returns the meta dict."""
    from sample import load_model
    if not os.path.exists(os.path.join(from_dir, 'ckpt.pt')) and not from_dir.endswith('.pt'):
        raise SystemExit(f"error: --from={from_dir}: no checkpoint there; train one first: python train.py config/sft_tasks.py")
    data_dir = data_dir or load_checkpoint(from_dir)['config'].get('data_dir', 'data/tasks')
    out_dir = out_dir or os.path.join(ROOT, 'data', 'preferences')
    rt = setup_runtime(device, 'float32', seed)
    model, tok = load_model(from_dir, rt.device, torch.float32)
    meta = json.load(open(os.path.join(data_dir, 'meta.json'), encoding='utf-8'))
    tmp_dir = out_dir.rstrip('/') + f'.tmp{os.getpid()}'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        counts = {}
        for split, n in (('train', n_train), ('val', n_val)):
            with open(os.path.join(data_dir, f'{split}.jsonl'), encoding='utf-8') as f:
                records = [json.loads(line) for line in f if line.strip()][:n]
            pairs = make_pairs(model, tok, records, samples, temperature, batch_size, seed, quiet=quiet)
            with open(os.path.join(tmp_dir, f'{split}.jsonl'), 'w', encoding='utf-8') as f:
                for p in pairs:
                    f.write(json.dumps(p, ensure_ascii=False) + '\n')
            counts[split] = dict(pairs=len(pairs), **Counter(p['meta']['rejected_from'] for p in pairs),
                                 model_accuracy=sum(p['meta']['model_right'] for p in pairs) / max(1, samples * len(pairs)))
        keep = ('tokenizer', 'vocab_size', 'special_tokens', 'chars', 'eot_token', 'tasks')
        out_meta = {**{k: meta[k] for k in keep if k in meta}, 'format': 'pairs', 'counts': counts,
                    'source': 'prepare/preferences.py', 'from': from_dir, 'data_dir': data_dir,
                    'settings': dict(n_train=n_train, n_val=n_val, samples=samples, temperature=temperature, seed=seed)}
        publish(tmp_dir, out_dir, out_meta)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not quiet:
        for split, c in counts.items():
            print(f"{split}: {c['pairs']:,} pairs, rejected from the model's own mistakes {c.get('model', 0):,}, "
                  f"by rule {c.get('rule', 0):,}; the model was right on {c['model_accuracy']:.1%} of its samples")
        print(f"wrote {out_dir}")
    return out_meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--from', dest='from_dir', required=True, help='the SFT run (out_dir) whose answers to judge')
    p.add_argument('--data_dir', default=None, help="the task suite (default: the one the SFT run trained on)")
    p.add_argument('--out_dir', default=None, help='output directory (default data/preferences)')
    p.add_argument('--n_train', type=int, default=8000, help='train questions, hence pairs')
    p.add_argument('--n_val', type=int, default=250, help='val (held-out) questions, hence pairs')
    p.add_argument('--samples', type=int, default=4, help='answers sampled per question')
    p.add_argument('--temperature', type=float, default=1.0)
    p.add_argument('--batch_size', type=int, default=64, help='questions answered together')
    p.add_argument('--seed', type=int, default=1337)
    p.add_argument('--device', default='auto')
    args = p.parse_args(argv)
    if min(args.n_train, args.n_val, args.samples) < 1 or args.temperature < 0:
        raise SystemExit("error: n_train, n_val and samples must be at least 1, temperature at least 0")
    prepare(**vars(args))


if __name__ == '__main__':
    main()
