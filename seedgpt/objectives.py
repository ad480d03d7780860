"""
Training objectives other than the next token's cross-entropy, for train.py's one loop.

An objective gives train() its batches, objective.batches(cfg, meta, device), and a module around the GPT,
objective.wrap(model), whose forward(x, y) returns (stats, loss): stats a dict of scalar tensors to log.

    Distill        a student learns a teacher's softened distribution too (train.py --teacher_dir)
    BradleyTerry   a reward model scores the chosen answer above the rejected one (feedback/reward.py)
    DPOLoss        the policy learns from preference pairs against a frozen reference (feedback/dpo.py)

Every score goes through the wrapped GPT's own forward (GPT.forward with per_token=True), never around it,
so FSDP's hooks, which gather a sharded model's weights, run on every path.
"""
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from seedgpt.checkpoint import load_checkpoint, load_model
from seedgpt.data import PairBatches, data_batches, load_meta
from seedgpt.tokenizer import same_ids


class Distill(torch.nn.Module):
    """Knowledge distillation (https://arxiv.org/abs/1503.02531) as a train() objective: the student learns the
    teacher's next-token distribution, softened by a temperature T, as well as the data's next token:

        loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

    over the positions with a target (y != -1). T^2 keeps the KL term's gradients on CE's scale whatever T.
    """

    def __init__(self, teacher, temperature, alpha):
        super().__init__()
        self.teacher = [teacher]  # in a list: not a submodule, so never trained, saved, or switched to train mode
        self.T, self.alpha = temperature, alpha

    @classmethod
    def from_config(cls, cfg, rt):
        if cfg.distill_temperature <= 0 or not 0 <= cfg.distill_alpha <= 1:
            raise SystemExit("error: distill_temperature must be > 0 and distill_alpha in [0, 1]")
        ours, theirs = load_meta(cfg.data_dir), load_checkpoint(cfg.teacher_dir)['meta']
        # every id means the same (a learned BPE's merges too, not just its size), and no id is one side's only
        if not same_ids(ours, theirs) or any(ours.get(k) != theirs.get(k) for k in ('vocab_size', 'special_tokens')):
            raise SystemExit(f"error: the teacher {cfg.teacher_dir} has another tokenizer or vocabulary than "
                             f"{cfg.data_dir}; its logits would be over other tokens")
        teacher, _ = load_model(cfg.teacher_dir, rt.device)  # fp32 weights, eval mode
        if teacher.config.block_size < cfg.block_size:
            raise SystemExit(f"error: the teacher sees {teacher.config.block_size} tokens; use block_size <= that")
        return cls(teacher.requires_grad_(False), cfg.distill_temperature, cfg.distill_alpha)

    def batches(self, cfg, meta, device):
        return data_batches(cfg, meta, device)  # the run's own data, as without a teacher

    def wrap(self, model):
        self.student = model
        return self

    def forward(self, x, y):
        logits, ce = self.student(x, y)  # (B, T, V), the mean cross-entropy over the targets
        with torch.no_grad():
            teacher_logits, _ = self.teacher[0](x, y)
        keep = y != -1
        s = F.log_softmax(logits[keep].float() / self.T, dim=-1)  # (N, V)
        t = F.log_softmax(teacher_logits[keep].float() / self.T, dim=-1)
        kl = F.kl_div(s, t, log_target=True, reduction='batchmean')  # summed over the vocabulary, mean over positions
        return {'kl': kl.detach(), 'ce': ce.detach()}, self.alpha * self.T ** 2 * kl + (1 - self.alpha) * ce


def token_logprobs(model, x, y, temperature=1.0):
    """(N, T) log-probability of each target y under softmax(logits / temperature), 0 where y is -1, and the
    value head's (N, T) output at the same positions (None for a model without one)."""
    return model(x, y, per_token=True, temperature=temperature)


def last_positions(y):
    """(2B,) index of each row's last token: the one after the last target (targets are -1 elsewhere)."""
    T = y.size(1)
    has = (y != -1).long() * torch.arange(1, T + 1, device=y.device)  # 1-based positions of targets, 0 elsewhere
    return has.argmax(dim=1) + 1  # the last target's position, plus one: the token it predicts


def scores(model, x, last):
    """(N,) the reward of each conversation in x (N, T): the head's output at its last token, last (N,)."""
    _, values = model(x, torch.full_like(x, -1), per_token=True)  # (N, T): the head at every position
    return values[torch.arange(x.size(0), device=x.device), last]


