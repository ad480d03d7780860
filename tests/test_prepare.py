"""prepare/corpus.py: meta.json, a deterministic split on document boundaries, nanoGPT parity, bad input."""
import itertools
import json
import os
import random
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_text, run_script, write
from seedgpt import dataset
from seedgpt.tokenizer import EOT, CharTokenizer

EOT_ID = 50256


def make_corpus(root):
    """Several documents over .txt, .md, a sub-directory and a .jsonl; returns (dir, documents in corpus order)."""
    d = root / 'docs'
    docs = {
        'a.txt': "Alpha: the first file.\n中文也可以。\n" + make_text(60, seed=1),
        'b.md': "# Beta\n\nSome *markdown* with a blank line above.\n" + make_text(40, seed=2),
        'sub/e.txt': "Epsilon lives in a sub-directory.\n" + make_text(50, seed=3),
        'sub/f.txt': "Phi: no trailing newline" + make_text(30, seed=4).rstrip('\n'),
    }
    for name, text in docs.items():
        write(d / name, text)
    lines = ["Gamma line one, 第一行.", "Delta line two\nwith a newline inside.", make_text(40, seed=5)]
    jsonl = '\n'.join(json.dumps({'id': i, 'text': t}, ensure_ascii=False) for i, t in enumerate(lines))
    write(d / 'c.jsonl', jsonl + '\n\n')  # a trailing blank line is skipped
    write(d / 'ignored.py', "print('not a text file')\n")
    # os.walk order: files of a directory sorted, then its sub-directories
    ordered = [docs['a.txt'], docs['b.md'], *lines, docs['sub/e.txt'], docs['sub/f.txt']]
    return d, ordered


def assign(docs, splits, encode, sep):
    """Match each split's contents to documents in corpus order, each followed by sep.

    Returns {split: [document index, ...]}; fails unless every document lands whole in exactly one split.
    """
    pos = {s: 0 for s in splits}
    where = {s: [] for s in splits}
    for i, doc in enumerate(docs):
        want = list(encode(doc)) + list(sep)
        hits = [s for s in splits if list(splits[s][pos[s]:pos[s] + len(want)]) == want]
        assert len(hits) == 1, f"document {i} is not whole in exactly one split"
        pos[hits[0]] += len(want)
        where[hits[0]].append(i)
    assert all(pos[s] == len(splits[s]) for s in splits), "a split holds more than the documents"
    return where


def read_split(out, meta):
    return {s: np.fromfile(out / f'{s}.bin', dtype=meta['dtype']).tolist() for s in ('train', 'val')}


def test_char_multi_document(tmp_path):
    d, docs = make_corpus(tmp_path)
    out = tmp_path / 'out'
    meta = dataset.prepare([str(d)], tokenizer='char', out_dir=str(out), val_fraction=0.5, block_size=8, quiet=True)
    assert meta == json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    chars = sorted(set(''.join(docs)) | {'\n'})  # documents are joined by a blank line
    assert meta['tokenizer'] == 'char' and meta['chars'] == chars and meta['vocab_size'] == len(chars)
    assert meta['dtype'] == 'uint16' and meta['documents'] == len(docs)
    assert meta['characters'] == sum(map(len, docs))
    for s in ('train', 'val'):
        assert os.path.getsize(out / f'{s}.bin') == 2 * meta[f'{s}_tokens'] > 0
    assert meta['train_tokens'] + meta['val_tokens'] == sum(len(doc) + 2 for doc in docs)
    tok = CharTokenizer(chars)
    where = assign(docs, read_split(out, meta), tok.encode, tok.encode('\n\n'))
    assert where['train'] and where['val']
    for s in ('train', 'val'):  # the UTF-8 bytes of each split's documents and blank lines: bits per byte's denominator
        assert meta[f'{s}_bytes'] == sum(len(docs[i].encode('utf-8')) + 2 for i in where[s])


