"""
Pruning masks: zeroed weights that stay zero while a pruned model is fine-tuned.

Each optimizer step moves every weight, so after each step apply_masks multiplies the pruned ones back to
zero. compress/shrink.py makes the masks; a checkpoint carries them, and fine-tuning keeps them.
"""
import torch


@torch.no_grad()
def apply_masks(model, masks):
    """Zero the pruned weights: every optimizer step moves them, the masks put them back."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def block_matrices(state):
    """The weight matrices of the blocks' Linears in a GPT state dict: {name: tensor}."""
    return {k: v for k, v in state.items() if k.startswith('transformer.h.') and k.endswith('.weight') and v.dim() == 2}


def magnitude_masks(weights, fraction):
    """{name: bool mask}, False on the round(fraction * numel) weights of each matrix smallest in magnitude."""
    masks = {}
    for name, w in weights.items():
        mask = torch.ones(w.numel(), dtype=torch.bool)
        k = round(fraction * w.numel())
        if k:
            mask[w.float().abs().flatten().topk(k, largest=False).indices] = False
        masks[name] = mask.view(w.shape)
    return masks


def pattern_masks(weights, n, m):
    """{name: bool mask} keeping the n largest in magnitude of every m consecutive weights of each row."""
    masks = {}
    for name, w in weights.items():
        rows, cols = w.shape  # (out, in): a row is what one output reads from the inputs
        if cols % m:
            raise SystemExit(f"error: {name} has {cols} inputs, not a multiple of {m}; choose another prune_pattern")
        groups = w.float().abs().view(rows, cols // m, m)
        keep = groups.topk(n, dim=-1).indices
        masks[name] = torch.zeros(groups.shape, dtype=torch.bool).scatter_(-1, keep, True).view(rows, cols)
    return masks


def sparsity(state):
    """The fraction of the blocks' matrix weights that are exactly zero."""
    weights = block_matrices(state).values()
    return sum((w == 0).sum().item() for w in weights) / max(1, sum(w.numel() for w in weights))

