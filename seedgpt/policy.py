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
"""
import torch


def kl_per_token(logp, ref_logp, estimator):
    """KL(pi || ref) estimated at the sampled tokens: k1 = log pi - log ref, k3 = exp(-k1) + k1 - 1 >= 0."""
    k1 = logp - ref_logp
    return k1 if estimator == 'k1' else torch.exp(-k1) + k1 - 1


def gae(rewards, values, mask, gamma, lam):
    """Advantages and returns (N, T) by generalised advantage estimation, over the positions where mask is 1
    (each row's answer, one contiguous run): A_t = delta_t + gamma * lam * A_{t+1}, with
    delta_t = r_t + gamma * V_{t+1} - V_t and nothing after the last token."""
    adv = torch.zeros_like(rewards)
    next_value, next_adv = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_value = torch.where(m > 0, values[:, t], next_value)  # past an answer's end, nothing follows
        next_adv = torch.where(m > 0, a, next_adv)
    return adv, adv + values * mask


def group_advantages(scores, group_size):
    """GRPO: (reward - its group's mean) / (the group's std + 1e-4), per answer; and the share of groups
    where every answer got the same reward (nothing to learn from)."""
    g = scores.view(-1, group_size)
    adv = (g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + 1e-4)
    return adv.view(-1), (g.std(dim=1) < 1e-6).float().mean().item()


def advantages(cfg, scores, kl, mask, values):
    """Per-token advantages (N, T), returns (N, T) for the value loss (ppo; zeros for grpo), and the share
    of groups with one reward for all (grpo; None for ppo), from the answers' rewards scores (N,), the
    KL per token to the reference (N, T), the answer mask and the values at the rollout (ppo)."""
    if cfg.algo == 'grpo':
        seq_adv, zero_var = group_advantages(scores, cfg.group_size)
        return seq_adv[:, None] * mask, torch.zeros_like(mask), zero_var
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)  # each answer's last token
    rewards = -cfg.kl_coef * kl + scores[:, None] * last
    adv, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
    mu = masked_mean(adv, mask)
    sd = masked_mean((adv - mu) ** 2, mask).sqrt()
    return (adv - mu) / (sd + 1e-8) * mask, returns, None  # whitened over the batch's tokens


def clipped_loss(cfg, logp, values, old_logp, old_values, adv, returns, ref_logp, mask):
    """The loss of one minibatch, and its stats: the clipped policy objective, mean over answer tokens,
    plus for ppo the clipped value loss, for grpo the k3 KL to the reference."""
    ratio = torch.exp(logp - old_logp)  # pi_new / pi_old per token
    pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    loss = masked_mean(pg, mask)
    stats = {'clip_frac': masked_mean(((ratio - 1).abs() > cfg.clip_eps).float(), mask)}
    if cfg.algo == 'ppo':
        v_clipped = old_values + (values - old_values).clamp(-cfg.value_clip, cfg.value_clip)
        v_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
        stats['value_loss'] = v_loss
        return loss + cfg.vf_coef * v_loss, stats
    return loss + cfg.kl_coef * masked_mean(kl_per_token(logp, ref_logp, 'k3'), mask), stats


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def as_batch(prompts, answers, device):
    """x, y (N, T) for prompt + answer rows, right-padded: y holds the answer's tokens as targets (the
    positions that predict them), -1 elsewhere."""
    rows = [p + a for p, a in zip(prompts, answers)]
    T = max(len(r) for r in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        r = p + a
        x[i, :len(r) - 1] = torch.tensor(r[:-1])
        y[i, len(p) - 1:len(r) - 1] = torch.tensor(a)
    return x.to(device), y.to(device)

