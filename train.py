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
import sys
import time
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
from torch.nn import functional as F

from common import (check_type, checkpoint_path, fast_matmul_dtype, fmt_time, load_checkpoint, load_config, load_meta,
                    load_tokens, peak_flops, print0, save_checkpoint, setup_runtime)
from hf import GPT2_NAMES, load_gpt2
from model import GPT, GPTConfig, add_lora, merge_lora, padded_vocab
from plot import loss_png


@dataclass
class Config(GPTConfig):
    """The model's settings (n_layer, n_head, n_embd, block_size, dropout, bias, pos, norm, qk_norm, mlp) come
    from model.GPTConfig, with their defaults and comments there; vocab_size is always the dataset's."""
    # i/o
    out_dir: str = 'out'  # checkpoints and log.jsonl go here
    data_dir: str = 'data/stdlib_char'  # made by a prepare/ script: train.bin, val.bin, meta.json
    init_from: str = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), a seedgpt checkpoint to fine-tune, or gpt2[-medium|-large|-xl]
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
    # distillation: learn a teacher's softened next-token distribution too (pruning masks come with init_from)
    teacher_dir: str = ''  # a checkpoint of the teacher, with this dataset's tokenizer; '' for none
    distill_temperature: float = 2.0  # both softmaxes of the KL term are taken at this temperature
    distill_alpha: float = 0.5  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * cross-entropy
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


