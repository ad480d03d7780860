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

With tools=True (prepare.tasks --tools) the suite teaches tool use (seedgpt/tools.py):
  add, sub, mul  numbers of 2 to `digits` digits (both of the same length), answered through calc
  count          answered through count
  reverse, sort  no tool: the model can do them itself, and learns not to call where it need not
A tool task's conversation is the question, the assistant's call, the tool's result and the answer:
    user: What is 4812+7533?   assistant: calc(4812+7533) (a call)   tool: 12345   assistant: 12345
"""
import json
import math
import os
import random
import string
import sys

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import loss_text, render_chat, render_prompt
from seedgpt.tools import run_tool

TASKS = ('add', 'sub', 'reverse', 'sort', 'count')


TOOL_TASKS = ('add', 'sub', 'mul', 'reverse', 'sort', 'count')  # the suite with tools


ARITHMETIC = {'add': '+', 'sub': '-', 'mul': '*'}  # the calc expression of each arithmetic task


LETTERS = string.ascii_lowercase


PHRASES = {
    'add': ["What is {a}+{b}?", "What is {a} + {b}?", "{a}+{b}=?", "Compute {a}+{b}.", "Add {a} and {b}.",
            "What is the sum of {a} and {b}?", "Calculate {a} plus {b}."],
    'sub': ["What is {a}-{b}?", "What is {a} - {b}?", "{a}-{b}=?", "Compute {a}-{b}.", "Subtract {b} from {a}.",
            "What is {a} minus {b}?", "Calculate {a} minus {b}."],
    'mul': ["What is {a}*{b}?", "What is {a} * {b}?", "{a}*{b}=?", "Compute {a}*{b}.", "Multiply {a} by {b}.",
            "What is the product of {a} and {b}?", "What is {a} times {b}?"],
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
    if task not in TOOL_TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TOOL_TASKS)}")
    if task in ('add', 'sub', 'mul', 'count'):
        return _as_int(answer) == int(meta['answer'])
    return answer.strip() == meta['answer']


def _word(rng, lo, hi, alphabet=LETTERS):
    return ''.join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def make_problem(task, rng, digits, word_len, tools=False):
    # without tools numbers of up to `digits` digits; with them, both of d digits, d from 2 to `digits`
    lo, top = 0, 10 ** digits - 1
    if tools and task in ARITHMETIC:
        d = rng.randint(min(2, digits), digits)
        lo, top = 10 ** (d - 1), 10 ** d - 1
    if task == 'add':
        a, b = rng.randint(lo, top), rng.randint(lo, top)
        return dict(a=a, b=b), str(a + b)
    if task == 'sub':
        a, b = sorted((rng.randint(lo, top), rng.randint(lo, top)), reverse=True)
        return dict(a=a, b=b), str(a - b)
    if task == 'mul':
        a, b = rng.randint(lo, top), rng.randint(lo, top)
        return dict(a=a, b=b), str(a * b)
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


def tool_call(task, operands):
    """(tool name, its arguments) that answer a task's question, or None for a task done without one."""
    if task in ARITHMETIC:
        return 'calc', {'expression': f"{operands['a']}{ARITHMETIC[task]}{operands['b']}"}
    if task == 'count':
        return 'count', {'letter': operands['c'], 'word': operands['w']}
    return None


def make_record(task, operands, answer, rng, tools=False):
    question = rng.choice(PHRASES[task]).format(**operands)
    messages = [{'role': 'user', 'content': question}]
    meta = {'task': task, 'answer': answer, **operands}
    if task in ARITHMETIC:
        meta['digits'] = len(str(operands['a']))
    call = tool_call(task, operands) if tools else None
    if call is not None:  # the call, the tool's result (run here, as generation will run it), then the answer
        name, arguments = call
        messages += [{'role': 'assistant', 'content': '', 'tool_calls': [
                         {'type': 'function', 'function': {'name': name, 'arguments': json.dumps(arguments)}}]},
                     {'role': 'tool', 'content': run_tool(name, arguments)}]
        meta['tool'] = name
    messages.append({'role': 'assistant', 'content': answer})
    return {'messages': messages, 'meta': meta}


def generate(seed=1337, digits=2, word_len=5, n_train=4000, n_val=100, n_test=200, tasks=None, tools=False):
    """{split: [record, ...]}, n_split records of every task per split, shuffled; deterministic in the seed.
    tasks: default TASKS, or TOOL_TASKS with tools."""
    tasks = tasks or (TOOL_TASKS if tools else TASKS)
    rng = random.Random(seed)
    seen = set()  # (task, operands) of every problem so far: splits are disjoint, no problem repeats
    splits = {}
    for split, n in (('test', n_test), ('val', n_val), ('train', n_train)):
        records = []
        for task in tasks:
            made, misses = 0, 0
            while made < n:
                operands, answer = make_problem(task, rng, digits, word_len, tools)
                key = (task, tuple(sorted(operands.items())))
                if key in seen:
                    misses += 1
                    if misses > 20 * n + 1000:
                        raise TaskError(f"too few distinct {task} problems for {n_train}+{n_val}+{n_test} of them at "
                                        f"digits={digits}, word_len={word_len}; ask for fewer or make them harder")
                    continue
                seen.add(key)
                records.append(make_record(task, operands, answer, rng, tools))
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
    """The conversation up to the first expected assistant turn (the answer, or the call before it)."""
    messages = record['messages']
    first = next((i for i, m in enumerate(messages) if m['role'] == 'assistant'), len(messages))
    return messages[:first]


