"""
Loss curves of training runs (out_dir/log.jsonl) in one PNG. matplotlib is optional: pip install matplotlib.

    python -m explain.plot out-stdlib-char                              # one run -> loss_runs.png
    python -m explain.plot out-stdlib-char out-shakespeare-char-cpu     # several runs overlaid
    python -m explain.plot out-a out-b --x=tokens --out=compare.png     # x axis: iter, tokens or time (seconds)

train.py draws out_dir/loss.png by itself at each evaluation; this compares runs.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m explain.plot ...")

import os
from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.charts import draw_runs


@dataclass
class Config:
    positional = 'runs'  # bare arguments are the runs
    runs: str = ''  # training runs' out_dirs, each holding log.jsonl (bare arguments, or comma-separated)
    out: str = 'loss_runs.png'  # the PNG to write
    x: str = 'iter'  # the x axis: 'iter', 'tokens' or 'time' (seconds)


def main(cfg):
    runs = [d for d in cfg.runs.split(',') if d]
    if not runs:
        raise SystemExit("error: name at least one training run, e.g. python -m explain.plot out-stdlib-char")
    if cfg.x not in ('iter', 'tokens', 'time'):
        raise SystemExit(f"error: x must be 'iter', 'tokens' or 'time', got {cfg.x!r}")
    for d in runs:
        if not os.path.isfile(os.path.join(d, 'log.jsonl')):
            raise SystemExit(f"error: no {os.path.join(d, 'log.jsonl')}; pass the out_dir of a training run")
    try:
        draw_runs(runs, cfg.out, cfg.x)
    except ImportError:
        raise SystemExit("error: plotting needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')")
    print(f"wrote {cfg.out}")


if __name__ == '__main__':
    main(load_config(Config))