def lr_at(cfg, it, elapsed):
    """Linear warmup, then cosine decay to min_lr, by iterations or by wall clock, whichever is further on."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    if cfg.max_time > 0:
        progress = max(progress, elapsed / cfg.max_time)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


class Batches:
    """Random crops of block_size + 1 tokens, drawn from a generator seeded by (seed, split, step).

    A step's batch depends on nothing else, so the loader's position is the iteration number: resuming
    needs no other state, and 1 process with grad_accum=k sees the same tokens as k processes.
    """

    def __init__(self, cfg, meta, device):
        self.cfg, self.meta, self.device = cfg, meta, device
        for split in ('train', 'val'):
            n = len(load_tokens(cfg.data_dir, split, meta))
            if n <= cfg.block_size + 1:
                raise SystemExit(f"error: the {split} split of {cfg.data_dir} has {n} tokens, too few for "
                                 f"block_size={cfg.block_size}; use a smaller block_size or a bigger corpus")

    def get(self, split, step, micro, tag='train'):
        """Micro-batch number `micro` of the whole batch of iteration `step`."""
        cfg = self.cfg
        data = load_tokens(cfg.data_dir, split, self.meta)  # a fresh memmap each time avoids a slow leak
        g = torch.Generator().manual_seed(zlib.crc32(f'{cfg.seed}/{tag}/{split}/{step}'.encode()))
        ix = torch.randint(len(data) - cfg.block_size, (cfg.batch_size * cfg.grad_accum,), generator=g)
        ix = ix[micro * cfg.batch_size:(micro + 1) * cfg.batch_size].tolist()
        xy = torch.from_numpy(np.stack([data[i:i + cfg.block_size + 1].astype(np.int64) for i in ix]))
        return self.to_device(xy[:, :-1].contiguous(), xy[:, 1:].contiguous())

    def to_device(self, x, y):
        if self.device.startswith('cuda'):  # pinned memory: the copy overlaps the GPU's work
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)


class ChatBatches(Batches):
    """Whole conversations, one per row from its first token, padded and never cut: the loss falls only on
    what the assistant writes (the target is -1, left out of the loss, everywhere else). Made by
    prepare/tasks.py: {split}.bin tokens, {split}.mask.bin (1 on assistant tokens), {split}.idx.bin starts."""

    def __init__(self, cfg, meta, device):
        self.cfg, self.meta, self.device = cfg, meta, device
        if meta['max_conversation_tokens'] > cfg.block_size + 1:
            raise SystemExit(f"error: {cfg.data_dir} has conversations of {meta['max_conversation_tokens']} tokens; "
                             f"use block_size >= {meta['max_conversation_tokens'] - 1}")
        self.starts = {s: np.fromfile(os.path.join(cfg.data_dir, f'{s}.idx.bin'), dtype=np.int64) for s in ('train', 'val')}

    def get(self, split, step, micro, tag='train'):
        cfg = self.cfg
        data = load_tokens(cfg.data_dir, split, self.meta)
        mask = np.memmap(os.path.join(cfg.data_dir, f'{split}.mask.bin'), dtype=np.uint8, mode='r')
        starts = self.starts[split]
        ends = np.append(starts[1:], len(data))
        g = torch.Generator().manual_seed(zlib.crc32(f'{cfg.seed}/{tag}/{split}/{step}'.encode()))
        ix = torch.randint(len(starts), (cfg.batch_size * cfg.grad_accum,), generator=g)
        ix = ix[micro * cfg.batch_size:(micro + 1) * cfg.batch_size].tolist()
        T = max(ends[c] - starts[c] for c in ix) - 1  # as long as the batch's longest: padding costs compute too
        if self.device.startswith('cuda') or self.cfg.compile:
            T = cfg.block_size  # one shape: a compiled model or CUDA graph would recompile for each new length
        x = np.zeros((cfg.batch_size, T), dtype=np.int64)  # padding, never a target
        y = np.full((cfg.batch_size, T), -1, dtype=np.int64)
        for row, c in enumerate(ix):
            s, e = starts[c], ends[c]
            x[row, :e - s - 1] = data[s:e - 1]
            y[row, :e - s - 1] = np.where(mask[s + 1:e] == 1, data[s + 1:e].astype(np.int64), -1)
        return self.to_device(torch.from_numpy(x), torch.from_numpy(y))


class PairBatches(Batches):
    """Preference pairs (prepare/preferences.py): each micro-batch is x (2B, T), B chosen conversations then
    their B rejected ones, right-padded, and y the next-token targets on the answers only (-1 elsewhere), as
    ChatBatches makes them. reward.py and dpo.py train on these."""

    def __init__(self, cfg, meta, device):
        from common import load_tokenizer, render_chat
        self.cfg, self.device = cfg, device
        tok = load_tokenizer(meta)
        self.rows = {}
        for split in ('train', 'val'):
            with open(os.path.join(cfg.data_dir, f'{split}.jsonl'), encoding='utf-8') as f:
                pairs = [json.loads(line) for line in f if line.strip()]
            self.rows[split] = [[render_chat(tok, p['prompt'] + [{'role': 'assistant', 'content': p[side]}])
                                 for side in ('chosen', 'rejected')] for p in pairs]
            longest = max(len(ids) for pair in self.rows[split] for ids, _ in pair)
            if longest > cfg.block_size:
                raise SystemExit(f"error: {cfg.data_dir} has conversations of {longest} tokens; use block_size >= {longest}")

    def get(self, split, step, micro, tag='train'):
        cfg, rows = self.cfg, self.rows[split]
        g = torch.Generator().manual_seed(zlib.crc32(f'{cfg.seed}/{tag}/{split}/{step}'.encode()))
        ix = torch.randint(len(rows), (cfg.batch_size * cfg.grad_accum,), generator=g)
        convs = [rows[i][side] for side in (0, 1) for i in ix[micro * cfg.batch_size:(micro + 1) * cfg.batch_size].tolist()]
        T = max(len(ids) for ids, _ in convs)
        x = torch.zeros(len(convs), T, dtype=torch.long)
        y = torch.full((len(convs), T), -1, dtype=torch.long)
        for row, (ids, mask) in enumerate(convs):
            x[row, :len(ids)] = torch.tensor(ids)
            y[row, :len(ids) - 1] = torch.tensor([i if m else -1 for i, m in zip(ids[1:], mask[1:])])
        return self.to_device(x, y)


def data_batches(cfg, meta, device):
    """The loader for a dataset: whole padded conversations for a chat one, random crops otherwise."""
    return (ChatBatches if meta.get('format') == 'chat' else Batches)(cfg, meta, device)


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


def add_stats(sums, stats):
    """Add a step's scalar tensors to running sums, counting them under '#'."""
    for key, value in stats.items():
        sums[key] = sums.get(key, 0) + value.detach().float()
    sums['#'] = sums.get('#', 0) + 1


