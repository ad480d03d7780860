"""
Make a trained checkpoint smaller: int8 weights, pruned weights, or only the weights (no optimizer state).

    python -m compress.shrink --out_dir=out-stdlib-char --int8 --to=out-stdlib-char-int8               # int8 blocks
    python -m compress.shrink --out_dir=out-stdlib-char --prune=0.5 --to=out-stdlib-char-p50           # half zeroed
    python train.py --init_from=out-stdlib-char-p50 --out_dir=out-stdlib-char-p50-ft --block_size=128 --max_time=30
    python -m compress.shrink --out_dir=out-stdlib-char --prune_pattern=2:4 --to=out-stdlib-char-2of4  # 2 of 4 zeroed
    python -m compress.shrink --out_dir=out-stdlib-char --dtype=bfloat16 --to=out-stdlib-char-bf16     # bf16 floats
    python -m compress.shrink --out_dir=out-stdlib-char --to=out-stdlib-char-fp32                      # weights alone

What changes is the Linear layers of the blocks (attention's c_attn and c_proj, the MLP's c_fc and c_proj):
nearly all the weights of a model with a small vocabulary. Embeddings (tied to lm_head) and norms stay.
  --int8           model.Int8Linear's scheme, stored: int8 weights and one scale per output row, a quarter of
                   fp32's bytes; sample.py, chat/talk.py and chat/eval.py rebuild the int8 layers from the file.
  --prune=F        magnitude pruning, unstructured, per matrix: each matrix loses the fraction F of its weights
                   that are smallest in magnitude.
  --prune_pattern  'N:M': of every M consecutive weights along the input dimension, keep the N largest in
                   magnitude (2:4 is the pattern of sparse tensor cores).
Pruned checkpoints hold the masks (ckpt['masks']); train.py keeps the pruned weights at zero while it
fine-tunes from one. A smaller model trained on a teacher's logits (distillation) is a train.py setting:
see config/distill_stdlib.py.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m compress.shrink ...")

import os
from dataclasses import dataclass

import torch

from model import GPT, GPTConfig
from seedgpt.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from seedgpt.config import load_config
from seedgpt.int8 import quantize_int8
from seedgpt.prune import block_matrices, magnitude_masks, pattern_masks, sparsity


@dataclass
class Config:
    out_dir: str = ''  # the checkpoint to compress: a run's directory or a .pt file
    to: str = ''  # where to write the result (a directory, or a .pt file); never the source
    int8: bool = False  # store the blocks' Linear weights as int8 with one scale per output row
    prune: float = 0.0  # zero this fraction of each block matrix, its smallest weights first
    prune_pattern: str = ''  # 'N:M': keep the N largest of every M consecutive weights along the input dim
    dtype: str = 'float32'  # the float tensors' dtype on disk: 'float32', 'bfloat16' or 'float16'


def compress(cfg):
    """The compressed checkpoint (a dict) of cfg.out_dir; nothing is written."""
    if cfg.dtype not in ('float32', 'bfloat16', 'float16'):
        raise SystemExit(f"error: dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")
    if not 0 <= cfg.prune < 1:
        raise SystemExit(f"error: prune is the fraction of weights to zero, in [0, 1); got {cfg.prune}")
    if cfg.prune and cfg.prune_pattern:
        raise SystemExit("error: give prune or prune_pattern, not both")
    ckpt = load_checkpoint(cfg.out_dir)
    if ckpt.get('quant'):
        raise SystemExit(f"error: {cfg.out_dir} is already {ckpt['quant']}; compress the float checkpoint it came from")
    state = dict(ckpt['model'])
    masks = dict(ckpt.get('masks', {}))  # a pruned, fine-tuned checkpoint keeps what it had
    weights = block_matrices(state)
    new = {}
    if cfg.prune:
        new = magnitude_masks(weights, cfg.prune)
    elif cfg.prune_pattern:
        try:
            n, m = (int(s) for s in cfg.prune_pattern.split(':'))
            assert 0 < n < m
        except (ValueError, AssertionError):
            raise SystemExit(f"error: prune_pattern is 'N:M' with 0 < N < M, e.g. 2:4; got {cfg.prune_pattern!r}")
        new = pattern_masks(weights, n, m)
    for name, mask in new.items():
        masks[name] = masks[name] & mask if name in masks else mask
    for name, mask in masks.items():
        state[name] = state[name] * mask
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(state)  # strict: a state dict that is not this model's is refused here
    if cfg.int8:
        quantize_int8(model)  # zeros stay zeros: round(0 / scale) = 0
    model.to(getattr(torch, cfg.dtype))  # floats only: the int8 weights keep their dtype
    how = {'source': os.fspath(cfg.out_dir), 'int8': cfg.int8, 'prune': cfg.prune,
           'prune_pattern': cfg.prune_pattern, 'dtype': cfg.dtype}
    out = {'model': model.state_dict(), 'model_args': ckpt['model_args'], 'config': ckpt['config'],
           'meta': ckpt['meta'], 'compress': how}
    if cfg.int8:
        out['quant'] = 'int8'  # sample.load_model builds Int8Linear layers for these weights
    elif masks:
        out['masks'] = masks  # an int8 model is not fine-tuned: it needs none
    return out


def main(cfg):
    if not cfg.out_dir or not cfg.to:
        raise SystemExit("error: give the checkpoint and where to write, e.g. --out_dir=out-stdlib-char --to=out-small")
    src, dst = checkpoint_path(cfg.out_dir), checkpoint_path(cfg.to)
    same = os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst)
    if same or os.path.abspath(src) == os.path.abspath(dst):
        raise SystemExit(f"error: --to={cfg.to} is the source checkpoint; write the compressed one elsewhere")
    out = compress(cfg)
    save_checkpoint(dst, out)
    mb = lambda path: os.path.getsize(path) / 2 ** 20
    print(f"wrote {dst}: {mb(dst):.2f} MB (source {mb(src):.2f} MB); block weights "
          f"{'int8' if cfg.int8 else cfg.dtype}, {sparsity(out['model']) * 100:.1f}% zero")


if __name__ == '__main__':
    main(load_config(Config))
