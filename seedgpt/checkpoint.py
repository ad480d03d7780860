"""
Checkpoints: what a run saves and where a run starts.

A checkpoint is one torch file holding plain state dicts (no `module.` or `_orig_mod.` prefixes), the model
args, the resolved config, the dataset's meta, the optimizer states, the iteration and every rank's RNG
state. It is written to a temporary file, flushed to disk and renamed, then the directory itself is
flushed: a crash at any moment leaves the previous checkpoint whole and findable.
"""
import os
from dataclasses import asdict, fields, replace

import torch

from model import GPT, GPTConfig, padded_vocab
from seedgpt.hf_convert import GPT2_NAMES, is_hf_dir, load_gpt2, load_hf, tokenizer_matches
from seedgpt.int8 import quantize_int8
from seedgpt.lora import merge_lora
from seedgpt.prune import apply_masks
from seedgpt.runtime import print0
from seedgpt.tokenizer import load_tokenizer, same_ids


def atomic_write(path, write_fn):
    """Call write_fn(tmp_path), then rename over `path`: readers see the old or the new file, whole."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write_fn(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(d)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fsync_dir(d):
    """Flush directory d's entries to disk: a rename is a change to the directory, and until the directory
    is flushed a crash can bring back the old name (or neither). Where directories cannot be opened
    (Windows), there is nothing to do."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path, ckpt):
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def checkpoint_path(where):
    """A run's checkpoint: `where` itself if it names a .pt file, else where/ckpt.pt."""
    where = os.fspath(where)  # a str or a pathlib.Path
    return where if where.endswith('.pt') else os.path.join(where, 'ckpt.pt')


def load_checkpoint(where):
    """A checkpoint (an out_dir or a .pt file) on the CPU, memory-mapped: only the tensors a caller touches
    are read from disk (so sampling never reads the optimizer's moments), and the caller moves what it
    needs to its device."""
    path = checkpoint_path(where)
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}; train one first (python train.py config/...) "
                         "or pass --out_dir")
    return torch.load(path, map_location='cpu', weights_only=True, mmap=True)



def start_run(cfg, meta, rt, start=None, fsdp=False):
    """What a training loop starts from: (the checkpoint it resumes or None, the model args, the model on
    rt.device, its pruning masks). `start` overrides what start_from reads of cfg (init_from, dropout, ...).
    The checkpoint is read on the CPU: the RNG states must stay there, and only what the model and
    optimizer need moves to the device. A pruned start stays pruned: the masks are applied here, and
    seedgpt.optim.Stepper re-applies them after every update."""
    ckpt = load_checkpoint(cfg.out_dir) if cfg.init_from == 'resume' else None
    model_args, state = start_from(start or cfg, meta, ckpt)
    model = build_model(model_args, state, rt, fsdp)
    masks = {k: m.to(rt.device) for k, m in start_masks(cfg, ckpt).items()}
    apply_masks(model, masks)
    return ckpt, model_args, model, masks


SHAPE = ('n_layer', 'n_head', 'n_embd', 'bias', 'pos', 'norm', 'qk_norm', 'mlp')  # what a checkpoint fixes


def built_settings(cfg, model_args):
    """cfg with the model's shape as it was built: a run that starts from a checkpoint gets that model's
    shape, whatever the config says, so the settings printed and saved are told the truth (with a note)."""
    differ = {k: model_args[k] for k in SHAPE
              if hasattr(cfg, k) and k in model_args and getattr(cfg, k) != model_args[k]}
    if differ:
        print0(f"note: the model comes from init_from={cfg.init_from}: " + ', '.join(
            f"{k} {v} (not {getattr(cfg, k)})" for k, v in differ.items()) + "; the config's shape does not apply")
    return replace(cfg, **differ)


def save_run(path, run, model, stepper, rt, progress, fsdp=False, lora_alpha=None):
    """A training loop's checkpoint. Every process calls it (FSDP gathers the shards); rank 0 writes.

    run: {'cfg', 'meta', 'model_args', 'masks'}, what the run started with; progress: where it stands,
    {'iter_num', 'elapsed', ...} and the loop's own scores (best val loss, or accuracy). Plain weights go
    under 'model' for sample.py and every other reader; the optimizers, the loss scaler, the RNG states
    and the progress make a resume exact. A LoRA run (lora_alpha given) saves merged weights under the
    plain names and, under 'lora', the base weights and adapters that resuming it needs.
    """
    model_state, optim_state = full_state(model, stepper.optimizers, fsdp)
    lora_state = None
    if lora_alpha is not None:
        model_state, lora_state = merge_lora(model_state, lora_alpha)
    rng = rng_states(rt)
    if not rt.master:
        return
    save_checkpoint(path, {
        **readable(run, model_state),
        'env': {'torch': str(torch.__version__), 'device': rt.device, 'dtype': rt.dtype, 'processes': rt.world_size},
        'optimizers': optim_state, 'scaler': stepper.scaler.state_dict(), 'rng': rng, **progress,
        **({'lora': lora_state} if lora_state else {})})