def mean_stats(sums, rt):
    """The means of the sums over every step and process, as floats."""
    keys = [k for k in sums if k != '#']
    if not keys:
        return {}
    total = torch.stack([torch.as_tensor(sums[k], device=rt.device).float() for k in keys]
                        + [torch.tensor(float(sums['#']), device=rt.device)])
    if rt.ddp:
        torch.distributed.all_reduce(total)
    return {k: (total[i] / total[-1]).item() for i, k in enumerate(keys)}


def grad_sync(model, fsdp, last):
    """Under DDP/FSDP, average gradients only on the last micro-batch of an iteration."""
    if fsdp:
        model.set_requires_gradient_sync(last)
    elif hasattr(model, 'no_sync') and not last:
        return model.no_sync()
    return nullcontext()


def start_from(cfg, meta, ckpt):
    """The model's args and weights (None: a fresh init) for cfg.init_from."""
    if ckpt:
        return ckpt['model_args'], ckpt['model']
    if cfg.init_from == 'scratch':
        return {**{f.name: getattr(cfg, f.name) for f in fields(GPTConfig)}, 'vocab_size': meta['vocab_size']}, None
    if cfg.init_from.split('/')[-1] in GPT2_NAMES:  # OpenAI's weights, from a local Hugging Face copy
        if meta['tokenizer'] != 'gpt2':
            raise SystemExit(f"error: init_from={cfg.init_from} needs a GPT-2 BPE dataset; {cfg.data_dir} is "
                             f"{meta['tokenizer']}-level (prepare it with --tokenizer=gpt2)")
        args, state = load_gpt2(cfg.init_from, cfg.hf_dir, cfg.dropout)
    else:  # a seedgpt checkpoint: its weights, with a fresh optimizer and step count
        path = checkpoint_path(cfg.init_from)
        if not os.path.isfile(path):
            raise SystemExit(f"error: init_from={cfg.init_from!r}: no checkpoint at {path}; use 'scratch', 'resume', "
                             f"a GPT-2 name ({', '.join(GPT2_NAMES)}) or a seedgpt out_dir")
        base = load_checkpoint(path)
        ours, theirs = meta.get('chars', []), base['meta'].get('chars', [])
        if base['meta']['tokenizer'] != meta['tokenizer'] or ours[:len(theirs)] != theirs:
            raise SystemExit(f"error: {path} was trained with another tokenizer than {cfg.data_dir}'s; its ids "
                             "would mean other characters")
        if base.get('quant'):
            raise SystemExit(f"error: {path} holds {base['quant']} weights, which do not train; fine-tune the float "
                             "checkpoint and compress the result")
        args, state = {**base['model_args'], 'dropout': cfg.dropout}, base['model']
        if cfg.value_head and not args.get('value_head'):  # a scalar head on a language model (reward.py), from zero
            args['value_head'] = True
            n_embd = args['n_embd']
            state = {**state, 'value_head.weight': torch.zeros(1, n_embd), 'value_head.bias': torch.zeros(1)}
    if meta['vocab_size'] > args['vocab_size']:  # e.g. a chat dataset's role tokens, after GPT-2's 50257
        if padded_vocab(meta['vocab_size']) != padded_vocab(args['vocab_size']):
            raise SystemExit(f"error: {cfg.data_dir} has {meta['vocab_size']} tokens, more than the model's table "
                             f"of {padded_vocab(args['vocab_size'])} rows")
        args['vocab_size'] = meta['vocab_size']  # the new ids take rows of the padding
    if cfg.block_size < args['block_size']:  # fine-tune on shorter blocks: fewer positions to learn from
        args['block_size'] = cfg.block_size
        if 'transformer.wpe.weight' in state:
            state = {**state, 'transformer.wpe.weight': state['transformer.wpe.weight'][:cfg.block_size]}
    return args, state


