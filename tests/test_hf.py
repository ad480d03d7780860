"""seedgpt/hf_convert.py and export/hf.py against transformers' own GPT-2: weights in (safetensors, .bin, either naming, the
local hub cache) give the same logits, weights out load in transformers offline with the same logits."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: nothing may reach the network

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')

from conftest import run_script  # noqa: E402
from model import GPT, GPTConfig
from seedgpt import hf_convert
from seedgpt.config import load_config
from seedgpt.hf_convert import find_cached, load_gpt2, save_hf_dir, to_hf

SMALL = dict(n_layer=2, n_head=4, n_embd=64, n_positions=128)


def hf_model(vocab_size=300, seed=0):
    """A random GPT2LMHeadModel whose biases and norms are not at their init values either."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**SMALL, vocab_size=vocab_size, bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def seed_model(seed=0, **kwargs):
    """A random seedgpt model with GPT-2's architecture (or the given switches), biases and norms perturbed."""
    torch.manual_seed(seed)
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=128, vocab_size=300, bias=True, dropout=0.0,
                pos='learned', norm='layer', qk_norm=False, mlp='gelu') | kwargs
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, args


def tokens(vocab_size, T=100):
    return torch.randint(0, vocab_size, (2, T), generator=torch.Generator().manual_seed(1))


def max_logit_diff(ours, theirs, vocab_size):
    idx = tokens(vocab_size)
    with torch.no_grad():
        a, _ = ours(idx, targets=idx)  # with targets: logits at every position
        b = theirs(idx).logits
    return (a[..., :vocab_size] - b).abs().max().item()


def hub_layout_state_dict(model):
    """The state dict the way the hub's gpt2 files hold it: no 'transformer.' prefix, no lm_head, and the
    attention mask buffers of older transformers versions."""
    sd = {k.removeprefix('transformer.'): v for k, v in model.state_dict().items() if k != 'lm_head.weight'}
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        sd[f'h.{i}.attn.bias'] = torch.ones(n, n, dtype=torch.uint8).tril().view(1, 1, n, n)
        sd[f'h.{i}.attn.masked_bias'] = torch.tensor(-1e4)
    return sd


def save_hf(model, d, fmt, prefixed):
    """model saved into d as config.json + model.safetensors or pytorch_model.bin, with or without the prefix."""
    from safetensors.torch import save_file
    model.save_pretrained(d)  # config.json, and model.safetensors with prefixed names
    if fmt == 'safetensors' and prefixed:
        return
    os.remove(os.path.join(d, 'model.safetensors'))
    sd = hub_layout_state_dict(model) if not prefixed else dict(model.state_dict())
    if fmt == 'bin':
        torch.save(sd, os.path.join(d, 'pytorch_model.bin'))
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, 'model.safetensors'))


@pytest.mark.parametrize('fmt', ['safetensors', 'bin'])
@pytest.mark.parametrize('prefixed', [True, False])
def test_hf_weights_give_the_same_logits(tmp_path, fmt, prefixed):
    theirs = hf_model(seed=1)
    save_hf(theirs, tmp_path, fmt, prefixed)
    model_args, sd = load_gpt2(hf_dir=str(tmp_path))
    assert model_args['vocab_size'] == 300 and model_args['block_size'] == 128
    ours = GPT(GPTConfig(**model_args)).eval()
    ours.load_state_dict(sd)  # strict
    assert max_logit_diff(ours, theirs, 300) < 1e-4


def test_full_gpt2_vocabulary(tmp_path):
    theirs = hf_model(vocab_size=50257)
    theirs.save_pretrained(tmp_path)
    model_args, sd = load_gpt2(hf_dir=str(tmp_path))
    ours = GPT(GPTConfig(**model_args)).eval()
    ours.load_state_dict(sd)
    assert max_logit_diff(ours, theirs, 50257) < 1e-4


def padded_gpt(rows):
    """GPT as it is when model.py pads its tables: `rows` embedding rows for a smaller vocab_size."""
    return lambda config: GPT(GPTConfig(**{**config.__dict__, 'vocab_size': rows}))


def test_padded_tables_in_and_out(tmp_path, monkeypatch):
    theirs = hf_model(seed=2)
    theirs.save_pretrained(tmp_path)
    monkeypatch.setattr(hf_convert, 'GPT', padded_gpt(320))
    model_args, sd = load_gpt2(hf_dir=str(tmp_path))
    wte = theirs.transformer.wte.weight
    assert model_args['vocab_size'] == 300 and sd['transformer.wte.weight'].shape == (320, 64)
    assert torch.equal(sd['transformer.wte.weight'][:300], wte)
    assert not sd['transformer.wte.weight'][300:].any()  # padding rows are zero
    assert sd['lm_head.weight'] is sd['transformer.wte.weight']
    config, tensors = to_hf(model_args, sd)  # out again: cropped to the real vocabulary
    assert config['vocab_size'] == 300 and torch.equal(tensors['transformer.wte.weight'], wte)