def readable(run, model_state):
    """What every reader of a checkpoint needs (load_model, and a run that starts from it): the plain
    weights, the model's args, the resolved config, the dataset's meta (its tokenizer), and a pruned
    run's masks, which keep a run that starts from it pruned."""
    masks = run['masks']
    return {'model': model_state, 'model_args': run['model_args'], 'config': asdict(run['cfg']), 'meta': run['meta'],
            **({'masks': {k: m.cpu() for k, m in masks.items()}} if masks else {})}


def snapshot_path(out_dir, iter_num):
    """Where save_snapshot keeps the weights of iteration iter_num: zero-padded, so that names sort in order."""
    return os.path.join(out_dir, 'snapshots', f'iter_{iter_num:06d}', 'ckpt.pt')


def save_snapshot(run, model, rt, iter_num, fsdp=False, lora_alpha=None):
    """The weights as they are at iter_num, for watching a model learn (keep_every; explain.stages): a
    checkpoint any reader loads, in out_dir/snapshots/iter_NNNNNN/. No optimizer state, RNG or scaler:
    AdamW's two moments alone are twice the weights, and nothing resumes from a snapshot. Every process
    calls it (FSDP gathers the shards); rank 0 writes."""
    model_state, _ = full_state(model, [], fsdp)
    if lora_alpha is not None:
        model_state, _ = merge_lora(model_state, lora_alpha)
    if rt.master:
        path = snapshot_path(run['cfg'].out_dir, iter_num)
        save_checkpoint(path, {**readable(run, model_state), 'iter_num': iter_num})


def resume_run(ckpt, model, stepper, rt, seed, fsdp=False):
    """Put a run back where its checkpoint left it: the optimizers' moments, the loss scaler, this process's
    RNG states (dropout and sampling draw what an uninterrupted run would). Returns the checkpoint's
    progress: {'iter_num', 'elapsed', ...}."""
    set_optimizer_state(model, stepper.optimizers, ckpt['optimizers'], rt, fsdp)
    stepper.scaler.load_state_dict(ckpt['scaler'])
    restore_rng(ckpt, rt, seed)
    keep = ('model', 'model_args', 'config', 'meta', 'env', 'optimizers', 'scaler', 'rng', 'lora', 'masks')
    return {k: v for k, v in ckpt.items() if k not in keep}


