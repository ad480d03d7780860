r"""
Train a GPT: on a CPU, one GPU, or many GPUs and machines through torchrun.

    python train.py config/stdlib_char.py                      # the 3-minute CPU demo
    python train.py config/sft_tasks.py                        # chat SFT on the task suite (CPU, 9 minutes)
    python train.py config/shakespeare_char.py --max_iters=2000  # any setting from the command line
    python train.py --help                                     # every setting, its default and what it does
    python train.py config/finetune_lora_shakespeare.py        # fine-tune GPT-2: LoRA adapters, early stopping
    python train.py config/distill_stdlib.py                   # a smaller student from a teacher's logits
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py
    # two machines: run on each, with --node_rank=0 on the first and --node_rank=1 on the second
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 \
        train.py config/gpt2_124m.py

Settings come from the defaults below, then each config file, then --key=value, in that order.
"""
import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from model import GPTConfig
from seedgpt.checkpoint import built_settings, resume_run, save_run, save_snapshot, start_run
from seedgpt.config import check_type, load_config
from seedgpt.data import bits_per_byte, data_batches, load_meta, padded
from seedgpt.log import Logger, add_stats, fmt_time, mean_stats
from seedgpt.loop import Cadence, RunConfig
from seedgpt.lora import freeze_and_adapt
from seedgpt.objectives import Distill
from seedgpt.optim import Stepper, lr_at
from seedgpt.charts import loss_png
from seedgpt.runtime import exit_after_torchrun, peak_flops, print0, rank0_float, setup_runtime


@dataclass
class LoopConfig(GPTConfig, RunConfig):
    """The loop's settings: where, how long, the optimizer and the system come from seedgpt.loop.RunConfig,
    which feedback/rl.py shares; the model's (n_layer, n_head, n_embd, block_size, dropout, bias, pos, norm,
    qk_norm, mlp) from model.GPTConfig, with their defaults and comments there. vocab_size is the dataset's."""
    # i/o
    init_from: str = 'scratch'  # 'scratch', 'resume', an out_dir, gpt2[-medium|-large|-xl] or a Hugging Face dir
    hf_dir: str = ''  # with init_from=gpt2*: a local Hugging Face GPT-2 directory; '' looks in the HF cache
    eval_iters: int = 50  # batches per loss estimate; the same fixed batches every time
    always_save_checkpoint: bool = True  # else save only when val loss improves
    eval_only: bool = False  # estimate the losses once and exit
    patience: int = 0  # stop after this many evaluations without a new best val loss; 0 never
    # batch: tokens per iteration = batch_size * grad_accum * block_size, whatever the number of processes
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per iteration, over all processes together
    # fine-tuning: what stays fixed (frozen parameters get no gradients and no optimizer state)
    freeze_embeddings: bool = False  # fix wte and wpe; wte is tied to lm_head, so this fixes the output layer too
    freeze_blocks: int = 0  # fix the first this many blocks
    lora_rank: int = 0  # > 0: train low-rank adapters of this rank only, every other weight fixed (LoRA)
    lora_alpha: float = 16.0  # the adapters' output is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: str = 'c_attn,c_proj'  # Linears to adapt: c_attn, c_proj (both), c_fc, attn.c_proj, mlp.c_proj
    # one config for fast and slow machines (CPUs without bf16 run bf16 matmuls slower than fp32, docs/benchmarks.md)
    slow_tflops: float = 0.0  # if the matmul peak measured in the training dtype is below this many TFLOP/s...
    slow: dict = field(default_factory=dict)  # ...these settings replace the ones above (e.g. a smaller model)
    # system
    compile: bool = False  # torch.compile the model: faster steps after a one-off compile
    fsdp: bool = False  # under torchrun, shard parameters, gradients and optimizer state over the processes


@dataclass
class Config(LoopConfig):
    """train.py's settings: the loop's, and distillation, which is train.py's own objective. The stages that
    run this loop with an objective of their own (feedback/reward.py, feedback/dpo.py) extend LoopConfig."""
    # distillation: learn a teacher's softened next-token distribution too (pruning masks come with init_from)
    teacher_dir: str = ''  # a checkpoint of the teacher, with this dataset's tokenizer; '' for none
    distill_temperature: float = 2.0  # both softmaxes of the KL term are taken at this temperature
    distill_alpha: float = 0.5  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * cross-entropy


