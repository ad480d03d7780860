"""
A GPT language model: GPT-2's architecture and parameter names, so GPT-2 weights map one to one.

Optional modern switches, each off by default (GPT-2 exactly):
  pos='rope'      rotary position embeddings instead of learned ones  (https://arxiv.org/abs/2104.09864)
  norm='rms'      RMSNorm instead of LayerNorm                        (https://arxiv.org/abs/1910.07467)
  qk_norm=True    normalise queries and keys before attention          (https://arxiv.org/abs/2010.04245)
  mlp='relu2'     squared ReLU instead of GELU in the MLP              (https://arxiv.org/abs/2109.08668)
  mlp='swiglu'    a gated SiLU MLP, Llama's and Qwen's                  (https://arxiv.org/abs/2002.05202)
and a Muon optimizer for the hidden matrices (https://kellerjordan.github.io/posts/muon/).
"""
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from seedgpt.generate import sample_next
from seedgpt.optim import Muon


@dataclass
class GPTConfig:
    """The model's settings. train.py's Config inherits these, so each is also a --key=value of train.py."""
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads per block; n_embd must be a multiple
    n_embd: int = 384  # width of the residual stream
    block_size: int = 256  # context length in tokens
    vocab_size: int = 50257  # tokens in the vocabulary; set from the dataset by train.py
    dropout: float = 0.0  # 0 for pretraining, 0.1+ to fight overfitting on small data
    bias: bool = False  # biases in Linears and norms; GPT-2 has them
    pos: str = 'learned'  # position encoding: 'learned' (GPT-2) or 'rope'
    norm: str = 'layer'  # 'layer' (GPT-2's LayerNorm) or 'rms'
    qk_norm: bool = False  # RMS-normalise queries and keys
    mlp: str = 'gelu'  # MLP activation: 'gelu' (GPT-2's tanh approximation), 'relu2' or 'swiglu' (Llama's)
    value_head: bool = False  # a scalar output per position besides the logits: a reward model's score, PPO's value