def start_from(cfg, meta, ckpt):
    """The model's args and weights (None: a fresh init) for cfg.init_from."""
    if ckpt:
        return ckpt['model_args'], ckpt['model']
    if cfg.init_from == 'scratch':
        return {**{f.name: getattr(cfg, f.name) for f in fields(GPTConfig)}, 'vocab_size': meta['vocab_size']}, None
    if is_hf_dir(cfg.init_from):  # a GPT-2, Llama or Qwen3 directory, e.g. one that export.hf wrote
        same = tokenizer_matches(cfg.init_from, meta)
        if same is False:
            raise SystemExit(f"error: {cfg.init_from}'s tokenizer files are not those of {cfg.data_dir}'s tokenizer; "
                             "its ids would mean other tokens")
        if same is None:
            print0(f"note: {cfg.init_from} has no tokenizer files; {cfg.data_dir} must have been made with its "
                   "tokenizer")
        args, state = load_hf(cfg.init_from, cfg.dropout)
    elif cfg.init_from.split('/')[-1] in GPT2_NAMES:  # OpenAI's weights, from a local Hugging Face copy
        if meta['tokenizer'] != 'gpt2':
            raise SystemExit(f"error: init_from={cfg.init_from} needs a GPT-2 BPE dataset; {cfg.data_dir} is "
                             f"{meta['tokenizer']}-level (prepare it with --tokenizer=gpt2)")
        args, state = load_gpt2(cfg.init_from, cfg.hf_dir, cfg.dropout)
    else:  # a seedgpt checkpoint: its weights, with a fresh optimizer and step count
        path = checkpoint_path(cfg.init_from)
        if not os.path.isfile(path):
            raise SystemExit(f"error: init_from={cfg.init_from!r}: no checkpoint at {path}; use 'scratch', 'resume', "
                             f"a GPT-2 name ({', '.join(GPT2_NAMES)}), a seedgpt out_dir or a Hugging Face directory")
        base = load_checkpoint(path)
        if not same_ids(meta, base['meta']):
            raise SystemExit(f"error: {path} was trained with another tokenizer than {cfg.data_dir}'s; its ids "
                             "would mean other characters")
        if base.get('quant'):
            raise SystemExit(f"error: {path} holds {base['quant']} weights, which do not train; fine-tune the float "
                             "checkpoint and compress the result")
        args, state = {**base['model_args'], 'dropout': cfg.dropout}, base['model']
        # a scalar head on a language model (feedback/reward.py), from zero
        if cfg.value_head and not args.get('value_head'):
            args['value_head'] = True
            n_embd = args['n_embd']
            state = {**state, 'value_head.weight': torch.zeros(1, n_embd), 'value_head.bias': torch.zeros(1)}
        elif not cfg.value_head and args.get('value_head'):
            # a reward or PPO model fine-tuned as a language model: a head nothing trains would get no gradients,
            # which DDP takes for an error, and it would be saved unchanged as if it still scored something
            args['value_head'] = False
            state = {k: v for k, v in state.items() if not k.startswith('value_head.')}
            print0(f"note: {path} has a value head; this run does not ask for one (value_head=False), so it is dropped")
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
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
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
    cuda = torch.cuda.get_rng_state(rt.device) if rt.device_type == 'cuda' else None
    mine = {'cpu': torch.get_rng_state(), 'cuda': cuda}
    if not rt.ddp:
        return [mine]
    every = [None] * rt.world_size
    torch.distributed.all_gather_object(every, mine)
    return every

def load_model(out_dir, device, dtype=torch.float32, quant='none'):
    """The model and tokenizer of a checkpoint, ready for inference, its weights cast to dtype.

    quant='int8' stores the blocks' Linear weights as int8 (quantised from the fp32 weights, before the cast).
    A checkpoint written by compress/shrink.py --int8 holds them as int8 already: they load into Int8Linear layers
    as they are, with no float copy made on the way.

    Casting once, not autocasting every step: one token at a time, sampling is bound by reading the
    weights, so half-size bf16 weights read half the bytes per token (docs/benchmarks.md measures what it gains).
    """
    if quant not in ('none', 'int8'):
        raise SystemExit(f"error: quant must be 'none' or 'int8', got {quant!r}")
    ckpt = load_checkpoint(out_dir)  # memory-mapped: the optimizer state is never read
    with torch.device('meta'):  # shapes only: the checkpoint's own tensors take their places below
        model = GPT(GPTConfig(**ckpt['model_args']))
    if ckpt.get('quant') == 'int8':
        quantize_int8(model)
    model.load_state_dict(ckpt['model'], assign=True)
    model.transformer.wte.weight = model.lm_head.weight  # assigning untied them
    model.init_buffers()  # the rope tables, now on the weights' device
    if quant == 'int8' and not ckpt.get('quant'):
        quantize_int8(model)
    model.eval().to(device=device, dtype=dtype)  # int8 weights keep their dtype: only float tensors are cast
    return model, load_tokenizer(ckpt['meta'])

def start_masks(cfg, ckpt):
    """The pruning masks of the checkpoint a run starts from (compress/shrink.py --prune), {} for none:
    {name: bool tensor}."""
    if ckpt:
        return ckpt.get('masks', {})
    if cfg.init_from == 'scratch' or cfg.init_from.split('/')[-1] in GPT2_NAMES or is_hf_dir(cfg.init_from):
        return {}
    return load_checkpoint(cfg.init_from).get('masks', {})



def restore_rng(ckpt, rt, seed):
    """Put back this rank's RNG states from a checkpoint, so dropout draws the masks an uninterrupted run would.
    A checkpoint saved by another number of processes has no state for this rank: reseed, and say so."""
    if len(ckpt['rng']) == rt.world_size:
        rng = ckpt['rng'][rt.rank]
        torch.set_rng_state(rng['cpu'])
        if rt.device_type == 'cuda' and rng['cuda'] is not None:
            torch.cuda.set_rng_state(rng['cuda'], rt.device)
        return
    torch.manual_seed(seed + rt.rank + 1000 * ckpt['iter_num'])
    if rt.master:
        print(f"note: saved by {len(ckpt['rng'])} processes, resumed on {rt.world_size}: dropout masks differ "
              "from an uninterrupted run", flush=True)
