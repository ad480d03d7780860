"""
Generate text from a trained checkpoint, streamed to the terminal as it is written.

    python sample.py --out_dir=out-stdlib-char
    python sample.py --out_dir=out-stdlib-char --start="def " --num_samples=3 --temperature=0.8
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --top_p=0.9 --seed=7
    python sample.py --out_dir=out-stdlib-char --dtype=float32 --quant=int8 --compile  # int8 weights, compiled step
    python sample.py --out_dir=out-stdlib-char --draft=out-stdlib-distill --draft_tokens=6  # a distilled draft
    python sample.py --out_dir=out-stdlib-char --draft=none                              # one token per forward

The same seed gives the same text. A prompt longer than the model's context keeps its last block_size tokens.
Decoding is speculative by default (docs/sampling.md): prompt lookup guesses the next tokens and the model checks
them several per forward, giving the text of --draft=none (in bf16, up to its rounding); a draft model gives the
same text at temperature 0 and the same distribution above it. A line on stderr after each sample says how many
guesses were kept.
"""
import sys
from dataclasses import dataclass

import torch

from seedgpt.checkpoint import load_checkpoint, load_model
from seedgpt.config import load_config
from seedgpt.generate import generate_stream, text_pieces
from seedgpt.runtime import setup_runtime
from seedgpt.tokenizer import same_ids


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    start: str = '\n'  # the prompt, or FILE:path to read it from a file
    num_samples: int = 2  # samples to write, one after the other
    max_new_tokens: int = 500  # tokens generated per sample
    temperature: float = 0.8  # 1.0 samples the model as is, lower is more conservative, 0 is greedy
    top_k: int = 0  # keep only the k likeliest tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1.0 keeps all
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast, as in training), 'float32', 'bfloat16', 'float16'
    use_cache: bool = True  # the KV cache: each new token costs one position, not the whole context
    # 'int8': int8 weights in the blocks (a quarter of fp32's bytes); faster only compiled, on some CPUs
    quant: str = 'none'
    compile: bool = False  # torch.compile the one-token step: a C++ compiler and a minute or more up front
    # speculative decoding: 'ngram' (prompt lookup), a checkpoint directory (a smaller model on the same tokenizer),
    # or 'none'; 'auto' is ngram for greedy decoding (--temperature=0) on the eager cached path, else none: sampled,
    # a guess holds only as often as the model would draw it, and on a CPU that measured slower (docs/benchmarks.md)
    draft: str = 'auto'
    draft_tokens: int = 4  # the most guesses checked per forward; fewer while guesses fail


def load_draft(cfg, rt, model):
    """generate_stream's draft for cfg.draft: None, 'ngram' or a model; a draft that cannot work is a one-line
    error here, at start-up."""
    draft = cfg.draft
    if draft == 'auto':
        draft = 'ngram' if cfg.temperature == 0 and cfg.use_cache and not cfg.compile else 'none'
    if draft != 'none' and (cfg.compile or not cfg.use_cache):
        raise SystemExit(f"error: --draft={draft} needs the KV cache and an eager step; add --draft=none")
    if cfg.draft_tokens < 1:
        raise SystemExit(f"error: --draft_tokens must be 1 or more, got {cfg.draft_tokens}")
    if draft in ('none', 'ngram'):
        return None if draft == 'none' else draft
    small, _ = load_model(draft, rt.device, rt.ptdtype, cfg.quant)
    ours, theirs = load_checkpoint(cfg.out_dir)['meta'], load_checkpoint(draft)['meta']
    if not (same_ids(ours, theirs) and same_ids(theirs, ours)) or small.config.vocab_size != model.config.vocab_size:
        raise SystemExit(f"error: the draft {draft} has another tokenizer than {cfg.out_dir}: its guesses "
                         "would be other tokens")
    return small


def main(cfg):
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype, cfg.quant)
    draft = load_draft(cfg, rt, model)
    prompt = cfg.start
    if prompt.startswith('FILE:'):
        try:
            with open(prompt[5:], encoding='utf-8') as f:
                prompt = f.read()
        except OSError as e:
            raise SystemExit(f"error: cannot read the prompt file ({e.strerror}: {prompt[5:]})")
    try:
        ids = tok.encode(prompt)
    except ValueError as e:
        raise SystemExit(f"error: {e}; change the prompt")
    if not ids:
        raise SystemExit("error: the prompt is empty; pass --start=TEXT")
    x = torch.tensor([ids], dtype=torch.long, device=rt.device)
    g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    for _ in range(cfg.num_samples):
        sys.stdout.write(prompt)
        stats = {}
        stream = generate_stream(model, x, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                 top_p=cfg.top_p, use_cache=cfg.use_cache, generator=g, compile=cfg.compile,
                                 draft=draft, draft_tokens=cfg.draft_tokens, stats=stats)
        for text in text_pieces(tok, (next_id.item() for next_id in stream)):
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write('\n---------------\n')
        sys.stdout.flush()
        if stats:
            per_forward = (stats['forwards'] + stats['accepted']) / stats['forwards']
            print(f"draft: {stats['accepted']} of {stats['drafted']} guesses kept, "
                  f"{per_forward:.2f} tokens per forward", file=sys.stderr)


if __name__ == '__main__':
    main(load_config(Config))
