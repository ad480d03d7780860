"""
Generate text from a trained checkpoint, streamed to the terminal as it is written.

    python sample.py --out_dir=out-stdlib-char
    python sample.py --out_dir=out-stdlib-char --start="def " --num_samples=3 --temperature=0.8
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --top_p=0.9 --seed=7
    python sample.py --out_dir=out-stdlib-char --dtype=float32 --quant=int8 --compile  # int8 weights, compiled step

The same seed gives the same text. A prompt longer than the model's context keeps its last block_size tokens.
"""
import sys
from dataclasses import dataclass

import torch

from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.generate import generate_stream, text_pieces
from seedgpt.runtime import setup_runtime


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


def main(cfg):
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype, cfg.quant)
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
        stream = generate_stream(model, x, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                 top_p=cfg.top_p, use_cache=cfg.use_cache, generator=g, compile=cfg.compile)
        for text in text_pieces(tok, (next_id.item() for next_id in stream)):
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write('\n---------------\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main(load_config(Config))