def padded_vocab(vocab_size):
    """Rows of the embedding and output tables: the vocabulary rounded up to a multiple of 64, because
    matmuls over such sizes run faster (GPT-2's 50257 becomes 50304). The extra ids are never targets,
    and generation never picks them."""
    return -(-vocab_size // 64) * 64


class Norm(nn.Module):
    """LayerNorm with an optional bias, or RMSNorm (a learned gain, no mean subtraction)."""

    def __init__(self, ndim, kind='layer', bias=True):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias and kind == 'layer' else None

    def forward(self, x):
        if self.kind == 'rms':
            return F.rms_norm(x, self.weight.shape, self.weight, 1e-5)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def rope_tables(seq_len, head_dim, base=10000.0):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (B, nh, T, hs); rotate each pair (x1[i], x2[i]) of the two halves by its angle
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Keys and values of the tokens seen so far, for one-token-at-a-time decoding.

    One buffer of the full context for every layer, allocated once and filled in place: growing it token by
    token would allocate (and page-fault) new memory at every step. Its layout is seedgpt/engine.py's
    SlotCache's: (layer, k or v, B, nh, block_size, hs), so a layer's new keys and values go in with one copy.
    """

    def __init__(self, n_layer, block_size):
        self.kv = None
        self.n_layer, self.block_size = n_layer, block_size
        self.pos = 0  # how many tokens the cache holds

    def update(self, i, kv):
        # kv: (2, B, nh, T, hs), the new tokens' keys and values; returns layer i's keys and values so far
        if self.kv is None:
            self.kv = kv.new_empty(self.n_layer, *kv.shape[:3], self.block_size, kv.size(-1))
        end = self.pos + kv.size(3)
        self.kv[i, :, :, :, self.pos:end] = kv
        return self.kv[i, :, :, :, :end].unbind(0)  # K, V: (B, nh, pos + T, hs) each


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.qk_norm = config.qk_norm

    def forward(self, x, rope=None, cache=None, layer=0, mask=None):
        B, T, C = x.size()
        # q, k, v side by side, split into heads by one view: fewer ops per layer, which is what a one-token
        # decoding step spends its time on besides reading the weights
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0)  # (B, nh, T, hs) each
        if self.qk_norm:
            # epsilon 1e-5 as in the other norms, and as Qwen3's q_norm/k_norm: export then maps it exactly
            q, k = F.rms_norm(q, (q.size(-1),), eps=1e-5), F.rms_norm(k, (k.size(-1),), eps=1e-5)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if hasattr(cache, 'attend'):  # a server's rows packed in one sequence: each sees its own slot's keys only
            y = cache.attend(layer, q, k, v)  # (1, nh, T, hs)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        past = 0
        if cache is not None:
            past = cache.pos
            # keys and values as one (2, B, nh, T, hs) block; rope and qk_norm made new keys: stack them
            kv = torch.stack((k, v)) if self.qk_norm or rope is not None else qkv[1:]
            k, v = cache.update(layer, kv)  # (B, nh, past + T, hs) each
        # who may attend to whom: query i (of the T new tokens) sees keys 0 .. past + i
        if mask is not None:
            causal = False  # left-padded rows: the caller's mask (B, 1, T, past + T) also hides the padding
        elif past == 0:
            mask, causal = None, True  # training, or a fresh window: the plain lower triangle
        elif T == 1:
            mask, causal = None, False  # one new token may see every cached one and itself
        else:  # several new tokens after a cache: a triangle shifted right by `past` columns
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        # on a CPU, the flash kernel's backward is slow on short sequences: plain math trains faster up
        # to ~128 tokens (bench/speed.py, cpu-recipe size), flash beyond (baby size)
        short_cpu = x.device.type == 'cpu' and k.size(2) <= 128 and torch.is_grad_enabled()
        with sdpa_kernel(SDPBackend.MATH) if short_cpu else nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


def mlp_width(config):
    """The MLP's hidden width: 4 * n_embd; for SwiGLU, whose three matrices would hold 1.5x the weights at that
    width, 8/3 * n_embd rounded up to a multiple of 64 (as Llama sizes it)."""
    return -(-8 * config.n_embd // (3 * 64)) * 64 if config.mlp == 'swiglu' else 4 * config.n_embd


def swiglu(x):
    gate, value = x.chunk(2, dim=-1)  # (B, T, hidden) each: c_fc computes both side by side
    return F.silu(gate) * value


ACTIVATIONS = {'gelu': lambda x: F.gelu(x, approximate='tanh'), 'relu2': lambda x: F.relu(x).square(), 'swiglu': swiglu}


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        hidden = mlp_width(config)
        self.c_fc = nn.Linear(config.n_embd, (2 if config.mlp == 'swiglu' else 1) * hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.act = ACTIVATIONS[config.mlp]

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config.norm, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = Norm(config.n_embd, config.norm, config.bias)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None, layer=0, mask=None):
        x = x + self.attn(self.ln_1(x), rope, cache, layer, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        for name, value, allowed in [('pos', config.pos, ('learned', 'rope')), ('norm', config.norm, ('layer', 'rms')),
                                     ('mlp', config.mlp, tuple(ACTIVATIONS))]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(padded_vocab(config.vocab_size), config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd) if config.pos == 'learned' else None,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=Norm(config.n_embd, config.norm, config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, padded_vocab(config.vocab_size), bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied input and output embeddings
        self.value_head = nn.Linear(config.n_embd, 1) if config.value_head else None
        self.init_buffers()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):  # residual projections, scaled as in GPT-2
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def init_buffers(self):
        """The rope tables: computed, not learned, so no state dict carries them (and a model built on the
        meta device, as FSDP does, calls this again once it has real memory)."""
        if self.config.pos == 'rope':
            device = self.lm_head.weight.device
            cos, sin = rope_tables(self.config.block_size, self.config.n_embd // self.config.n_head)
            self.register_buffer('rope_cos', cos.to(device), persistent=False)
            self.register_buffer('rope_sin', sin.to(device), persistent=False)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameter count; position embeddings left out by default (token ones are tied to lm_head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden(self, idx, cache=None, pad=None):
        """The last hidden states (B, T, C), after ln_f.

        pad (B,) says how many tokens each row of a left-padded batch starts with: they are hidden from
        every other token, and positions count from each row's first real token, so a row gives what it
        would alone. Padding on the right needs nothing: causal attention never looks ahead. A server's
        SlotCache (seedgpt/engine.py) needs no padding: rows of any lengths come packed in one sequence, and
        the cache gives each token its position and each row its own keys.
        """
        B, T = idx.size()
        x = self.transformer.wte(idx)  # (B, T, C)
        if hasattr(cache, 'attend'):  # seedgpt.engine's SlotCache: rows packed in one sequence, each at its positions
            pos, mask = cache.positions(idx.device), None  # (1, T)
        else:
            past = cache.pos if cache is not None else 0
            if past + T > self.config.block_size:
                raise ValueError(f"sequence of length {past + T} is longer than block_size {self.config.block_size}")
            cols = torch.arange(past, past + T, device=idx.device)
            pos, mask = cols, None
        if pad is not None:
            pos = (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
            keys = torch.arange(past + T, device=idx.device)
            # row b, query column q sees key column k when k <= q and k is not padding (a pad sees itself)
            mask = (keys <= cols[:, None]) & ((keys >= pad[:, None, None]) | (keys == cols[:, None]))
            mask = mask.unsqueeze(1)  # (B, 1, T, past + T)
        rope = None
        if self.config.pos == 'rope':
            rope = self.rope_cos[pos], self.rope_sin[pos]
            if pos.dim() == 2:
                rope = rope[0].unsqueeze(1), rope[1].unsqueeze(1)  # (B, 1, T, hs/2): one set of angles per row
        else:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, i, mask)
        if isinstance(cache, KVCache):
            cache.pos += T
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, cache=None, pad=None, per_token=False, temperature=1.0):
        """Logits (B, T, V) and the mean loss when targets are given (a target of -1 is left out of the
        loss); without targets, the logits (B, 1, V) of the last position only.

        per_token=True returns instead what RL, DPO and reward models score answers with: the (B, T)
        log-probability of each target under softmax(logits / temperature), 0 where the target is -1, and
        the value head's (B, T) output (None without one). It is a mode of forward, not a method of its own,
        because FSDP gathers a sharded model's weights in hooks around forward: any path around it would
        meet sharded tensors.
        """
        x = self.hidden(idx, cache, pad)
        V = self.config.vocab_size
        if per_token:
            # the log-probabilities of the distribution that sampled: scored at another temperature than
            # the rollouts', the PPO ratio and the KL would compare the wrong policies
            logits = self.lm_head(x)[..., :V].float() / temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            values = self.value_head(x).squeeze(-1).float() if self.value_head is not None else None
            return logp * (targets != -1), values
        if targets is None:  # only the next token is needed: (B, 1, V), or a packed row's each (1, rows, V)
            return self.lm_head(x[:, getattr(cache, 'last', slice(-1, None)), :])[..., :V], None  # a slice: no copy
        logits = self.lm_head(x)[..., :V]  # the padding's ids are never right: keep them out of the softmax
        loss = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def optimizer_groups(self, weight_decay):
        """Weight decay on matrices (2-D and up) only; biases and norm gains go undecayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon_lr=0.0,
                             matmul_dtype=torch.bfloat16):
        """AdamW (fused where the device supports it); with muon_lr > 0, Muon for the hidden matrices,
        orthogonalising in matmul_dtype (the fastest the device has)."""
        adam_kwargs = dict(lr=learning_rate, betas=betas, fused=device_type in ('cuda', 'cpu'))
        if muon_lr <= 0:
            return [torch.optim.AdamW(self.optimizer_groups(weight_decay), **adam_kwargs)]
        # frozen parameters (fine-tuning) go to neither optimizer. LoRA's A and B go to AdamW, as in the LoRA paper:
        # Muon sizes its steps for whole hidden matrices (every singular value set to 1), not for the two thin
        # factors of a rank-r update, one of which (B) starts at zero
        hidden = [p for n, p in self.transformer.h.named_parameters()
                  if p.dim() == 2 and p.requires_grad and 'lora_' not in n]
        ids = {id(p) for p in hidden}
        rest = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        adam = torch.optim.AdamW([{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
                                  {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}], **adam_kwargs)
        # with LoRA no hidden matrix trains, and an optimizer may not be empty
        return [adam] + ([Muon(hidden, lr=muon_lr, weight_decay=weight_decay, ns_dtype=matmul_dtype)] if hidden else [])

    def flops_per_token(self):
        """Training FLOPs per token: 6 per parameter plus attention (PaLM, appendix B)."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return 6 * self.num_params() + 12 * L * H * Q * T

    def estimate_mfu(self, tokens_per_second, peak_flops):
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak."""
        return self.flops_per_token() * tokens_per_second / peak_flops

    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        use_cache=True, generator=None, compile=False, pad=None):
        """Yield next tokens (B, 1) one at a time after the prompt idx (B, T).

        Prompts of different lengths go in one batch padded on the left, pad (B,) giving each row's
        padding (see left_pad); each row then gets the tokens it would get alone. Such a batch must fit
        in block_size with its new tokens.

        Past block_size the window jumps: it keeps the last block_size // 2 tokens and goes on, so
        every token sees at least half a context. The uncached path (use_cache=False) recomputes the
        same window each step, so both give the same tokens. compile=True runs the one-token steps
        through torch.compile: one call per token instead of ~150 small ops (about a minute to compile).
        """
        bs = self.config.block_size
        B, T = idx.shape
        if pad is not None and T + max_new_tokens > bs:
            raise ValueError(f"a padded batch of {T} + {max_new_tokens} new tokens does not fit in block_size {bs}")
        ids = idx.new_empty(B, T + max_new_tokens)  # prompt and output, written in place: no cat per token
        ids[:, :T] = idx
        step = torch.compile(self, dynamic=True) if compile else self
        start = max(0, T - bs)  # a long prompt is cropped to its last block_size tokens
        cache, window = None, None
        for t in range(T, T + max_new_tokens):
            if t - start > bs:
                # the window is full. Sliding it by one token would shift every cached position (learned
                # or rotary), so the cache would have to be recomputed at each step; jumping by half a
                # window recomputes it once per block_size // 2 tokens, and each token still sees at least
                # half a context
                start = t - bs // 2
            # inference mode, not just no_grad: each op skips autograd's bookkeeping, and a one-token step is
            # ~150 small ops. Entered per step, not around the yield: the caller's code stays in its own mode,
            # and ids, made outside, is a plain tensor that autograd may use
            with torch.inference_mode():
                if not use_cache:
                    logits, _ = self(ids[:, start:t], pad=pad)
                elif window != start:  # (re)fill the cache with the whole window
                    cache, window = KVCache(self.config.n_layer, bs), start
                    logits, _ = self(ids[:, start:t], cache=cache, pad=pad)
                else:
                    logits, _ = step(ids[:, t - 1:t], cache=cache, pad=pad)
                ids[:, t:t + 1] = sample_next(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            yield ids[:, t:t + 1]

    def generate(self, idx, max_new_tokens, **kwargs):
        """The prompt idx (B, T) followed by max_new_tokens generated tokens."""
        new = list(self.generate_stream(idx, max_new_tokens, **kwargs))
        return torch.cat([idx] + new, dim=1)


