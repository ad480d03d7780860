"""
A suite of chat tasks whose answers can be checked exactly, made offline from a seed.

    python prepare/tasks.py                       # char-level -> data/tasks/
    python prepare/tasks.py --tokenizer=gpt2      # GPT-2 BPE, chat tokens at 50257...
    python prepare/tasks.py --digits=3 --word_len=7 --n_train=8000   # harder and more
    python prepare/tasks.py --show=3              # then print 3 train conversations coloured by the loss mask

Five tasks, each a user question and a short, bare assistant answer:
  add      What is 48+75?                        123      numbers of up to --digits digits
  sub      What is 75-48?                        27       never negative
  reverse  Reverse the word kvit.                tivk     made-up words of 3 to --word_len letters
  sort     Sort the letters of kvit.             iktv
  count    How many times does a appear in abaca?  3      words of 3 to --word_len + 2 letters
Each question has several phrasings. No problem (a task and its operands, in any phrasing) is in
two splits, nor twice in one.

Output in data/tasks/ (or --out_dir), written to a temp dir and renamed when whole:
  {train,val,test}.jsonl  {"messages": [user, assistant], "meta": {"task", "answer", operands}}
  {train,val}.bin         token ids of every conversation, back to back (uint16)
  {train,val}.mask.bin    uint8 per token: 1 on assistant content and its <|end|> (the loss), else 0
  {train,val}.idx.bin     int64 offset of each conversation's first token in {split}.bin
  meta.json               tokenizer, vocab_size (the chat tokens included), special_tokens, counts
check(task, meta, answer) below is the one judge of an answer, for eval.py and for RL rewards.
"""
import argparse
import json
import os
import random
import shutil
import string
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'prepare')]
from common import CHAT_SPECIALS, CharTokenizer, GPT2Tokenizer, render_chat  # noqa: E402
from corpus import publish  # noqa: E402

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


# -----------------------------------------------------------------------------
# the checker: the one place that says whether an answer is right

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


# -----------------------------------------------------------------------------
# the generators: one problem each, as (operands, answer); operands identify the problem

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


# -----------------------------------------------------------------------------
# tokenize and write

def make_tokenizer(name, splits):
    if name == 'gpt2':
        return GPT2Tokenizer(CHAT_SPECIALS)
    # every printable ASCII character, so that chat accepts any typed English, and anything else the data has
    chars = set(string.printable) - set('\t\r\x0b\x0c')
    for records in splits.values():
        for r in records:
            for m in r['messages']:
                chars.update(m['content'])
    return CharTokenizer(sorted(chars), CHAT_SPECIALS)

