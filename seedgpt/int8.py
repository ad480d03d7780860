"""
int8 weight-only quantisation of the blocks' Linears: a quarter of fp32's bytes per weight.

Decoding one token at a time reads every weight once per token, so it is bound by memory bandwidth, not
by arithmetic: fewer bytes per weight is what speeds it up, when a compiled step reads them as int8.
"""
import torch
import torch.nn as nn
from torch.nn import functional as F


class Int8Linear(nn.Module):
    """A Linear with int8 weights and one scale per output row: y = (x @ W8^T) * scale + bias.

    Weight-only and symmetric: scale = max|row| / 127, activations keep their dtype (fp32 on a CPU).
    A quarter of fp32's bytes to read per token, which is what bounds batch-1 decoding; but only a
    compiled step reads them as int8 (below). Eager, the weights are converted at each call, and
    torch._weight_int8pack_mm is no faster: on x86 it has vector code for bf16 activations only, and
    with fp32 ones runs far slower than the fp32 matmul (docs/benchmarks.md).
    """

    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,)
        self.register_buffer('weight', torch.round(w / scale[:, None]).to(torch.int8))  # (out, in)
        self.register_buffer('scale', scale.to(linear.weight.dtype))
        self.bias = linear.bias

    def forward(self, x):
        w = self.weight.to(x.dtype)
        if torch.compiler.is_compiling() and x.numel() == x.size(-1):
            # one row (a decoded token): written as a reduction, inductor fuses the int8 -> float
            # conversion into one pass over the int8 weights instead of materialising a float copy
            y = (x.unsqueeze(-2) * w).sum(-1)
        else:
            y = F.linear(x, w)
        y = y * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias


def quantize_int8(model):
    """Swap every Linear in the blocks for an Int8Linear, in place; returns the model.

    The embeddings and lm_head (tied to wte) stay as they are: a lookup reads one row per token, and
    lm_head is 65 x n_embd for a char model; for GPT-2's 50k vocab it would be worth an int8 copy.
    """
    for module in list(model.transformer.h.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model


def dequantize_int8(state):
    """A state dict of quantize_int8's layers back as plain Linear weights: each int8 row times its scale, in
    the scale's dtype. The products are the weights Int8Linear computes with, for readers without its layer."""
    out = {}
    for k, v in state.items():
        if v.dtype == torch.int8:
            scale = state[k.removesuffix('weight') + 'scale']
            v = (v.float() * scale.float()[:, None]).to(scale.dtype)  # (out, in) * (out, 1)
        if not k.endswith('.scale'):
            out[k] = v
    return out
