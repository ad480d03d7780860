"""
Train a GPT: on a CPU, one GPU, or many GPUs and machines through torchrun.

    python train.py config/stdlib_char.py                      # the 3-minute CPU demo
    python train.py config/sft_tasks.py                        # chat SFT on the task suite (CPU, 9 minutes)
    python train.py config/shakespeare_char.py --max_iters=2000  # any setting from the command line
    python train.py --help                                     # every setting, its default and what it does
    python train.py config/finetune_lora_shakespeare.py        # fine-tune GPT-2: LoRA adapters, early stopping
    python train.py config/distill_stdlib.py                   # a smaller student from a teacher's logits
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py
    # two machines: run on each, with --node_rank=0 on the first and --node_rank=1 on the second
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 train.py config/gpt2_124m.py

Settings come from the defaults below, then each config file, then --key=value, in that order.
"""
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from model import GPTConfig
from seedgpt.checkpoint import (
    build_model, full_state, load_checkpoint, restore_rng, rng_states, save_checkpoint, set_optimizer_state, start_from,
    start_masks
)
from seedgpt.config import check_type, load_config
from seedgpt.corpus import bits_per_byte
from seedgpt.data import data_batches, load_meta
from seedgpt.log import Logger, add_stats, fmt_time, mean_stats
from seedgpt.lora import freeze_and_adapt, merge_lora
from seedgpt.objectives import Distill
from seedgpt.optim import Stepper, lr_at
from seedgpt.plot import loss_png
from seedgpt.prune import apply_masks
from seedgpt.runtime import exit_after_torchrun, peak_flops, print0, rank0_float, setup_runtime


@dataclass
class LoopConfig(GPTConfig):
    """The model's settings (n_layer, n_head, n_embd, block_size, dropout, bias, pos, norm, qk_norm, mlp) come
    from model.GPTConfig, with their defaults and comments there; vocab_size is always the dataset's."""
    # i/o
    out_dir: str = 'out'  # checkpoints and log.jsonl go here
    data_dir: str = 'data/stdlib_char'  # made by a prepare/ script: train.bin, val.bin, meta.json
    init_from: str = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), a seedgpt checkpoint to fine-tune, gpt2[-medium|-large|-xl], or a Hugging Face directory (GPT-2, Llama, Qwen3)
    hf_dir: str = ''  # with init_from=gpt2*: a local Hugging Face GPT-2 directory; '' looks in the HF cache
    eval_interval: int = 250  # iterations between val loss estimates (and checkpoints)
    eval_iters: int = 50  # batches per loss estimate; the same fixed batches every time
    log_interval: int = 10  # iterations between log lines
    always_save_checkpoint: bool = True  # else save only when val loss improves
    eval_only: bool = False  # estimate the losses once and exit
    patience: int = 0  # stop after this many evaluations without a new best val loss; 0 never
    # batch: tokens per iteration = batch_size * grad_accum * block_size, whatever the number of processes
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per iteration, over all processes together
    # optimizer
    learning_rate: float = 1e-3  # peak learning rate of AdamW
    min_lr: float = 1e-4  # end of the cosine decay, ~learning_rate/10
    warmup_iters: int = 100  # linear warmup from 0
    max_iters: int = 5000  # stop after this many iterations
    lr_decay_iters: int = 0  # length of the cosine decay; 0 means max_iters
    max_time: float = 0.0  # wall-clock budget in seconds, 0 for none; the LR decays by time when it binds
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip gradients at this norm, 0 to disable
    muon_lr: float = 0.0  # > 0: Muon for the hidden matrices at this learning rate, AdamW for the rest
    # fine-tuning: what stays fixed (frozen parameters get no gradients and no optimizer state)
    freeze_embeddings: bool = False  # fix wte and wpe; wte is tied to lm_head, so this fixes the output layer too
    freeze_blocks: int = 0  # fix the first this many blocks
    lora_rank: int = 0  # > 0: train low-rank adapters of this rank only, every other weight fixed (LoRA)
    lora_alpha: float = 16.0  # the adapters' output is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: str = 'c_attn,c_proj'  # Linears in each block to adapt: c_attn, c_proj (attention's and the MLP's), c_fc, attn.c_proj, mlp.c_proj
    # one config for fast and slow machines (CPUs without bf16 run matmuls ~4x slower than those with it)
    slow_tflops: float = 0.0  # if the matmul peak measured in the training dtype is below this many TFLOP/s...
    slow: dict = field(default_factory=dict)  # ...these settings replace the ones above (e.g. a smaller model)
    # system
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype: str = 'auto'  # 'auto' (bf16 where fast, else fp16 on GPUs, else fp32), 'float32', 'bfloat16', 'float16'
    compile: bool = False  # torch.compile the model: faster steps after a one-off compile
    fsdp: bool = False  # under torchrun, shard parameters, gradients and optimizer state over the processes
    seed: int = 1337  # fixes the initialisation, the batches and dropout
    # logging
    wandb_log: bool = False  # log to Weights & Biases (WANDB_MODE=offline works without a network)
    wandb_project: str = 'seedgpt'
    wandb_run_name: str = 'run'


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


