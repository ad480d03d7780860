"""
Exact-match accuracy of a chat model on the task suite of prepare/tasks.py, per task.

    python eval.py --out_dir=out-sft-tasks                      # a table
    python eval.py --out_dir=out-sft-tasks --json               # one JSON object on stdout
    python eval.py --out_dir=out-sft-tasks --max_examples=200 --temperature=0.8 --split=val

Each question of the split is rendered as a prompt (the user turn, then <|assistant|>), answered
greedily by default up to <|end|>, and judged by prepare/tasks.py's check. The mean is over tasks.
"""
import json
import os
import sys
from dataclasses import dataclass

import torch

from common import chat_ids, generate_replies, load_config, render_prompt, reply_text, setup_runtime
from prepare.tasks import check
from sample import load_model


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    data_dir: str = 'data/tasks'  # made by prepare/tasks.py
    split: str = 'test'  # which {split}.jsonl to answer
    max_examples: int = 0  # answer only the first this many questions; 0 answers all
    max_new_tokens: int = 32  # an answer longer than this is cut (and wrong)
    temperature: float = 0.0  # 0 is greedy
    top_k: int = 0  # keep only the k likeliest tokens; 0 keeps all
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16'
    json: bool = False  # print one JSON object instead of the table
    batch_size: int = 64  # questions answered together (left-padded, one KV cache); greedy answers do not depend on it


def load_records(data_dir, split, max_examples=0):
    path = os.path.join(data_dir, f'{split}.jsonl')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no {path}; make the task suite first: python prepare/tasks.py")
    with open(path, encoding='utf-8') as f:
        records = [json.loads(line) for line in f if line.strip()]
    return records[:max_examples] if max_examples > 0 else records


def question(record):
    """The conversation up to the answer: the expected assistant turn, if stored, is left out."""
    messages = record['messages']
    return messages[:-1] if messages[-1]['role'] == 'assistant' else messages


def score(records, answers):
    """{'tasks': {task: {n, correct, accuracy}}, 'mean': mean accuracy over tasks, 'n': questions}."""
    tasks = {}
    for record, answer in zip(records, answers, strict=True):
        row = tasks.setdefault(record['meta']['task'], {'n': 0, 'correct': 0})
        row['n'] += 1
        row['correct'] += check(record['meta']['task'], record['meta'], answer)
    for row in tasks.values():
        row['accuracy'] = row['correct'] / row['n']
    mean = sum(row['accuracy'] for row in tasks.values()) / max(1, len(tasks))
    return {'tasks': dict(sorted(tasks.items())), 'mean': mean, 'n': len(records)}


def accuracy(model, tok, records, batch_size=64, max_new_tokens=32, progress=False, **sampling):
    """score() of the model's answers to the records' questions, answered batch_size at a time."""
    answers, correct = [], 0
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [render_prompt(tok, question(r)) for r in chunk]
        for record, ids in zip(chunk, generate_replies(model, tok, prompts, max_new_tokens, **sampling)):
            answers.append(reply_text(tok, ids))
            correct += check(record['meta']['task'], record['meta'], answers[-1])
        if progress:
            sys.stderr.write(f"\reval: {len(answers)}/{len(records)} answered, {correct} right")
            sys.stderr.flush()
    if progress:
        sys.stderr.write('\n')
    return score(records, answers)


def table(result):
    lines = [f"{'task':<10}{'n':>6}{'correct':>9}{'accuracy':>10}"]
    for task, row in result['tasks'].items():
        lines.append(f"{task:<10}{row['n']:>6}{row['correct']:>9}{row['accuracy']:>10.3f}")
    lines.append(f"{'mean':<10}{result['n']:>6}{'':>9}{result['mean']:>10.3f}")
    return '\n'.join(lines)


def main(cfg):
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype)
    chat_ids(tok)  # a base model stops here, with a one-line error
    records = load_records(cfg.data_dir, cfg.split, cfg.max_examples)
    g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    try:
        result = accuracy(model, tok, records, cfg.batch_size, cfg.max_new_tokens, progress=True,
                          temperature=cfg.temperature, top_k=cfg.top_k or None, generator=g)
    except ValueError as e:  # a question with a character the model has never seen
        raise SystemExit(f"error: {e}; was {cfg.data_dir} made with this model's tokenizer?")
    if cfg.json:
        print(json.dumps({'out_dir': cfg.out_dir, 'split': cfg.split, **result}))
    else:
        print(table(result))


if __name__ == '__main__':
    main(load_config(Config))
