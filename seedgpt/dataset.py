"""
A text corpus to token files: the streaming pipeline behind every prepare/ script.

    prepare(inputs, name, tokenizer) -> data/<name>/{train,val}.bin and meta.json (and tokenizer.json for 'bpe')

Inputs are files, directories (searched for .txt, .md and .jsonl) or globs; every file must be UTF-8. A
.txt or .md file is one document, a .jsonl line is one document (its text field); a lone surrogate escaped
in a .jsonl line (\\ud800, no character) becomes U+FFFD, reported (iter_documents). In BPE mode (GPT-2's,
or 'bpe': one learned from the train split alone) each document ends with <|endoftext|>; in char mode
documents are joined by a blank line. meta.json counts each split's tokens and the bytes of text they stand
for (<|endoftext|> stands for none): bits per byte is loss * tokens / bytes / ln 2 (bits_per_byte in seedgpt/data.py).

The split is deterministic and falls on document boundaries: a document goes to val when a hash of its
name says so (about val_fraction of them). A corpus of a single document (tiny Shakespeare) is cut
instead: its first 90% of characters are train, the rest val, as nanoGPT does.

Tokens are flat uint16 (uint32 past 65535 ids). The corpus is streamed in pieces of about 1 MB, so memory
stays flat however large it is; BPE uses every core. Output is written to a temporary directory and
appears (publish) only when complete, so a failed run never leaves a torn dataset.
"""
import glob
import json
import os
import re
import shutil
import sys
import sysconfig
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from seedgpt.log import fmt_time
from seedgpt.tokenizer import EOT, BPETokenizer, gpt2_encoding, train_bpe

# the repo's data/: every prepare/ script writes its dataset under it unless told otherwise
DATA_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')


TEXT_EXTS = ('.txt', '.md', '.jsonl')


PIECE = 1 << 20  # characters read at a time


class CorpusError(Exception):
    """Bad input: the message names the problem and the fix."""


def find_files(inputs, exts=TEXT_EXTS):
    """Expand files, directories and globs into a sorted, de-duplicated list of files."""
    files = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches or not os.path.exists(matches[0]):
            raise CorpusError(f"{item}: no such file or directory; check the path")
        for path in matches:
            if os.path.isdir(path):
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames.sort()
                    files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(exts)]
            else:
                files.append(path)
    files = list(dict.fromkeys(files))
    if not files:
        raise CorpusError(f"no {'/'.join(exts)} files in {' '.join(inputs)}; point at text files")
    return files


def _checked(text, where):
    if '\x00' in text:
        raise CorpusError(f"{where} looks binary (it has NUL bytes); pass text files only")
    return text


# searched for in reversed text, so the first match is the last cut point: a space, tab, CR or LF whose
# preceding character is not whitespace (python's whitespace includes all of GPT-2's, so \S is safe)
CUT = re.compile(r'[ \t\n\r](?=\S)')


def iter_pieces(path):
    """A text file in pieces of about PIECE characters, each cut just before a whitespace character that
    follows a non-space (LF, CRLF or a space between words). GPT-2's pre-tokenizer never joins across such
    a cut: no pre-token holds a non-space then a space, and to the tokens before it that space reads
    like the end of the text. (A cut after whitespace is not safe: a run of whitespace before a word
    tokenizes differently whole and cut in two.)"""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            buf = ''
            while chunk := f.read(PIECE):
                start, buf = len(buf), buf + chunk
                # search the new chunk only: what is left of buf after the last cut holds no cut point
                m = CUT.search(buf[max(start, 1) - 1:][::-1])
                cut = len(buf) - 1 - m.start() if m else 0
                if not cut and len(buf) >= 4 * PIECE:
                    # megabytes without whitespace are one pathological pre-token: cut it anyway, memory stays bounded
                    cut = len(buf)
                if cut:
                    yield _checked(buf[:cut], path)
                    buf = buf[cut:]
            if buf:
                yield _checked(buf, path)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None


# a surrogate code point alone: json.loads pairs up proper escapes (an emoji's two), so any left is a lone
# half that no encoding can write; JSON allows the escape, so a scraped .jsonl may well hold one
LONE_SURROGATE = re.compile('[\ud800-\udfff]')


def iter_documents(files, text_field='text', fixed=None):
    """(name, pieces) for every document: a whole text file, or one line of a .jsonl file.

    Names are relative to the corpus's top directory, so a corpus splits the same wherever it lies.
    A lone surrogate in a .jsonl line becomes U+FFFD, one character for one so the split stays put;
    `fixed`, a list, collects the 'path:line' of each line that had one, for the run to report.
    """
    top = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    for path in files:
        name = os.path.relpath(os.path.abspath(path), top)
        if not path.endswith('.jsonl'):
            yield name, iter_pieces(path)  # strict UTF-8 decoding: no surrogate gets through a text file
            continue
        for lineno, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            text, n_lone = LONE_SURROGATE.subn('\ufffd', _json_text(line, text_field, f"{path}:{lineno}"))
            if n_lone and fixed is not None:
                fixed.append(f"{path}:{lineno}")
            yield f"{name}:{lineno}", [_checked(text, f"{path}:{lineno}")]


