"""The trained BPE (--tokenizer=bpe): round trips, learned from train alone, its files, the streaming pipeline,
and a BPE dataset through train.py, sample.py and chat; bits per byte against a direct count."""
import json
import math
import os
import random

import numpy as np
import pytest
import torch

from conftest import make_text, run_script, run_train, write
from seedgpt import dataset
from seedgpt.chat import CHAT_SPECIALS
from seedgpt.data import bits_per_byte, load_meta, load_tokens
from seedgpt.tokenizer import EOT, BPETokenizer, load_tokenizer, same_ids, train_bpe

pytest.importorskip('tokenizers')

CHINESE = "你好，世界。机器学习很有趣！\n深度学习 (deep learning) 与 GPT 模型：2024 年。\n"
ODD = ["", " ", "  leading spaces", "tabs\tand\r\nCRLF\r\n", "trailing spaces   ", "\n\n\n", "émigré ünïcödé",
       "🙂 emoji 👩‍👩‍👧", "x" * 300, "<|endoftext|> typed", "1234567 3.14159", "def f(x):\n    return x ** 2\n"]


def rich_text(n_words, seed=0):
    """Made-up words of many lengths, common ones often (Zipf), in lines: enough distinct pairs that a BPE of
    a few hundred tokens never runs out of merges."""
    rnd = random.Random(1234)
    words = [''.join(rnd.choice('etaoinshrdlcumwfgypbvkjxqz'[:rnd.randint(8, 26)]) for _ in range(rnd.randint(1, 9)))
             for _ in range(2000)]
    rnd = random.Random(seed)
    picked = rnd.choices(words, weights=[1 / (i + 1) for i in range(len(words))], k=n_words)
    return ''.join(w + ('.\n' if rnd.random() < 0.1 else ' ') for w in picked)


@pytest.fixture(scope='module')
def bpe():
    """A 600-token BPE learned from prose and some Chinese."""
    return BPETokenizer(train_bpe([rich_text(3000, seed=s) for s in range(3)] + [CHINESE * 400], 600))


@pytest.mark.parametrize('text', [CHINESE, "完全没见过的汉字：龘靐齉", *ODD])
def test_round_trip(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text  # byte-level: any UTF-8 text, seen in training or not


def test_vocabulary_layout(bpe):
    """The bytes and merges, then <|endoftext|> closing the trained vocabulary, as in GPT-2; merges learned."""
    assert bpe.vocab_size == 600 and bpe.eot == 599 and bpe.special_ids == {}
    assert bpe.encode(EOT) == [599] and bpe.encode('a' + EOT + 'b') == bpe.encode('a') + [599] + bpe.encode('b')
    assert len(bpe.encode(rich_text(500, seed=9))) < len(rich_text(500, seed=9)) / 1.5  # merges shorten prose
    assert len(bpe.encode("机器学习")) < len("机器学习".encode('utf-8'))  # and the Chinese it saw


def test_chat_tokens_follow_and_are_never_read_from_text():
    specials = ['<|user|>', '<|end|>']
    tok = BPETokenizer(train_bpe([rich_text(500)], 300, specials))
    assert tok.eot == 299 and tok.special_ids == {'<|user|>': 300, '<|end|>': 301} and tok.vocab_size == 302
    ids = tok.encode('<|user|>hi<|end|>')
    assert max(ids) < 299 and tok.decode(ids) == '<|user|>hi<|end|>'  # typed, they stay text
    assert tok.decode([300, 301]) == '<|user|><|end|>'


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match='at least 258'):
        train_bpe(['abc'], 257)


def make_docs(root, n=40):
    """n documents of prose; returns their paths and which go to val."""
    paths = [write(root / 'docs' / f'd{i:02d}.txt', rich_text(800, seed=i)) for i in range(n)]
    val = [dataset.in_val(os.path.relpath(p, root / 'docs'), 0.1) for p in paths]
    assert any(val) and not all(val)
    return paths, val


