"""
LoRA (https://arxiv.org/abs/2106.09685): fine-tune a few low-rank adapters instead of every weight.

A weight update learned in fine-tuning tends to have a low intrinsic rank, so W + B A, with A (r, in) and
B (out, r) for a small r, learns nearly what a full update would, with r * (in + out) trainable numbers
instead of in * out, and no optimizer state for the frozen weights.
"""
import math

import torch
import torch.nn as nn
from torch.nn import functional as F


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update (LoRA, https://arxiv.org/abs/2106.09685):

        y = x W^T + b + (alpha / rank) * B(A(dropout(x)))      A: (rank, in), B: (out, rank)

    It keeps the Linear's own weight and bias under their names, so a LoRA model's state dict is a GPT's
    plus lora_A and lora_B per adapted layer. B starts at zero: the adapted model starts as the base.
    """

    def __init__(self, linear, rank, alpha, dropout=0.0):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        w = linear.weight
        self.lora_A = nn.Parameter(torch.empty(rank, w.size(1), device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(w.size(0), rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank  # so changing the rank needs no new learning rate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # x A^T B^T, through rank r
        return F.linear(x, self.weight, self.bias) + self.scale * update


def add_lora(model, rank, alpha, dropout=0.0, targets=('c_attn', 'c_proj')):
    """Freeze every parameter of the model, then give the Linears named in `targets` inside the blocks
    trainable adapters, in place; returns the model. 'c_proj' names attention's and the MLP's;
    'attn.c_proj' or 'mlp.c_proj' names one of them."""
    model.requires_grad_(False)
    for t in targets:
        names = [n for n, m in model.transformer.h[0].named_modules() if isinstance(m, nn.Linear)]
        if not any(n == t or n.endswith('.' + t) for n in names):
            raise ValueError(f"LoRA target {t!r} names no Linear in a block; they are {', '.join(names)}")
    for block in model.transformer.h:
        for name, linear in list(block.named_modules()):
            if isinstance(linear, nn.Linear) and any(name == t or name.endswith('.' + t) for t in targets):
                parent, _, child = name.rpartition('.')
                setattr(block.get_submodule(parent), child, LoRALinear(linear, rank, alpha, dropout))
    return model


@torch.no_grad()
def merge_lora(state, alpha):
    """A LoRA model's state dict split in two: the merged weights W + (alpha / rank) B A under the plain GPT
    names, which load into a GPT like any checkpoint's; and what resuming needs on top of them, each
    adapted layer's base weight, A and B (the base cannot be recovered exactly by subtracting B A)."""
    merged, lora = dict(state), {}
    for key in [k for k in state if k.endswith('.lora_A')]:
        layer = key[:-len('.lora_A')]
        A, B, W = (merged.pop(f'{layer}.{name}') for name in ('lora_A', 'lora_B', 'weight'))
        lora.update({f'{layer}.weight': W, f'{layer}.lora_A': A, f'{layer}.lora_B': B})
        merged[f'{layer}.weight'] = W + (alpha / A.size(0)) * (B @ A)
    return merged, lora



def freeze_and_adapt(model, cfg, ckpt=None):
    """What a fine-tuning run trains, set on the model in place from cfg: freeze_blocks fixes the first
    blocks, freeze_embeddings the token and position tables (and with them lm_head, which is tied to wte),
    lora_rank > 0 fixes every weight and adds adapters. Resuming a LoRA run puts its base weights and
    adapters back from the checkpoint (ckpt['lora']), under the merged weights it saved."""
    n_layer = len(model.transformer.h)
    if not 0 <= cfg.freeze_blocks <= n_layer:
        raise SystemExit(f"error: freeze_blocks={cfg.freeze_blocks}, but the model has {n_layer} blocks")
    if ckpt and ('lora' in ckpt) != (cfg.lora_rank > 0):
        raise SystemExit("error: resume with the lora_rank of the run that saved the checkpoint")
    if cfg.lora_rank > 0:
        try:
            targets = [t.strip() for t in cfg.lora_targets.split(',')]
            add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, targets)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        if ckpt:
            model.load_state_dict({**model.state_dict(), **ckpt['lora']})
        if model.value_head is not None:  # a reward model's head starts from zero: it must learn, adapters or not
            model.value_head.requires_grad_(True)
    frozen = list(model.transformer.h[:cfg.freeze_blocks])
    if cfg.freeze_embeddings:
        frozen += [model.transformer.wte, model.transformer.wpe]
    for module in frozen:
        if module is not None:  # no wpe with rope
            module.requires_grad_(False)
    return model
