"""
A reward model: the SFT model with a scalar head, trained on preference pairs to score the chosen answer
above the rejected one (Bradley-Terry: loss = -log sigmoid(r_chosen - r_rejected)).

    python prepare/preferences.py --from=out-sft-tasks     # the pairs
    python reward.py config/reward_tasks.py                # -> out-reward-tasks; prints held-out pair accuracy
    python reward.py config/reward_tasks.py --max_iters=50 --device=cuda

It runs train.py's loop (every train.py setting works here, resume included); only the batches (pairs)
and the loss differ. The score of a conversation is the head's output at its last token, <|end|>. The
checkpoint is a normal one plus the head: sample.py, chat.py and eval.py load it as the language model
it was (its LM head is never trained here), and rl.py --reward=model scores answers with it.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import train
from common import load_config


@dataclass
class Config(train.Config):
    init_from: str = 'out-sft-tasks'  # the model to start from: its trunk reads the conversations
    data_dir: str = 'data/preferences'  # made by prepare/preferences.py
    out_dir: str = 'out-reward-tasks'
    value_head: bool = True  # the scalar head: the score


def last_positions(y):
    """(2B,) index of each row's last token: the one after the last target (targets are -1 elsewhere)."""
    T = y.size(1)
    has = (y != -1).long() * torch.arange(1, T + 1, device=y.device)  # 1-based positions of targets, 0 elsewhere
    return has.argmax(dim=1) + 1  # the last target's position, plus one: the token it predicts


def scores(model, x, last):
    """(N,) the reward of each conversation in x (N, T): the head's output at its last token, last (N,)."""
    h = model.hidden(x)  # (N, T, C)
    return model.value_head(h[torch.arange(x.size(0), device=x.device), last]).squeeze(-1).float()


class BradleyTerry(torch.nn.Module):
    """forward(x, y) -> (stats, loss) on a batch of pairs: chosen rows first, rejected rows after."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        r_chosen, r_rejected = scores(self.model, x, last_positions(y)).chunk(2)
        loss = -F.logsigmoid(r_chosen - r_rejected).mean()
        return {'acc': (r_chosen > r_rejected).float().mean(), 'margin': (r_chosen - r_rejected).mean()}, loss


class Objective:
    batches = train.PairBatches

    def wrap(self, model):
        if model.value_head is None:
            raise SystemExit("error: a reward model needs value_head=True")
        return BradleyTerry(model)


@torch.no_grad()
def score_conversations(model, convs):
    """(N,) the reward of each conversation, a list of token ids: one right-padded batch, read at each
    row's last token (causal attention never sees the padding after it)."""
    device = next(model.parameters()).device
    x = torch.zeros(len(convs), max(len(c) for c in convs), dtype=torch.long)
    for row, ids in enumerate(convs):
        x[row, :len(ids)] = torch.tensor(ids)
    return scores(model, x.to(device), torch.tensor([len(c) - 1 for c in convs], device=device))


def pair_accuracy(model, pairs, batch_size=64):
    """The share of pairs, each ((chosen ids, mask), (rejected ids, mask)), whose chosen one scores higher."""
    right = 0
    for start in range(0, len(pairs), batch_size):
        r = score_conversations(model, [ids for pair in pairs[start:start + batch_size] for ids, _ in pair])
        right += (r[0::2] > r[1::2]).sum().item()  # chosen, rejected, chosen, ...
    return right / len(pairs)


if __name__ == '__main__':
    cfg = load_config(Config)
    if train.main(cfg, Objective()):
        from common import load_meta
        from sample import load_model
        model, _ = load_model(cfg.out_dir, 'cpu')
        val = train.PairBatches(cfg, load_meta(cfg.data_dir), 'cpu').rows['val']
        print(f"held-out pair accuracy of {cfg.out_dir}/ckpt.pt (the best val loss): {pair_accuracy(model, val):.3f} "
              f"on all {len(val)} val pairs")