def start_masks(cfg, ckpt):
    """The pruning masks of the checkpoint a run starts from (compress.py --prune), {} for none: {name: bool tensor}."""
    if ckpt:
        return ckpt.get('masks', {})
    if cfg.init_from == 'scratch' or cfg.init_from.split('/')[-1] in GPT2_NAMES:
        return {}
    return load_checkpoint(cfg.init_from).get('masks', {})


@torch.no_grad()
def apply_masks(model, masks):
    """Zero the pruned weights: every optimizer step moves them, the masks put them back."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def build_model(model_args, state, rt, fsdp):
    """The model on rt.device: with the weights in `state` (a full state dict), else freshly initialised.

    Under FSDP no process ever holds the whole model on its GPU: each builds it on the meta device (shapes
    only, no memory) and shards it, then rank 0 sends every rank its shards of the weights, which it read
    from the checkpoint or initialised on the CPU from the same seed as a single process would.
    """
    config = GPTConfig(**model_args)
    if not fsdp:
        model = GPT(config)
        if state is not None:
            model.load_state_dict(state)
        return model.to(rt.device)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard
    if rt.master and state is None:
        state = GPT(config).state_dict()
    with torch.device('meta'):
        model = GPT(config)
    for block in model.transformer.h:  # one unit per block, then the rest; tensors become DTensors
        fully_shard(block)
    fully_shard(model)
    model.to_empty(device=rt.device)
    model.init_buffers()  # the rope tables, which no state dict carries
    set_model_state_dict(model, state if rt.master else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def full_state(model, optimizers, fsdp):
    """Whole (unsharded) model and optimizer state dicts, gathered to the CPU under FSDP."""
    if not fsdp:
        return model.state_dict(), [opt.state_dict() for opt in optimizers]
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), [get_optimizer_state_dict(model, opt, options=opts)
                                                        for opt in optimizers]


def set_optimizer_state(model, optimizers, states, rt, fsdp):
    """Load full optimizer states; under FSDP rank 0 holds them and sends each rank its shards."""
    if not fsdp:
        for opt, state in zip(optimizers, states):
            opt.load_state_dict(state)  # moves the moments to the parameters' device
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    for opt, state in zip(optimizers, states):
        set_optimizer_state_dict(model, opt, state if rt.master else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def rng_states(rt):
    """Every rank's RNG states (each draws its own dropout masks), gathered to rank 0 for the checkpoint."""
    mine = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state(rt.device) if rt.device_type == 'cuda' else None}
    if not rt.ddp:
        return [mine]
    every = [None] * rt.world_size
    torch.distributed.all_gather_object(every, mine)
    return every


def rank0_float(value, rt):
    """rank 0's value of a float on every rank: one clock for all, so ranks agree on when to stop (one that
    stopped alone would leave the others hanging in the next collective) and on the time-based learning rate."""
    if not rt.ddp:
        return value
    t = torch.tensor(value, dtype=torch.float64, device=rt.device)
    torch.distributed.broadcast(t, 0)
    return t.item()


class Logger:
    """log.jsonl in out_dir, and Weights & Biases when asked; does nothing on ranks other than 0."""

    def __init__(self, cfg, rt):
        self.file = open(os.path.join(cfg.out_dir, 'log.jsonl'), 'a') if rt.master else None
        self.wandb = None
        if cfg.wandb_log and rt.master:
            import wandb
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg))

    def log(self, **row):
        if self.file:
            self.file.write(json.dumps(row) + '\n')
            self.file.flush()
        if self.wandb:
            self.wandb.log(row, step=row['iter'])

    def close(self):
        if self.file:
            self.file.close()
        if self.wandb:
            self.wandb.finish()  # uploads what is left; skipped, a run's last rows can be lost


