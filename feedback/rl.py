"""
Reinforcement learning from a reward, on a leash: the policy (from the SFT model) answers questions of the
task suite, each answer gets a reward, and the policy moves towards the better answers while a KL penalty
to the frozen SFT model (the reference) keeps it from wandering off.

    python -m feedback.rl config/rl_tasks.py                                    # PPO, reward = the task checker
    python -m feedback.rl config/rl_tasks.py --algo=grpo                        # GRPO: no value head
    python -m feedback.rl config/rl_tasks.py --reward=model --reward_dir=out-reward-tasks   # a learned reward
    python -m feedback.rl config/rl_tasks.py --init_from=resume                 # go on from out_dir's checkpoint
    python -m chat.eval --out_dir=out-rl-tasks                              # the same evaluator as SFT

One step:
  1. rollouts: prompts_per_step questions, group_size answers each, sampled from the policy in one batch
     through the KV cache;
  2. rewards: 1 for a right answer and 0 for a wrong one (prepare/tasks.py's check), or a reward model's score;
  3. advantages:
     ppo   per-token rewards r_t = -kl_coef * KL_t, plus the answer's reward on its last token; a value
           head on the policy's trunk estimates what is to come; GAE (gamma, lam) turns rewards and values
           into advantages, whitened over the batch (https://arxiv.org/abs/1707.06347)
     grpo  each answer's reward minus its group's mean, over the group's std, for every token; the KL
           to the reference is a loss term instead (https://arxiv.org/abs/2402.03300)
  4. ppo_epochs passes over the rollouts in minibatches, with the clipped objective
     -min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A), ratio = pi_new / pi_old per token,
     and for PPO a clipped value loss.
KL per token is log pi_old - log ref (k1), or k3 = exp(ref - pi) - (ref - pi) - 1, which is never negative
(http://joschu.net/blog/kl-approx.html); `kl_estimator` says which, and the log line names it.
The model, checkpoints, optimizer, schedule and logging are train.py's and seedgpt/'s.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m feedback.rl ...")

import os
import random
import time
from dataclasses import asdict, dataclass, replace

import torch

import train
from seedgpt.chat import render_chat, render_prompt
from seedgpt.checkpoint import load_checkpoint, load_model, save_checkpoint
from seedgpt.config import load_config
from seedgpt.data import load_meta
from seedgpt.generate import generate_replies, reply_text
from seedgpt.log import fmt_time
from seedgpt.objectives import score_conversations, token_logprobs
from seedgpt.policy import advantages, as_batch, clipped_loss, kl_per_token
from seedgpt.runtime import fast_matmul_dtype, print0, setup_runtime
from seedgpt.tasks import accuracy, check, load_records, question
from seedgpt.tokenizer import load_tokenizer


@dataclass
class Config(train.Config):
    init_from: str = 'out-sft-tasks'  # the policy starts as this model; 'resume' goes on from out_dir
    ref_dir: str = ''  # the frozen reference for the KL; '' is init_from (kept when resuming)
    data_dir: str = 'data/tasks'  # the questions: its train split to learn, its test split to measure
    out_dir: str = 'out-rl-tasks'
    algo: str = 'ppo'  # 'ppo' (value head, GAE) or 'grpo' (group baseline)
    reward: str = 'check'  # 'check': 1 if prepare/tasks.py judges the answer right, else 0; 'model': reward_dir's score
    reward_dir: str = 'out-reward-tasks'  # with reward='model': a feedback/reward.py checkpoint
    prompts_per_step: int = 16  # questions per step
    group_size: int = 8  # answers sampled per question
    max_new_tokens: int = 16  # an answer is cut here
    temperature: float = 1.0  # of the rollouts
    kl_coef: float = 0.05  # weight of the KL to the reference
    kl_estimator: str = 'k1'  # 'k1' (log ratio) or 'k3' (never negative)
    ppo_epochs: int = 2  # passes over each batch of rollouts
    minibatch_size: int = 64  # answers per gradient step
    clip_eps: float = 0.2  # the policy ratio's clip
    vf_coef: float = 0.1  # weight of the value loss (ppo): it shares the trunk with the policy
    value_clip: float = 0.2  # how far a value may move from its rollout estimate (ppo)
    gamma: float = 1.0  # discount (ppo)
    lam: float = 0.95  # GAE's lambda (ppo)
    eval_examples: int = 500  # test questions answered greedily at each evaluation; 0 all


class Rewarder:
    """An answer's reward: the task checker's verdict, or a reward model's score."""

    def __init__(self, cfg, tok, device):
        self.kind, self.tok, self.model = cfg.reward, tok, None
        if cfg.reward == 'model':
            self.model, _ = load_model(cfg.reward_dir, device, torch.float32)
            if self.model.value_head is None:
                raise SystemExit(f"error: {cfg.reward_dir} has no value head; train one with feedback/reward.py")
            self.score = score_conversations
        elif cfg.reward != 'check':
            raise SystemExit(f"error: reward must be 'check' or 'model', got {cfg.reward!r}")

    def __call__(self, records, texts):
        right = torch.tensor([float(check(r['meta']['task'], r['meta'], t)) for r, t in zip(records, texts)])
        if self.kind == 'check':
            return right, right
        convs = [render_chat(self.tok, question(r) + [{'role': 'assistant', 'content': t}])[0]
                 for r, t in zip(records, texts)]
        return self.score(self.model, convs).cpu(), right  # the learned reward, and the truth to watch