def _json_text(line, text_field, where):
    try:
        text = json.loads(line)[text_field]
    except (json.JSONDecodeError, TypeError, KeyError):
        raise CorpusError(f"{where}: expected a JSON object with a '{text_field}' string; "
                          f"fix the line or pass --text_field") from None
    if not isinstance(text, str):
        raise CorpusError(f"{where}: '{text_field}' is not a string")
    return text


def _lines(path):
    try:
        with open(path, encoding='utf-8') as f:
            yield from f
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None


def in_val(name, val_fraction):
    return zlib.crc32(name.encode('utf-8')) % 10000 < val_fraction * 10000


class Progress:
    """One line on stderr, rewritten in place: done/total, rate and time left."""

    def __init__(self, total, what):
        self.total, self.what, self.done, self.t0, self.shown = total, what, 0, time.time(), 0.0

    def update(self, n):
        if not n:
            return  # a separator: nothing read, nothing new to show
        self.done += n
        now = time.time()
        if now - self.shown > 0.5 or self.done >= self.total:
            self.shown = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0
            sys.stderr.write(f"\r{self.what}: {100 * self.done / max(self.total, 1):5.1f}% "
                             f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB, {rate / 1e6:.2f} MB/s, "
                             f"{fmt_time(left)} left  ")
            sys.stderr.flush()

    def close(self):
        sys.stderr.write('\n')


def survey(files, text_field, val_fraction, want_chars):
    """First pass: check every document, count them, find the character set and the split."""
    chars, n_docs, n_chars, n_val, first, fixed = set(), 0, 0, 0, None, []
    for name, pieces in iter_documents(files, text_field, fixed):
        n_docs += 1
        first = first or name
        n_val += in_val(name, val_fraction)
        for piece in pieces:
            n_chars += len(piece)
            if want_chars:
                chars.update(piece)
    if n_chars == 0:
        raise CorpusError(f"the corpus is empty ({len(files)} files, no text); add some text")
    if fixed:  # said even when quiet: the text now differs from the file's
        sys.stderr.write(f"warning: {len(fixed):,} lines had a lone surrogate (an escape such as \\ud800 that is no "
                         f"character), each replaced with U+FFFD; the first is {fixed[0]}\n")
    return dict(chars=chars, n_docs=n_docs, n_chars=n_chars, n_val=n_val, first=first, fixed=len(fixed))


def split_stream(files, text_field, val_fraction, info, sep):
    """Second pass: (split, text) pieces in corpus order, each document followed by `sep`."""
    single = info['n_docs'] == 1
    # with every document on one side, move the first one across so both splits have data
    flip = info['first'] if info['n_val'] in (0, info['n_docs']) and not single else None
    cut, seen = int(info['n_chars'] * (1 - val_fraction)), 0
    for name, pieces in iter_documents(files, text_field):
        split = 'val' if in_val(name, val_fraction) != (name == flip) else 'train'
        for piece in pieces:
            if single:  # one document: cut it at (1 - val_fraction) of its characters
                head = piece[:max(0, cut - seen)]
                seen += len(piece)
                if head:
                    yield 'train', head
                if len(head) < len(piece):
                    yield 'val', piece[len(head):]
            else:
                yield split, piece
        if sep and not single:
            yield split, sep


def learn_bpe(files, text_field, val_fraction, info, vocab_size, quiet):
    """The tokenizer.json text of a BPE learned from the train split alone, streamed: no val text shapes a
    token, and memory grows with the distinct words seen, not with the corpus."""
    progress = None if quiet else Progress(sum(os.path.getsize(f) for f in files), 'learning the BPE (train split)')

    def train_texts():
        for split, text in split_stream(files, text_field, val_fraction, info, sep=''):
            if progress:
                progress.update(len(text.encode('utf-8')))  # val pieces are read too: they count as done
            if split == 'train':
                yield text

    t0 = time.time()
    tokenizer_json = train_bpe(train_texts(), vocab_size)
    if progress:
        progress.close()
        learned = len(json.loads(tokenizer_json)['model']['vocab']) + 1  # and <|endoftext|>; fewer if the text ran out
        print(f"learned {learned:,} tokens in {fmt_time(time.time() - t0)}")
    return tokenizer_json