def prepare(out_dir=None, tokenizer='char', seed=1337, digits=2, word_len=5, n_train=4000, n_val=100, n_test=200,
            quiet=False):
    """Generate, tokenize and write the suite to out_dir (default data/tasks); returns the meta dict."""
    if tokenizer not in ('char', 'gpt2'):
        raise TaskError(f"tokenizer must be 'char' or 'gpt2', got {tokenizer!r}")
    if digits < 1 or word_len < 1 or min(n_train, n_val, n_test) < 1:
        raise TaskError("digits, word_len and the split sizes must be at least 1")
    out_dir = out_dir or os.path.join(ROOT, 'data', 'tasks')
    splits = generate(seed, digits, word_len, n_train, n_val, n_test)
    tok = make_tokenizer(tokenizer, splits)
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32

    tmp_dir = out_dir.rstrip('/') + f'.tmp{os.getpid()}'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        counts, longest = {}, 0
        for split, records in splits.items():
            with open(os.path.join(tmp_dir, f'{split}.jsonl'), 'w', encoding='utf-8') as f:
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + '\n')
            rendered = [render_chat(tok, r['messages']) for r in records]  # the test split too: longest counts it
            longest = max([longest] + [len(ids) for ids, _ in rendered])
            if split == 'test':
                continue  # eval.py renders test questions itself, as prompts
            lengths = np.array([len(ids) for ids, _ in rendered], dtype=np.int64)
            ids = np.array([i for conv, _ in rendered for i in conv], dtype=dtype)
            mask = np.array([k for _, m in rendered for k in m], dtype=np.uint8)
            ids.tofile(os.path.join(tmp_dir, f'{split}.bin'))
            mask.tofile(os.path.join(tmp_dir, f'{split}.mask.bin'))
            (np.cumsum(lengths) - lengths).tofile(os.path.join(tmp_dir, f'{split}.idx.bin'))
            counts[f'{split}_tokens'] = len(ids)
            counts[f'{split}_loss_tokens'] = int(mask.sum())
        meta = dict(format='chat', tokenizer=tokenizer, vocab_size=tok.vocab_size, dtype=np.dtype(dtype).name,
                    special_tokens=tok.special_ids, **counts,
                    conversations={s: len(r) for s, r in splits.items()},
                    max_conversation_tokens=longest,  # block_size >= this - 1 holds every conversation whole
                    tasks=list(TASKS), source='prepare/tasks.py',
                    settings=dict(seed=seed, digits=digits, word_len=word_len, n_train=n_train, n_val=n_val,
                                  n_test=n_test),
                    split='disjoint problems: none in two splits, none twice')
        if tokenizer == 'char':
            meta['chars'] = tok.chars
        else:
            meta['eot_token'] = tok.eot
        publish(tmp_dir, out_dir, meta)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not quiet:
        n = meta['conversations']
        print(f"wrote {out_dir}: {n['train']:,} train, {n['val']:,} val and {n['test']:,} test conversations, "
              f"{meta['train_tokens']:,} train tokens ({meta['train_loss_tokens']:,} in the loss), "
              f"vocab {tok.vocab_size:,}, longest conversation {longest} tokens")
    return meta


def show(data_dir, tok, n, split='train', file=sys.stdout):
    """Print the first n conversations of a written split: loss tokens in green, the rest in grey."""
    meta = json.load(open(os.path.join(data_dir, 'meta.json'), encoding='utf-8'))
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=meta['dtype'])
    mask = np.fromfile(os.path.join(data_dir, f'{split}.mask.bin'), dtype=np.uint8)
    starts = np.fromfile(os.path.join(data_dir, f'{split}.idx.bin'), dtype=np.int64)
    ends = list(starts[1:]) + [len(ids)]
    colour = {0: '\033[90m', 1: '\033[32m'}
    file.write(f"{colour[1]}green: in the loss (mask 1)\033[0m  {colour[0]}grey: given, not learned (mask 0)\033[0m\n")
    for s, e in list(zip(starts, ends))[:n]:
        line, run_start = '', s
        for i in range(s, e + 1):  # cut into runs of equal mask
            if i == e or mask[i] != mask[run_start]:
                line += colour[int(mask[run_start])] + tok.decode(ids[run_start:i].tolist()) + '\033[0m'
                run_start = i
        file.write(line + '\n')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tokenizer', default='char', choices=['char', 'gpt2'])
    p.add_argument('--out_dir', default=None, help='output directory (default data/tasks)')
    p.add_argument('--seed', type=int, default=1337, help='the same seed gives the same suite')
    p.add_argument('--digits', type=int, default=2, help='add and sub: numbers of up to this many digits')
    p.add_argument('--word_len', type=int, default=5, help='reverse and sort: words of 3 to this many letters')
    p.add_argument('--n_train', type=int, default=4000, help='train conversations per task')
    p.add_argument('--n_val', type=int, default=100, help='val conversations per task')
    p.add_argument('--n_test', type=int, default=200, help='test questions per task')
    p.add_argument('--show', type=int, default=0, help='then print this many rendered train conversations')
    args = vars(p.parse_args(argv))
    n_show = args.pop('show')
    try:
        meta = prepare(**args)
    except TaskError as e:
        raise SystemExit(f"error: {e}")
    if n_show:
        from common import load_tokenizer
        show(args['out_dir'] or os.path.join(ROOT, 'data', 'tasks'), load_tokenizer(meta), n_show)


if __name__ == '__main__':
    main()
