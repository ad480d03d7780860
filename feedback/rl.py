"""
Reinforcement learning from a reward, on a leash: the policy (from the SFT model) answers questions of the
task suite, each answer gets a reward, and the policy moves towards the better answers while a KL penalty
to the frozen SFT model (the reference) keeps it from wandering off.

    python -m feedback.rl config/rl_tasks.py                                    # PPO, the checker's reward
    python -m feedback.rl config/rl_tasks.py --algo=grpo                        # GRPO: no value head
    python -m feedback.rl config/rl_tasks.py --reward=model --reward_dir=out-reward-tasks   # a learned reward
    python -m feedback.rl config/rl_tasks.py --init_from=resume --ref_dir=out-sft-tasks     # go on from out_dir
    python -m feedback.rl --help                                                # every setting it honours
    python -m chat.eval --out_dir=out-rl-tasks                                  # the same evaluator as SFT

It runs in one process (no torchrun): rollouts are sampled one batch at a time through the KV cache.

One step:
  1. rollouts: prompts_per_step train questions, group_size answers each, sampled at `temperature`;
  2. rewards: 1 for a right answer and 0 for a wrong one (seedgpt/tasks.py's check), or a reward model's score;
  3. advantages (seedgpt/policy.py):
     ppo   per-token rewards r_t = -kl_coef * KL_t, plus the answer's reward on its last token; a value
           head on the policy's trunk estimates what is to come; GAE (gamma, lam) turns rewards and values
           into advantages, whitened over the batch (https://arxiv.org/abs/1506.02438); the KL in the
           reward is InstructGPT's leash (https://arxiv.org/abs/2203.02155)
     grpo  each answer's reward minus its group's mean, over the group's std, for every token; the KL
           to the reference is a loss term instead (https://arxiv.org/abs/2402.03300)
  4. ppo_epochs passes over the rollouts in minibatches, each one update through seedgpt.optim.Stepper
     (train.py's own step: fp16 loss scaling, clipping, pruning masks), with the clipped objective
     -min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A), ratio = pi_new / pi_old per token,
     and for PPO a clipped value loss (https://arxiv.org/abs/1707.06347).
Every log-probability (the rollout's, the update's and the reference's) is taken at the rollout temperature:
the ratio and the KL compare the distributions that sampled. KL per token is k1 = log pi - log ref or
k3 = exp(-k1) + k1 - 1 (http://joschu.net/blog/kl-approx.html); `kl_estimator` says which, and the log
line names it.
The val split is watched every eval_interval steps (and checkpointed); the test split is answered once,
at the end, and that is the run's figure.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m feedback.rl ...")

import os
import random
import sys
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import render_chat, render_prompt
from seedgpt.checkpoint import checkpoint_path, load_model, resume_run, save_run, save_snapshot, start_run
from seedgpt.config import load_config
from seedgpt.data import load_meta
from seedgpt.log import Logger, add_stats, fmt_time, mean_stats
from seedgpt.loop import Cadence, RunConfig
from seedgpt.objectives import score_conversations, token_logprobs
from seedgpt.optim import Stepper, lr_at
from seedgpt.policy import advantages, as_batch, clipped_loss, kl_per_token
from seedgpt.runtime import print0, setup_runtime
from seedgpt.tasks import accuracy, check, load_records, question
from seedgpt.tokenizer import load_tokenizer


@dataclass
class Config(RunConfig):
    """RL's settings: the loop's (where, how long, the optimizer, the system) are seedgpt.loop.RunConfig's,
    with RL's own defaults below where they differ; then the algorithm's."""
    # i/o
    init_from: str = 'out-sft-tasks'  # the policy starts as this checkpoint; 'resume' goes on from out_dir's
    ref_dir: str = ''  # the frozen reference for the KL; '' is init_from (a resumed run must name it)
    data_dir: str = 'data/tasks'  # the questions: train to learn from, val to watch, test once at the end
    out_dir: str = 'out-rl-tasks'
    # the algorithm
    algo: str = 'ppo'  # 'ppo' (value head, GAE) or 'grpo' (group baseline, KL in the loss)
    reward: str = 'check'  # 'check': 1 if seedgpt/tasks.py judges the answer right, else 0; 'model': reward_dir's score
    reward_dir: str = 'out-reward-tasks'  # with reward='model': a feedback/reward.py checkpoint
    prompts_per_step: int = 16  # train questions per step
    group_size: int = 8  # answers sampled per question (grpo's baseline is their mean: at least 2)
    max_new_tokens: int = 32  # an answer (and each tool call) is cut here: room for the suite's longest call
    max_calls: int = 3  # a model that knows tools: at most this many tool calls per answer
    temperature: float = 1.0  # of the rollouts; every log-probability is taken at it too
    kl_coef: float = 0.05  # weight of the KL to the reference
    kl_estimator: str = 'auto'  # 'k1' (log ratio) or 'k3' (never negative); 'auto': k1 for ppo, k3 for grpo's loss
    ppo_epochs: int = 2  # passes over each batch of rollouts
    minibatch_size: int = 64  # answers per update
    clip_eps: float = 0.2  # the policy ratio's clip
    vf_coef: float = 0.1  # weight of the value loss (ppo): it shares the trunk with the policy
    value_clip: float = 0.2  # how far a value may move from its rollout estimate (ppo)
    gamma: float = 1.0  # discount (ppo)
    lam: float = 0.95  # GAE's lambda (ppo)
    # watching: every eval_interval steps, greedy answers to val questions
    eval_interval: int = 50  # steps between val evaluations (and checkpoints)
    eval_examples: int = 500  # val questions answered greedily at each evaluation; 0 all (the test split: all, once)
    log_interval: int = 5
    # the schedule: RL moves a trained model a little, so a small learning rate and no pull towards zero
    learning_rate: float = 1e-4
    min_lr: float = 1e-5
    warmup_iters: int = 10
    max_iters: int = 200  # stop after this many steps
    weight_decay: float = 0.0
    wandb_run_name: str = 'rl'


def check_settings(cfg):
    """Refuse, before any work, what cannot run; return cfg with kl_estimator resolved."""
    if int(os.environ.get('RANK', -1)) != -1:
        raise SystemExit("error: feedback/rl.py runs in one process; start it with python -m feedback.rl, not torchrun")
    if cfg.algo not in ('ppo', 'grpo'):
        raise SystemExit(f"error: algo must be 'ppo' or 'grpo', got {cfg.algo!r}")
    if cfg.kl_estimator not in ('auto', 'k1', 'k3'):
        raise SystemExit(f"error: kl_estimator must be 'auto', 'k1' or 'k3', got {cfg.kl_estimator!r}")
    if cfg.reward not in ('check', 'model'):
        raise SystemExit(f"error: reward must be 'check' or 'model', got {cfg.reward!r}")
    if cfg.algo == 'grpo' and cfg.group_size < 2:
        raise SystemExit("error: grpo needs group_size >= 2: the baseline is the group's mean")
    for name in ('prompts_per_step', 'group_size', 'max_new_tokens', 'minibatch_size', 'ppo_epochs',
                 'eval_interval', 'log_interval'):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"error: {name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.temperature <= 0:  # greedy answers have no log-probabilities to take a ratio of
        raise SystemExit(f"error: temperature must be > 0 (the rollouts are sampled), got {cfg.temperature}")
    if cfg.init_from == 'resume' and not cfg.ref_dir:
        raise SystemExit("error: resuming needs --ref_dir (the SFT model the run started from)")
    if cfg.init_from != 'resume' and not os.path.isfile(checkpoint_path(cfg.init_from)):
        raise SystemExit(f"error: init_from={cfg.init_from!r}: no checkpoint at {checkpoint_path(cfg.init_from)}; "
                         "RL starts from a trained chat model (e.g. out-sft-tasks) or 'resume'")
    # k1 is the unbiased choice inside PPO's reward; as GRPO's loss term its gradient averages to zero
    # (seedgpt/policy.py, clipped_loss), so 'auto' gives GRPO k3, as the GRPO paper does
    if cfg.kl_estimator == 'auto':
        cfg = replace(cfg, kl_estimator='k1' if cfg.algo == 'ppo' else 'k3')
    return cfg


class Rewarder:
    """An answer's reward: the task checker's verdict, or a reward model's score."""

    def __init__(self, cfg, tok, device):
        self.kind, self.tok, self.model = cfg.reward, tok, None
        if cfg.reward == 'model':
            self.model, _ = load_model(cfg.reward_dir, device, torch.float32)
            if self.model.value_head is None:
                raise SystemExit(f"error: {cfg.reward_dir} has no value head; train one with feedback/reward.py")

    def __call__(self, records, traces):
        right = torch.tensor([float(check(r['meta']['task'], r['meta'], t.answer)) for r, t in zip(records, traces)])
        if self.kind == 'check':
            return right, right
        convs = [render_chat(self.tok, question(r) + t.messages)[0] for r, t in zip(records, traces)]
        # the learned reward to climb, and the truth to watch: the two parting is reward hacking
        return score_conversations(self.model, convs).cpu(), right