def prepare(inputs, name=None, tokenizer='gpt2', out_dir=None, val_fraction=0.1, text_field='text',
            block_size=256, files=None, source=None, quiet=False, vocab_size=4096, chars_from=None):
    """Tokenize `inputs` into out_dir (default data/<name>); returns the meta dict. tokenizer='bpe' first
    learns a BPE of vocab_size tokens on the train split and writes it beside the tokens as tokenizer.json.
    chars_from (tokenizer='char'): another dataset's directory, whose characters are the vocabulary (see
    char_encoder)."""
    check_settings(tokenizer, val_fraction, vocab_size)
    if chars_from and tokenizer != 'char':
        raise CorpusError(f"chars_from is for tokenizer='char', not {tokenizer!r}")
    files = files or find_files(inputs)
    out_dir = out_dir or os.path.join(DATA_ROOT, name)
    info = survey(files, text_field, val_fraction, tokenizer == 'char')
    if tokenizer == 'char':
        enc = char_encoder(info, vocabulary_of(chars_from) if chars_from else None)
    elif tokenizer == 'gpt2':
        enc = gpt2_encoder()
    else:
        enc = bpe_encoder(learn_bpe(files, text_field, val_fraction, info, vocab_size, quiet))
    tmp_dir = out_dir.rstrip('/') + f'.tmp{os.getpid()}'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        progress = None if quiet else Progress(sum(os.path.getsize(f) for f in files), f"tokenizing ({tokenizer})")
        stream = split_stream(files, text_field, val_fraction, info, enc.sep)
        counts, n_bytes = write_splits(tmp_dir, stream, enc, progress)
        if progress:
            progress.close()
        for split, n in counts.items():
            if n <= block_size:
                raise CorpusError(f"corpus too small: the {split} split has {n} tokens, needs more than "
                                  f"block_size={block_size}; add text or pass a smaller --block_size")
        source = source or [os.path.abspath(i) for i in inputs]
        meta = make_meta(tokenizer, enc, counts, n_bytes, info, val_fraction, source)
        if tokenizer == 'bpe':  # the standard file for Hugging Face tools; meta.json holds it too (write_tokenizer)
            write_tokenizer(tmp_dir, meta)
        publish(tmp_dir, out_dir, meta)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not quiet:
        per_token = sum(n_bytes.values()) / max(1, sum(counts.values()))
        print(f"wrote {out_dir}: {counts['train']:,} train and {counts['val']:,} val tokens, "
              f"vocab {enc.vocab_size:,}, {per_token:.2f} bytes per token, {info['n_docs']:,} documents")
    return meta


def check_settings(tokenizer, val_fraction, vocab_size):
    if tokenizer not in ('gpt2', 'char', 'bpe'):
        raise CorpusError(f"tokenizer must be 'gpt2', 'char' or 'bpe', got {tokenizer!r}")
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if tokenizer == 'bpe' and vocab_size < 258:
        raise CorpusError(f"vocab_size must be at least 258 for a byte-level BPE (256 bytes, a merge and "
                          f"<|endoftext|>), got {vocab_size}")


@dataclass
class Encoder:
    """How one tokenizer turns the stream into ids: encode_many(pool, texts) -> arrays of ids, one per text."""
    sep: str  # what follows each document; `is sep` tells it from a document that happens to read the same
    vocab_size: int
    encode_many: Callable
    extra: dict  # what meta.json needs to rebuild the tokenizer
    sep_bytes: int = 0  # the bytes of text a separator stands for: <|endoftext|> stands for none

    @property
    def dtype(self):  # flat uint16 tokens, uint32 past 65535 ids
        return np.uint16 if self.vocab_size <= 65536 else np.uint32