def test_gpt2_multi_document(tmp_path, gpt2_enc, monkeypatch):
    monkeypatch.setattr(dataset, 'gpt2_encoding', lambda: gpt2_enc)  # build it once per session
    d, docs = make_corpus(tmp_path)
    out = tmp_path / 'out'
    meta = dataset.prepare([str(d)], tokenizer='gpt2', out_dir=str(out), val_fraction=0.5, block_size=8, quiet=True)
    assert meta['tokenizer'] == 'gpt2' and meta['vocab_size'] == 50257 and meta['eot_token'] == EOT_ID
    assert meta['dtype'] == 'uint16' and 'chars' not in meta
    splits = read_split(out, meta)
    for s in ('train', 'val'):
        assert os.path.getsize(out / f'{s}.bin') == 2 * meta[f'{s}_tokens'] == 2 * len(splits[s])
        assert splits[s][-1] == EOT_ID
    assert sum(splits[s].count(EOT_ID) for s in splits) == len(docs)  # one <|endoftext|> after each document
    where = assign(docs, splits, gpt2_enc.encode_ordinary, [EOT_ID])
    assert where['train'] and where['val']
    for s in ('train', 'val'):  # <|endoftext|> stands for no text
        assert meta[f'{s}_bytes'] == sum(len(docs[i].encode('utf-8')) for i in where[s])


def test_text_containing_eot_string_is_not_a_separator(tmp_path, gpt2_enc, monkeypatch):
    monkeypatch.setattr(dataset, 'gpt2_encoding', lambda: gpt2_enc)
    write(tmp_path / 'a.txt', "a document that mentions " + EOT + " in its text\n" * 20)
    write(tmp_path / 'b.txt', make_text(200))
    write(tmp_path / 'c.jsonl', json.dumps({'text': EOT}) + '\n')  # a document that is exactly the string
    meta = dataset.prepare([str(tmp_path / f) for f in ('a.txt', 'b.txt', 'c.jsonl')], tokenizer='gpt2',
                          out_dir=str(tmp_path / 'out'), block_size=8, quiet=True)
    splits = read_split(tmp_path / 'out', meta)
    assert sum(splits[s].count(EOT_ID) for s in splits) == 3


@pytest.mark.parametrize('tokenizer', ['char', 'gpt2'])
def test_split_is_deterministic(tmp_path, tokenizer, gpt2_enc, monkeypatch):
    monkeypatch.setattr(dataset, 'gpt2_encoding', lambda: gpt2_enc)
    d, _ = make_corpus(tmp_path)
    for out in ('out1', 'out2'):
        dataset.prepare([str(d)], tokenizer=tokenizer, out_dir=str(tmp_path / out), block_size=8, quiet=True)
    for f in ('train.bin', 'val.bin', 'meta.json'):
        assert (tmp_path / 'out1' / f).read_bytes() == (tmp_path / 'out2' / f).read_bytes()


def nanogpt_shakespeare_char(text):
    """nanoGPT's data/shakespeare_char/prepare.py, restated."""
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(text)
    train_data, val_data = text[:int(n * 0.9)], text[int(n * 0.9):]
    return chars, [stoi[c] for c in train_data], [stoi[c] for c in val_data]


@pytest.mark.parametrize('piece', [1 << 20, 7])  # 7: the single document arrives in many pieces
def test_single_document_matches_nanogpt(tmp_path, monkeypatch, piece):
    monkeypatch.setattr(dataset, 'PIECE', piece)
    text = make_text(3000, seed=7).replace('cat', 'Cat!') + "你好，世界。\n"
    write(tmp_path / 'input.txt', text)
    meta = dataset.prepare([str(tmp_path / 'input.txt')], tokenizer='char', out_dir=str(tmp_path / 'out'), quiet=True)
    chars, train_ids, val_ids = nanogpt_shakespeare_char(text)
    assert meta['chars'] == chars and meta['vocab_size'] == len(chars)
    splits = read_split(tmp_path / 'out', meta)
    assert splits['train'] == train_ids
    assert splits['val'] == val_ids


