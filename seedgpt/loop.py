"""
What every training loop shares: train.py's (and so feedback/reward.py's and feedback/dpo.py's) and
feedback/rl.py's. The settings they have in common, and the cadence: when to evaluate, save and stop,
and how long is left. What a checkpoint holds, and how a run resumes from one, live in seedgpt/checkpoint.py.

    clock = Cadence(cfg, rt, iter_num, elapsed, resumed=cfg.init_from == 'resume')
    while True:
        evaluate, done, elapsed = clock.check(iter_num)
        if evaluate: ...                  # estimate, log, save; then clock.restart()
        if clock.keeps(iter_num, done): ...  # out_dir/snapshots/iter_NNNNNN/ckpt.pt (keep_every)
        if done: break
        ...                               # one iteration
        iter_num += 1
        if iter_num % cfg.log_interval == 0:
            per_iter, left = clock.lap(iter_num, cfg.log_interval)
"""
import time
from dataclasses import dataclass

from seedgpt.runtime import rank0_float


@dataclass
class RunConfig:
    """The settings of every training loop. A loop's own Config inherits them, and may give one another
    default (feedback/rl.py starts from a chat model, at a smaller learning rate)."""
    # i/o
    out_dir: str = 'out'  # ckpt.pt and log.jsonl go here
    data_dir: str = 'data/stdlib_char'  # made by a prepare/ script: train.bin, val.bin, meta.json (or the task suite)
    init_from: str = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), a checkpoint to start from, or a model name
    eval_interval: int = 250  # iterations between evaluations on val (and checkpoints)
    log_interval: int = 10  # iterations between log lines
    keep_every: int = 0  # > 0: the weights at iteration 0, every keep_every and the end, for explain.stages to compare
    # the schedule (seedgpt.optim.lr_at) and the optimizer (seedgpt.optim.Stepper)
    learning_rate: float = 1e-3  # peak learning rate of AdamW
    min_lr: float = 1e-4  # end of the cosine decay, ~learning_rate/10
    warmup_iters: int = 100  # linear warmup from 0
    max_iters: int = 5000  # stop after this many iterations
    lr_decay_iters: int = 0  # length of the cosine decay; 0 means max_iters
    max_time: float = 0.0  # seconds of wall clock, 0 for none (evaluations included); the LR then decays by time
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip gradients at this norm, 0 to disable
    muon_lr: float = 0.0  # > 0: Muon for the hidden matrices at this learning rate, AdamW for the rest
    # system
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype: str = 'auto'  # 'auto' (bf16 where fast, else fp16 with loss scaling on GPUs, else fp32), or one of them
    seed: int = 1337  # fixes the initialisation, the batches, dropout and sampling
    # logging
    wandb_log: bool = False  # log to Weights & Biases (WANDB_MODE=offline works without a network)
    wandb_project: str = 'seedgpt'
    wandb_run_name: str = 'run'


class Cadence:
    """When a loop evaluates (every eval_interval iterations, and at the end), when it stops (max_iters or
    max_time), and how long it has left.

    elapsed counts from the run's first start: a resumed run goes on with the time its checkpoint had
    spent, so max_time spans resumes. A checkpoint is saved just after an evaluation, so a resumed run
    does not evaluate (and save) its first iteration again, nor count it twice for patience.
    """

    def __init__(self, cfg, rt, iter_num, elapsed, resumed):
        self.cfg, self.rt = cfg, rt
        self.t_start = time.time() - elapsed
        self.last_eval = iter_num if resumed else None
        self.t_last, self.iters_timed, self.time_timed = time.time(), 0, 0.0
        self.tokens, self.rows = 0, 0  # this process's since the last log line

    def nothing_to_do(self, iter_num, elapsed):
        """A resumed run whose limits are already reached: what to raise to go on, or None."""
        if self.last_eval is not None and (iter_num >= self.cfg.max_iters or 0 < self.cfg.max_time <= elapsed):
            return (f"nothing to do: the checkpoint is at iter {iter_num} after {elapsed:.0f} s, and max_iters="
                    f"{self.cfg.max_iters}, max_time={self.cfg.max_time:g}; raise them (max_time=0 for no time "
                    "limit) to go on")
        return None

    def check(self, iter_num):
        """At the top of an iteration: (evaluate now, stop now, seconds elapsed)."""
        elapsed = time.time() - self.t_start
        if self.cfg.max_time > 0:  # every process stops at the same iteration: rank 0's clock decides
            elapsed = rank0_float(elapsed, self.rt)
        done = iter_num >= self.cfg.max_iters or (self.cfg.max_time > 0 and elapsed >= self.cfg.max_time)
        evaluate = (iter_num % self.cfg.eval_interval == 0 or done) and self.last_eval != iter_num
        if evaluate:
            self.last_eval = iter_num
        return evaluate, done, elapsed

    def keeps(self, iter_num, done):
        """Whether to keep a snapshot of the weights now (seedgpt.checkpoint.save_snapshot): at iteration 0,
        every keep_every iterations and at the end, so that explain.stages can show one model learning."""
        every = self.cfg.keep_every
        return every > 0 and (iter_num % every == 0 or done)

    def count(self, x):
        """Add a micro-batch of token ids (rows, T) to the next log line's tok/s. Padding counts: a batch of
        conversations is as long as its longest (seedgpt/data.py), and the step computes every position."""
        self.tokens, self.rows = self.tokens + x.numel(), self.rows + len(x)

    def counted(self):
        """(tokens, rows) this process counted since the last call."""
        counts, self.tokens, self.rows = (self.tokens, self.rows), 0, 0
        return counts

    def restart(self):
        """Leave what just happened (an evaluation, a save) out of the iterations' timing."""
        self.t_last = time.time()

    def lap(self, iter_num, n):
        """After n more iterations: (seconds per iteration over them, seconds left in the run).

        The first lap holds warm-up costs (allocations, kernel choices), so the estimate of time left is
        the mean of the later ones once there are any."""
        now = time.time()
        per_iter = (now - self.t_last) / n
        if iter_num > n or iter_num == self.cfg.max_iters:
            self.iters_timed, self.time_timed = self.iters_timed + n, self.time_timed + now - self.t_last
        mean = self.time_timed / self.iters_timed if self.iters_timed else per_iter
        left = (self.cfg.max_iters - iter_num) * mean
        if self.cfg.max_time > 0:
            left = min(left, self.cfg.max_time - (now - self.t_start))
        self.t_last = now
        return per_iter, max(left, 0.0)

    def since_start(self):
        return time.time() - self.t_start