class BradleyTerry(torch.nn.Module):
    """A reward model's loss on a batch of pairs, chosen rows first, rejected rows after:
    forward(x, y) -> (stats, loss).

    People (or a checker) can say which of two answers is better far more reliably than how good one is.
    The Bradley-Terry model (1952) turns such comparisons into scores: it takes P(a beats b) =
    sigmoid(r(a) - r(b)), so maximising the likelihood of the observed preferences is the loss
    -log sigmoid(r_chosen - r_rejected). Only differences of scores matter, so the scale is free; the head
    starts at zero, every pair a tie (loss log 2). This is InstructGPT's reward model
    (https://arxiv.org/abs/2203.02155, section 3.5): the SFT model's trunk, with a scalar head read at the
    conversation's last token.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        r_chosen, r_rejected = scores(self.model, x, last_positions(y)).chunk(2)
        loss = -F.logsigmoid(r_chosen - r_rejected).mean()
        return {'acc': (r_chosen > r_rejected).float().mean(), 'margin': (r_chosen - r_rejected).mean()}, loss


@torch.no_grad()
def score_conversations(model, convs):
    """(N,) the reward of each conversation, a list of token ids: one right-padded batch, read at each
    row's last token (causal attention never sees the padding after it). A conversation longer than the
    context (a rollout that ran to block_size, rendered again with its closing tokens) is read by its last
    block_size tokens: the score is read at the end, where the answer is."""
    device = next(model.parameters()).device
    convs = [c[-model.config.block_size:] for c in convs]
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


def held_out_pair_accuracy(model, data_dir):
    """(pair_accuracy, how many pairs) of a reward model on the val split of a pairs folder
    (prepare/preferences.py), read at the model's context: what feedback/reward.py and life.py's report say."""
    cfg = SimpleNamespace(data_dir=data_dir, block_size=model.config.block_size)
    val = PairBatches(cfg, load_meta(data_dir), 'cpu').rows['val']
    return pair_accuracy(model, val), len(val)


def answer_logprobs(model, x, y):
    """(N,) the summed log-probability of each row's answer tokens (where y != -1): log pi(answer | prompt),
    the prompt's own tokens left out, since both answers of a pair share it."""
    return token_logprobs(model, x, y)[0].sum(dim=1)


class DPOLoss(torch.nn.Module):
    """Direct preference optimisation (https://arxiv.org/abs/2305.18290) on a batch of pairs, chosen rows first,
    rejected rows after: forward(x, y) -> (stats, loss).

    RLHF maximises reward minus beta * KL(pi || ref). That problem has a closed-form optimum,
    pi*(y) ~ ref(y) exp(r(y) / beta), which read backwards says that every policy defines an *implicit
    reward*, r(y) = beta * (log pi(y) - log ref(y)) up to a constant per prompt. Put that reward into
    Bradley-Terry's loss and the constant cancels between the two answers of a pair:

        loss = -log sigmoid(beta * [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)])

    so the policy is trained on the preferences directly, with no reward model and no sampling, and the
    reference keeps it near the SFT model as PPO's KL would. The loss only asks for a margin: it can also
    be met by lowering both answers' likelihood, the chosen one's less. sft_coef > 0 adds the chosen
    answers' NLL (RPO, https://arxiv.org/abs/2404.19733), which rules that way out.
    """

    def __init__(self, policy, ref, beta, sft_coef=0.0):
        super().__init__()
        self.policy, self.beta, self.sft_coef = policy, beta, sft_coef
        self.ref = [ref]  # in a list: not a submodule, so never trained, saved or moved by DDP

    def forward(self, x, y):
        with torch.no_grad():
            ref = answer_logprobs(self.ref[0], x, y)
        logp = answer_logprobs(self.policy, x, y)
        chosen, rejected = (logp - ref).chunk(2)  # log pi - log ref, per row
        margin = self.beta * (chosen - rejected)  # the implicit reward margin
        loss = -F.logsigmoid(margin).mean()
        n_chosen = (y != -1).sum(dim=1).chunk(2)[0].clamp(min=1)
        nll = -(logp.chunk(2)[0] / n_chosen).mean()  # per token of the chosen answers
        stats = {'margin': margin.mean(), 'acc': (margin > 0).float().mean(), 'chosen_nll': nll.detach()}
        return stats, loss + self.sft_coef * nll