def sized_for_machine(cfg, rt):
    """cfg, with its `slow` settings in force when this device's matmul peak is below slow_tflops."""
    if not cfg.slow_tflops:
        return cfg
    known, slow_cfg = {f.name: f for f in fields(Config)}, cfg
    for key, value in cfg.slow.items():
        if key not in known or key in ('slow', 'slow_tflops'):
            raise SystemExit(f"error: slow holds '{key}', which is not a setting that can be replaced")
        slow_cfg = replace(slow_cfg, **{key: check_type(key, value, known[key].type)})
    peak = peak_flops(rt)
    fast = peak is None or peak >= cfg.slow_tflops * 1e12
    print0(f"sizing: matmul peak {'unknown' if peak is None else f'{peak / 1e12:.2f} TFLOP/s'} in {rt.dtype} is "
           f"{'at least' if fast else 'below'} slow_tflops={cfg.slow_tflops}, so "
           + ('the settings stay as given' if fast else f"these replace them: {cfg.slow}"))
    return cfg if fast else slow_cfg


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
        from sample import load_model
        if cfg.distill_temperature <= 0 or not 0 <= cfg.distill_alpha <= 1:
            raise SystemExit("error: distill_temperature must be > 0 and distill_alpha in [0, 1]")
        ours, theirs = load_meta(cfg.data_dir), load_checkpoint(cfg.teacher_dir)['meta']
        if any(ours.get(k) != theirs.get(k) for k in ('tokenizer', 'vocab_size', 'chars', 'special_tokens')):
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