def test_gpt2_pieces_tokenize_like_the_whole_file(tmp_path, gpt2_enc, monkeypatch):
    """Streaming a file in pieces must give the same tokens as encoding it whole."""
    monkeypatch.setattr(dataset, 'gpt2_encoding', lambda: gpt2_enc)
    monkeypatch.setattr(dataset, 'PIECE', 16)
    # blank lines, indented lines and whitespace-only lines just before a cut point
    text = ''.join(f"line {i}.\n" + "\n" * (i % 3) + " " * (i % 2) + ("  indented\n" if i % 4 == 0 else "") +
                   (" \n" if i % 5 == 0 else "") for i in range(200))
    docs = [text, make_text(300, seed=9)]
    write(tmp_path / 'a.txt', docs[0])
    write(tmp_path / 'b.txt', docs[1])
    meta = dataset.prepare([str(tmp_path / 'a.txt'), str(tmp_path / 'b.txt')], tokenizer='gpt2',
                          out_dir=str(tmp_path / 'out'), block_size=8, quiet=True)
    assign(docs, read_split(tmp_path / 'out', meta), gpt2_enc.encode_ordinary, [EOT_ID])


def test_cut_rule_on_every_short_text(gpt2_enc):
    """Every cut iter_pieces would make in every 5-character text over characters that matter to GPT-2's
    pre-tokenizer (letters, contractions, digits, punctuation, spaces, CR, LF) tokenizes like the whole text."""
    n = 0
    for chars in itertools.product("al's1. \t\n\r", repeat=5):
        text = ''.join(chars)
        whole = gpt2_enc.encode_ordinary(text)
        for m in dataset.CUT.finditer(text[::-1]):
            cut = len(text) - 1 - m.start()
            n += 1
            assert gpt2_enc.encode_ordinary(text[:cut]) + gpt2_enc.encode_ordinary(text[cut:]) == whole, (text, cut)
    assert n > 10_000


def tricky_text(n_lines, seed=0):
    """Lines that stress GPT-2's pre-tokenizer where pieces are cut: blank, indented and whitespace-only
    lines, trailing spaces, contractions, digits, runs of punctuation, non-ASCII letters and spaces."""
    rnd = random.Random(seed)
    bits = ['line', "it's", "we'll", ' ', '  ', '\t', '42', '3.10', '...', '!?', '"', "'", '中文', 'é', '\xa0',
            '\u3000', '\x1c', '-', 'A', '😀']
    return ''.join(''.join(rnd.choice(bits) for _ in range(rnd.randint(0, 8))) + '\n' * rnd.randint(1, 3)
                   for _ in range(n_lines))


def pieces_of(tmp_path, text):
    pieces = list(dataset.iter_pieces(str(write(tmp_path / 'a.txt', text))))
    assert ''.join(pieces) == text
    assert max(map(len, pieces)) <= 5 * dataset.PIECE  # memory stays bounded
    return pieces


@pytest.mark.parametrize('newline', ['\n', '\r\n', '\r', ' ', ''])
def test_pieces_tokenize_like_the_whole_text(tmp_path, gpt2_enc, monkeypatch, newline):
    """LF, CRLF, CR and text without newlines, cut in many small pieces: the same GPT-2 tokens as whole."""
    monkeypatch.setattr(dataset, 'PIECE', 16)
    text = tricky_text(400).replace('\n', newline)
    pieces = pieces_of(tmp_path, text)
    assert len(pieces) > len(text) / 40
    assert [t for p in pieces for t in gpt2_enc.encode_ordinary(p)] == gpt2_enc.encode_ordinary(text)


def test_text_without_whitespace_is_cut_anyway(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, 'PIECE', 16)
    pieces_of(tmp_path, 'x' * 1000)


# prepare's peak RSS (KiB) in a fresh process after the small corpora, then after each large one: a peak
# only grows, so one process compares them all and imports torch once
PEAK_CHILD = r"""
import sys
from seedgpt import dataset
dataset.PIECE = 1 << 13
peak = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
out, small, large = sys.argv[1], sys.argv[2::2], sys.argv[3::2]
for path in small:
    dataset.prepare([path], tokenizer='char', out_dir=out, block_size=8, quiet=True)
print(peak())
for path in large:
    dataset.prepare([path], tokenizer='char', out_dir=out, block_size=8, quiet=True)
    print(peak())
"""