@torch.no_grad()
def estimate_loss(model, batches, rt, eval_iters):
    """Mean loss on the same eval_iters batches of each split every time, shared out over the processes."""
    model.eval()
    out = {}
    for split in ('train', 'val'):
        sums = {}
        for j in range(math.ceil(eval_iters / rt.world_size)):  # the same count on every rank, as FSDP needs
            x, y = batches.get(split, j * rt.world_size + rt.rank, 0, tag='eval')
            with rt.autocast():
                stats, loss = model(x, y)
            add_stats(sums, {'': loss, **(stats if isinstance(stats, dict) else {})})
        for key, value in mean_stats(sums, rt).items():  # '' is the loss; an objective's stats get the split's prefix
            out[f'{split}_{key}' if key else split] = value
    model.train()
    return out


def grad_sync(model, orig_model, fsdp, last):
    """Under DDP/FSDP, average gradients only on the last micro-batch of an iteration. FSDP's switch lives on
    the sharded GPT (orig_model), not on an objective's module around it; DDP's on its own wrapper (model)."""
    if fsdp:
        orig_model.set_requires_gradient_sync(last)
    elif hasattr(model, 'no_sync') and not last:
        return model.no_sync()
    return nullcontext()


def sized_for_machine(cfg, rt):
    """cfg, with its `slow` settings in force when the matmul peak (rank 0's, under torchrun) is below slow_tflops."""
    if not cfg.slow_tflops:
        return cfg
    known, slow_cfg = {f.name: f for f in fields(type(cfg))}, cfg  # train.py's settings, or a stage's
    for key, value in cfg.slow.items():
        if key not in known or key in ('slow', 'slow_tflops'):
            raise SystemExit(f"error: slow holds '{key}', which is not a setting that can be replaced")
        slow_cfg = replace(slow_cfg, **{key: check_type(key, value, known[key].type)})
    peak = peak_flops(rt)
    # rank 0 decides for all: ranks timed apart can fall either side of slow_tflops, and ranks that built
    # different models would hang in their first collective
    fast = bool(rank0_float(float(peak is None or peak >= cfg.slow_tflops * 1e12), rt))
    print0(f"sizing: matmul peak {'unknown' if peak is None else f'{peak / 1e12:.2f} TFLOP/s'} in {rt.dtype} is "
           f"{'at least' if fast else 'below'} slow_tflops={cfg.slow_tflops}, so "
           + ('the settings stay as given' if fast else f"these replace them: {cfg.slow}"))
    return cfg if fast else slow_cfg


def main(cfg, objective=None):
    """Train; returns the last evaluation's losses (and an objective's stats), e.g. {'train', 'val', 'val_acc'}."""
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    try:
        cfg = sized_for_machine(cfg, rt)
        if getattr(cfg, 'teacher_dir', ''):
            if objective:
                raise SystemExit("error: teacher_dir (distillation) does not combine with another objective")
            objective = Distill.from_config(cfg, rt)
        return train(cfg, rt, objective)
    finally:
        if rt.ddp and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def check_settings(cfg, rt, objective):
    """Refuse, before any work, the combinations that cannot run."""
    if cfg.grad_accum % rt.world_size:
        raise SystemExit(f"error: grad_accum={cfg.grad_accum} must be a multiple of the {rt.world_size} processes")
    if cfg.value_head and not getattr(objective, 'uses_value_head', False):
        # a head that no loss reaches would train nothing, and DDP stops on parameters without gradients
        raise SystemExit("error: value_head=True is for reward models (python -m feedback.reward) and PPO "
                         "(python -m feedback.rl); leave it out here")
    if cfg.vocab_size != GPTConfig.vocab_size:
        raise SystemExit("error: vocab_size is read from the dataset's meta.json; leave it out")
    if cfg.fsdp and (not rt.ddp or cfg.muon_lr > 0):
        raise SystemExit("error: fsdp=True needs torchrun and AdamW (muon_lr=0)")
    if cfg.fsdp and cfg.lora_rank > 0:
        raise SystemExit("error: lora_rank > 0 does not work with fsdp=True; the adapters are small: plain torchrun")


