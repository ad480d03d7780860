"""
A GPT language model: GPT-2's architecture and parameter names, so GPT-2 weights map one to one.

Optional modern switches, each off by default (GPT-2 exactly):
  pos='rope'      rotary position embeddings instead of learned ones  (https://arxiv.org/abs/2104.09864)
  norm='rms'      RMSNorm instead of LayerNorm                        (https://arxiv.org/abs/1910.07467)
  qk_norm=True    normalise queries and keys before attention          (https://arxiv.org/abs/2010.04245)
  mlp='relu2'     squared ReLU instead of GELU in the MLP              (https://arxiv.org/abs/2109.08668)
  mlp='swiglu'    a gated SiLU MLP, Llama's and Qwen's                  (https://arxiv.org/abs/2002.05202)

It imports torch alone: generation (seedgpt/generate.py), the optimizers (seedgpt/optim.py) and the serving
engine's cache (seedgpt/engine.py) build on it, and it knows them only through the Cache interface below.
"""
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel



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


class Cache:
    """What a KV cache gives the model, for decoding a few tokens at a time without recomputing the past.

    A forward with a cache calls, in this order:
      positions(T, device)   once, for the T new tokens of each row: their positions, (T,) or (B, T), as
                             the position embeddings need them; the cache now counts them as held
      attend(i, q, k, v)     in each layer i: store the new keys and values (B, nh, T, hs), and return the
                             new tokens' attention over everything the row holds, (B, nh, T, hs)
      last                   the positions whose logits a generating forward returns (an index of dim 1)
    KVCache below keeps one batch of rows that advance together (sample.py, the agent, RL's rollouts);
    seedgpt/engine.py's SlotCache keeps a server's pool of rows that come and go.
    """
    last = slice(-1, None)  # each row's last token: a slice, so no copy

    def positions(self, T, device):
        raise NotImplementedError

    def attend(self, i, q, k, v):
        raise NotImplementedError


