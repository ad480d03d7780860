"""
Direct preference optimisation (DPO, https://arxiv.org/abs/2305.18290): the policy learns from preference
pairs directly, with no reward model and no sampling, against a frozen reference (the SFT model):

    loss = -log sigmoid(beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))])

log pi(answer) sums the log-probabilities of the answer's tokens only (its <|end|> included), not the prompt's.

    python -m prepare.preferences --from_dir=out-sft-tasks     # the pairs
    python -m feedback.dpo config/dpo_tasks.py                      # -> out-dpo-tasks
    python -m chat.eval --out_dir=out-dpo-tasks                 # the same evaluator as SFT

It runs train.py's loop (every train.py setting works, resume included). Logged besides the loss: margin,
the implicit reward margin beta * [...] above, and acc, the share of pairs where it is positive.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m feedback.dpo ...")

import os
from dataclasses import dataclass, replace

import train
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.data import PairBatches
from seedgpt.objectives import DPOLoss
from seedgpt.runtime import exit_after_torchrun


@dataclass
class Config(train.LoopConfig):
    init_from: str = 'out-sft-tasks'  # the policy starts as the SFT model
    ref_dir: str = ''  # the frozen reference; '' is init_from (kept when resuming, unlike init_from)
    data_dir: str = 'data/preferences'  # made by prepare/preferences.py
    out_dir: str = 'out-dpo-tasks'
    beta: float = 0.1  # how far from the reference the policy may go: small beta, far
    sft_coef: float = 0.0  # > 0 adds this times the chosen answers' mean NLL (RPO, https://arxiv.org/abs/2404.19733):
    # DPO alone can lower the chosen answers' likelihood too, as long as the rejected ones' falls faster


class Objective:
    batches = PairBatches

    def __init__(self, cfg):
        self.cfg = cfg

    def wrap(self, policy):
        ref_dir = self.cfg.ref_dir or self.cfg.init_from
        if ref_dir == 'resume':
            raise SystemExit("error: resuming DPO needs --ref_dir (the SFT model it started from)")
        device = next(policy.parameters()).device
        ref, _ = load_model(ref_dir, device, next(policy.parameters()).dtype)
        if replace(ref.config, dropout=0.0) != replace(policy.config, dropout=0.0):
            raise SystemExit(f"error: the reference {ref_dir} is another architecture than the policy")
        return DPOLoss(policy, ref.requires_grad_(False), self.cfg.beta, self.cfg.sft_coef)


def main(cfg):
    last = train.main(cfg, Objective(cfg))
    if last and int(os.environ.get('RANK', 0)) == 0:
        print(f"held-out: DPO loss {last['val']:.4f}, implicit reward margin {last['val_margin']:.3f}, "
              f"pairs ranked right {last['val_acc']:.3f}; now: python -m chat.eval --out_dir={cfg.out_dir}")
    return last


if __name__ == '__main__':
    main(load_config(Config))
    exit_after_torchrun()
