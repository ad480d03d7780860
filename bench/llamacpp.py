"""
seedgpt against llama.cpp on the same weights and CPU: single-stream decoding and prompt processing, tokens/s.

    bash export/install_llamacpp.sh && pip install -e '.[gguf]'
    python -m bench.llamacpp                      # baby-GPT (6x384) and the quick-start model's shape (4x256)
    python -m bench.llamacpp --threads=2 --new_tokens=200
    python -m bench.llamacpp --profile=True       # where one decoded token's time goes, in each engine
    python -m bench.llamacpp --serve_dir=out-llamacpp --port=8002   # a model for bench.serve, served by llama.cpp

Each model is random (speed does not depend on the values), char vocabulary, Llama-style (RoPE, RMSNorm,
SwiGLU: the architecture both run natively), exported with export.gguf's code at f32 and q8_0. seedgpt runs its
default path, seedgpt.generate.generate_stream with its KV cache, greedy, in f32 (no int8 path is measured:
compress.shrink's int8 is a different format). llama.cpp runs through llama-cpp-python with its default f16 KV
cache, greedy on the logits it returns, on --threads threads for prompts as for decoding (the binding's own
default for prompts is every core). The best of --repeats runs. Figures: docs/benchmarks.md.

--profile=True splits one decoded token instead: seedgpt's step under torch.profiler (ops per token, the
matmuls' share), its matrix products alone and the weight bytes they read per second, and llama.cpp's own
count of the time inside its decode against the binding's round trip; the engines take turns, round by round,
so that a shared machine's other load falls on both alike. --compile=True adds seedgpt's compiled step.

--serve_dir=DIR writes a random Llama-style baby-GPT with 512 positions to DIR (ckpt.pt and its f32 model.gguf)
and serves the GGUF with llama_cpp.server on --port until interrupted (pip install -e '.[llamacpp-server]').
Then, from another shell, bench.serve's mixed load against it and against seedgpt's server on the same weights:

    python -m bench.serve --models=base --base_dir=out-llamacpp --url=http://127.0.0.1:8002 --turns=0 --rounds=1
    python -m bench.serve --models=base --base_dir=out-llamacpp --threads=1 --turns=0 --rounds=1
"""
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from model import GPT, GPTConfig
from seedgpt.checkpoint import save_checkpoint
from seedgpt.config import load_config
from seedgpt.generate import generate_stream
from seedgpt.gguf_convert import write_gguf

SIZES = {'baby-GPT 6x384': dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
         'quick-start 4x256': dict(n_layer=4, n_head=4, n_embd=256, block_size=256)}
CHARS = [chr(i) for i in range(32, 127)] + ['\n']
META = dict(tokenizer='char', chars=CHARS, vocab_size=len(CHARS))


@dataclass
class Config:
    threads: int = 1  # CPU threads for both (torch.set_num_threads and llama.cpp's n_threads)
    new_tokens: int = 200  # tokens decoded per run, after a prompt of prompt_tokens
    prompt_tokens: int = 48  # the prompt each run reads first (prompt processing tokens/s)
    repeats: int = 3  # runs per measurement; the best is kept
    profile: bool = False  # instead of the table, where one decoded token's time goes (f32, each size)
    compile: bool = False  # --profile also times seedgpt's compiled step (sample.py --compile; a minute to compile)
    serve_dir: str = ''  # instead of the table: write a model here and serve it with llama_cpp.server (docstring)
    port: int = 8002  # --serve_dir's server port, on 127.0.0.1


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decode_stream(model, cfg, compile=False):
    """seedgpt's cached greedy decoding after a prompt, its first token (the prompt's forward) already taken."""
    stream = generate_stream(model, torch.randint(0, len(CHARS), (1, cfg.prompt_tokens)), cfg.new_tokens + 1,
                             temperature=0, compile=compile)
    next(stream)
    return stream


def decode_ms(model, cfg, compile=False, repeats=None):
    """Milliseconds per token of seedgpt's decoding, the prompt's forward left out: the best of cfg.repeats."""
    runs = []
    for _ in range(repeats or cfg.repeats):
        stream = decode_stream(model, cfg, compile)
        t0 = time.perf_counter()
        list(stream)
        runs.append(time.perf_counter() - t0)
    return min(runs) / cfg.new_tokens * 1e3