def vocabulary_of(data_dir):
    """The characters of a char-level dataset, in id order."""
    try:
        with open(os.path.join(data_dir, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
    except OSError:
        raise CorpusError(f"chars_from={data_dir}: no meta.json there; prepare that dataset first") from None
    if meta.get('tokenizer') != 'char':
        raise CorpusError(f"chars_from={data_dir} is a {meta.get('tokenizer')} dataset; it needs a char-level one")
    return meta['chars']


def char_encoder(info, chars=None):
    """One id per character: the corpus's own characters, or a given vocabulary `chars`. A given one is how
    a model pretrained on this corpus can later be fine-tuned on another dataset (a chat suite) whose ids
    must mean the same characters; the corpus's characters outside it become '?', and the run says so."""
    sep = '\n\n'
    if chars is None:
        chars = sorted(info['chars'] | (set(sep) if info['n_docs'] > 1 else set()))
    elif not set(sep + '?') <= set(chars):
        raise CorpusError("the given characters need '?' and a newline (what other characters become, and the "
                          "separator of documents)")
    unknown = info['chars'] - set(chars)
    if unknown:  # said even when quiet: the text now differs from the files'
        shown = ''.join(sorted(unknown)[:20])
        sys.stderr.write(f"warning: characters of the corpus outside the given vocabulary each become '?': "
                         f"{shown!r}{'...' if len(unknown) > 20 else ''} ({len(unknown):,} distinct)\n")
    top = max(ord(c) for c in set(chars) | info['chars'])
    lut = np.full(top + 1, chars.index('?') if unknown else 0, dtype=np.uint32)
    lut[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.uint32)
    encode = lambda t: lut[np.frombuffer(t.encode('utf-32-le'), dtype=np.uint32)]
    return Encoder(sep, len(chars), lambda pool, texts: pool.map(encode, texts), {'chars': chars}, len(sep))


def gpt2_encoder():
    enc = gpt2_encoding()
    encode = lambda t: np.array([enc.eot_token] if t is EOT else enc.encode_ordinary(t), dtype=np.uint32)
    return Encoder(EOT, enc.n_vocab, lambda pool, texts: pool.map(encode, texts), {'eot_token': enc.eot_token})


def bpe_encoder(tokenizer_json):
    bpe = BPETokenizer(tokenizer_json)

    def encode_many(pool, texts):  # one call: the Rust encoder spreads a batch over every core itself
        ids = iter(bpe.encode_ordinary([t for t in texts if t is not EOT]))
        return [np.array([bpe.eot] if t is EOT else next(ids), dtype=np.uint32) for t in texts]
    return Encoder(EOT, bpe.vocab_size, encode_many, {'eot_token': bpe.eot, 'tokenizer_json': tokenizer_json})


def batches(stream):
    """(split, text) pieces in lists of a few MB: enough to keep every core busy, little in flight."""
    batch, n_chars = [], 0
    for split, text in stream:
        batch.append((split, text))
        n_chars += len(text)
        if n_chars >= 4 * PIECE:
            yield batch
            batch, n_chars = [], 0
    if batch:
        yield batch


def write_splits(tmp_dir, stream, enc, progress):
    """Tokenize the stream into tmp_dir/{train,val}.bin; returns each split's tokens and the bytes of text
    they stand for (bits per byte's denominator)."""
    counts, n_bytes = {'train': 0, 'val': 0}, {'train': 0, 'val': 0}
    # tiktoken releases the GIL, so threads use every core; `with` closes the pool and files on any error
    with ThreadPoolExecutor(os.cpu_count()) as pool, open(os.path.join(tmp_dir, 'train.bin'), 'wb') as train, \
            open(os.path.join(tmp_dir, 'val.bin'), 'wb') as val:
        outs = {'train': train, 'val': val}
        for batch in batches(stream):
            for (split, text), ids in zip(batch, enc.encode_many(pool, [t for _, t in batch])):
                outs[split].write(ids.astype(enc.dtype).tobytes())
                counts[split] += len(ids)
                size = enc.sep_bytes if text is enc.sep else len(text.encode('utf-8'))
                n_bytes[split] += size
                if progress and text is not enc.sep:
                    progress.update(size)
    return counts, n_bytes


def make_meta(tokenizer, enc, counts, n_bytes, info, val_fraction, source):
    split = (f"first {1 - val_fraction:.0%} of the characters train, the rest val" if info['n_docs'] == 1
             else f"documents by name hash, about {val_fraction:.0%} to val")
    fixed = {'lines_with_lone_surrogates': info['fixed']} if info['fixed'] else {}
    return dict(tokenizer=tokenizer, vocab_size=enc.vocab_size, dtype=np.dtype(enc.dtype).name,
                train_tokens=counts['train'], val_tokens=counts['val'],
                train_bytes=n_bytes['train'], val_bytes=n_bytes['val'], source=source, documents=info['n_docs'],
                characters=info['n_chars'], split=split, **fixed, **enc.extra)


def write_tokenizer(d, meta):
    """d/tokenizer.json, the trained BPE in Hugging Face's format. meta.json carries the same text under
    'tokenizer_json', because every checkpoint keeps its dataset's meta and must decode without the dataset."""
    with open(os.path.join(d, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        f.write(meta['tokenizer_json'])


def publish(tmp_dir, out_dir, meta):
    """Write meta.json into the finished tmp_dir, then swap it in as out_dir: an old dataset is removed
    only once the new one is whole, so a reader never sees half of one."""
    with open(os.path.join(tmp_dir, 'meta.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    old = out_dir.rstrip('/') + f'.old{os.getpid()}'
    if os.path.exists(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def run(fn):
    """Run a prepare step, turning bad input into a one-line error and exit code 1."""
    try:
        return fn()
    except CorpusError as e:
        sys.stderr.write('\n')
        raise SystemExit(f"error: {e}")



SKIP_DIRS = {'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', '__pycache__'}


def stdlib_files():
    root = sysconfig.get_paths()['stdlib']
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith('.py')]
    return root, files

