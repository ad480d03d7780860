"""
What a run reports: time left, log lines on rank 0, log.jsonl and Weights & Biases, and the means of a
step's stats over micro-batches and processes.
"""
import json
import os
from dataclasses import asdict

import torch


def fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def add_stats(sums, stats):
    """Add a step's scalar tensors to running sums, counting them under '#'."""
    for key, value in stats.items():
        sums[key] = sums.get(key, 0) + value.detach().float()
    sums['#'] = sums.get('#', 0) + 1


def mean_stats(sums, rt):
    """The means of the sums over every step and process, as floats."""
    keys = [k for k in sums if k != '#']
    if not keys:
        return {}
    total = torch.stack([torch.as_tensor(sums[k], device=rt.device).float() for k in keys]
                        + [torch.tensor(float(sums['#']), device=rt.device)])
    if rt.ddp:
        torch.distributed.all_reduce(total)
    return {k: (total[i] / total[-1]).item() for i, k in enumerate(keys)}


class Logger:
    """log.jsonl in out_dir, and Weights & Biases when asked; does nothing on ranks other than 0."""

    def __init__(self, cfg, rt):
        if rt.master:
            os.makedirs(cfg.out_dir, exist_ok=True)
        self.file = open(os.path.join(cfg.out_dir, 'log.jsonl'), 'a') if rt.master else None
        self.wandb = None
        if cfg.wandb_log and rt.master:
            import wandb
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg))

    def log(self, **row):
        if self.file:
            self.file.write(json.dumps(row) + '\n')
            self.file.flush()
        if self.wandb:
            self.wandb.log(row, step=row['iter'])

    def close(self):
        if self.file:
            self.file.close()
        if self.wandb:
            self.wandb.finish()  # uploads what is left; skipped, a run's last rows can be lost

