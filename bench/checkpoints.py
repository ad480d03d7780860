"""
Checkpoints side by side: a float model against its int8, bf16 or pruned copies (compress/shrink.py).

    python -m bench.checkpoints out-stdlib-char out-stdlib-char-int8 out-stdlib-char-p50
    python -m bench.checkpoints out-a out-b:bfloat16 --weights=float32,int8 --sample_tokens=200

For each: the size on disk, the share of zero block weights, the val loss on the same evenly spread windows,
and decoding tokens/s (batch 1, KV cache, eager), the models taking turns round by round so that a change
in the machine's load hits all alike. Prints a markdown table.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.checkpoints ...")

import os
import statistics
from dataclasses import dataclass

import torch

from seedgpt.checkpoint import checkpoint_path, load_checkpoint, load_model
from seedgpt.config import load_config
from seedgpt.data import load_meta, load_tokens
from seedgpt.generate import generate
from seedgpt.measure import markdown_table, progress, take_turns
from seedgpt.prune import sparsity
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    positional = 'out_dirs'  # bare arguments are the checkpoints
    # checkpoints to compare (bare arguments, or comma-separated); DIR:bfloat16 runs one in bf16 only
    out_dirs: str = ''
    weights: str = 'float32,int8'  # how each DIR without ':' runs: float32, bfloat16, int8 (quantised at load)
    batches: int = 20  # batches of 16 windows in the val-loss comparison
    sample_tokens: int = 500  # tokens per decoding run
    sample_rounds: int = 3  # timed decoding runs per checkpoint, alternated
    device: str = 'auto'  # 'auto', 'cpu', 'cuda'


@torch.no_grad()
def compare(cfg, rt):
    """Checkpoints side by side, each loaded by sample.load_model (so compress/shrink.py's int8 ones as int8): size on
    disk, the fraction of zero block weights, val loss on the same evenly spread windows, and decoding tokens/s
    (batch 1, KV cache, eager), the models taking turns round by round so a change in load hits all alike."""
    if not cfg.out_dirs:
        raise SystemExit("error: name the checkpoints, e.g. python -m bench.checkpoints out-a out-b:bfloat16")
    runs = []
    for item in cfg.out_dirs.split(','):
        out_dir, _, weights = item.partition(':')
        runs += [(out_dir, w) for w in ([weights] if weights else cfg.weights.split(','))]
    if any(w not in ('float32', 'bfloat16', 'int8') for _, w in runs):
        raise SystemExit("error: weights are float32, bfloat16 or int8")
    n, prompt, rows, models = cfg.sample_tokens, torch.zeros((1, 1), dtype=torch.long, device=rt.device), [], []
    for out_dir, weights in runs:
        ckpt = load_checkpoint(out_dir)
        dtype = torch.bfloat16 if weights == 'bfloat16' else torch.float32
        model, _ = load_model(out_dir, rt.device, dtype, 'int8' if weights == 'int8' else 'none')
        data_dir = ckpt['config']['data_dir']
        data = load_tokens(data_dir, 'val', load_meta(data_dir))
        bs, batch = model.config.block_size, 16
        starts = torch.linspace(0, len(data) - bs - 2, cfg.batches * batch).long().tolist()  # evenly spread
        total = 0.0
        for i in range(0, len(starts), batch):
            xy = torch.stack([torch.from_numpy(data[s:s + bs + 1].astype('int64')) for s in starts[i:i + batch]])
            total += model(xy[:, :-1].to(rt.device), xy[:, 1:].to(rt.device))[1].item()
        stored = 'int8' if ckpt.get('quant') else str(next(iter(ckpt['model'].values())).dtype).split('.')[-1]
        rows.append([out_dir, stored, weights, f"{os.path.getsize(checkpoint_path(out_dir)) / 2 ** 20:.2f}",
                     f"{sparsity(model.state_dict()) * 100:.1f}%", f"{total / cfg.batches:.4f}"])
        progress(f"{out_dir} {weights}: val loss {total / cfg.batches:.4f}")
        generate(model, prompt, 8, temperature=1.0, top_k=200)  # warm up
        models.append(model)
    times, busy = [[] for _ in runs], []
    fns = [lambda m=model: generate(m, prompt, n, temperature=1.0, top_k=200) for model in models]
    for r, (timings, load) in enumerate(take_turns(fns, cfg.sample_rounds, rt.device)):
        for ts, (seconds, _) in zip(times, timings):
            ts.append(seconds)
        busy.append(load)
        progress(f"round {r + 1}/{cfg.sample_rounds}: " + ', '.join(f"{n / ts[-1]:.0f}" for ts in times) + " tok/s")
    for row, ts in zip(rows, times):
        row += [f"{n / statistics.median(ts):,.0f}", f"{n / min(ts):,.0f}"]
    return (f"### checkpoints compared: val loss over {cfg.batches} batches of 16 windows of each model's "
            f"block_size, evenly spread over its data's val split; tokens/s decoding {n} tokens, batch 1, KV cache, "
            f"eager (median and fastest of {cfg.sample_rounds} rounds; other processes used "
            f"{statistics.median(busy):.1f} cores in the median round)\n\n" +
            markdown_table(['checkpoint', 'stored', 'run as', 'MB on disk', 'zero block weights', 'val loss',
                            'tokens/s (median)', 'tokens/s (fastest)'], rows))


def main(cfg):
    print(compare(cfg, setup_runtime(cfg.device, 'float32')))


if __name__ == '__main__':
    main(load_config(Config))