def ours(model, cfg):
    prompt = torch.randint(0, len(CHARS), (1, cfg.prompt_tokens))
    with torch.no_grad():
        pp = best(lambda: model(prompt), cfg.repeats)
    return cfg.prompt_tokens / pp, 1e3 / decode_ms(model, cfg)


def load_llama(path, cfg):
    import llama_cpp
    # n_threads_batch too: left unset, prompts run on every core, and on a shared 2-core machine its threads
    # spin at each op's barrier while the other is preempted (the slow f32 prompts of docs/benchmarks.md)
    return llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=cfg.threads,
                           n_threads_batch=cfg.threads, verbose=False)


def last_logits(llm):
    """The logits of the last token read: without logits_all the binding keeps none in llm.scores."""
    import llama_cpp
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def theirs(path, cfg):
    llm = load_llama(path, cfg)
    prompt = list(np.random.randint(0, len(CHARS), cfg.prompt_tokens))

    def read():
        llm.reset()
        llm.eval(prompt)
        last_logits(llm)  # waits for the prompt's forward, where a backend runs it asynchronously

    def decode():
        for _ in range(cfg.new_tokens):
            llm.eval([int(np.argmax(last_logits(llm)))])
    pp = best(read, cfg.repeats)
    runs = []
    for _ in range(cfg.repeats):
        read()
        runs.append(best(decode, 1))
    return cfg.prompt_tokens / pp, cfg.new_tokens / min(runs)


MATMULS = ('aten::mm', 'aten::addmm', 'aten::mv', 'aten::bmm')


def weight_bytes(model):
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, torch.nn.Linear))


def matmul_ms(model, cfg):
    """Milliseconds per token of the step's matrix products alone: the model's own F.linear calls on one token,
    in the step's order, so that the weights stream through the caches as they do in decoding."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {W.shape[1]: torch.randn(1, 1, W.shape[1]) for W in weights}
    with torch.inference_mode():
        return best(lambda: [F.linear(xs[W.shape[1]], W) for _ in range(cfg.new_tokens) for W in weights], 1) \
            / cfg.new_tokens * 1e3


def profiled_step(model, cfg):
    """seedgpt's step under torch.profiler: torch ops per token (called from python / all, with the ones inside
    them), and its milliseconds split into matmul kernels / other ops / outside any op (python, the generator)."""
    m = min(cfg.new_tokens, 50)  # the profiler keeps every event: a few dozen tokens are enough to count them
    stream = decode_stream(model, cfg)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(m):
            next(stream)
        wall = time.perf_counter() - t0
    events = prof.events()
    top = sum(e.cpu_parent is None for e in events) / m
    mm = sum(e.self_cpu_time_total for e in events if e.name in MATMULS) / 1e6
    ops = sum(e.self_cpu_time_total for e in events) / 1e6 - mm
    split = [x / m * 1e3 for x in (wall, mm, ops, wall - mm - ops)]
    return f"{top:.0f} / {len(events) / m:.0f}", "{:.2f}: {:.2f} / {:.2f} / {:.2f}".format(*split)


def their_decode(llm, cfg):
    """Milliseconds per decoded token through the binding, and inside llama_decode by llama.cpp's own counter."""
    import llama_cpp
    llm.reset()
    llm.eval(list(np.random.randint(0, len(CHARS), cfg.prompt_tokens)))
    last_logits(llm)  # waits for the prompt, so that the counter starts clean
    llama_cpp.llama_perf_context_reset(llm.ctx)
    t0 = time.perf_counter()
    for _ in range(cfg.new_tokens):
        llm.eval([int(np.argmax(last_logits(llm)))])
    wall = time.perf_counter() - t0
    last_logits(llm)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return wall / cfg.new_tokens * 1e3, perf.t_eval_ms / perf.n_eval