def main(cfg):
    if cfg.algo not in ('ppo', 'grpo') or cfg.kl_estimator not in ('k1', 'k3'):
        raise SystemExit("error: algo must be 'ppo' or 'grpo', kl_estimator 'k1' or 'k3'")
    if cfg.algo == 'grpo' and cfg.group_size < 2:
        raise SystemExit("error: grpo needs group_size >= 2: the baseline is the group's mean")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    if rt.ddp:
        raise SystemExit("error: feedback/rl.py runs in one process")
    meta = load_meta(cfg.data_dir)
    tok = load_tokenizer(meta)
    os.makedirs(cfg.out_dir, exist_ok=True)

    # the policy (with a value head for PPO), as train.py builds a model; the reference, frozen
    ckpt = load_checkpoint(cfg.out_dir) if cfg.init_from == 'resume' else None
    if ckpt and ckpt['config'].get('algo') != cfg.algo:
        raise SystemExit(f"error: {cfg.out_dir} was trained with algo={ckpt['config'].get('algo')}; resume with it")
    policy_cfg = replace(cfg, value_head=cfg.algo == 'ppo')
    model_args, state = train.start_from(policy_cfg, meta, ckpt)
    policy = train.build_model(model_args, state, rt, fsdp=False)
    ref_dir = cfg.ref_dir or cfg.init_from
    if ref_dir == 'resume':
        raise SystemExit("error: resuming needs --ref_dir (the SFT model the run started from)")
    ref, _ = load_model(ref_dir, rt.device, torch.float32)
    ref.requires_grad_(False)
    rewarder = Rewarder(cfg, tok, rt.device)
    optimizers = policy.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                             rt.device_type, cfg.muon_lr, fast_matmul_dtype(rt.device_type))
    for opt in optimizers:
        for group in opt.param_groups:
            group['base_lr'] = group['lr']
    step, elapsed, best = 0, 0.0, -1.0
    if ckpt:
        train.set_optimizer_state(policy, optimizers, ckpt['optimizers'], rt, False)
        step, elapsed, best = ckpt['iter_num'], ckpt['elapsed'], ckpt['best_val_loss']
        torch.set_rng_state(ckpt['rng'][0]['cpu'])
        if rt.device_type == 'cuda' and ckpt['rng'][0]['cuda'] is not None:
            torch.cuda.set_rng_state(ckpt['rng'][0]['cuda'], rt.device)
    del ckpt, state

    train_records = load_records(cfg.data_dir, 'train')
    test_records = load_records(cfg.data_dir, 'test', cfg.eval_examples)
    logger = train.Logger(cfg, rt)
    print0(f"seedgpt rl | {cfg.algo} | reward {cfg.reward} | KL {cfg.kl_estimator} x {cfg.kl_coef} | "
           f"{cfg.prompts_per_step} questions x {cfg.group_size} answers per step | device {rt.device}")

    def evaluate():
        policy.eval()
        result = accuracy(policy, tok, test_records, 64, 32, temperature=0)
        policy.train()
        per_task = ', '.join(f"{t} {row['accuracy']:.3f}" for t, row in result['tasks'].items())
        print0(f"step {step}: test accuracy {result['mean']:.4f} ({per_task}) on {result['n']} questions")
        logger.log(iter=step, test_accuracy=result['mean'], **{f'test_{t}': r['accuracy'] for t, r in result['tasks'].items()},
                   time=round(elapsed, 3))
        return result['mean']

    def save(acc):
        model_state, optim_state = train.full_state(policy, optimizers, False)
        save_checkpoint(os.path.join(cfg.out_dir, 'ckpt.pt'), {
            'model': model_state, 'model_args': model_args, 'config': asdict(cfg), 'meta': meta,
            'env': {'torch': str(torch.__version__), 'device': rt.device, 'dtype': rt.dtype, 'processes': 1},
            'optimizers': optim_state, 'scaler': {}, 'iter_num': step, 'best_val_loss': best, 'val_loss': acc,
            'elapsed': elapsed, 'rng': train.rng_states(rt), 'evals_since_best': 0})

    t_start = time.time() - elapsed
    try:
        while True:
            elapsed = time.time() - t_start
            done = step >= cfg.max_iters or (cfg.max_time > 0 and elapsed >= cfg.max_time)
            if step % cfg.eval_interval == 0 or done:
                acc = evaluate()
                best = max(best, acc)  # best_val_loss holds the best test accuracy here
                if step > 0:
                    save(acc)
                    print0(f"saved {cfg.out_dir}/ckpt.pt")
            if done:
                break
            t0 = time.time()

            # 1. rollouts
            rng = random.Random(f'{cfg.seed}/rl/{step}')
            records = [r for r in rng.sample(train_records, cfg.prompts_per_step) for _ in range(cfg.group_size)]
            prompts = [render_prompt(tok, question(r)) for r in records]
            policy.eval()
            answers = generate_replies(policy, tok, prompts, cfg.max_new_tokens, temperature=cfg.temperature)
            policy.train()
            x, y = as_batch(prompts, answers, rt.device)
            mask = (y != -1).float()

            # 2. rewards, and what the policy and the reference thought of the answers
            scores, right = rewarder(records, [reply_text(tok, a) for a in answers])
            scores = scores.to(rt.device)
            with torch.no_grad(), rt.autocast():
                old_logp, old_values = token_logprobs(policy, x, y, values=cfg.algo == 'ppo')
                ref_logp, _ = token_logprobs(ref, x, y)
            if old_values is None:  # grpo: no values, and no value loss
                old_values = torch.zeros_like(mask)
            kl = kl_per_token(old_logp, ref_logp, cfg.kl_estimator) * mask

            # 3. advantages
            adv, returns, zero_var = advantages(cfg, scores, kl, mask, old_values)

            # 4. clipped updates, ppo_epochs passes in minibatches
            lr = train.lr_at(cfg, step, elapsed)
            for opt in optimizers:
                for group in opt.param_groups:
                    group['lr'] = lr * group['base_lr'] / cfg.learning_rate
            sums = {}
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(len(records), generator=torch.Generator().manual_seed(rng.getrandbits(32)))
                for mb in order.split(cfg.minibatch_size):
                    mb = mb.to(rt.device)
                    with rt.autocast():
                        logp, values = token_logprobs(policy, x[mb], y[mb], values=cfg.algo == 'ppo')
                    loss, stats = clipped_loss(cfg, logp, values, old_logp[mb], old_values[mb], adv[mb], returns[mb],
                                               ref_logp[mb], mask[mb])
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
                    for opt in optimizers:
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                    train.add_stats(sums, {'loss': loss, **stats})
            step += 1

            if step % cfg.log_interval == 0:
                row = {k: round(v, 5) for k, v in train.mean_stats(sums, rt).items()}
                row.update(reward=round(scores.mean().item(), 4), right=round(right.mean().item(), 4),
                           kl=round((kl.sum(1)).mean().item(), 5), kl_estimator=cfg.kl_estimator,
                           answer_len=round(mask.sum(1).mean().item(), 2), lr=lr,
                           sec=round(time.time() - t0, 2))
                if zero_var is not None:
                    row['zero_var_groups'] = round(zero_var, 3)
                left = (cfg.max_iters - step) * (time.time() - t0)
                if cfg.max_time > 0:
                    left = min(left, cfg.max_time - (time.time() - t_start))
                print0(f"step {step}: " + ', '.join(f"{k} {v}" for k, v in row.items() if k != 'lr')
                       + f", lr {lr:.2e}, eta {fmt_time(max(left, 0))}")
                logger.log(iter=step, **row, time=round(time.time() - t_start, 3))
    finally:
        logger.close()
    return best


if __name__ == '__main__':
    main(load_config(Config))
