"""
seedgpt against llama.cpp on the same weights and CPU: single-stream decoding and prompt processing, tokens/s.

    bash export/install_llamacpp.sh && pip install -e '.[gguf]'
    python -m bench.llamacpp                      # baby-GPT (6x384) and the quick-start model's shape (4x256)
    python -m bench.llamacpp --threads=2 --new_tokens=256

Each model is random (speed does not depend on the values), char vocabulary, Llama-style (RoPE, RMSNorm,
SwiGLU: the architecture both run natively), exported with export.gguf's code at f32 and q8_0. seedgpt runs its
default path, seedgpt.generate.generate_stream with its KV cache, greedy, in f32 (no int8 path is measured:
compress.shrink's int8 is a different format). llama.cpp runs through llama-cpp-python with its default f16 KV
cache, greedy on the logits it returns. The best of --repeats runs. Figures: docs/benchmarks.md.
"""
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from model import GPT, GPTConfig
from seedgpt.config import load_config
from seedgpt.generate import generate_stream
from seedgpt.gguf_convert import write_gguf

SIZES = {'baby-GPT 6x384': dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
         'quick-start 4x256': dict(n_layer=4, n_head=4, n_embd=256, block_size=256)}
CHARS = [chr(i) for i in range(32, 127)] + ['\n']


@dataclass
class Config:
    threads: int = 1  # CPU threads for both (torch.set_num_threads and llama.cpp's n_threads)
    new_tokens: int = 200  # tokens decoded per run, after a prompt of prompt_tokens
    prompt_tokens: int = 48  # the prompt each run reads first (prompt processing tokens/s)
    repeats: int = 3  # runs per measurement; the best is kept


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ours(model, cfg):
    prompt = torch.randint(0, len(CHARS), (1, cfg.prompt_tokens))
    with torch.no_grad():
        pp = best(lambda: model(prompt), cfg.repeats)
        runs = []
        for _ in range(cfg.repeats):  # the first token comes with the prompt's forward: time the ones after it
            stream = generate_stream(model, prompt, cfg.new_tokens + 1, temperature=0)
            next(stream)
            t0 = time.perf_counter()
            list(stream)
            runs.append(time.perf_counter() - t0)
    return cfg.prompt_tokens / pp, cfg.new_tokens / min(runs)


def theirs(path, cfg):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=cfg.threads, verbose=False)
    prompt = list(np.random.randint(0, len(CHARS), cfg.prompt_tokens))

    def read():
        llm.reset()
        llm.eval(prompt)

    def decode():
        for _ in range(cfg.new_tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    pp = best(read, cfg.repeats)
    runs = []
    for _ in range(cfg.repeats):
        read()
        runs.append(best(decode, 1))
    return cfg.prompt_tokens / pp, cfg.new_tokens / min(runs)


def main(cfg):
    if cfg.prompt_tokens + cfg.new_tokens > 256:
        raise SystemExit("error: --prompt_tokens plus --new_tokens must fit the models' 256 positions")
    torch.set_num_threads(cfg.threads)
    meta = dict(tokenizer='char', chars=CHARS, vocab_size=len(CHARS))
    print(f"threads {cfg.threads}, prompt {cfg.prompt_tokens}, new tokens {cfg.new_tokens}, best of {cfg.repeats}")
    print("| model | engine | weights | prompt tok/s | decode tok/s |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as d:
        for name, shape in SIZES.items():
            torch.manual_seed(0)
            args = dict(vocab_size=len(CHARS), pos='rope', norm='rms', mlp='swiglu', bias=False, **shape)
            model = GPT(GPTConfig(**args)).eval()
            pp, dec = ours(model, cfg)
            print(f"| {name} | seedgpt | f32 | {pp:,.0f} | {dec:,.0f} |", flush=True)
            for qtype in ('f32', 'q8_0'):
                path = os.path.join(d, f'{qtype}.gguf')
                write_gguf(path, args, model.state_dict(), meta, qtype)
                pp, dec = theirs(path, cfg)
                print(f"| {name} | llama.cpp | {qtype} | {pp:,.0f} | {dec:,.0f} |", flush=True)


if __name__ == '__main__':
    main(load_config(Config))