def test_lm_head_must_be_tied(tmp_path):
    theirs = hf_model()
    save_hf(theirs, tmp_path, 'bin', prefixed=True)
    sd = torch.load(tmp_path / 'pytorch_model.bin', weights_only=True)
    sd['lm_head.weight'] = sd['lm_head.weight'] + 1
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    with pytest.raises(SystemExit, match='lm_head different from wte'):
        load_gpt2(hf_dir=str(tmp_path))


def test_unsupported_hf_config(tmp_path):
    theirs = hf_model()
    theirs.config.activation_function = 'relu'
    theirs.save_pretrained(tmp_path)
    with pytest.raises(SystemExit, match="activation_function='relu'"):
        load_gpt2(hf_dir=str(tmp_path))


def test_export_loads_in_transformers(tmp_path):
    ours, args = seed_model(seed=3)
    config, tensors = to_hf(args, ours.state_dict())
    save_hf_dir(tmp_path / 'out', config, tensors)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'out', local_files_only=True).eval()
    assert theirs.config.activation_function == 'gelu_new'
    assert max_logit_diff(ours, theirs, 300) < 1e-4
    # and back in: the same weights (the real vocabulary rows of the tables: padding rows come back zero)
    _, sd = load_gpt2(hf_dir=str(tmp_path / 'out'))
    for k, v in ours.state_dict().items():
        rows = 300 if k in ('transformer.wte.weight', 'lm_head.weight') else None
        assert torch.equal(sd[k][:rows], v[:rows]), k


def fake_cache(cache, repo, model):
    """The hub cache layout: blobs, a snapshot of symlinks, refs/main; plus a stale half-downloaded snapshot."""
    root = cache / f'models--{repo.replace("/", "--")}'
    snap = root / 'snapshots' / 'a1b2c3'
    model.save_pretrained(root / 'blobs-tmp')
    (root / 'blobs').mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, name in enumerate(('config.json', 'model.safetensors')):
        os.replace(root / 'blobs-tmp' / name, root / 'blobs' / f'blob{i}')
        os.symlink(os.path.join('..', '..', 'blobs', f'blob{i}'), snap / name)
    stale = root / 'snapshots' / 'ffffff'
    stale.mkdir()
    os.symlink(os.path.join('..', '..', 'blobs', 'blob0'), stale / 'config.json')  # config, no weights
    (root / 'refs').mkdir()
    (root / 'refs' / 'main').write_text('a1b2c3')


@pytest.mark.parametrize('repo', ['openai-community/gpt2', 'gpt2'])
def test_finds_the_hub_cache(tmp_path, monkeypatch, repo):
    theirs = hf_model(seed=4)
    fake_cache(tmp_path / 'hub', repo, theirs)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    for name in ('gpt2', 'openai-community/gpt2'):
        model_args, sd = load_gpt2(name)
        ours = GPT(GPTConfig(**model_args)).eval()
        ours.load_state_dict(sd)
        assert max_logit_diff(ours, theirs, 300) < 1e-4
    # HF_HOME/hub when HF_HUB_CACHE is not set
    monkeypatch.delenv('HF_HUB_CACHE')
    monkeypatch.setenv('HF_HOME', str(tmp_path))
    assert find_cached('gpt2')[0].endswith('a1b2c3')


def test_missing_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'empty'))
    with pytest.raises(SystemExit) as e:
        load_gpt2('gpt2-medium')
    msg = str(e.value)
    assert msg.startswith('error:') and '\n' not in msg
    assert str(tmp_path / 'empty' / 'models--openai-community--gpt2-medium') in msg
    assert 'hf download openai-community/gpt2-medium' in msg and '--hf_dir' in msg
    with pytest.raises(SystemExit) as e:
        load_gpt2('gpt2', hf_dir=str(tmp_path))
    msg = str(e.value)
    assert msg.startswith('error:') and '\n' not in msg and str(tmp_path) in msg
    with pytest.raises(SystemExit, match='unknown GPT-2 model'):
        load_gpt2('gpt3')


@pytest.mark.parametrize('setting', [dict(pos='rope'), dict(norm='rms'), dict(qk_norm=True), dict(mlp='relu2')])
def test_export_refuses_what_gpt2_cannot_be(setting):
    model, args = seed_model(**setting)
    with pytest.raises(SystemExit) as e:
        to_hf(args, model.state_dict())
    (key, value), = setting.items()
    assert str(e.value).startswith('error:') and f'{key}={value!r}' in str(e.value) and '\n' not in str(e.value)


def test_save_is_all_or_nothing(tmp_path):
    ours, args = seed_model()
    config, tensors = to_hf(args, ours.state_dict())
    broken = dict(tensors, bad='not a tensor')
    with pytest.raises(Exception):
        save_hf_dir(tmp_path / 'new', config, broken)
    assert os.listdir(tmp_path) == []  # no half directory, no temp left
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'keep.txt').write_text('x')
    with pytest.raises(SystemExit, match='not empty'):
        save_hf_dir(tmp_path / 'old', config, tensors)
    with pytest.raises(Exception):
        save_hf_dir(tmp_path / 'old', config, broken, force=True)
    assert sorted(os.listdir(tmp_path)) == ['old'] and os.listdir(tmp_path / 'old') == ['keep.txt']
    save_hf_dir(tmp_path / 'old', config, tensors, force=True)
    assert sorted(os.listdir(tmp_path / 'old')) == ['config.json', 'model.safetensors']


