"""
The data train.py learns from: a prepare/ script's token files, and the batches drawn from them.

Every loader draws a step's batch from a generator seeded by (seed, split, step) alone, so the batches
are a pure function of the iteration: resuming needs no loader state, and 1 process with grad_accum=k
sees the same tokens as k processes with grad_accum=k.

    Batches       random crops of block_size + 1 tokens (pretraining)
    ChatBatches   whole conversations, the loss on the assistant's tokens only (SFT)
    PairBatches   preference pairs, chosen rows then rejected rows (reward model, DPO)
"""
import json
import math
import os
import zlib

import numpy as np
import torch

from seedgpt.chat import render_chat
from seedgpt.tokenizer import load_tokenizer


def load_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no dataset at {data_dir}; make it first with a prepare/ script: "
                         "python -m prepare.corpus FILES --name=NAME for your own text, python -m prepare.stdlib "
                         "for the demo's")
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def bits_per_byte(losses, meta):
    """{'train_bpb', 'val_bpb'}: each split's loss (nats per token) as bits per byte of the text it predicts,
    loss * tokens / bytes / ln 2 with the split's counts from meta.json, which compares models whatever their
    tokenizer. A chat dataset's loss covers the assistant's tokens alone, so its counts are theirs. {} for a
    dataset made before meta.json counted bytes."""
    out = {}
    for split in ('train', 'val'):
        key = f'{split}_loss' if f'{split}_loss_tokens' in meta else split
        tokens, n_bytes = meta.get(f'{key}_tokens'), meta.get(f'{key}_bytes')
        if split in losses and tokens and n_bytes:
            out[f'{split}_bpb'] = losses[split] * (tokens / n_bytes) / math.log(2)
    return out


def load_tokens(data_dir, split, meta):
    """A read-only memmap of one split's tokens."""
    return np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.dtype(meta['dtype']), mode='r')



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
        self.starts = {s: np.fromfile(os.path.join(cfg.data_dir, f'{s}.idx.bin'), dtype=np.int64)
                       for s in ('train', 'val')}

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
    ChatBatches makes them. feedback/reward.py and feedback/dpo.py train on these."""

    def __init__(self, cfg, meta, device):
        self.cfg, self.device = cfg, device
        tok = load_tokenizer(meta)
        self.rows = {}
        for split in ('train', 'val'):
            with open(os.path.join(cfg.data_dir, f'{split}.jsonl'), encoding='utf-8') as f:
                pairs = [json.loads(line) for line in f if line.strip()]
            # an answer: plain text, or (the suite with tools) the assistant's messages: calls, results, answer
            self.rows[split] = [[render_chat(tok, p['prompt'] + (p[side] if isinstance(p[side], list) else
                                                                 [{'role': 'assistant', 'content': p[side]}]))
                                 for side in ('chosen', 'rejected')] for p in pairs]
            longest = max(len(ids) for pair in self.rows[split] for ids, _ in pair)
            if longest > cfg.block_size:
                raise SystemExit(f"error: {cfg.data_dir} has conversations of {longest} tokens; "
                                 f"use block_size >= {longest}")

    def get(self, split, step, micro, tag='train'):
        cfg, rows = self.cfg, self.rows[split]
        g = torch.Generator().manual_seed(zlib.crc32(f'{cfg.seed}/{tag}/{split}/{step}'.encode()))
        ix = torch.randint(len(rows), (cfg.batch_size * cfg.grad_accum,), generator=g)
        mine = ix[micro * cfg.batch_size:(micro + 1) * cfg.batch_size].tolist()  # this micro-batch's pairs
        convs = [rows[i][side] for side in (0, 1) for i in mine]
        T = max(len(ids) for ids, _ in convs)
        x = torch.zeros(len(convs), T, dtype=torch.long)
        y = torch.full((len(convs), T), -1, dtype=torch.long)
        for row, (ids, mask) in enumerate(convs):
            x[row, :len(ids)] = torch.tensor(ids)
            y[row, :len(ids) - 1] = torch.tensor([i if m else -1 for i, m in zip(ids[1:], mask[1:])])
        return self.to_device(x, y)


def padded(meta):
    """Whether a dataset's batches are rows of whole conversations (or preference pairs), each batch as long as
    its longest, rather than windows of block_size tokens."""
    return meta.get('format') in ('chat', 'pairs')


def data_batches(cfg, meta, device):
    """The loader for a dataset: whole padded conversations for a chat one, random crops otherwise."""
    return (ChatBatches if meta.get('format') == 'chat' else Batches)(cfg, meta, device)