def train(cfg, rt, objective=None):
    """The training loop. `objective` (Distill above, feedback/reward.py, feedback/dpo.py) trains for another
    loss than the next token's on the same loop: objective.batches(cfg, meta, device) gives the batches, and
    objective.wrap(model) a module whose forward(x, y) returns (stats, loss), stats being a dict of scalar
    tensors to log. The model saved is the GPT."""
    check_settings(cfg, rt, objective)
    meta = load_meta(cfg.data_dir)
    batches = (objective.batches if objective else data_batches)(cfg, meta, rt.device)

    # the model and its optimizers: from scratch, from a checkpoint to fine-tune, or where a run left off
    ckpt, model_args, model, masks = start_run(cfg, meta, rt, fsdp=cfg.fsdp)
    cfg = built_settings(cfg, model_args)
    if masks and (cfg.fsdp or cfg.lora_rank > 0):
        raise SystemExit("error: a pruned checkpoint (with masks) fine-tunes without fsdp and lora_rank")
    freeze_and_adapt(model, cfg, ckpt)  # fine-tuning: frozen blocks or embeddings, LoRA adapters
    stepper = Stepper(model, cfg, rt, masks)
    torch.manual_seed(cfg.seed + rt.rank)  # the same weights everywhere, but each rank its own dropout masks
    progress = {'iter_num': 0, 'elapsed': 0.0, 'best_val_loss': float('inf'), 'evals_since_best': 0}
    if ckpt:
        progress.update(resume_run(ckpt, model, stepper, rt, cfg.seed, cfg.fsdp))
    del ckpt
    run = {'cfg': cfg, 'meta': meta, 'model_args': model_args, 'masks': masks}

    orig_model = model  # unwrapped and uncompiled: what gets saved
    model = objective.wrap(model) if objective else model
    plain = model  # what gets evaluated: the model or the objective around it, never DDP's wrapper
    if cfg.compile:
        model = torch.compile(model)
    if rt.ddp and not cfg.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == 'cuda' else None)
    flops_peak = peak_flops(rt)
    print_start(cfg, rt, orig_model, meta, flops_peak, progress['iter_num'])
    logger = Logger(cfg, rt)
    clock = Cadence(cfg, rt, progress['iter_num'], progress['elapsed'], resumed=cfg.init_from == 'resume')
    if note := clock.nothing_to_do(progress['iter_num'], progress['elapsed']):
        print0(note)
    losses, micro_steps = {}, cfg.grad_accum // rt.world_size  # grad_accum counts micro-batches over all processes
    try:
        while True:
            evaluate_now, done, progress['elapsed'] = clock.check(progress['iter_num'])
            if evaluate_now or cfg.eval_only:
                losses = evaluate(plain if rt.ddp and not cfg.fsdp else model, batches, rt, run, progress, logger,
                                  objective)
                if (losses['improved'] or cfg.always_save_checkpoint) and progress['iter_num'] and not cfg.eval_only:
                    save_run(os.path.join(cfg.out_dir, 'ckpt.pt'), run, orig_model, stepper, rt,
                             {**progress, 'val_loss': losses['val']}, cfg.fsdp, cfg.lora_alpha)
                    print0(f"saved {cfg.out_dir}/ckpt.pt")
                clock.restart()
                if cfg.patience and progress['evals_since_best'] >= cfg.patience:
                    print0(f"early stop: no new best val loss in {cfg.patience} evaluations "
                           f"(best {progress['best_val_loss']:.4f})")
                    done = True  # the end: a last snapshot, then out
            if clock.keeps(progress['iter_num'], done) and not cfg.eval_only:  # the weights alone (keep_every)
                save_snapshot(run, orig_model, rt, progress['iter_num'], cfg.fsdp, cfg.lora_alpha)
                clock.restart()
            if done or cfg.eval_only:
                break
            lr = lr_at(cfg, progress['iter_num'], progress['elapsed'])
            stepper.set_lr(lr)
            loss_sum, stat_sums = torch.zeros((), device=rt.device), {}
            for micro in range(micro_steps):
                x, y = batches.get('train', progress['iter_num'], rt.rank * micro_steps + micro)
                clock.count(x)
                with grad_sync(model, orig_model, rt.ddp and cfg.fsdp, micro == micro_steps - 1):
                    with rt.autocast():
                        stats, loss = model(x, y)
                    if objective:
                        add_stats(stat_sums, stats)
                    # dividing by the micro-steps makes the summed gradients those of the mean loss over the
                    # whole batch; DDP then averages over the processes, which together make grad_accum
                    stepper.backward(loss / micro_steps)
                loss_sum += loss.detach()
            stepper.step()  # unscale, clip, step, zero the gradients, re-apply pruning masks
            progress['iter_num'] += 1
            if progress['iter_num'] % cfg.log_interval == 0:
                log_step(cfg, rt, orig_model, clock, logger, progress['iter_num'], lr, loss_sum, stat_sums, flops_peak)
    finally:
        logger.close()
    return {k: v for k, v in losses.items() if k != 'improved'}


