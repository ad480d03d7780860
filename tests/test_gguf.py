"""
export/gguf.py: the file read back with the gguf package (tensors, metadata, tokenizer, refusals), and the same
files run by llama.cpp itself through llama-cpp-python (bash export/install_llamacpp.sh): its tokens, its greedy
continuation and its chat turns against seedgpt's. Each part skips with its reason where its package is absent.
"""
import json

import numpy as np
import pytest
import torch

from conftest import ROOT, make_text, memorize, one_line_error, run_script
from model import GPT, GPTConfig, apply_rope, rope_tables
from seedgpt.checkpoint import save_checkpoint
from seedgpt.tokenizer import load_tokenizer, train_bpe

gguf = pytest.importorskip('gguf', reason="the gguf package is not installed (pip install -e '.[gguf]')")

STYLES = {'qwen3': dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=True, bias=False),
          'llama': dict(pos='rope', norm='rms', mlp='swiglu', bias=False),
          'gpt2': dict(bias=True)}
CHAT = [{'role': 'user', 'content': 'Reverse cat.'}, {'role': 'assistant', 'content': 'tac'}]
TEXT = "the cat sat on a mat, and then it ran to see why every dog had gone quiet.\n"


def char_chat_meta():
    from seedgpt.chat import CHAT_SPECIALS
    chars = sorted(set(chr(i) for i in range(32, 127)) | {'\n', '\t'})
    return dict(tokenizer='char', chars=chars, vocab_size=len(chars) + len(CHAT_SPECIALS),
                special_tokens={s: len(chars) + i for i, s in enumerate(CHAT_SPECIALS)})


def bpe_meta():
    tj = train_bpe([make_text(3000)], 300)
    return dict(tokenizer='bpe', tokenizer_json=tj, vocab_size=json.loads(tj)['added_tokens'][0]['id'] + 1,
                eot_token=json.loads(tj)['added_tokens'][0]['id'])


METAS = {'qwen3': char_chat_meta, 'llama': bpe_meta, 'gpt2': lambda: dict(tokenizer='gpt2', vocab_size=50257)}


