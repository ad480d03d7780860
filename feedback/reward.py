"""
A reward model: the SFT model with a scalar head, trained on preference pairs to score the chosen answer
above the rejected one (Bradley-Terry: loss = -log sigmoid(r_chosen - r_rejected)).

    python -m prepare.preferences --from_dir=out-sft-tasks     # the pairs
    python -m feedback.reward config/reward_tasks.py                # -> out-reward-tasks; prints held-out pair accuracy
    python -m feedback.reward config/reward_tasks.py --max_iters=50 --device=cuda

It runs train.py's loop (every train.py setting works here, resume included); only the batches (pairs)
and the loss differ. The score of a conversation is the head's output at its last token, <|end|>. The
checkpoint is a normal one plus the head: sample.py, chat/talk.py and chat/eval.py load it as the language model
it was (its LM head is never trained here), and feedback/rl.py --reward=model scores answers with it.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m feedback.reward ...")

import os
from dataclasses import dataclass

import train
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.data import PairBatches
from seedgpt.objectives import BradleyTerry, held_out_pair_accuracy
from seedgpt.runtime import exit_after_torchrun


@dataclass
class Config(train.LoopConfig):
    init_from: str = 'out-sft-tasks'  # the model to start from: its trunk reads the conversations
    data_dir: str = 'data/preferences'  # made by prepare/preferences.py
    out_dir: str = 'out-reward-tasks'
    value_head: bool = True  # the scalar head: the score


class Objective:
    """Bradley-Terry on preference pairs, for train.py's loop: the batches are pairs, the loss the head's."""
    batches = PairBatches
    uses_value_head = True

    def wrap(self, model):
        if model.value_head is None:
            raise SystemExit("error: a reward model needs value_head=True")
        return BradleyTerry(model)


def main(cfg):
    """Train the reward model with train.py's loop; then score every held-out pair with the saved checkpoint."""
    last = train.main(cfg, Objective())
    if last and int(os.environ.get('RANK', 0)) == 0:
        model, _ = load_model(cfg.out_dir, 'cpu')
        accuracy, n = held_out_pair_accuracy(model, cfg.data_dir)
        print(f"held-out pair accuracy of {cfg.out_dir}/ckpt.pt (the best val loss): {accuracy:.3f} "
              f"on all {n} val pairs")
    return last


if __name__ == '__main__':
    main(load_config(Config))
    exit_after_torchrun()
