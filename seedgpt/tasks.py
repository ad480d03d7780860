"""
The offline task suite: problems whose answers can be checked exactly, the one checker, and the
evaluator that eval, RL and the preference pairs share.

Five tasks, each a user question and a short, bare assistant answer:
  add      What is 48+75?                          123    numbers of up to `digits` digits
  sub      What is 75-48?                          27     never negative
  reverse  Reverse the word kvit.                  tivk   made-up words of 3 to `word_len` letters
  sort     Sort the letters of kvit.               iktv
  count    How many times does a appear in abaca?  3      words of 3 to `word_len` + 2 letters
Each question has several phrasings. No problem (a task and its operands, in any phrasing) is in two
splits, nor twice in one. prepare/tasks.py writes the suite as a dataset.
"""
import json
import math
import os
import random
import string
import sys

import torch

from seedgpt.chat import render_chat, render_prompt
from seedgpt.generate import generate_replies, reply_text

TASKS = ('add', 'sub', 'reverse', 'sort', 'count')


LETTERS = string.ascii_lowercase


PHRASES = {
    'add': ["What is {a}+{b}?", "What is {a} + {b}?", "{a}+{b}=?", "Compute {a}+{b}.", "Add {a} and {b}.",
            "What is the sum of {a} and {b}?", "Calculate {a} plus {b}."],
    'sub': ["What is {a}-{b}?", "What is {a} - {b}?", "{a}-{b}=?", "Compute {a}-{b}.", "Subtract {b} from {a}.",
            "What is {a} minus {b}?", "Calculate {a} minus {b}."],
    'reverse': ["Reverse the word {w}.", "Reverse {w}.", "What is {w} backwards?", "Spell {w} backwards.",
                "Write {w} in reverse."],
    'sort': ["Sort the letters of {w}.", "Sort {w} alphabetically.", "Put the letters of {w} in alphabetical order.",
             "What is {w} with its letters sorted?"],
    'count': ["How many times does {c} appear in {w}?", "How many {c}'s are in {w}?", "Count the letter {c} in {w}.",
              "How often does {c} occur in {w}?"],
}


class TaskError(Exception):
    """Bad settings: the message names the problem and the fix."""


def _as_int(text):
    text = text.strip()
    return int(text) if text.lstrip('-').isdigit() else None


