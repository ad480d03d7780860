"""
Optimization: which optimizer trains which parameters, the learning-rate schedule, the Muon optimizer, and
one update step that train.py and feedback/rl.py share, so neither can drift from the other (gradient
scaling, clipping, pruning masks).
"""
import math

import torch

from seedgpt.prune import apply_masks
from seedgpt.runtime import fast_matmul_dtype


def decay_groups(params, weight_decay):
    """Weight decay on matrices (2-D and up) only; biases and norm gains go undecayed."""
    return [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
            {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]


def configure_optimizers(model, weight_decay, learning_rate, betas, device_type, muon_lr=0.0,
                         matmul_dtype=torch.bfloat16):
    """A GPT's optimizers: AdamW (fused where the device supports it); with muon_lr > 0, Muon for the hidden
    matrices, orthogonalising in matmul_dtype (the fastest the device has), and AdamW for the rest.
    Frozen parameters (fine-tuning) go to neither."""
    adam_kwargs = dict(lr=learning_rate, betas=betas, fused=device_type in ('cuda', 'cpu'))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if muon_lr <= 0:
        return [torch.optim.AdamW(decay_groups(trainable, weight_decay), **adam_kwargs)]
    # LoRA's A and B go to AdamW, as in the LoRA paper: Muon sizes its steps for whole hidden matrices (every
    # singular value set to 1), not for the two thin factors of a rank-r update, one of which (B) starts at 0
    hidden = [p for n, p in model.transformer.h.named_parameters()
              if p.dim() == 2 and p.requires_grad and 'lora_' not in n]
    ids = {id(p) for p in hidden}
    adam = torch.optim.AdamW(decay_groups([p for p in trainable if id(p) not in ids], weight_decay), **adam_kwargs)
    # with LoRA no hidden matrix trains, and an optimizer may not be empty
    return [adam] + ([Muon(hidden, lr=muon_lr, weight_decay=weight_decay, ns_dtype=matmul_dtype)] if hidden else [])


def lr_at(cfg, it, elapsed):
    """Linear warmup, then cosine decay to min_lr, by iterations or by wall clock, whichever is further on."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    if cfg.max_time > 0:
        progress = max(progress, elapsed / cfg.max_time)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)



class Stepper:
    """A model's optimizers and how one update is made from the gradients of one or more backward passes.

        stepper.set_lr(lr_at(cfg, it, elapsed))
        stepper.backward(loss)          # as often as there are micro-batches
        stepper.step()                  # unscale, clip, step (skipped on fp16 overflow), zero, re-mask

    fp16 gradients underflow to zero without loss scaling, so under fp16 the GradScaler multiplies the loss
    before backward, divides the gradients back before clipping, and skips a step whose gradients overflowed
    (https://arxiv.org/abs/1710.03740). Under bf16 and fp32 it does nothing.
    """

    def __init__(self, model, cfg, rt, masks=None):
        self.model, self.masks, self.cfg = model, masks or {}, cfg
        # the hidden matrices' Newton-Schulz runs in bf16 only where the hardware has it
        self.optimizers = configure_optimizers(model, cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                               rt.device_type, cfg.muon_lr, fast_matmul_dtype(rt.device_type))
        for opt in self.optimizers:
            for group in opt.param_groups:
                group['base_lr'] = group['lr']  # the schedule scales each optimizer's own peak
        self.scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == 'float16')

    def set_lr(self, lr):
        """lr is the schedule's value for AdamW's peak; Muon's follows in proportion."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                group['lr'] = lr * group['base_lr'] / self.cfg.learning_rate

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    def step(self):
        if self.cfg.grad_clip > 0:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        for opt in self.optimizers:
            self.scaler.step(opt)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        apply_masks(self.model, self.masks)


def newton_schulz(G, steps=5, dtype=torch.bfloat16):
    """An approximate orthogonalisation of each matrix in G (..., m, n): the U V^T of its SVD, by a
    quintic Newton-Schulz iteration (https://kellerjordan.github.io/posts/muon/).

    The iteration pushes every singular value towards 1 without computing an SVD: only matmuls, which
    run fast in low precision. `dtype` is the fastest one the device really has: bf16 on GPUs and on CPUs
    with AVX512-BF16 or AMX, fp32 elsewhere, where PyTorch emulates bf16 more slowly than it computes fp32
    (docs/benchmarks.md).
    """
    a, b, c = 3.4445, -4.7750, 2.0315  # tuned to push small singular values up fast, not to converge exactly
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # work on the wide side: X @ X^T is then the smaller square
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X  # X <- p(X X^T) X, an odd polynomial in the singular values
    return (X.mT if transposed else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised before it is applied.

    For 2-D hidden weight matrices only; embeddings, the head and gains stay with AdamW. An orthogonal
    update moves every direction of the matrix by the same amount, so rare directions learn as fast as
    common ones: it trains small models in markedly fewer steps (docs/benchmarks.md). Matrices of the same
    shape are orthogonalised together, as one batched matmul per iteration.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, ns_steps=5, ns_dtype=torch.bfloat16):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            by_shape = {}
            for p in group['params']:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append(p)
            for shape, params in by_shape.items():
                updates = []
                for p in params:
                    state = self.state[p]
                    if 'momentum_buffer' not in state:
                        state['momentum_buffer'] = torch.zeros_like(p.grad)
                    buf = state['momentum_buffer']
                    buf.lerp_(p.grad, 1 - group['momentum'])
                    updates.append(p.grad.lerp(buf, group['momentum']))  # Nesterov: look one step ahead
                updates = newton_schulz(torch.stack(updates), group['ns_steps'], self.ns_dtype)  # (n, m, n)
                scale = max(1.0, shape[0] / shape[1]) ** 0.5  # the same RMS step for tall matrices
                for p, update in zip(params, updates):
                    p.mul_(1 - group['lr'] * group['weight_decay'])
                    p.add_(update, alpha=-group['lr'] * scale)