def model_ckpt(out_dir, style, meta, steps=60, **override):
    """A tiny model of `style`, trained a few steps until it writes a chat turn or a text by heart (clear margins
    between its likeliest tokens, so that greedy decoding is the same in any correct implementation); saved as
    train.py saves one. Returns (out_dir, model, tokenizer)."""
    from seedgpt.chat import is_chat, render_chat
    torch.manual_seed(0)
    tok = load_tokenizer(meta)
    args = dict(n_layer=2, n_head=2, n_embd=64, block_size=128, vocab_size=meta['vocab_size'],
                **{**STYLES[style], **override})
    model = GPT(GPTConfig(**args))
    if steps:
        ids = render_chat(tok, CHAT)[0] if is_chat(tok) else tok.encode(TEXT)
        memorize(model, [(ids, [1] * len(ids))], steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(str(out_dir / 'ckpt.pt'), {'model': model.state_dict(), 'model_args': args, 'meta': meta,
                                               'config': {}})
    return out_dir, model.eval(), tok


def export(out_dir, path, *extra):
    p = run_script('-m', 'export.gguf', f'--out_dir={out_dir}', f'--gguf={path}', *extra, timeout=300)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """{style: (gguf path f32, gguf path q8_0, model, tok)} for the three styles."""
    root, out = tmp_path_factory.mktemp('gguf'), {}
    for style, meta in METAS.items():
        ckpt, model, tok = model_ckpt(root / style, style, meta())
        export(ckpt, root / style / 'f32' / 'model.gguf')
        export(ckpt, root / style / 'q8' / 'model.gguf', '--type=q8_0')
        out[style] = (root / style / 'f32' / 'model.gguf', root / style / 'q8' / 'model.gguf', model, tok)
    return out

# -- the file, read back with the gguf package (always run)


def fields(path):
    r = gguf.GGUFReader(str(path))
    return r, {f.name: f.contents() for f in r.fields.values()}


@pytest.mark.parametrize('style', list(METAS))
def test_file_holds_the_model_and_its_tokenizer(exported, style):
    path, _, model, tok = exported[style]
    r, kv = fields(path)
    assert kv['general.architecture'] == style
    sd = model.state_dict()
    V, C = model.config.vocab_size, model.config.n_embd
    t = {x.name: np.array(x.data) for x in r.tensors}
    assert np.array_equal(t['token_embd.weight'], sd['transformer.wte.weight'][:V].numpy())
    assert 'output.weight' not in t  # tied, as in seedgpt
    assert kv[f'{style}.context_length'] == 128 and kv[f'{style}.block_count'] == 2
    q = sd['transformer.h.1.attn.c_attn.weight'][:C].numpy()
    if style == 'gpt2':
        assert np.array_equal(t['blk.1.attn_qkv.weight'], sd['transformer.h.1.attn.c_attn.weight'].numpy())
    elif style == 'qwen3':  # NeoX rotation in llama.cpp too: rows as they are
        assert np.array_equal(t['blk.1.attn_q.weight'], q)
    else:  # the same rows, in llama.cpp's order for its pairwise rotation
        assert not np.array_equal(t['blk.1.attn_q.weight'], q)
        assert sorted(map(tuple, t['blk.1.attn_q.weight'])) == sorted(map(tuple, q))
    tokens = kv['tokenizer.ggml.tokens']
    assert len(tokens) == V and kv['tokenizer.ggml.add_bos_token'] is False
    if style == 'qwen3':
        assert kv['tokenizer.ggml.model'] == 't5' and tokens[tok.encode(' ')[0]] == '\u2581'
        assert tokens[kv['tokenizer.ggml.eos_token_id']] == '<|end|>' and '<|end|>' in kv['tokenizer.chat_template']
    else:
        assert kv['tokenizer.ggml.model'] == 'gpt2' and kv['tokenizer.ggml.pre'] == 'gpt-2'
        assert tokens[kv['tokenizer.ggml.eos_token_id']] == '<|endoftext|>'


def test_llama_rows_rotate_as_seedgpt(exported):
    """llama.cpp's pairwise rotation of the reordered rows gives seedgpt's rotation of its own, reordered alike."""
    from seedgpt.gguf_convert import llama_rope_rows
    torch.manual_seed(0)
    nh, hs, C, T = 2, 16, 32, 5
    w, x = torch.randn(C, C), torch.randn(T, C)
    cos, sin = rope_tables(T, hs)
    ours = apply_rope((x @ w.t()).view(T, nh, hs).transpose(0, 1), cos, sin)  # (nh, T, hs)
    theirs = (x @ llama_rope_rows(w, nh).t()).view(T, nh, hs // 2, 2).transpose(0, 1)  # adjacent pairs
    a, b = theirs[..., 0], theirs[..., 1]
    theirs = torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    assert torch.allclose(llama_rope_rows(ours.transpose(0, 1).reshape(T, C).t(), nh).t(), theirs.transpose(0, 1)
                          .reshape(T, C), atol=1e-5)


def test_q8_0_and_modelfile(exported):
    path, q8, _, _ = exported['qwen3']
    r, kv = fields(q8)
    types = {x.name: x.tensor_type.name for x in r.tensors}
    assert types['blk.0.attn_q.weight'] == 'Q8_0' and types['output_norm.weight'] == 'F32'
    assert q8.stat().st_size < path.stat().st_size / 3
    mf = (path.parent / 'Modelfile').read_text()
    assert mf.startswith('FROM ./model.gguf\n') and 'PARAMETER stop "<|end|>"' in mf and '.Messages' in mf


def test_refusals(tmp_path):
    meta = char_chat_meta()
    ckpt, _, _ = model_ckpt(tmp_path / 'relu2', 'llama', meta, steps=0, mlp='relu2')
    one_line_error(run_script('-m', 'export.gguf', f'--out_dir={ckpt}', f'--gguf={tmp_path}/a.gguf'), 'relu2')
    meta['chars'][meta['chars'].index('~')] = '\u2581'
    ckpt, _, _ = model_ckpt(tmp_path / 'space', 'qwen3', meta, steps=0)
    one_line_error(run_script('-m', 'export.gguf', f'--out_dir={ckpt}', f'--gguf={tmp_path}/b.gguf'), '\u2581')
    base = dict(tokenizer='char', chars=list('ab \né'), vocab_size=5)
    ckpt, _, _ = model_ckpt(tmp_path / 'base', 'qwen3', base, steps=0)
    one_line_error(run_script('-m', 'export.gguf', f'--out_dir={ckpt}', f'--gguf={tmp_path}/c.gguf'), 'non-ASCII')
    one_line_error(run_script('-m', 'export.gguf', f'--out_dir={ckpt}', '--type=q4'), 'q8_0')

# -- llama.cpp itself, through llama-cpp-python (skipped where it is not installed)

TEXTS = [TEXT, "Hello, World! 123 + 4.5e6\n  two  spaces\tand a tab; it's <|end|> typed ~"]


def llama(path, n_ctx=128):
    llama_cpp = pytest.importorskip('llama_cpp', reason="llama-cpp-python is not installed "
                                    "(bash export/install_llamacpp.sh)")
    # an f32 KV cache: llama.cpp's default f16 cache rounds keys and values (about 1e-3 on the logits)
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=1, logits_all=True,
                           type_k=0, type_v=0, verbose=False)


def their_greedy(llm, prompt, n):
    """llama.cpp's greedy continuation of prompt (ids), and its logits at every position read."""
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out, np.array(llm.scores[:llm.n_tokens - 1])


@torch.no_grad()
def our_greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    x = torch.tensor([ids[:-1]])
    return ids[len(prompt):], model(x, torch.zeros_like(x))[0][0].numpy()


def prompt_of(tok):
    from seedgpt.chat import is_chat, render_prompt
    return render_prompt(tok, CHAT[:1]) if is_chat(tok) else tok.encode(TEXT[:20])


@pytest.mark.parametrize('style', list(METAS))
def test_llamacpp_tokens_are_seedgpts(exported, style):
    path, _, _, tok = exported[style]
    llm = llama(path)
    for text in TEXTS + ([] if style == 'qwen3' else ["naïve café, 中文, emoji 🙂"]):
        ids = llm.tokenize(text.encode('utf-8'), add_bos=False, special=False)
        assert ids == tok.encode(text), text
        assert llm.detokenize(ids).decode('utf-8') == text


@pytest.mark.parametrize('style', list(METAS))
def test_llamacpp_greedy_is_seedgpts_in_f32(exported, style):
    path, _, model, tok = exported[style]
    prompt = prompt_of(tok)
    theirs, their_logits = their_greedy(llama(path), prompt, 40)
    ours, our_logits = our_greedy(model, prompt, 40)
    assert theirs == ours
    # the same numbers up to float rounding; on the CPU ggml's GELU (the gpt2 arch) reads a table of f16 values
    assert np.abs(their_logits - our_logits).max() < (5e-3 if style == 'gpt2' else 1e-3)


@pytest.mark.parametrize('style', list(METAS))
def test_llamacpp_q8_0_is_near_f32(exported, style):
    """q8_0 rounds each block of 32 weights to 8 bits: its logits stay within 5% of the f32 logits' spread."""
    path, q8, model, tok = exported[style]
    prompt = prompt_of(tok)
    ours, _ = their_greedy(llama(path), prompt, 40)
    _, f32 = their_greedy(llama(path), prompt + ours[:-1], 1)
    _, q = their_greedy(llama(q8), prompt + ours[:-1], 1)
    spread = f32.max(-1) - f32.min(-1)
    err = np.abs(q - f32).max(-1) / spread
    print(f"{style}: q8_0 vs f32, largest logit difference / spread {err.max():.4f}")
    assert err.max() < 0.05


def test_llamacpp_chat_stops_at_end_of_turn(exported):
    path, _, model, tok = exported['qwen3']
    reply = llama(path).create_chat_completion(messages=CHAT[:1], temperature=0, max_tokens=30)['choices'][0]
    assert reply['message']['content'] == 'tac' and reply['finish_reason'] == 'stop'


def test_llamacpp_unknown_character_is_visible(exported, tmp_path):
    """The chat char route reads an unknown character as '?'; the base char route (rwkv) gives it id -1, which
    llama.cpp refuses to decode."""
    path, _, _, tok = exported['qwen3']
    llm = llama(path)
    assert llm.detokenize(llm.tokenize('café'.encode(), add_bos=False)).decode() == 'caf?'
    base = dict(tokenizer='char', chars=sorted(set(TEXT)), vocab_size=len(set(TEXT)))
    ckpt, _, tok = model_ckpt(tmp_path / 'base', 'gpt2', base, steps=0)
    export(ckpt, tmp_path / 'base.gguf')
    llm = llama(tmp_path / 'base.gguf')
    assert llm.tokenize(TEXT.encode(), add_bos=False) == tok.encode(TEXT)
    ids = llm.tokenize('cat!'.encode(), add_bos=False)
    assert ids == tok.encode('cat') + [-1]
    with pytest.raises(Exception):
        llm.eval(ids)


# -- every shipped config: the model shape each trains, exported and run by llama.cpp

def shipped_shapes():
    """{the model shape: the first config/*.py that trains it}; a fine-tuning config without a shape of its own
    keeps the shape of the checkpoint it starts from, which another config trains."""
    import glob
    import os
    import runpy
    from dataclasses import fields

    import train
    defaults = {f.name: f.default for f in fields(train.Config)}
    shapes = {}
    for path in sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))):
        settings = runpy.run_path(path)
        if not any(k in settings for k in ('n_layer', 'pos', 'norm', 'mlp')):
            continue
        shape = tuple((k, settings.get(k, defaults[k])) for k in ('pos', 'norm', 'mlp', 'qk_norm', 'bias'))
        shapes.setdefault(shape, os.path.basename(path))
    return shapes


