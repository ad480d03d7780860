"""
Exact-match accuracy of a chat model on the task suite of prepare/tasks.py, per task.

    python -m chat.eval --out_dir=out-sft-tasks                      # a table
    python -m chat.eval --out_dir=out-sft-tasks --json               # one JSON object on stdout
    python -m chat.eval --out_dir=out-sft-tasks --max_examples=200 --temperature=0.8 --split=val
    python -m chat.eval --out_dir=out-dpo-tasks                      # DPO: the suite its pairs were made from
    python -m chat.eval --out_dir=out-sft-tools --split=test,gen     # side by side (a tool suite's default)

Each question of the split is rendered as a prompt (the user turn, then <|assistant|>), answered
greedily by default up to <|end|>, and judged by prepare/tasks.py's check. A model that knows tools
calls them as it answers (seedgpt/agent.py); then the table also says how often it called a tool where
the suite needs one, where it does not, and how many calls were malformed, and arithmetic is broken
down by digits. Beside the accuracy, the loss of the
split's own answers (nats per token, as SFT's loss) and the same in bits per byte of the answers' text, which
compares models of different tokenizers. The means are over tasks.

A suite with tools has a gen split besides test: phrasings and operand digit-length pairs that training
never saw (seedgpt/tasks.py). By default both are answered and shown side by side, per task and per digit
pair (first operand's digits down, second's across; a pair test never asks is '-'). A conversation is
scored on every assistant answer, each asked with the turns before it as the suite wrote them.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m chat.eval ...")

import json
import os
from dataclasses import dataclass

import torch

from seedgpt.chat import chat_ids, knows_tools
from seedgpt.checkpoint import load_checkpoint, load_model
from seedgpt.config import load_config
from seedgpt.runtime import setup_runtime
from seedgpt.tasks import accuracy, answer_loss, load_records, tables


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    data_dir: str = ''  # made by prepare/tasks.py; '' is the one the model was trained on (for DPO: its pairs' suite)
    split: str = ''  # {split}.jsonl to answer, or several side by side (test,gen); '' is test, and gen where it exists
    max_examples: int = 0  # answer only the first this many questions; 0 answers all
    max_new_tokens: int = 96  # an answer longer than this is cut (and wrong): room for the tool suite's chat lines
    temperature: float = 0.0  # 0 is greedy
    top_k: int = 0  # keep only the k likeliest tokens; 0 keeps all
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16'
    json: bool = False  # print one JSON object instead of the table
    max_calls: int = 3  # a model that knows tools: at most this many tool calls per answer
    batch_size: int = 64  # questions answered together (left-padded, one KV cache); greedy answers do not depend on it


def suite_dir(out_dir):
    """The task suite a model answers by default: the one it was trained on, or for a model trained on
    preference pairs (DPO), the suite the pairs were made from, which prepare/preferences.py records."""
    ckpt = load_checkpoint(out_dir)
    data_dir, meta = ckpt['config'].get('data_dir') or 'data/tasks', ckpt.get('meta') or {}
    if meta.get('format') != 'pairs':
        return data_dir
    if not meta.get('data_dir'):
        raise SystemExit(f"error: {out_dir} was trained on preference pairs ({data_dir}) that do not say which task "
                         "suite they came from; pass it, e.g. --data_dir=data/tasks")
    return meta['data_dir']


def evaluate(model, tok, data_dir, split, cfg, g):
    """accuracy() of one split, with the loss of its own answers merged in."""
    records = load_records(data_dir, split, cfg.max_examples)
    try:
        result = accuracy(model, tok, records, cfg.batch_size, cfg.max_new_tokens, progress=True,
                          max_calls=cfg.max_calls, temperature=cfg.temperature, top_k=cfg.top_k or None, generator=g)
        # the loss of the suite's own answers needs the model to read them: one from before tools cannot read
        # a tool suite's calls and results (its accuracy, answering without tools, is still measured)
        can_read = knows_tools(tok) or not any(r['meta'].get('tool') for r in records)
        losses = answer_loss(model, tok, records, cfg.batch_size) if can_read else {}
    except ValueError as e:  # a question with a character the model has never seen
        raise SystemExit(f"error: {e}; was {data_dir} made with this model's tokenizer?")
    for task, row in losses.items():
        result['tasks'][task].update(row)
    for key in ('loss', 'bpb'):
        if losses:
            result[key] = sum(row[key] for row in losses.values()) / max(1, len(losses))
    return result


def main(cfg):
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype)
    chat_ids(tok)  # a base model stops here, with a one-line error
    data_dir = cfg.data_dir or suite_dir(cfg.out_dir)
    splits = [s.strip() for s in cfg.split.split(',')] if cfg.split else \
        ['test'] + (['gen'] if os.path.isfile(os.path.join(data_dir, 'gen.jsonl')) else [])
    results = {}
    for split in splits:
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        results[split] = evaluate(model, tok, data_dir, split, cfg, g)
    if cfg.json and len(results) == 1:
        print(json.dumps({'out_dir': cfg.out_dir, 'data_dir': data_dir, 'split': splits[0], **results[splits[0]]}))
    elif cfg.json:
        print(json.dumps({'out_dir': cfg.out_dir, 'data_dir': data_dir, 'splits': results}))
    else:
        print(tables(results))


if __name__ == '__main__':
    main(load_config(Config))
