"""
The policy-gradient math of PPO and GRPO (feedback/rl.py runs the loop around it).

RL fine-tuning samples answers from the policy, scores them, and moves the policy towards the better ones.
Three ideas keep that stable:
  - a KL leash: a penalty on how far the policy drifts from the frozen SFT model (the reference), so it
    cannot forget language to chase the reward (https://arxiv.org/abs/2203.02155, InstructGPT);
  - advantages, not raw rewards: how much better an answer did than expected, estimated by a learned
    value with GAE (PPO, https://arxiv.org/abs/1506.02438) or by the mean of a group of answers to the same
    question (GRPO, https://arxiv.org/abs/2402.03300);
  - the clipped objective: each batch of answers is reused for a few gradient steps, and the ratio of
    new to old probabilities is clipped, so no step moves the policy far from what sampled the answers
    (https://arxiv.org/abs/1707.06347).

Shapes: N answers (rows), T positions; mask (N, T) is 1 on the positions that predict an answer token.
"""
import torch


def kl_per_token(logp, ref_logp, estimator):
    """KL(pi || ref) estimated at the sampled tokens: k1 = log pi - log ref, k3 = exp(-k1) + k1 - 1 >= 0.

    Both are unbiased over tokens drawn from pi (http://joschu.net/blog/kl-approx.html): E[k1] is the KL by
    definition, and E[exp(-k1)] = sum ref = 1 makes k3's extra terms average to zero. A single k1 can be
    negative (a token the reference likes more); k3 never is, and has a lower variance when pi is near ref.
    """
    k1 = logp - ref_logp
    if estimator == 'k1':
        return k1
    if estimator == 'k3':
        return torch.exp(-k1) + k1 - 1
    raise ValueError(f"kl_estimator must be 'k1' or 'k3' here, got {estimator!r}")  # 'auto' is resolved by rl.py


def gae(rewards, values, mask, gamma, lam):
    """Advantages and returns (N, T) by generalised advantage estimation, over the positions where mask is 1
    (each row's answer; with tools, its calls and answer, the tools' results between them skipped as if
    they were not there): A_t = delta_t + gamma * lam * A_{t+1}, with
    delta_t = r_t + gamma * V_{t+1} - V_t and nothing after the last token.

    Why GAE (https://arxiv.org/abs/1506.02438): the one-step delta leans on the value (low variance, biased
    while the value is wrong), the whole reward-to-come leans on the rollout (unbiased, noisy); lam blends
    the two, lam = 1 being the reward-to-come minus the value.
    """
    adv = torch.zeros_like(rewards)
    next_value, next_adv = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):  # backwards: each advantage folds in the one after it
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_value = torch.where(m > 0, values[:, t], next_value)  # past an answer's end, nothing follows
        next_adv = torch.where(m > 0, a, next_adv)
    return adv, adv + values * mask  # the returns are the value's regression targets


def group_advantages(scores, group_size):
    """GRPO: (reward - its group's mean) / (the group's std + 1e-4), per answer; and the share of groups
    where every answer got the same reward (nothing to learn from).

    The group of answers to one question is its own baseline: no value head to learn, and an answer is
    judged only against its siblings, so a hard question's rare right answer still stands out. Dividing by
    the std puts easy and hard questions on one scale (https://arxiv.org/abs/2402.03300).
    """
    g = scores.view(-1, group_size)  # (questions, group_size): rollouts come group by group
    adv = (g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + 1e-4)
    return adv.view(-1), (g.std(dim=1) < 1e-6).float().mean().item()


def advantages(cfg, scores, kl, mask, values):
    """Per-token advantages (N, T), returns (N, T) for the value loss (ppo; zeros for grpo), and the share
    of groups with one reward for all (grpo; None for ppo), from the answers' rewards scores (N,), the
    KL per token to the reference (N, T), the answer mask and the values at the rollout (ppo)."""
    if cfg.algo == 'grpo':
        seq_adv, zero_var = group_advantages(scores, cfg.group_size)
        # one advantage for every token of an answer: the reward is for the whole answer
        return seq_adv[:, None] * mask, torch.zeros_like(mask), zero_var
    # ppo, as InstructGPT: the KL is a per-token cost inside the reward, the answer's score comes at its end,
    # and GAE carries both back to the tokens that earned them
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)  # each answer's last token
    rewards = -cfg.kl_coef * kl + scores[:, None] * last
    adv, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
    # whitened over the batch's tokens: the step size no longer depends on the reward's scale
    mu = masked_mean(adv, mask)
    sd = masked_mean((adv - mu) ** 2, mask).sqrt()
    return (adv - mu) / (sd + 1e-8) * mask, returns, None


def clipped_loss(cfg, logp, values, old_logp, old_values, adv, returns, ref_logp, mask):
    """The loss of one minibatch, and its stats: the clipped policy objective, mean over answer tokens,
    plus for ppo the clipped value loss, for grpo kl_coef times the KL to the reference by cfg.kl_estimator.

    The clipped objective (https://arxiv.org/abs/1707.06347): -min(ratio * A, clip(ratio) * A). Past
    1 + clip_eps (A > 0) or under 1 - clip_eps (A < 0) the clipped term is the smaller and has no gradient,
    so a token stops pulling once the policy has moved far enough its way; the min keeps the unclipped
    term where it is worse, so a step that went the wrong way is still corrected.

    GRPO's KL is a loss term, so its gradient is what matters, not its value. Over tokens sampled from pi:
      k1 = log pi - log ref has gradient grad log pi, whose mean under pi is zero (sum_x grad pi(x) = 0):
         the leash is logged but pulls nothing, it only adds noise. kl_estimator='k1' gives exactly that;
         it is there to compare with, not as a default.
      k3 has gradient (1 - ref / pi) grad log pi, whose mean is the gradient of KL(ref || pi): it pulls
         pi up where the reference is likelier. The GRPO paper uses k3; kl_estimator='auto' picks it.
    (In PPO the KL is a reward, not a loss: a number, not differentiated, so k1 is unbiased there.)
    """
    ratio = torch.exp(logp - old_logp)  # pi_new / pi_old per token
    pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    loss = masked_mean(pg, mask)
    stats = {'clip_frac': masked_mean(((ratio - 1).abs() > cfg.clip_eps).float(), mask)}
    if cfg.algo == 'ppo':
        # the value may move only value_clip from its rollout estimate, as the policy only clip_eps: the
        # larger of the two errors counts, so clipping never hides a bad value
        v_clipped = old_values + (values - old_values).clamp(-cfg.value_clip, cfg.value_clip)
        v_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
        stats['value_loss'] = v_loss
        return loss + cfg.vf_coef * v_loss, stats
    return loss + cfg.kl_coef * masked_mean(kl_per_token(logp, ref_logp, cfg.kl_estimator), mask), stats


def masked_mean(x, mask):
    """The mean of x over the positions where mask is 1 (0 for an empty mask)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def as_batch(prompts, answers, device, masks=None):
    """x, y (N, T) for prompt + answer rows, right-padded: y holds the answer's tokens as targets (the
    positions that predict them), -1 elsewhere and where an answer's mask is 0 (a tool's result)."""
    rows = [p + a for p, a in zip(prompts, answers)]
    T = max(len(r) for r in rows) - 1  # the last token predicts nothing
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        r = p + a
        x[i, :len(r) - 1] = torch.tensor(r[:-1])
        targets = a if masks is None else [t if m else -1 for t, m in zip(a, masks[i])]
        y[i, len(p) - 1:len(r) - 1] = torch.tensor(targets)  # position len(p) - 1 reads the prompt's end, predicts a[0]
    return x.to(device), y.to(device)