def check(task, meta, answer):
    """True when `answer` (the model's reply text) is right for the question that `meta` describes.

    Exact match after trimming surrounding spaces; numbers compare as numbers ('07' is 7).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    if task in ('add', 'sub', 'count'):
        return _as_int(answer) == int(meta['answer'])
    return answer.strip() == meta['answer']


def _word(rng, lo, hi, alphabet=LETTERS):
    return ''.join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def make_problem(task, rng, digits, word_len):
    top = 10 ** digits - 1
    if task == 'add':
        a, b = rng.randint(0, top), rng.randint(0, top)
        return dict(a=a, b=b), str(a + b)
    if task == 'sub':
        a, b = sorted((rng.randint(0, top), rng.randint(0, top)), reverse=True)
        return dict(a=a, b=b), str(a - b)
    if task == 'reverse':
        w = _word(rng, 3, max(3, word_len))
        return dict(w=w), w[::-1]
    if task == 'sort':
        w = _word(rng, 3, max(3, word_len))
        return dict(w=w), ''.join(sorted(w))
    # count: letters from a small pool, so a letter often occurs more than once; sometimes not at all
    pool = rng.sample(LETTERS, 3)
    w = _word(rng, 3, max(3, word_len) + 2, pool)
    c = rng.choice(pool) if rng.random() < 0.85 else rng.choice(LETTERS)
    return dict(c=c, w=w), str(w.count(c))


def make_record(task, operands, answer, rng):
    question = rng.choice(PHRASES[task]).format(**operands)
    return {'messages': [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': answer}],
            'meta': {'task': task, 'answer': answer, **operands}}


def generate(seed=1337, digits=2, word_len=5, n_train=4000, n_val=100, n_test=200, tasks=TASKS):
    """{split: [record, ...]}, n_split records of every task per split, shuffled; deterministic in the seed."""
    rng = random.Random(seed)
    seen = set()  # (task, operands) of every problem so far: splits are disjoint, no problem repeats
    splits = {}
    for split, n in (('test', n_test), ('val', n_val), ('train', n_train)):
        records = []
        for task in tasks:
            made, misses = 0, 0
            while made < n:
                operands, answer = make_problem(task, rng, digits, word_len)
                key = (task, tuple(sorted(operands.items())))
                if key in seen:
                    misses += 1
                    if misses > 20 * n + 1000:
                        raise TaskError(f"too few distinct {task} problems for {n_train}+{n_val}+{n_test} of them at "
                                        f"digits={digits}, word_len={word_len}; ask for fewer or make them harder")
                    continue
                seen.add(key)
                records.append(make_record(task, operands, answer, rng))
                made += 1
        rng.shuffle(records)
        splits[split] = records
    return splits



def load_records(data_dir, split, max_examples=0):
    path = os.path.join(data_dir, f'{split}.jsonl')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no {path}; make the task suite first: python -m prepare.tasks")
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


@torch.no_grad()
def answer_loss(model, tok, records, batch_size=64):
    """{task: {'loss', 'bpb'}}: the loss of the records' own answers under the model, read with the question
    before them (SFT's loss: nats per token over each answer and its <|end|>), and the same in bits per byte
    of the answers' text, which compares models of different tokenizers."""
    device, sums = next(model.parameters()).device, {}
    for start in range(0, len(records), batch_size):
        chunk = [r for r in records[start:start + batch_size] if r['messages'][-1]['role'] == 'assistant']
        if not chunk:
            continue
        rendered = [render_chat(tok, r['messages']) for r in chunk]
        T = max(len(ids) for ids, _ in rendered) - 1
        x, y = torch.zeros(len(chunk), T, dtype=torch.long), torch.full((len(chunk), T), -1, dtype=torch.long)
        for row, (ids, mask) in enumerate(rendered):  # right-padded: causal attention never looks at the padding
            x[row, :len(ids) - 1] = torch.tensor(ids[:-1])
            y[row, :len(ids) - 1] = torch.tensor([i if m else -1 for i, m in zip(ids[1:], mask[1:])])
        logp, _ = model(x.to(device), y.to(device), per_token=True)  # (B, T), 0 where y is -1
        for r, nll, n in zip(chunk, (-logp.double().sum(1)).tolist(), (y != -1).sum(1).tolist()):
            s = sums.setdefault(r['meta']['task'], [0.0, 0, 0])
            s[0], s[1], s[2] = s[0] + nll, s[1] + n, s[2] + len(r['messages'][-1]['content'].encode('utf-8'))
    return {task: {'loss': nll / n, 'bpb': nll / math.log(2) / max(1, n_bytes)} for task, (nll, n, n_bytes) in sums.items()}


def table(result):
    """The result as a text table; with answer_loss's figures merged in, their columns too."""
    losses = 'loss' in next(iter(result['tasks'].values()), {})
    lines = [f"{'task':<10}{'n':>6}{'correct':>9}{'accuracy':>10}" + (f"{'loss':>9}{'bits/byte':>11}" if losses else '')]
    for task, row in result['tasks'].items():
        lines.append(f"{task:<10}{row['n']:>6}{row['correct']:>9}{row['accuracy']:>10.3f}"
                     + (f"{row['loss']:>9.3f}{row['bpb']:>11.3f}" if losses else ''))
    lines.append(f"{'mean':<10}{result['n']:>6}{'':>9}{result['mean']:>10.3f}"
                 + (f"{result['loss']:>9.3f}{result['bpb']:>11.3f}" if losses else ''))
    return '\n'.join(lines)