def test_peak_memory_is_flat(tmp_path):
    """A corpus 10x larger must not raise prepare's peak memory: CRLF text, text without newlines and
    text without any whitespace (a single huge pre-token, cut hard)."""
    kinds = {'crlf': lambda t: t.replace('\n', '\r\n'), 'no newlines': lambda t: t.replace('\n', ' '),
             'no whitespace': lambda t: ''.join(t.split())}
    text = make_text(40_000, seed=11)  # about 200 KB
    args = []
    for i, kind in enumerate(kinds.values()):
        args += [write(tmp_path / f'small{i}.txt', kind(text)), write(tmp_path / f'large{i}.txt', kind(text * 10))]
    p = run_script('-c', PEAK_CHILD, tmp_path / 'out', *args)
    assert p.returncode == 0, p.stderr
    small, *large = map(int, p.stdout.split())
    for kind, peak in zip(kinds, large):
        assert peak - small < 4 * 1024, f"{kind}: peak RSS {small} KiB for the small corpus, {peak} KiB for 10x"


def failing_encode(text):
    raise RuntimeError('the encoder failed')


@pytest.mark.parametrize('case', ['encoder_fails', 'too_small'])
def test_failed_prepare_leaves_no_thread_file_or_directory(tmp_path, gpt2_enc, monkeypatch, case):
    """An error mid-way closes the BPE thread pool and the output files and removes the partial output."""
    failing = SimpleNamespace(n_vocab=gpt2_enc.n_vocab, eot_token=EOT_ID, encode_ordinary=failing_encode)
    monkeypatch.setattr(dataset, 'gpt2_encoding', lambda: failing if case == 'encoder_fails' else gpt2_enc)
    inputs = [str(write(tmp_path / f'{c}.txt', make_text(500, seed=i))) for i, c in enumerate('abc')]
    threads, fds = set(threading.enumerate()), len(os.listdir('/proc/self/fd'))
    with pytest.raises(RuntimeError if case == 'encoder_fails' else dataset.CorpusError):
        dataset.prepare(inputs, tokenizer='gpt2', out_dir=str(tmp_path / 'out'), block_size=10 ** 6, quiet=True)
    assert not set(threading.enumerate()) - threads  # the pool's threads are gone
    assert len(os.listdir('/proc/self/fd')) == fds  # train.bin and val.bin are closed
    assert leftovers(tmp_path) == []


# ---- bad input: a one-line error, exit code 1, and nothing written

def bad_inputs(tmp):
    write(tmp / 'empty.txt', '')
    (tmp / 'emptydir').mkdir()
    (tmp / 'binary.txt').write_bytes(b'some text\x00\x01\x02 more')
    (tmp / 'latin1.txt').write_bytes(b'caf\xe9 au lait\n')
    write(tmp / 'nofield.jsonl', '{"text": "fine"}\n{"content": "no text field here"}\n')
    write(tmp / 'small.txt', make_text(30))
    return {
        'missing': ([tmp / 'nope.txt'], ['nope.txt', 'no such file']),
        'empty_dir': ([tmp / 'emptydir'], ['emptydir', 'no .txt']),
        'empty_file': ([tmp / 'empty.txt'], ['empty']),
        'binary': ([tmp / 'binary.txt'], ['binary.txt', 'NUL']),
        'latin1': ([tmp / 'latin1.txt'], ['latin1.txt', 'UTF-8']),
        'jsonl_field': ([tmp / 'nofield.jsonl'], ['nofield.jsonl:2', "'text'"]),
        'too_small': ([tmp / 'small.txt', '--block_size=256'], ['too small', 'block_size']),
    }


def check_failed(p, words):
    assert p.returncode != 0
    assert 'Traceback' not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr
    for w in words:
        assert w in errors[0], errors[0]


def leftovers(tmp):
    return sorted(n for n in os.listdir(tmp) if n.startswith('out'))