def print_start(cfg, rt, model, meta, flops_peak, iter_num):
    """What a run starts with: the machine, every setting, the model's size and what trains."""
    peak = 'unknown' if flops_peak is None else f'{flops_peak / 1e12:.2f} TFLOP/s'
    print0(f"seedgpt train | torch {torch.__version__} | device {rt.device} | dtype {rt.dtype} | "
           f"processes {rt.world_size} | peak {peak}")
    print0("config: " + json.dumps(asdict(cfg)))
    tokens_per_iter = cfg.batch_size * cfg.grad_accum * cfg.block_size
    upto = 'up to ' if padded(meta) else ''  # conversations: a batch is as long as its longest
    print0(f"model: {model.num_params() / 1e6:.2f}M parameters | {upto}{tokens_per_iter:,} tokens per iteration | "
           f"data {cfg.data_dir} ({meta['tokenizer']}, vocab {meta['vocab_size']:,})"
           + (f" | resumed at iter {iter_num}" if iter_num else ''))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print0(f"trainable: {trainable:,} of {model.num_params(non_embedding=False):,} parameters")


def evaluate(model, batches, rt, run, progress, logger, objective):
    """Estimate the losses, log them and update progress's best val loss; returns the losses, with
    'improved': whether val loss is a new best."""
    cfg, meta = run['cfg'], run['meta']
    losses = estimate_loss(model, batches, rt, cfg.eval_iters)
    extra = {k: v for k, v in losses.items() if k not in ('train', 'val')}
    # bits per byte of text compare models of any tokenizer (an objective's loss is not a next-token loss)
    extra = {**({} if objective else bits_per_byte(losses, meta)), **extra}
    it = progress['iter_num']
    print0(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
           + ''.join(f", {k} {v:.4f}" for k, v in extra.items()))
    logger.log(iter=it, train_loss=losses['train'], val_loss=losses['val'], **extra,
               time=round(progress['elapsed'], 3))
    if rt.master:
        # out_dir/loss.png, never raises; a top axis of tokens seen where every iteration sees as many
        loss_png(cfg.out_dir, None if padded(meta) else cfg.batch_size * cfg.grad_accum * cfg.block_size)
    improved = losses['val'] < progress['best_val_loss']
    progress['best_val_loss'] = min(progress['best_val_loss'], losses['val'])
    # the same on every rank: val loss is all-reduced
    progress['evals_since_best'] = 0 if improved else progress['evals_since_best'] + 1
    return {**losses, 'improved': improved}


def log_step(cfg, rt, model, clock, logger, it, lr, loss_sum, stat_sums, flops_peak):
    """The log line of the last log_interval iterations: loss, speed, MFU and time left."""
    counts = torch.tensor(clock.counted(), device=rt.device)  # (tokens, rows) of the lap, padding included
    if rt.ddp:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(counts)
    loss = loss_sum.item() / cfg.grad_accum  # .item() waits for the device, so time after it
    dt, left = clock.lap(it, cfg.log_interval)
    tokens, rows = counts.tolist()
    tok_s = tokens / (dt * cfg.log_interval)
    # attention's cost per token grows with the row's length: the mean row, not block_size
    mfu = model.estimate_mfu(tok_s, flops_peak, T=tokens / rows) if flops_peak and rows else None
    extra = mean_stats(stat_sums, rt)  # an objective's stats, of this iteration's batch
    print0(f"iter {it}: loss {loss:.4f}, " + ''.join(f"{k} {v:.4f}, " for k, v in extra.items())
           + f"lr {lr:.2e}, {dt * 1000:.1f} ms/iter, {tok_s:,.0f} tok/s, "
           f"mfu {'n/a' if mfu is None else f'{mfu * 100:.1f}%'}, eta {fmt_time(left)}")
    logger.log(iter=it, loss=loss, **extra, lr=lr, ms=round(dt * 1000, 2), tok_s=round(tok_s),
               mfu=None if mfu is None else round(mfu, 4), time=round(clock.since_start(), 3))


if __name__ == '__main__':
    main(load_config(Config))
    exit_after_torchrun()