SHAPES = shipped_shapes()


@pytest.mark.parametrize('shape', list(SHAPES), ids=list(SHAPES.values()))
def test_every_shipped_config_exports_and_llamacpp_decodes_it_as_seedgpt(tmp_path, shape):
    """Each shape a shipped config trains either exports, and llama.cpp's greedy 40 tokens are seedgpt's in f32,
    or is refused in one line that names what is in the way (relu2: llama.cpp has no such MLP)."""
    meta = dict(tokenizer='char', chars=sorted(set(TEXT)), vocab_size=len(set(TEXT)))  # a base char model
    ckpt, model, tok = model_ckpt(tmp_path / 'm', 'gpt2', meta, **dict(shape))
    if dict(shape)['mlp'] == 'relu2':
        one_line_error(run_script('-m', 'export.gguf', f'--out_dir={ckpt}', f'--gguf={tmp_path}/a.gguf'), 'relu2')
        return
    export(ckpt, tmp_path / 'model.gguf')
    prompt = tok.encode(TEXT[:20])
    theirs, _ = their_greedy(llama(tmp_path / 'model.gguf'), prompt, 40)
    assert theirs == our_greedy(model, prompt, 40)[0]


def test_ollama_runs_the_modelfile(exported):
    """ollama itself, where it is installed and its server answers: the Modelfile makes a model that chats."""
    import shutil
    import subprocess
    if shutil.which('ollama') is None:
        pytest.skip("ollama is not installed")
    if subprocess.run(['ollama', 'list'], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("ollama is installed but its server does not answer (ollama serve)")
    path = exported['qwen3'][0]
    name = 'seedgpt-test-' + path.parent.parent.name
    made = subprocess.run(['ollama', 'create', name, '-f', str(path.parent / 'Modelfile')], capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    try:
        ran = subprocess.run(['ollama', 'run', name, CHAT[0]['content']], capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0 and ran.stdout.strip() == 'tac', (ran.stdout, ran.stderr)
    finally:
        subprocess.run(['ollama', 'rm', name], capture_output=True, timeout=60)