def main(cfg):
    """Train; returns {'val_accuracy', 'best_val_accuracy', 'test_accuracy'}."""
    cfg = check_settings(cfg)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    meta = load_meta(cfg.data_dir)
    tok = load_tokenizer(meta)
    train_records = load_records(cfg.data_dir, 'train')
    val_records = load_records(cfg.data_dir, 'val', cfg.eval_examples)
    if cfg.prompts_per_step > len(train_records):
        raise SystemExit(f"error: prompts_per_step={cfg.prompts_per_step}, but {cfg.data_dir} has only "
                         f"{len(train_records)} train questions; ask for fewer")

    # the policy, as train.py builds a model: start_from checks the tokenizer, refuses int8 weights and adds
    # a value head (from zero) for ppo; a pruned start stays pruned. Dropout stays off: with it the ratio
    # pi_new / pi_old would differ from 1 before any update, and the clip would spend itself on noise.
    start = SimpleNamespace(init_from=cfg.init_from, data_dir=cfg.data_dir, hf_dir='', dropout=0.0,
                            value_head=cfg.algo == 'ppo', block_size=sys.maxsize)  # the model's own context
    ckpt, model_args, policy, masks = start_run(cfg, meta, rt, start)
    if ckpt and ckpt['config'].get('algo') != cfg.algo:
        raise SystemExit(f"error: {cfg.out_dir} was trained with algo={ckpt['config'].get('algo')}; resume with it")
    stepper = Stepper(policy, cfg, rt, masks)
    progress = {'iter_num': 0, 'elapsed': 0.0, 'best_val_accuracy': -1.0}
    if ckpt:  # the rollouts sample what an uninterrupted run would
        progress.update(resume_run(ckpt, policy, stepper, rt, cfg.seed))
    del ckpt
    run = {'cfg': cfg, 'meta': meta, 'model_args': model_args, 'masks': masks}
    # the reference: the SFT model, frozen; the KL to it is the leash (InstructGPT, https://arxiv.org/abs/2203.02155)
    ref, _ = load_model(cfg.ref_dir or cfg.init_from, rt.device, torch.float32)
    ref.requires_grad_(False)
    rewarder = Rewarder(cfg, tok, rt.device)

    os.makedirs(cfg.out_dir, exist_ok=True)
    logger = Logger(cfg, rt)
    step = progress['iter_num']
    print0(f"seedgpt rl | torch {torch.__version__} | device {rt.device} | dtype {rt.dtype} | {cfg.algo} | "
           f"reward {cfg.reward} | KL {cfg.kl_estimator} x {cfg.kl_coef} | {cfg.prompts_per_step} questions x "
           f"{cfg.group_size} answers per step at temperature {cfg.temperature}"
           + (f" | {len(masks)} pruned matrices" if masks else '') + (f" | resumed at step {step}" if step else ''))

    # the loop, top to bottom: watch val (and save), stop, or take one step of rollouts -> rewards ->
    # advantages -> clipped updates (rl_step)
    clock = Cadence(cfg, rt, step, progress['elapsed'], resumed=cfg.init_from == 'resume')
    val_acc = None
    try:
        while True:
            evaluate_now, done, progress['elapsed'] = clock.check(progress['iter_num'])
            if evaluate_now:
                val_acc = evaluate(policy, tok, 'val', val_records, progress, logger, cfg)
                progress['best_val_accuracy'] = max(progress['best_val_accuracy'], val_acc)
                if progress['iter_num'] > 0:
                    save_run(os.path.join(cfg.out_dir, 'ckpt.pt'), run, policy, stepper, rt,
                             {**progress, 'val_accuracy': val_acc})
                    print0(f"saved {cfg.out_dir}/ckpt.pt")
                clock.restart()
            if clock.keeps(progress['iter_num'], done):  # the policy's weights alone (keep_every)
                save_snapshot(run, policy, rt, progress['iter_num'])
                clock.restart()
            if done:
                break
            row = rl_step(cfg, rt, tok, policy, ref, stepper, rewarder, train_records, progress)
            progress['iter_num'] += 1
            if progress['iter_num'] % cfg.log_interval == 0:
                _, left = clock.lap(progress['iter_num'], cfg.log_interval)
                print0(f"step {progress['iter_num']}: " + ', '.join(f"{k} {v}" for k, v in row.items() if k != 'lr')
                       + f", lr {row['lr']:.2e}, eta {fmt_time(left)}")
                logger.log(iter=progress['iter_num'], **row, time=round(clock.since_start(), 3))

        # the test split, once, at the end: val is what the run watched (and could be tuned by), so only a
        # split that chose nothing measures the result fairly; chat.eval on the checkpoint gives the same figure
        test_records = load_records(cfg.data_dir, 'test')
        test_acc = evaluate(policy, tok, 'test', test_records, progress, logger, cfg)
        print0(f"final test accuracy {test_acc:.4f} after {progress['iter_num']} steps "
               f"(best val accuracy {progress['best_val_accuracy']:.4f})")
    finally:
        logger.close()
    return {'val_accuracy': val_acc, 'best_val_accuracy': progress['best_val_accuracy'], 'test_accuracy': test_acc}