def main(cfg, objective=None):
    """Train; returns the last evaluation's losses (and an objective's stats), e.g. {'train', 'val', 'val_acc'}."""
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    try:
        cfg = sized_for_machine(cfg, rt)
        if cfg.teacher_dir:
            if objective:
                raise SystemExit("error: teacher_dir (distillation) does not combine with another objective")
            objective = Distill.from_config(cfg, rt)
        return train(cfg, rt, objective)
    finally:
        if rt.ddp and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train(cfg, rt, objective=None):
    """The training loop. `objective` (Distill above, reward.py, dpo.py) trains for another loss than the next
    token's on the same loop: objective.batches(cfg, meta, device) gives the batches, and objective.wrap(model)
    a module whose forward(x, y) returns (stats, loss), stats being a dict of scalar tensors to log. The model
    saved is the GPT."""
    if cfg.grad_accum % rt.world_size:
        raise SystemExit(f"error: grad_accum={cfg.grad_accum} must be a multiple of the {rt.world_size} processes")
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
    if cfg.freeze_blocks > model_args['n_layer'] or cfg.freeze_blocks < 0:
        raise SystemExit(f"error: freeze_blocks={cfg.freeze_blocks}, but the model has {model_args['n_layer']} blocks")
    if ckpt and ('lora' in ckpt) != (cfg.lora_rank > 0):
        raise SystemExit("error: resume with the lora_rank of the run that saved the checkpoint")
    if cfg.lora_rank > 0:  # every weight fixed, adapters added
        try:
            targets = [t.strip() for t in cfg.lora_targets.split(',')]
            add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, targets)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        if ckpt:  # the checkpoint's weights are merged: put back the base weights under them, and the adapters
            model.load_state_dict({**model.state_dict(), **ckpt['lora']})
    frozen = list(model.transformer.h[:cfg.freeze_blocks])
    if cfg.freeze_embeddings:  # wte is lm_head's weight too: the output layer stays fixed with it
        frozen += [model.transformer.wte, model.transformer.wpe]
    for module in frozen:
        if module is not None:  # no wpe with rope
            module.requires_grad_(False)
    # the hidden matrices' Newton-Schulz runs in bf16 only where the hardware has it
    optimizers = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                            rt.device_type, cfg.muon_lr, fast_matmul_dtype(rt.device_type))
    for opt in optimizers:
        for group in opt.param_groups:
            group['base_lr'] = group['lr']  # the schedule scales each optimizer's own peak
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == 'float16')
    iter_num, best_val_loss, elapsed, evals_since_best = 0, float('inf'), 0.0, 0
    torch.manual_seed(cfg.seed + rt.rank)  # the same weights everywhere, but each rank its own dropout masks
    if ckpt:
        set_optimizer_state(model, optimizers, ckpt['optimizers'], rt, cfg.fsdp)
        scaler.load_state_dict(ckpt['scaler'])
        iter_num, best_val_loss, elapsed = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['elapsed']
        evals_since_best = ckpt.get('evals_since_best', 0)
        if len(ckpt['rng']) == rt.world_size:
            rng = ckpt['rng'][rt.rank]
            torch.set_rng_state(rng['cpu'])
            if rt.device_type == 'cuda' and rng['cuda'] is not None:
                torch.cuda.set_rng_state(rng['cuda'], rt.device)
        else:
            torch.manual_seed(cfg.seed + rt.rank + 1000 * iter_num)
            print0(f"note: saved by {len(ckpt['rng'])} processes, resumed on {rt.world_size}: dropout masks "
                   "differ from an uninterrupted run")
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
        model_state, optim_state = full_state(orig_model, optimizers, cfg.fsdp)  # every rank takes part
        # a LoRA run saves merged weights under the plain names (a normal checkpoint, for sample.py and the rest)
        # and, under 'lora', the base weights and adapters that resuming it needs
        model_state, lora_state = merge_lora(model_state, cfg.lora_alpha)
        rng = rng_states(rt)
        if not rt.master:
            return
        save_checkpoint(os.path.join(cfg.out_dir, 'ckpt.pt'), {
            'model': model_state, 'model_args': model_args, 'config': asdict(cfg), 'meta': meta,
            'env': {'torch': str(torch.__version__), 'device': rt.device, 'dtype': rt.dtype, 'processes': rt.world_size},
            'optimizers': optim_state, 'scaler': scaler.state_dict(), 'iter_num': iter_num,
            'best_val_loss': best_val_loss, 'val_loss': val_loss, 'elapsed': elapsed, 'rng': rng,
            'evals_since_best': evals_since_best, **({'lora': lora_state} if lora_state else {}),
            **({'masks': {k: m.cpu() for k, m in masks.items()}} if masks else {})})

    def evaluate():
        nonlocal best_val_loss, evals_since_best
        losses = estimate_loss(plain if rt.ddp and not cfg.fsdp else model, batches, rt, cfg.eval_iters)
        extra = {k: v for k, v in losses.items() if k not in ('train', 'val')}
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
            for opt in optimizers:
                for group in opt.param_groups:
                    group['lr'] = lr * group['base_lr'] / cfg.learning_rate
            loss_sum, stat_sums = torch.zeros((), device=rt.device), {}
            for micro in range(micro_steps):
                x, y = batches.get('train', iter_num, rt.rank * micro_steps + micro)
                with grad_sync(model, rt.ddp and cfg.fsdp, micro == micro_steps - 1):
                    with rt.autocast():
                        stats, loss = model(x, y)
                    if objective:
                        add_stats(stat_sums, stats)
                    # dividing by the micro-steps makes the summed gradients those of the mean loss over the
                    # whole batch; DDP then averages over the processes, which together make grad_accum
                    scaler.scale(loss / micro_steps).backward()
                loss_sum += loss.detach()
            if cfg.grad_clip > 0:
                for opt in optimizers:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(orig_model.parameters(), cfg.grad_clip)
            for opt in optimizers:
                scaler.step(opt)  # skipped when fp16 gradients overflowed
            scaler.update()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            apply_masks(orig_model, masks)
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
    if int(os.environ.get('WORLD_SIZE', 1)) > 1:
        # all work is done and saved; skip interpreter teardown, where gloo's worker threads can
        # abort the process ("terminate called without an active exception") on CPU
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