def profile(cfg, d):
    print("ms per decoded token, f32. seedgpt: its step, its matmuls alone and the weight GB/s they read; torch "
          "ops per token, from python / all; profiled step: matmul kernels / other ops / outside ops (python); "
          "compiled step (--compile=True). llama.cpp: through the binding, inside its decode and the weight GB/s "
          "that is; the ratio of the steps. Each the best of --repeats rounds, the engines taking turns")
    print("| model | seedgpt step | its matmuls | GB/s | torch ops | profiled step | compiled | llama.cpp | "
          "inside decode | GB/s | ratio |\n" + "| --- " * 11 + "|")
    for name, model, args in models():
        path = os.path.join(d, 'f32.gguf')
        write_gguf(path, args, model.state_dict(), META, 'f32')
        llm, runs = load_llama(path, cfg), []
        for _ in range(cfg.repeats):  # in turns: the machine's other load falls on each engine alike
            runs.append((decode_ms(model, cfg, repeats=1), matmul_ms(model, cfg), *their_decode(llm, cfg)))
        step, mm, theirs_ms, inside = (min(r[i] for r in runs) for i in range(4))
        ops, split = profiled_step(model, cfg)
        compiled = '-'
        if cfg.compile:
            list(decode_stream(model, cfg, compile=True))  # the first steps compile
            compiled = f"{decode_ms(model, cfg, compile=True):.2f}"
        nb = weight_bytes(model) / 1e6
        print(f"| {name} | {step:.2f} | {mm:.2f} | {nb / mm:.1f} | {ops} | {split} | {compiled} | {theirs_ms:.2f} | "
              f"{inside:.2f} | {nb / inside:.1f} | {step / theirs_ms:.1f}x |", flush=True)


def models():
    for name, shape in SIZES.items():
        torch.manual_seed(0)
        args = dict(vocab_size=len(CHARS), pos='rope', norm='rms', mlp='swiglu', bias=False, **shape)
        yield name, GPT(GPTConfig(**args)).eval(), args


def serve(cfg):
    """A random Llama-style baby-GPT (bench.serve's context of 512) as a checkpoint and its GGUF in serve_dir, the
    GGUF served by llama_cpp.server: one request at a time, on --threads threads, none cut short by the next."""
    args = dict(vocab_size=len(CHARS), pos='rope', norm='rms', mlp='swiglu', bias=False,
                **{**SIZES['baby-GPT 6x384'], 'block_size': 512})
    torch.manual_seed(1)
    model = GPT(GPTConfig(**args))
    os.makedirs(cfg.serve_dir, exist_ok=True)
    save_checkpoint(os.path.join(cfg.serve_dir, 'ckpt.pt'), {'model': model.state_dict(), 'model_args': args,
                                                              'meta': META})
    path = os.path.join(cfg.serve_dir, 'model.gguf')
    write_gguf(path, args, model.state_dict(), META, 'f32')
    # interrupt_requests off: by default a waiting request cuts the streaming one short, which would end most
    # replies early under many clients; n_threads_batch for prompts, as in load_llama
    cmd = [sys.executable, '-m', 'llama_cpp.server', '--model', path, '--port', str(cfg.port), '--n_ctx', '512',
           '--n_threads', str(cfg.threads), '--n_threads_batch', str(cfg.threads), '--interrupt_requests', 'False',
           '--verbose', 'False']
    print(f"wrote {cfg.serve_dir}/ckpt.pt and model.gguf; serving it on http://127.0.0.1:{cfg.port}", flush=True)
    try:
        subprocess.run(cmd, check=True)
    except KeyboardInterrupt:
        pass


def main(cfg):
    if cfg.prompt_tokens + cfg.new_tokens > 256:
        raise SystemExit("error: --prompt_tokens plus --new_tokens must fit the models' 256 positions")
    torch.set_num_threads(cfg.threads)
    print(f"threads {cfg.threads}, prompt {cfg.prompt_tokens}, new tokens {cfg.new_tokens}, best of {cfg.repeats}")
    if cfg.serve_dir:
        return serve(cfg)
    with tempfile.TemporaryDirectory() as d:
        if cfg.profile:
            return profile(cfg, d)
        print("| model | engine | weights | prompt tok/s | decode tok/s |\n| --- | --- | --- | --- | --- |")
        for name, model, args in models():
            pp, dec = ours(model, cfg)
            print(f"| {name} | seedgpt | f32 | {pp:,.0f} | {dec:,.0f} |", flush=True)
            for qtype in ('f32', 'q8_0'):
                path = os.path.join(d, f'{qtype}.gguf')
                write_gguf(path, args, model.state_dict(), META, qtype)
                pp, dec = theirs(path, cfg)
                print(f"| {name} | llama.cpp | {qtype} | {pp:,.0f} | {dec:,.0f} |", flush=True)


if __name__ == '__main__':
    main(load_config(Config))