def test_learned_from_train_only(tmp_path):
    """A word that only val documents hold is never merged; the val tokens still decode to the val text."""
    paths, val = make_docs(tmp_path)
    for p, v in zip(paths, val):
        if v:
            write(p, p.read_text() + ' QZXJQZXJ' * 2000)  # upper case: never in rich_text
    meta = dataset.prepare([str(tmp_path / 'docs')], tokenizer='bpe', vocab_size=600, out_dir=str(tmp_path / 'out'),
                          block_size=16, quiet=True)
    vocab = json.loads(meta['tokenizer_json'])['model']['vocab']
    assert len(vocab) == 599 and not [t for t in vocab if len(t) > 1 and set(t) & set('QZXJ')]  # ASCII reads as is
    assert len(load_tokenizer(meta).encode('QZXJQZXJ')) == 8  # unmerged: one token per letter
    tok = load_tokenizer(meta)
    ids = load_tokens(tmp_path / 'out', 'val', meta).tolist()
    assert tok.decode(ids) == ''.join(p.read_text() + EOT for p, v in zip(paths, val) if v)


def test_dataset_files_and_byte_counts(tmp_path):
    """meta.json and tokenizer.json hold the same tokenizer, Hugging Face's loader reads the file, load_tokenizer
    reads meta; each split's byte count is the UTF-8 size of its text (<|endoftext|> counts none)."""
    from tokenizers import Tokenizer
    paths, _ = make_docs(tmp_path)
    write(paths[0], CHINESE * 30 + paths[0].read_text())
    out = tmp_path / 'out'
    assert dataset.prepare([str(tmp_path / 'docs')], tokenizer='bpe', vocab_size=500, out_dir=str(out),
                          block_size=16, quiet=True) == load_meta(out)
    meta = load_meta(out)
    assert sorted(os.listdir(out)) == ['meta.json', 'tokenizer.json', 'train.bin', 'val.bin']
    assert (out / 'tokenizer.json').read_text(encoding='utf-8') == meta['tokenizer_json']
    assert meta['tokenizer'] == 'bpe' and meta['vocab_size'] == 500 and meta['eot_token'] == 499
    tok, hf = load_tokenizer(meta), Tokenizer.from_file(str(out / 'tokenizer.json'))
    assert hf.encode(CHINESE).ids == tok.encode(CHINESE)
    for split in ('train', 'val'):
        ids = load_tokens(out, split, meta).tolist()
        assert len(ids) == meta[f'{split}_tokens'] and tok.decode(ids).count(EOT) == ids.count(499) > 0
        assert meta[f'{split}_bytes'] == len(tok.decode(ids).replace(EOT, '').encode('utf-8'))


def test_pieces_tokenize_like_the_whole_file(tmp_path, monkeypatch):
    """Streamed in small pieces, a document gets the tokens it gets whole (GPT-2's pre-tokenizer, cut as for GPT-2)."""
    text = (rich_text(3000, seed=4) + CHINESE * 10).replace('\n', ' \n  ', 50)
    src = write(tmp_path / 'one.txt', text)
    whole = dataset.prepare([str(src)], tokenizer='bpe', vocab_size=400, out_dir=str(tmp_path / 'a'), block_size=8,
                           quiet=True)
    monkeypatch.setattr(dataset, 'PIECE', 257)
    cut = dataset.prepare([str(src)], tokenizer='bpe', vocab_size=400, out_dir=str(tmp_path / 'b'), block_size=8,
                         quiet=True)
    assert cut == {**whole, 'source': cut['source']}
    for split in ('train', 'val'):
        assert (tmp_path / 'a' / f'{split}.bin').read_bytes() == (tmp_path / 'b' / f'{split}.bin').read_bytes()
    tok = load_tokenizer(whole)
    train = load_tokens(tmp_path / 'a', 'train', whole).tolist()
    assert train == tok.encode(tok.decode(train))  # the file's first 90%, tokenized in one call


PEAK_CHILD = """
import sys
from seedgpt import dataset
dataset.PIECE = 1 << 13
peak = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
out, small, large = sys.argv[1:]
for path in (small, large):
    dataset.prepare([path], tokenizer='bpe', vocab_size=1000, out_dir=out, block_size=8, quiet=True)
    print(peak())
"""