@pytest.mark.parametrize('case', ['missing', 'empty_dir', 'empty_file', 'binary', 'latin1', 'jsonl_field', 'too_small'])
def test_bad_input(tmp_path, case):
    args, words = bad_inputs(tmp_path)[case]
    p = run_script('-m', 'prepare.corpus', *args, '--tokenizer=char', '--name=x', f'--out_dir={tmp_path / "out"}')
    check_failed(p, words)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize('case', ['binary', 'too_small'])
def test_failed_prepare_keeps_old_dataset(tmp_path, case):
    out = tmp_path / 'out'
    write(tmp_path / 'good.txt', make_text(500))
    dataset.prepare([str(tmp_path / 'good.txt')], tokenizer='char', out_dir=str(out), block_size=8, quiet=True)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    args, words = bad_inputs(tmp_path)[case]
    check_failed(run_script('-m', 'prepare.corpus', *args, '--tokenizer=char', '--name=x', f'--out_dir={out}'), words)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert leftovers(tmp_path) == ['out']


# ---- a .jsonl line may escape a lone surrogate ("\ud800"): valid JSON, but no character of any text

@pytest.mark.parametrize('tokenizer', ['char', 'gpt2', 'bpe'])
def test_lone_surrogate_is_replaced_and_reported(tmp_path, tokenizer):
    """Each lone surrogate becomes U+FFFD (one character for one, so nothing shifts), the run says how many
    lines had one and where the first was; a proper escaped pair (an emoji) is kept whole."""
    lines = [json.dumps({'text': make_text(30, seed=i)}) for i in range(40)]
    lines[3] = '{"text": "a\\ud800b \\ud83d\\ude00 and \\udfff"}'
    lines[7] = '{"text": "c\\udc00d"}'
    write(tmp_path / 'c.jsonl', '\n'.join(lines) + '\n')
    out = tmp_path / 'out'
    p = run_script('-m', 'prepare.corpus', tmp_path / 'c.jsonl', f'--tokenizer={tokenizer}', '--name=x',
                   f'--out_dir={out}', '--block_size=8', '--vocab_size=300')
    assert p.returncode == 0 and 'Traceback' not in p.stderr, p.stderr
    warning = [line for line in p.stderr.splitlines() if 'surrogate' in line]
    assert len(warning) == 1 and '2 lines' in warning[0] and 'c.jsonl:4' in warning[0], p.stderr
    meta = json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    assert meta['lines_with_lone_surrogates'] == 2
    from seedgpt.tokenizer import load_tokenizer
    text = load_tokenizer(meta).decode(sum(read_split(out, meta).values(), []))
    assert 'a\ufffdb \U0001F600 and \ufffd' in text and 'c\ufffdd' in text


def test_chars_from_gives_a_corpus_the_ids_of_a_chat_suite(tmp_path, capsys):
    """A base model pretrained on a corpus made with chars_from=<the task suite> can be fine-tuned on the suite:
    every id means the same character in both (same_ids), and characters the suite lacks become '?', said."""
    from prepare import tasks
    from seedgpt.tokenizer import load_tokenizer, same_ids
    suite = tasks.prepare(out_dir=str(tmp_path / 'suite'), n_train=20, n_val=5, n_test=5, quiet=True)
    text = 'def f(x):\n    return x + 1  # café\n' * 50
    meta = dataset.prepare([str(write(tmp_path / 'a.txt', text))], tokenizer='char', out_dir=str(tmp_path / 'base'),
                           block_size=8, quiet=True, chars_from=str(tmp_path / 'suite'))
    assert meta['chars'] == suite['chars'] and same_ids(suite, meta)
    assert "outside the given vocabulary each become '?': 'é' (1 distinct)" in capsys.readouterr().err
    tok = load_tokenizer(meta)
    ids = np.fromfile(tmp_path / 'base' / 'train.bin', dtype=meta['dtype'])
    line = 'def f(x):\n    return x + 1  # caf?\n'
    assert tok.decode(ids[:len(line)].tolist()) == line
    with pytest.raises(dataset.CorpusError, match='chars_from'):
        dataset.prepare([str(tmp_path / 'a.txt')], tokenizer='gpt2', out_dir=str(tmp_path / 'x'), quiet=True,
                        chars_from=str(tmp_path / 'suite'))