def evaluate(policy, tok, split, records, progress, logger, cfg):
    """Greedy accuracy on a split's questions, printed and logged under the split's name, with the rollouts'
    max_new_tokens and max_calls: an answer is scored as the policy is trained to give it."""
    policy.eval()
    result = accuracy(policy, tok, records, 64, cfg.max_new_tokens, max_calls=cfg.max_calls, temperature=0)
    policy.train()
    per_task = ', '.join(f"{t} {row['accuracy']:.3f}" for t, row in result['tasks'].items())
    print0(f"step {progress['iter_num']}: {split} accuracy {result['mean']:.4f} ({per_task}) "
           f"on {result['n']} questions")
    logger.log(iter=progress['iter_num'], **{f'{split}_accuracy': result['mean']},
               **{f'{split}_{t}': r['accuracy'] for t, r in result['tasks'].items()},
               time=round(progress['elapsed'], 3))
    return result['mean']


def rl_step(cfg, rt, tok, policy, ref, stepper, rewarder, train_records, progress):
    """One step: rollouts, rewards, advantages, clipped updates. Returns the step's log row."""
    t0 = time.time()
    # 1. rollouts: group_size answers to each question, sampled from the policy as it is now.
    # RL learns only from what the policy itself says: the answers are on-policy, and the updates
    # below reuse them for a few steps only, while the policy is still close to what sampled them.
    # The questions come from a seeded RNG per step, so a resumed run asks what the uninterrupted one would.
    rng = random.Random(f"{cfg.seed}/rl/{progress['iter_num']}")
    records = [r for r in rng.sample(train_records, cfg.prompts_per_step) for _ in range(cfg.group_size)]
    prompts = [render_prompt(tok, question(r)) for r in records]
    policy.eval()
    # a model that knows tools runs them in its rollouts (seedgpt/agent.py): a trace is the model's
    # calls and answer, with the tools' results between them. The results are given, not sampled:
    # they are out of the loss (y = -1), and the reward scores the final answer alone.
    traces = generate_with_tools(policy, tok, prompts, cfg.max_new_tokens, cfg.max_calls, temperature=cfg.temperature)
    policy.train()
    x, y = as_batch(prompts, [t.ids for t in traces], rt.device, [t.mask for t in traces])
    mask = (y != -1).float()

    # 2. rewards, and what the policy and the reference thought of the answers, at the temperature
    # that sampled them: the ratio and the KL must compare the distributions the tokens came from.
    # old_logp is the policy before any update (pi_old of the ratio); ref_logp the leash's anchor.
    scores, right = rewarder(records, traces)
    scores = scores.to(rt.device)
    with torch.no_grad(), rt.autocast():
        old_logp, old_values = token_logprobs(policy, x, y, cfg.temperature)
        ref_logp, _ = token_logprobs(ref, x, y, cfg.temperature)
    if cfg.algo == 'grpo':  # no values, and no value loss
        old_values = torch.zeros_like(mask)
    # the KL of the rollout, per answer token: ppo pays it as a cost in the reward, grpo only logs it
    # here (its loss recomputes it from the new log-probabilities, so that it has a gradient)
    kl = kl_per_token(old_logp, ref_logp, cfg.kl_estimator) * mask

    # 3. advantages: how much better each token did than expected (GAE for ppo, the group for grpo).
    # A raw reward would push up every answer of an easy question; an advantage only the better ones.
    adv, returns, zero_var = advantages(cfg, scores, kl, mask, old_values)

    # 4. clipped updates: ppo_epochs passes in minibatches, each one step of train.py's Stepper.
    # After the first minibatch the policy is no longer pi_old: the clipped ratio in clipped_loss
    # stops any token from pulling once it has moved clip_eps its way (https://arxiv.org/abs/1707.06347).
    lr = lr_at(cfg, progress['iter_num'], progress['elapsed'])
    stepper.set_lr(lr)
    sums = {}
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(rng.getrandbits(32)))
        for mb in order.split(cfg.minibatch_size):
            mb = mb.to(rt.device)
            with rt.autocast():
                logp, values = token_logprobs(policy, x[mb], y[mb], cfg.temperature)
            loss, stats = clipped_loss(cfg, logp, values, old_logp[mb], old_values[mb], adv[mb], returns[mb],
                                       ref_logp[mb], mask[mb])
            # train.py's update: under fp16 the loss is scaled so small gradients do not underflow;
            # then unscale, clip, step (skipped on overflow), zero, and re-apply the pruning masks
            stepper.backward(loss)
            stepper.step()
            add_stats(sums, {'loss': loss, **stats})

    row = {k: round(v, 5) for k, v in mean_stats(sums, rt).items()}
    row.update(reward=round(scores.mean().item(), 4), right=round(right.mean().item(), 4),
               kl=round((kl.sum(1)).mean().item(), 5), kl_estimator=cfg.kl_estimator,
               answer_len=round(mask.sum(1).mean().item(), 2), lr=lr, sec=round(time.time() - t0, 2))
    if zero_var is not None:
        row['zero_var_groups'] = round(zero_var, 3)
    return row


if __name__ == '__main__':
    main(load_config(Config))