class KVCache(Cache):
    """Keys and values of the tokens seen so far, for a batch of rows decoded in step.

    One buffer of the full context for every layer, allocated once and filled in place: growing it token by
    token would allocate (and page-fault) new memory at every step.

    pad (B,) says how many tokens each row of a left-padded batch starts with (seedgpt.generate.left_pad):
    they are hidden from every other token, and positions count from each row's first real token, so a row
    gives what it would alone. Padding on the right needs nothing: causal attention never looks ahead.
    """

    def __init__(self, config, pad=None):
        self.n_layer, self.block_size, self.pad = config.n_layer, config.block_size, pad
        self.kv = None  # (layer, k or v, B, nh, block_size, hs), allocated at the first attend
        self.pos = 0  # how many tokens each row holds

    def positions(self, T, device):
        past, self.pos = self.pos, self.pos + T
        if self.pos > self.block_size:
            raise ValueError(f"sequence of length {self.pos} is longer than block_size {self.block_size}")
        cols = torch.arange(past, past + T, device=device)  # (T,)
        self.past, self.mask = past, None
        if self.pad is not None:
            pad, keys = self.pad.to(device), torch.arange(past + T, device=device)
            # row b, query column q sees key column k when k <= q and k is not padding (a pad sees itself)
            mask = (keys <= cols[:, None]) & ((keys >= pad[:, None, None]) | (keys == cols[:, None]))
            self.mask = mask.unsqueeze(1)  # (B, 1, T, past + T)
            return (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
        if past and T > 1:  # several new tokens after a cache: a triangle shifted right by `past` columns
            self.mask = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)
        return cols

    def keep(self, rows):
        """Go on with only these rows (a list of indices into the batch): a batch whose rows end at different
        times stops computing the ended ones. The kept rows' keys and values move to the buffer's front, in
        place, so the buffer is not allocated again."""
        if self.kv is not None:
            self.kv[:, :, :len(rows), :, :self.pos] = self.kv[:, :, rows, :, :self.pos]  # a gather, then a copy
            self.kv = self.kv[:, :, :len(rows)]
        if self.pad is not None:
            self.pad = self.pad[rows]

    def attend(self, i, q, k, v):
        B, nh, T, hs = k.shape
        if self.kv is None:
            self.kv = k.new_empty(self.n_layer, 2, B, nh, self.block_size, hs)
        self.kv[i, 0, :, :, self.past:self.pos] = k
        self.kv[i, 1, :, :, self.past:self.pos] = v
        K, V = self.kv[i, :, :, :, :self.pos].unbind(0)  # (B, nh, pos, hs) each
        # a fresh cache's tokens see the plain lower triangle; one new token after a cache sees every key
        causal = self.mask is None and self.past == 0 and T > 1
        return F.scaled_dot_product_attention(q, K, V, attn_mask=self.mask, is_causal=causal)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.qk_norm = config.qk_norm

    def forward(self, x, rope=None, cache=None, layer=0):
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
        if cache is not None:  # decoding: the cache stores the new keys and attends over the row's past
            y = cache.attend(layer, q, k, v)
        else:
            # training: each token sees itself and the tokens before it. On a CPU, the flash kernel's backward
            # is slow on short sequences, and plain math trains faster there (bench/speed.py, docs/benchmarks.md)
            short_cpu = x.device.type == 'cpu' and T <= 128 and torch.is_grad_enabled()
            with sdpa_kernel(SDPBackend.MATH) if short_cpu else nullcontext():
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
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

    def forward(self, x, rope=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
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

    def hidden(self, idx, cache=None):
        """The last hidden states (B, T, C), after ln_f. With a cache (see Cache), idx holds only the new
        tokens: the cache gives their positions and their keys' company."""
        B, T = idx.size()
        x = self.transformer.wte(idx)  # (B, T, C)
        if cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of length {T} is longer than block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)  # (T,)
        else:
            pos = cache.positions(T, idx.device)  # (T,), or one row of positions per row: (B, T)
        rope = None
        if self.config.pos == 'rope':
            rope = self.rope_cos[pos], self.rope_sin[pos]
            if pos.dim() == 2:
                rope = rope[0].unsqueeze(1), rope[1].unsqueeze(1)  # (B, 1, T, hs/2): one set of angles per row
        else:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, i)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, cache=None, per_token=False, temperature=1.0):
        """Logits (B, T, V) and the mean loss when targets are given (a target of -1 is left out of the
        loss); without targets, the logits (B, 1, V) of the last position only.

        per_token=True returns instead what RL, DPO and reward models score answers with: the (B, T)
        log-probability of each target under softmax(logits / temperature), 0 where the target is -1, and
        the value head's (B, T) output (None without one). It is a mode of forward, not a method of its own,
        because FSDP gathers a sharded model's weights in hooks around forward: any path around it would
        meet sharded tensors.
        """
        x = self.hidden(idx, cache)
        V = self.config.vocab_size
        if per_token:
            # the log-probabilities of the distribution that sampled: scored at another temperature than
            # the rollouts', the PPO ratio and the KL would compare the wrong policies
            logits = self.lm_head(x)[..., :V].float() / temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            values = self.value_head(x).squeeze(-1).float() if self.value_head is not None else None
            return logp * (targets != -1), values
        if targets is None:  # only the next token is needed: (B, 1, V), or a packed row's each (1, rows, V)
            return self.lm_head(x[:, cache.last if cache is not None else Cache.last, :])[..., :V], None
        logits = self.lm_head(x)[..., :V]  # the padding's ids are never right: keep them out of the softmax
        loss = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def flops_per_token(self, T=None):
        """Training FLOPs per token of rows T tokens long (default block_size): 6 per parameter plus
        attention (PaLM, appendix B)."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, T or cfg.block_size
        return 6 * self.num_params() + 12 * L * H * Q * T

    def estimate_mfu(self, tokens_per_second, peak_flops, T=None):
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak, in rows of T tokens."""
        return self.flops_per_token(T) * tokens_per_second / peak_flops