def save_ckpt(out_dir, model, args, meta):
    out_dir.mkdir(parents=True)
    torch.save({'model': model.state_dict(), 'model_args': args, 'meta': meta, 'config': {}}, out_dir / 'ckpt.pt')


def test_export_script_char_model(tmp_path):
    chars = [chr(i) for i in range(32, 127)]
    ours, args = seed_model(vocab_size=len(chars))
    save_ckpt(tmp_path / 'out', ours, args, {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars)})
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}')
    assert p.returncode == 0, p.stderr
    assert 'char tokenizer' in p.stdout
    assert sorted(os.listdir(tmp_path / 'hf')) == ['config.json', 'model.safetensors', 'tokenizer.json',
                                                   'tokenizer_config.json']
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf', local_files_only=True).eval()
    assert max_logit_diff(ours, theirs, len(chars)) < 1e-4
    # a second export does not overwrite without --force
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}')
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith('error:') and 'not empty' in lines[0]
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}', '--force')
    assert p.returncode == 0, p.stderr


def test_export_script_gpt2_tokenizer(tmp_path, gpt2_enc):
    ours, args = seed_model(vocab_size=50257, n_embd=32, n_head=2)
    save_ckpt(tmp_path / 'out', ours, args, {'tokenizer': 'gpt2', 'vocab_size': 50257})
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}')
    assert p.returncode == 0, p.stderr
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf', local_files_only=True).eval()
    assert theirs.config.eos_token_id == 50256
    assert max_logit_diff(ours, theirs, 50257) < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf', local_files_only=True)
    text = "Hello world! def f(x):\n    return x ** 2  # naïve <|endoftext|>"
    assert tok(text)['input_ids'] == gpt2_enc.encode(text, allowed_special='all')
    assert tok.eos_token_id == 50256


def test_export_script_refuses_rope(tmp_path):
    ours, args = seed_model(pos='rope', vocab_size=2)
    save_ckpt(tmp_path / 'out', ours, args, {'tokenizer': 'char', 'chars': list('ab'), 'vocab_size': 2})
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}')
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and "pos='rope'" in lines[0], p.stderr
    assert not (tmp_path / 'hf').exists()


def export(capsys, out_dir, hf_dir):
    """python -m export.hf, in this process."""
    from export import hf as export_hf
    capsys.readouterr()
    export_hf.main(load_config(export_hf.Config, [f'--out_dir={out_dir}', f'--hf_dir={hf_dir}']))


def chars_meta(n):
    chars = [chr(i) for i in range(32, 32 + n)]
    return {'tokenizer': 'char', 'chars': chars, 'vocab_size': n}


def test_export_int8_checkpoint_as_its_floats(tmp_path, capsys):
    """compress.shrink --int8 stores int8 weights and a scale per row: transformers would read the int8
    numbers as the weights. Exported, transformers' logits are the int8 model's own."""
    from compress import shrink
    from seedgpt.checkpoint import load_model
    ours, args = seed_model(seed=5, vocab_size=95)
    save_ckpt(tmp_path / 'out', ours, args, chars_meta(95))
    shrink.main(load_config(shrink.Config, [f'--out_dir={tmp_path / "out"}', f'--to={tmp_path / "int8"}', '--int8']))
    export(capsys, tmp_path / 'int8', tmp_path / 'hf')
    assert 'note: the int8 block weights are written as the floats' in capsys.readouterr().out
    int8, _ = load_model(tmp_path / 'int8', 'cpu')  # Int8Linear layers, as sample.py runs the checkpoint
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf', local_files_only=True,
                                                                output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    assert max_logit_diff(int8, theirs.eval(), 95) < 1e-4
    assert max_logit_diff(ours, theirs, 95) > 1e-3  # and it is the quantised model, not the float one


def test_export_leaves_out_a_value_head(tmp_path, capsys):
    """A reward or PPO checkpoint: the language model goes out, the head is left out with a note."""
    ours, args = seed_model(seed=6, vocab_size=95, value_head=True)
    save_ckpt(tmp_path / 'out', ours, args, chars_meta(95))
    export(capsys, tmp_path / 'out', tmp_path / 'hf')
    assert 'note: the value head' in capsys.readouterr().out
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf', local_files_only=True,
                                                                output_loading_info=True)
    assert not any(info.values()), info  # no value_head.* among the unexpected keys
    assert max_logit_diff(ours, theirs.eval(), 95) < 1e-4
    with pytest.raises(SystemExit, match='^error: to_hf takes a plain model'):  # the library call refuses, never drops
        to_hf(args, ours.state_dict())