def train(cfg, rt, objective=None):
    """The training loop. `objective` (Distill above, feedback/reward.py, feedback/dpo.py) trains for another loss than the next
    token's on the same loop: objective.batches(cfg, meta, device) gives the batches, and objective.wrap(model)
    a module whose forward(x, y) returns (stats, loss), stats being a dict of scalar tensors to log. The model
    saved is the GPT."""
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
        raise SystemExit("error: lora_rank > 0 does not work with fsdp=True; the adapters are small, use plain torchrun")
    micro_steps = cfg.grad_accum // rt.world_size  # grad_accum counts micro-batches over all processes together
    tokens_per_iter = cfg.batch_size * cfg.grad_accum * cfg.block_size
    meta = load_meta(cfg.data_dir)
    batches = (objective.batches if objective else data_batches)(cfg, meta, rt.device)
    if rt.master:
        os.makedirs(cfg.out_dir, exist_ok=True)

    # model, optimizer and state: from scratch or from the last checkpoint, read on the CPU: the RNG states
    # must stay there, and only what the model and optimizer need moves to the device
    ckpt = load_checkpoint(cfg.out_dir) if cfg.init_from == 'resume' else None
    model_args, state = start_from(cfg, meta, ckpt)
    model = build_model(model_args, state, rt, cfg.fsdp)
    del state
    masks = {k: m.to(rt.device) for k, m in start_masks(cfg, ckpt).items()}
    if masks and (cfg.fsdp or cfg.lora_rank > 0):
        raise SystemExit("error: a pruned checkpoint (with masks) fine-tunes without fsdp and lora_rank")
    apply_masks(model, masks)
    freeze_and_adapt(model, cfg, ckpt)  # fine-tuning: frozen blocks or embeddings, LoRA adapters
    stepper = Stepper(model, cfg, rt, masks)
    iter_num, best_val_loss, elapsed, evals_since_best = 0, float('inf'), 0.0, 0
    torch.manual_seed(cfg.seed + rt.rank)  # the same weights everywhere, but each rank its own dropout masks
    if ckpt:
        set_optimizer_state(model, stepper.optimizers, ckpt['optimizers'], rt, cfg.fsdp)
        stepper.scaler.load_state_dict(ckpt['scaler'])
        iter_num, best_val_loss, elapsed = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['elapsed']
        evals_since_best = ckpt.get('evals_since_best', 0)
        restore_rng(ckpt, rt, cfg.seed)
    del ckpt

    orig_model = model  # unwrapped and uncompiled: what gets saved
    if objective:
        model = objective.wrap(model)
    plain = model  # what gets evaluated: the model or the objective around it, never DDP's wrapper
    if cfg.compile:
        model = torch.compile(model)
    if rt.ddp and not cfg.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == 'cuda' else None)
    flops_peak = peak_flops(rt)

    print0(f"seedgpt train | torch {torch.__version__} | device {rt.device} | dtype {rt.dtype} | "
           f"processes {rt.world_size} | peak {'unknown' if flops_peak is None else f'{flops_peak / 1e12:.2f} TFLOP/s'}")
    print0("config: " + json.dumps(asdict(cfg)))
    print0(f"model: {orig_model.num_params() / 1e6:.2f}M parameters | {tokens_per_iter:,} tokens per iteration | "
           f"data {cfg.data_dir} ({meta['tokenizer']}, vocab {meta['vocab_size']:,})"
           + (f" | resumed at iter {iter_num}" if iter_num else ''))
    trainable = sum(p.numel() for p in orig_model.parameters() if p.requires_grad)
    print0(f"trainable: {trainable:,} of {orig_model.num_params(non_embedding=False):,} parameters")
    logger = Logger(cfg, rt)
    last_losses = {}

    def save(val_loss):
        model_state, optim_state = full_state(orig_model, stepper.optimizers, cfg.fsdp)  # every rank takes part
        # a LoRA run saves merged weights under the plain names (a normal checkpoint, for sample.py and the rest)
        # and, under 'lora', the base weights and adapters that resuming it needs
        model_state, lora_state = merge_lora(model_state, cfg.lora_alpha)
        rng = rng_states(rt)
        if not rt.master:
            return
        save_checkpoint(os.path.join(cfg.out_dir, 'ckpt.pt'), {
            'model': model_state, 'model_args': model_args, 'config': asdict(cfg), 'meta': meta,
            'env': {'torch': str(torch.__version__), 'device': rt.device, 'dtype': rt.dtype, 'processes': rt.world_size},
            'optimizers': optim_state, 'scaler': stepper.scaler.state_dict(), 'iter_num': iter_num,
            'best_val_loss': best_val_loss, 'val_loss': val_loss, 'elapsed': elapsed, 'rng': rng,
            'evals_since_best': evals_since_best, **({'lora': lora_state} if lora_state else {}),
            **({'masks': {k: m.cpu() for k, m in masks.items()}} if masks else {})})

    def evaluate():
        nonlocal best_val_loss, evals_since_best
        losses = estimate_loss(plain if rt.ddp and not cfg.fsdp else model, batches, rt, cfg.eval_iters)
        extra = {k: v for k, v in losses.items() if k not in ('train', 'val')}
        # bits per byte of text compare models of any tokenizer (an objective's loss is not a next-token loss)
        extra = {**({} if objective else bits_per_byte(losses, meta)), **extra}
        print0(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
               + ''.join(f", {k} {v:.4f}" for k, v in extra.items()))
        logger.log(iter=iter_num, train_loss=losses['train'], val_loss=losses['val'], **extra, time=round(elapsed, 3))
        last_losses.update(losses)
        if rt.master:
            loss_png(cfg.out_dir, tokens_per_iter)  # out_dir/loss.png; never raises
        improved = losses['val'] < best_val_loss
        best_val_loss = min(best_val_loss, losses['val'])
        evals_since_best = 0 if improved else evals_since_best + 1  # the same on every rank: val loss is all-reduced
        if (improved or cfg.always_save_checkpoint) and iter_num > 0 and not cfg.eval_only:
            save(losses['val'])
            print0(f"saved {cfg.out_dir}/ckpt.pt")
        return losses

    try:
        if cfg.eval_only:
            return evaluate()
        t_start = time.time() - elapsed
        # a checkpoint is saved just after an evaluation: a resumed run does not repeat it (nor count it twice for patience)
        t_last, iters_timed, time_timed = time.time(), 0, 0.0
        last_eval = iter_num if cfg.init_from == 'resume' else None
        if last_eval is not None and (iter_num >= cfg.max_iters or 0 < cfg.max_time <= elapsed):
            print0(f"nothing to do: the checkpoint is at iter {iter_num} after {elapsed:.0f} s, and max_iters="
                   f"{cfg.max_iters}, max_time={cfg.max_time:g}; raise them (max_time=0 for no time limit) to go on")
        while True:
            elapsed = time.time() - t_start
            if cfg.max_time > 0:
                elapsed = rank0_float(elapsed, rt)
            done = iter_num >= cfg.max_iters or (cfg.max_time > 0 and elapsed >= cfg.max_time)
            if (iter_num % cfg.eval_interval == 0 or done) and last_eval != iter_num:
                evaluate()
                last_eval = iter_num
                t_last = time.time()  # leave the eval out of the step timing
                if cfg.patience and evals_since_best >= cfg.patience:
                    print0(f"early stop: no new best val loss in {cfg.patience} evaluations (best {best_val_loss:.4f})")
                    break
            if done:
                break

            lr = lr_at(cfg, iter_num, elapsed)
            stepper.set_lr(lr)
            loss_sum, stat_sums = torch.zeros((), device=rt.device), {}
            for micro in range(micro_steps):
                x, y = batches.get('train', iter_num, rt.rank * micro_steps + micro)
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
            iter_num += 1

            if iter_num % cfg.log_interval == 0:
                if rt.ddp:
                    torch.distributed.all_reduce(loss_sum)
                loss = loss_sum.item() / cfg.grad_accum  # .item() waits for the device, so time after it
                now = time.time()
                if iter_num > cfg.log_interval or iter_num == cfg.max_iters:  # the first steps include warm-up costs
                    iters_timed, time_timed = iters_timed + cfg.log_interval, time_timed + now - t_last
                dt = (now - t_last) / cfg.log_interval
                tok_s = tokens_per_iter / dt
                mfu = orig_model.estimate_mfu(tok_s, flops_peak) if flops_peak else None
                per_iter = time_timed / iters_timed if iters_timed else dt
                left = (cfg.max_iters - iter_num) * per_iter
                if cfg.max_time > 0:
                    left = min(left, cfg.max_time - (now - t_start))
                extra = mean_stats(stat_sums, rt)  # an objective's stats, of this iteration's batch
                print0(f"iter {iter_num}: loss {loss:.4f}, " + ''.join(f"{k} {v:.4f}, " for k, v in extra.items())
                       + f"lr {lr:.2e}, {dt * 1000:.1f} ms/iter, {tok_s:,.0f} tok/s, "
                       f"mfu {'n/a' if mfu is None else f'{mfu * 100:.1f}%'}, eta {fmt_time(max(left, 0))}")
                logger.log(iter=iter_num, loss=loss, **extra, lr=lr, ms=round(dt * 1000, 2), tok_s=round(tok_s),
                           mfu=None if mfu is None else round(mfu, 4), time=round(now - t_start, 3))
                t_last = now
    finally:
        logger.close()
    return last_losses


if __name__ == '__main__':
    main(load_config(Config))
    exit_after_torchrun()