def test_peak_memory_is_flat(tmp_path):
    """Learning and encoding a corpus 10x larger (the same words) must not raise the peak memory much."""
    text = make_text(40_000, seed=11)  # about 200 KB
    small, large = write(tmp_path / 'small.txt', text), write(tmp_path / 'large.txt', text * 10)
    p = run_script('-c', PEAK_CHILD, tmp_path / 'out', small, large)
    assert p.returncode == 0, p.stderr
    a, b = map(int, p.stdout.split())
    assert b - a < 8 * 1024, f"peak RSS {a} KiB for the small corpus, {b} KiB for 10x"


@pytest.mark.parametrize('case', ['vocab', 'binary'])
def test_bad_input_one_line_nothing_written(tmp_path, case):
    write(tmp_path / 'good.txt', make_text(500))
    (tmp_path / 'binary.txt').write_bytes(b'some text\x00\x01\x02 more')
    args, words = {'vocab': (['good.txt', '--vocab_size=100'], ['vocab_size', '258']),
                   'binary': (['binary.txt'], ['binary.txt', 'NUL'])}[case]
    p = run_script('-m', 'prepare.corpus', *[tmp_path / a if a.endswith('.txt') else a for a in args],
                   '--tokenizer=bpe', '--name=x', f'--out_dir={tmp_path / "out"}')
    assert p.returncode != 0 and 'Traceback' not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:') and all(w in lines[0] for w in words), p.stderr
    assert not [n for n in os.listdir(tmp_path) if n.startswith('out')]


def test_prepare_script_shows_progress_and_bytes_per_token(tmp_path):
    make_docs(tmp_path)
    p = run_script('-m', 'prepare.corpus', tmp_path / 'docs', '--tokenizer=bpe', '--vocab_size=300', '--name=x',
                   f'--out_dir={tmp_path / "out"}', '--block_size=16')
    assert p.returncode == 0, p.stderr
    assert 'learning the BPE (train split)' in p.stderr and 'tokenizing (bpe)' in p.stderr
    assert 'learned 300 tokens' in p.stdout and 'vocab 300, ' in p.stdout and 'bytes per token' in p.stdout


@pytest.fixture(scope='module')
def bpe_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('bpedata')
    write(root / 'zh.txt', ''.join(CHINESE + rich_text(40, seed=i) for i in range(200)))
    dataset.prepare([str(root / 'zh.txt')], tokenizer='bpe', vocab_size=600, out_dir=str(root / 'data'),
                   block_size=16, quiet=True)
    return root / 'data'


def test_bpe_dataset_trains_and_samples(tmp_path, bpe_data):
    """train.py on a BPE dataset logs bits per byte, sample.py decodes with the tokenizer the checkpoint carries
    (the dataset itself gone), and fine-tuning and distillation check the tokenizer is the same one."""
    out = tmp_path / 'out'
    losses = run_train(out, bpe_data, '--max_iters=20', '--eval_interval=10', '--learning_rate=3e-3')
    assert losses[20] < losses[1]
    meta = load_meta(bpe_data)
    evals = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines() if 'val_loss' in line]
    for r in evals:
        for split in ('train', 'val'):
            ratio = meta[f'{split}_tokens'] / meta[f'{split}_bytes']
            assert r[f'{split}_bpb'] == pytest.approx(r[f'{split}_loss'] * ratio / math.log(2), rel=1e-12)
    moved = tmp_path / 'moved'
    os.rename(bpe_data, moved)  # nothing may read the dataset's files
    try:
        p = run_script('sample.py', f'--out_dir={out}', '--start=你好', '--num_samples=1', '--max_new_tokens=30',
                       '--device=cpu', '--dtype=float32')
    finally:
        os.rename(moved, bpe_data)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('你好') and len(p.stdout) > 10
    other = tmp_path / 'other'
    dataset.prepare([str(bpe_data.parent / 'zh.txt')], tokenizer='bpe', vocab_size=300, out_dir=str(other),
                   block_size=16, quiet=True)
    assert same_ids(meta, meta) and not same_ids(load_meta(other), meta)
    with pytest.raises(SystemExit, match='another tokenizer'):
        run_train(tmp_path / 'ft', other, f'--init_from={out}', '--max_iters=1')
    # a teacher whose learned BPE has as many tokens but other merges: the same size, kind and special tokens
    # (all that distillation compared before it asked same_ids), yet its logits are over other tokens
    same_size = tmp_path / 'same_size'
    dataset.prepare([str(write(tmp_path / 'en.txt', rich_text(9000, seed=5)))], tokenizer='bpe', vocab_size=600,
                   out_dir=str(same_size), block_size=16, quiet=True)
    theirs = load_meta(same_size)
    assert all(theirs.get(k) == meta.get(k) for k in ('tokenizer', 'vocab_size', 'special_tokens'))
    assert not same_ids(theirs, meta)
    with pytest.raises(SystemExit, match='^error: the teacher .* another tokenizer or vocabulary'):
        run_train(tmp_path / 'kd', same_size, f'--teacher_dir={out}', '--max_iters=1')