def score(records, answers, traces=None):
    """{'tasks': {task: {n, correct, accuracy}}, 'mean': mean accuracy over tasks, 'n': questions}; with
    arithmetic of several lengths, 'digits': {task: {d: accuracy}}; with traces (seedgpt/agent.py) on the
    suite with tools, 'tools': how often a tool was called where the suite needs one (recall) and where it does not
    (needless), and the share of calls that were malformed."""
    tasks, digits = {}, {}
    for record, answer in zip(records, answers, strict=True):
        meta = record['meta']
        row = tasks.setdefault(meta['task'], {'n': 0, 'correct': 0})
        right = check(meta['task'], meta, answer)
        row['n'] += 1
        row['correct'] += right
        if 'digits' in meta:
            digits.setdefault(meta['task'], {}).setdefault(meta['digits'], []).append(right)
    for row in tasks.values():
        row['accuracy'] = row['correct'] / row['n']
    mean = sum(row['accuracy'] for row in tasks.values()) / max(1, len(tasks))
    result = {'tasks': dict(sorted(tasks.items())), 'mean': mean, 'n': len(records)}
    if any(len(by) > 1 for by in digits.values()):
        result['digits'] = {task: {d: sum(v) / len(v) for d, v in sorted(by.items())}
                            for task, by in sorted(digits.items())}
    if traces is not None and any(r['meta'].get('tool') for r in records):  # the suite with tools
        needed = [t.called for r, t in zip(records, traces) if r['meta'].get('tool')]
        needless = [t.called for r, t in zip(records, traces) if not r['meta'].get('tool')]
        calls = sum(len(t.calls) for t in traces)
        result['tools'] = {'called_when_needed': sum(needed) / max(1, len(needed)), 'needed': len(needed),
                           'called_when_not': sum(needless) / max(1, len(needless)), 'not_needed': len(needless),
                           'calls': calls, 'malformed': sum(t.malformed for t in traces) / max(1, calls)}
    return result


def accuracy(model, tok, records, batch_size=64, max_new_tokens=32, progress=False, max_calls=3, **sampling):
    """score() of the model's answers to the records' questions, answered batch_size at a time; a model
    that knows tools calls them (seedgpt/agent.py), up to max_calls per answer."""
    answers, traces, correct = [], [], 0
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [render_prompt(tok, question(r)) for r in chunk]
        answered = generate_with_tools(model, tok, prompts, max_new_tokens, max_calls, **sampling)
        for record, trace in zip(chunk, answered):
            traces.append(trace)
            answers.append(trace.answer)
            correct += check(record['meta']['task'], record['meta'], answers[-1])
        if progress:
            sys.stderr.write(f"\reval: {len(answers)}/{len(records)} answered, {correct} right")
            sys.stderr.flush()
    if progress:
        sys.stderr.write('\n')
    return score(records, answers, traces)


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
        for r, (ids, mask), nll, n in zip(chunk, rendered, (-logp.double().sum(1)).tolist(), (y != -1).sum(1).tolist()):
            s = sums.setdefault(r['meta']['task'], [0.0, 0, 0])
            # the bytes of what the loss covers: the answers' text (and calls'), not their chat tokens
            s[0], s[1], s[2] = s[0] + nll, s[1] + n, s[2] + len(loss_text(tok, ids, mask).encode('utf-8'))
    return {task: {'loss': nll / n, 'bpb': nll / math.log(2) / max(1, n_bytes)}
            for task, (nll, n, n_bytes) in sums.items()}


def table(result):
    """The result as a text table; with answer_loss's figures merged in, their columns too."""
    losses = 'loss' in next(iter(result['tasks'].values()), {})
    head = f"{'task':<10}{'n':>6}{'correct':>9}{'accuracy':>10}"
    lines = [head + (f"{'loss':>9}{'bits/byte':>11}" if losses else '')]
    for task, row in result['tasks'].items():
        lines.append(f"{task:<10}{row['n']:>6}{row['correct']:>9}{row['accuracy']:>10.3f}"
                     + (f"{row['loss']:>9.3f}{row['bpb']:>11.3f}" if losses else ''))
    lines.append(f"{'mean':<10}{result['n']:>6}{'':>9}{result['mean']:>10.3f}"
                 + (f"{result['loss']:>9.3f}{result['bpb']:>11.3f}" if losses else ''))
    for task, by in result.get('digits', {}).items():
        lines.append(f"{task} by digits: " + ', '.join(f"{d}: {acc:.3f}" for d, acc in by.items()))
    if 'tools' in result:
        t = result['tools']
        lines.append(f"tool called where needed {t['called_when_needed']:.3f} (of {t['needed']}), where not "
                     f"{t['called_when_not']:.3f} (of {t['not_needed']}); {t['calls']} calls, "
                     f"{t['malformed']:.3f} malformed")
    return '\n'.join(lines)

