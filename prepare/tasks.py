"""
A suite of chat tasks whose answers can be checked exactly, made offline from a seed.

    python -m prepare.tasks                       # char-level -> data/tasks/
    python -m prepare.tasks --tokenizer=gpt2      # GPT-2 BPE, chat tokens at 50257...
    python -m prepare.tasks --tokenizer=bpe       # a BPE learned from the train conversations, chat tokens after it
    python -m prepare.tasks --digits=3 --word_len=7 --n_train=8000   # harder and more
    python -m prepare.tasks --show=3              # then print 3 train conversations coloured by the loss mask
    python -m prepare.tasks --tools --digits=6    # the suite with tools, what people type -> data/tasks-tools/

Five tasks, each a user question and a short, bare assistant answer:
  add      What is 48+75?                        123      numbers of up to --digits digits
  sub      What is 75-48?                        27       never negative
  reverse  Reverse the word kvit.                tivk     made-up words of 3 to --word_len letters
  sort     Sort the letters of kvit.             iktv
  count    How many times does a appear in abaca?  3      words of 3 to --word_len + 2 letters
Each question has several phrasings. No problem (a task and its operands, in any phrasing) is in
two splits, nor twice in one. With --tools, the broader suite of seedgpt/tasks.py (arithmetic of 1 to
--digits digits in any combination, expressions, English words, greetings and questions outside the
suite, conversations of 2 to 4 turns) answered through calc and count, and a gen split in phrasings and
digit-length pairs that training never sees.

Output in data/tasks/ (or --out_dir), written to a temp dir and renamed when whole:
  {train,val,test}.jsonl  {"messages": [user, assistant], "meta": {"task", "answer", operands}}
  gen.jsonl               with --tools: the generalization split (questions only, as test)
  {train,val}.bin         token ids of every conversation, back to back (uint16)
  {train,val}.mask.bin    uint8 per token: 1 on assistant content and its <|end|> (the loss), else 0
  {train,val}.idx.bin     int64 offset of each conversation's first token in {split}.bin
  meta.json               tokenizer, vocab_size (the chat tokens included), special_tokens, counts
  tokenizer.json          with --tokenizer=bpe: the learned BPE, its special tokens <|endoftext|> and the chat tokens
check(task, meta, answer) in seedgpt/tasks.py is the one judge of an answer, for chat/eval.py and for RL rewards.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.tasks ...")

import json
import os
import shutil
import string
import sys
from dataclasses import asdict, dataclass

import numpy as np

from seedgpt.chat import CHAT_SPECIALS, chat_ids, loss_text, render_chat
from seedgpt.config import load_config
from seedgpt.dataset import DATA_ROOT, publish, write_tokenizer
from seedgpt.tasks import TASKS, TOOL_TASKS, TaskError, generate
from seedgpt.tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer, load_tokenizer, train_bpe


def make_tokenizer(name, splits, vocab_size):
    if name == 'gpt2':
        return GPT2Tokenizer(CHAT_SPECIALS)
    if name == 'bpe':  # learned from the train conversations' text alone; the chat tokens are its special tokens
        texts = (m['content'] for r in splits['train'] for m in r['messages'])
        return BPETokenizer(train_bpe(texts, vocab_size, CHAT_SPECIALS))
    # every printable ASCII character, so that chat accepts any typed English, and anything else the data has
    chars = set(string.printable) - set('\t\r\x0b\x0c')
    for records in splits.values():
        for r in records:
            for m in r['messages']:
                chars.update(m['content'])
    return CharTokenizer(sorted(chars), CHAT_SPECIALS)

def prepare(out_dir=None, tokenizer='char', seed=1337, digits=2, word_len=0, n_train=4000, n_val=100, n_test=200,
            quiet=False, vocab_size=512, tools=False, n_gen=0, max_turns=4):
    """Generate, tokenize and write the suite to out_dir (default data/tasks); returns the meta dict."""
    if tokenizer not in ('char', 'gpt2', 'bpe'):
        raise TaskError(f"tokenizer must be 'char', 'gpt2' or 'bpe', got {tokenizer!r}")
    word_len = word_len or (15 if tools else 5)
    n_gen = (n_gen or n_test) if tools else 0
    if digits < 1 or word_len < 1 or min(n_train, n_val, n_test) < 1:
        raise TaskError("digits, word_len and the split sizes must be at least 1")
    if tools and max_turns < 1:
        raise TaskError(f"--max_turns must be at least 1, got {max_turns}")
    if tools and word_len < 2:
        raise TaskError(f"with tools the words are of 2 to --word_len letters: --word_len must be at least 2, "
                        f"got {word_len}")
    if tokenizer == 'bpe' and vocab_size < 258:
        raise TaskError(f"vocab_size must be at least 258 for a byte-level BPE, got {vocab_size}")
    out_dir = out_dir or os.path.join(DATA_ROOT, 'tasks-tools' if tools else 'tasks')
    splits = generate(seed, digits, word_len, n_train, n_val, n_test, tools=tools, n_gen=n_gen, max_turns=max_turns)
    tok = make_tokenizer(tokenizer, splits, vocab_size)
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
            if split in ('test', 'gen'):
                continue  # chat/eval.py renders their questions itself, as prompts
            lengths = np.array([len(ids) for ids, _ in rendered], dtype=np.int64)
            ids = np.array([i for conv, _ in rendered for i in conv], dtype=dtype)
            mask = np.array([k for _, m in rendered for k in m], dtype=np.uint8)
            ids.tofile(os.path.join(tmp_dir, f'{split}.bin'))
            mask.tofile(os.path.join(tmp_dir, f'{split}.mask.bin'))
            (np.cumsum(lengths) - lengths).tofile(os.path.join(tmp_dir, f'{split}.idx.bin'))
            counts[f'{split}_tokens'] = len(ids)
            counts[f'{split}_loss_tokens'] = int(mask.sum())
            # the text those tokens stand for (<|end|> stands for none): bits per byte's denominator
            counts[f'{split}_loss_bytes'] = sum(len(loss_text(tok, ids, m).encode('utf-8')) for ids, m in rendered)
        meta = dict(format='chat', tokenizer=tokenizer, vocab_size=tok.vocab_size, dtype=np.dtype(dtype).name,
                    special_tokens=tok.special_ids, **counts,
                    conversations={s: len(r) for s, r in splits.items()},
                    max_conversation_tokens=longest,  # block_size >= this - 1 holds every conversation whole
                    tasks=list(TOOL_TASKS if tools else TASKS), source='prepare/tasks.py',
                    settings=dict(seed=seed, digits=digits, word_len=word_len, n_train=n_train, n_val=n_val,
                                  n_test=n_test, tools=tools,
                                  **({'n_gen': n_gen, 'max_turns': max_turns} if tools else {})),
                    split='disjoint problems: none in two splits, none twice'
                          + ('; gen in phrasings and digit-length pairs train never has' if tools else ''))
        if tokenizer == 'char':
            meta['chars'] = tok.chars
        else:
            meta['eot_token'] = tok.eot
        if tokenizer == 'bpe':
            meta['tokenizer_json'] = tok.tok.to_str()
            write_tokenizer(tmp_dir, meta)
        publish(tmp_dir, out_dir, meta)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not quiet:
        n = meta['conversations']
        print(f"wrote {out_dir}: {n['train']:,} train, {n['val']:,} val, {n['test']:,} test"
              + (f" and {n['gen']:,} gen" if 'gen' in n else '') + " conversations, "
              f"{meta['train_tokens']:,} train tokens ({meta['train_loss_tokens']:,} in the loss), "
              f"vocab {tok.vocab_size:,}, longest conversation {longest} tokens")
    return meta


def show(data_dir, tok, n, split='train', file=sys.stdout):
    """Print the first n conversations of a written split: loss tokens in green (a tool call in cyan), tool
    results in yellow, the rest in grey."""
    meta = json.load(open(os.path.join(data_dir, 'meta.json'), encoding='utf-8'))
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=meta['dtype'])
    mask = np.fromfile(os.path.join(data_dir, f'{split}.mask.bin'), dtype=np.uint8)
    starts = np.fromfile(os.path.join(data_dir, f'{split}.idx.bin'), dtype=np.int64)
    ends = list(starts[1:]) + [len(ids)]
    special = chat_ids(tok)
    colour = {'given': '\033[90m', 'learned': '\033[32m', 'call': '\033[36m', 'result': '\033[33m'}
    file.write(f"{colour['learned']}green: in the loss (mask 1)\033[0m  {colour['call']}cyan: a tool call, in the loss"
               f"\033[0m  {colour['result']}yellow: a tool's result, given\033[0m  {colour['given']}grey: given, not "
               f"learned (mask 0)\033[0m\n")
    for s, e in list(zip(starts, ends))[:n]:
        parts, part = [], None
        for i in range(s, e):  # each token's part, from its mask and the chat token that opened its span
            t = int(ids[i])
            if t in (special['assistant'], special['user'], special['system'], special.get('tool')):
                opened = t
            elif t == special.get('call'):
                opened = t
            kind = ('call' if opened == special.get('call') else 'learned') if mask[i] else \
                ('result' if opened == special.get('tool') and t != special.get('tool') else 'given')
            if kind != part:
                parts.append((kind, []))
                part = kind
            parts[-1][1].append(t)
            if t == special['end']:
                opened = None
        file.write(''.join(colour[k] + tok.decode(p) + '\033[0m' for k, p in parts) + '\n')


@dataclass
class Config:
    tokenizer: str = 'char'  # 'char', 'gpt2' (the chat tokens take ids 50257...) or 'bpe' (learned from train)
    vocab_size: int = 512  # tokenizer=bpe: tokens before the chat tokens (fewer if the questions run out of merges)
    out_dir: str = ''  # output directory; '' is data/tasks
    seed: int = 1337  # the same seed gives the same suite
    digits: int = 2  # add and sub: numbers of up to this many digits (with tools: 1 to this many, any two lengths)
    tools: bool = False  # the suite people type, answered through calc and count, into data/tasks-tools; --digits=6
    word_len: int = 0  # reverse and sort: words of 3 to this many letters; 0 is 5 (with tools: 2 to 15 letters)
    n_train: int = 4000  # train conversations per task (with tools, times the task's share: seedgpt/tasks.py's MIX)
    n_val: int = 100  # val conversations per task
    n_test: int = 200  # test questions per task
    n_gen: int = 0  # with tools: gen questions per task; 0 is n_test
    max_turns: int = 4  # with tools: turns of a conversation at most; 1 is single questions and no follow-ups
    show: int = 0  # then print this many rendered train conversations, coloured by the loss mask


def main(cfg):
    args = asdict(cfg)
    n_show = args.pop('show')
    args['out_dir'] = args['out_dir'] or None
    try:
        meta = prepare(**args)
    except TaskError as e:
        raise SystemExit(f"error: {e}")
    if n_show:
        out_dir = cfg.out_dir or os.path.join(DATA_ROOT, 'tasks-tools' if cfg.tools else 'tasks')
        show(out_dir, load_tokenizer(meta), n_show)


if __name__ == '__main__':
    main(load_config(Config))