def direct_bits_per_byte(model, data, tok, block_size):
    """The mean loss of every val token but the first, each predicted once, and bits per byte counted directly:
    the summed loss in bits over the UTF-8 bytes that the val tokens decode to; and how many were predicted."""
    ids = torch.tensor(data.astype(np.int64))
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, block_size):
            x, y = ids[s:s + block_size][None], ids[s + 1:s + block_size + 1][None]
            x = x[:, :y.size(1)]
            logits, _ = model(x, targets=y)
            nll += torch.nn.functional.cross_entropy(logits[0].double(), y[0], reduction='sum').item()
            n += y.size(1)
    n_bytes = len(tok.decode(data.tolist()).replace(EOT, '').encode('utf-8'))
    return nll / n, nll / math.log(2) / n_bytes, n


@pytest.mark.parametrize('which', ['char', 'bpe'])
def test_bits_per_byte_against_a_direct_count(tmp_path, char_data, bpe_data, which):
    """For a char dataset of ASCII text, bits per byte is the loss over ln 2, exactly; for a BPE one, the
    loss scaled by meta.json's counts matches the bits of the whole val text over its bytes."""
    from seedgpt.checkpoint import load_model
    data_dir = char_data if which == 'char' else bpe_data
    meta = load_meta(data_dir)
    if which == 'char':
        assert meta['train_bytes'] == meta['train_tokens'] and meta['val_bytes'] == meta['val_tokens']
        for loss in (0.3, 1.2345678, 2.0):
            assert bits_per_byte({'train': loss, 'val': loss}, meta) == {'train_bpb': loss / math.log(2),
                                                                        'val_bpb': loss / math.log(2)}
        return
    out = tmp_path / 'out'
    run_train(out, data_dir, '--max_iters=10')
    model, tok = load_model(out, 'cpu')
    loss, direct, n = direct_bits_per_byte(model, load_tokens(data_dir, 'val', meta), tok, 16)
    assert n > 1000  # the direct count leaves out the first token, which nothing predicts: 1 / n apart at most
    assert bits_per_byte({'val': loss}, meta)['val_bpb'] == pytest.approx(direct, rel=1.5 / n)
    assert bits_per_byte({'val': 1.0}, {'val_tokens': 10}) == {}  # a dataset made before byte counts: nothing


def test_chat_suite_with_bpe(tmp_path):
    """prepare.tasks --tokenizer=bpe: the chat tokens are the learned BPE's special tokens, after <|endoftext|>,
    and chat.eval answers with it."""
    from prepare import tasks
    out = tmp_path / 'tasks'
    meta = tasks.prepare(out_dir=str(out), tokenizer='bpe', n_train=40, n_val=8, n_test=10, quiet=True)
    tok = load_tokenizer(meta)
    assert tok.vocab_size == meta['vocab_size']
    assert tok.eot == meta['eot_token'] == meta['vocab_size'] - 1 - len(CHAT_SPECIALS)  # the chat tokens follow it
    assert (out / 'tokenizer.json').read_text(encoding='utf-8') == meta['tokenizer_json']
    run_train(tmp_path / 'sft', out, '--max_iters=3', '--block_size=64')
    p = run_script('-m', 'chat.eval', f'--out_dir={tmp_path / "sft"}', f'--data_dir={out}', '--max_examples=10',
                   '--device=cpu', '--dtype=float32', '--json')
    assert p.returncode == 0, p.stderr
    assert 'mean' in json.loads(p.stdout.splitlines()[-1])
