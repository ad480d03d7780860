"""
Load-test the OpenAI-compatible server (serve/server.py) from outside, as its clients see it: continuous batching
against the static batches it replaced (--batching=static), alternated in one run, on a mixed load: prompts of 5-200
tokens and max_tokens of 8-200, for a chat model and a base model, from 1, 4, 16 and 64 concurrent clients. Then the
time to first token of a chat's 5th turn, prefix cache on and off.

    python -m bench.serve                                              # random baby-GPT-size models, 512 context
    python -m bench.serve --clients=16 --rounds=1 --models=base        # one row per scheme
    python -m bench.serve --clients=16 --rounds=3 --models=chat --turns=0 --prefill_chunk=64,128   # A/B of the chunk
    python -m bench.serve --clients=16 --models=chat --turns=0 --draft_tokens=0   # the server without prompt lookup
    python -m bench.serve --chat_dir=out-sft-tasks --base_dir=out-stdlib-char
    python -m bench.serve --soak=600                                   # 10 minutes of load on one server: its RSS
    python -m bench.serve --profile=True --models=base                 # where a step's time goes, 1 to 64 rows
    python -m bench.serve --engine_steps=8000 --engine_reply=25        # the engine alone: its RSS over 8,000 steps
    python -m bench.serve --models=base --base_dir=out-llamacpp --url=http://127.0.0.1:8002 --turns=0  # llama.cpp's

A model is a checkpoint directory, or 'random': a random model of baby-GPT size (6 layers of 384, 512 tokens of
context, a char vocabulary) written to a temporary directory. Speed does not depend on the weights. Requests sample
at temperature 1 with a seed each, so both schemes make the same draws; their texts agree until a row's logits,
which change in their last bits with the batch's shape, flip a draw near a boundary between two tokens
(docs/serving.md, 'Seeds and batches'). The random chat model ends a reply at a chat token after ~15 tokens on
average, as chat models end early, while the base model (no special tokens) always runs to max_tokens.

Prints per row: requests/s and output tokens/s over the whole row; busy: text chunks (a token each with a char
vocabulary) per second while every client still had a request to send, before the load drains with fewer clients
than the row names; and the p50 and p99 of the time to first token and of the time between tokens (every gap between
two tokens of a request, over all requests). Both schemes run the same server and the same engine step
(seedgpt/engine.py), with the same max_batch: static only changes when requests are taken.

--profile=True instead times the engine in this process, without HTTP: one decoding step with 1 to 64 rows at
positions 5-400, split into the forward, the sampling and the rest (Python: the plan, the tensors built, the
bookkeeping), beside a forward of the same rows without their keys (the weights alone), and a step that also
reads a prompt chunk of prefill_chunk tokens.

--engine_steps=N instead steps the engine alone in this process (no HTTP, no clients) N times with its slots
kept full (the first of --models; prompts of 5-200 tokens, max_tokens 8 to --engine_reply) and prints the
process's RSS as it goes: the engine's own memory, where a soak sees the whole server's.

--soak=SECONDS instead drives one continuous-batching server (the first of --models) with the mixed load from the
largest --clients count for that long, and samples the server process's resident memory (RSS) every second: it
prints the RSS as the load goes on, then start, end and peak, and whether it grew.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.serve ...")

import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from model import GPT, GPTConfig
from seedgpt.chat import CHAT_SPECIALS
from seedgpt.checkpoint import load_checkpoint, save_checkpoint
from seedgpt.config import load_config
from seedgpt.measure import REPO, memory
from seedgpt.tokenizer import load_tokenizer

@dataclass
class Config:
    chat_dir: str = 'random'  # the chat model: a checkpoint directory, or 'random' (baby-GPT size)
    base_dir: str = 'random'  # the base model (completions), likewise
    models: str = 'chat,base'  # which of the two to load-test
    port: int = 8001  # where the server under test listens, on 127.0.0.1
    max_batch: int = 16  # the server's rows decoded together, in both schemes
    threads: int = 0  # the server's torch threads (its --threads)
    device: str = 'cpu'  # the server's device, dtype and quant
    dtype: str = 'auto'
    quant: str = 'none'
    compile: bool = False  # the server's --compile (and the in-process engine's): blocks' norms and MLPs compiled
    draft_tokens: int = 4  # the server's (and the in-process engine's) prompt lookup guesses per row and step; 0: off
    clients: str = '1,4,16,64'  # concurrent clients, each sending requests back to back
    requests: int = 4  # requests per client in each row (at least 16 per row)
    rounds: int = 2  # static and continuous alternate this many times
    turns: int = 5  # the chat whose last turn's time to first token is measured (0: skip)
    seed: int = 0
    prefill_chunk: str = '128'  # the server's prompt tokens per step beside decoding rows; '64,128': a row for each
    profile: bool = False  # instead of the table, time the engine's steps in this process, 1 to 64 rows
    soak: float = 0  # seconds: instead of the table, load one server this long and watch its RSS (0: off)
    engine_steps: int = 0  # instead of the table: this many engine steps in this process (no HTTP), and its RSS
    engine_reply: int = 200  # --engine_steps' longest reply (max_tokens 8 to this); 25 reads prompts at most steps
    url: str = ''  # another OpenAI-compatible server, already running: load-test it instead of starting ours


def random_checkpoint(out_dir, chat):
    """A random baby-GPT-size model with a char vocabulary (and the chat tokens for a chat model)."""
    chars = sorted(set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?+-*/=()\n'))
    specials = {s: len(chars) + i for i, s in enumerate(CHAT_SPECIALS)} if chat else {}
    meta = {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars) + len(specials), 'special_tokens': specials}
    args = dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=meta['vocab_size'], pos='rope')
    torch.manual_seed(1)
    save_checkpoint(os.path.join(out_dir, 'ckpt.pt'), {'model': GPT(GPTConfig(**args)).state_dict(),
                                                        'model_args': args, 'meta': meta})
    return out_dir


def mixed_load(out_dir, chat, n, seed):
    """n (path, body) requests: prompts of 5-200 tokens, max_tokens of 8-200, within the model's context."""
    ckpt = load_checkpoint(out_dir)
    tok, block_size = load_tokenizer(ckpt['meta']), ckpt['model_args']['block_size']
    specials = set(tok.special_ids.values())
    ids = [i for i in range(tok.vocab_size) if i not in specials]
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        length = rnd.randint(5, min(200, block_size // 2))
        text = tok.decode([rnd.choice(ids) for _ in range(length - 3 * chat)])  # a chat turn adds 3 tokens
        body = {'model': 'bench', 'max_tokens': rnd.randint(8, min(200, block_size - length - 8)), 'temperature': 1.0,
                'seed': k}
        out.append(('/v1/chat/completions', {**body, 'messages': [{'role': 'user', 'content': text}]}) if chat else
                   ('/v1/completions', {**body, 'prompt': text}))
    return out


def load_test(url, clients, asks, time_limit=300.0):
    """Send `asks` ((path, body) pairs, streamed) from `clients` threads, each back to back, stopping early at
    time_limit. Returns {'requests', 'errors', 'seconds', 'tokens', 'ttft', 'tbt', 'latency', 'busy_seconds',
    'busy_pieces'}: ttft and latency one per request, tbt one per gap between two tokens of a request, in seconds;
    busy_seconds is how long every client had a request to send (until the first found none left: after it,
    the load drains with fewer clients), busy_pieces the text chunks streamed in that time."""
    import httpx
    todo = iter(asks)
    lock = threading.Lock()
    r = {'requests': 0, 'errors': [], 'tokens': 0, 'ttft': [], 'tbt': [], 'latency': [], 'times': []}
    t_end = time.perf_counter() + time_limit
    busy_end = [t_end]

    def client():
        with httpx.Client(base_url=url, timeout=time_limit, trust_env=False) as http:
            while time.perf_counter() < t_end:
                with lock:
                    ask = next(todo, None)
                    if ask is None:
                        busy_end[0] = min(busy_end[0], time.perf_counter())
                if ask is None:
                    return
                path, body = ask
                body = {**body, 'stream': True, 'stream_options': {'include_usage': True}}
                t0, times, tokens = time.perf_counter(), [], None
                with http.stream('POST', path, json=body) as resp:
                    for line in resp.iter_lines():
                        if not line.startswith('data: {'):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get('usage'):
                            tokens = chunk['usage']['completion_tokens']
                        elif any(c.get('text') or c.get('delta', {}).get('content') for c in chunk.get('choices', [])):
                            times.append(time.perf_counter())
                t1 = time.perf_counter()
                with lock:
                    if resp.status_code != 200 or (tokens is None and not times):
                        r['errors'].append(resp.status_code)
                        continue
                    r['requests'] += 1
                    r['tokens'] += len(times) if tokens is None else tokens  # no usage sent (llama.cpp): a chunk each
                    r['ttft'].append((times[0] if times else t1) - t0)  # an empty reply's first token is its end
                    r['tbt'] += [b - a for a, b in zip(times, times[1:])]
                    r['latency'].append(t1 - t0)
                    r['times'] += times

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    r['seconds'] = time.perf_counter() - t0
    end = min(busy_end[0], t0 + r['seconds'])
    r['busy_seconds'], r['busy_pieces'] = end - t0, sum(t <= end for t in r.pop('times'))
    return r


def percentile(xs, p):
    return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else (xs or [float('nan')])[0]


class Server:
    """`python -m serve.server` in a subprocess, for as long as the with block."""

    def __init__(self, cfg, out_dir, **settings):
        import httpx
        settings = dict(out_dir=out_dir, port=cfg.port, max_batch=cfg.max_batch, device=cfg.device, dtype=cfg.dtype,
                        quant=cfg.quant, compile=cfg.compile, threads=cfg.threads, draft_tokens=cfg.draft_tokens,
                        prefill_chunk=cfg.prefill_chunk.split(',')[0],
                        queue_size=256, timeout=600) | settings
        args = [sys.executable, '-m', 'serve.server'] + [f'--{k}={v}' for k, v in settings.items()]
        self.url = f'http://127.0.0.1:{cfg.port}'
        try:  # a server already there would answer the health checks below in place of ours
            httpx.get(self.url + '/health', trust_env=False)
            raise SystemExit(f"error: something already listens on port {cfg.port}: pick another with --port")
        except httpx.HTTPError:
            pass
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL)
        for _ in range(600):
            try:
                if httpx.get(self.url + '/health', trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the server exited ({self.proc.returncode}): {' '.join(args)}")

    def __enter__(self):
        return self.url

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def fifth_turn(url, turns, seed):
    """The time to first token of the last turn of a `turns`-turn chat (user turns of ~40 tokens, replies of 40)."""
    import httpx
    rnd = random.Random(seed)
    messages, ttft = [], None
    with httpx.Client(base_url=url, timeout=120, trust_env=False) as http:
        for turn in range(turns):
            messages.append({'role': 'user', 'content': ''.join(rnd.choice('abcdefgh ') for _ in range(40))})
            body = {'messages': messages, 'max_tokens': 40, 'temperature': 1.0, 'seed': turn, 'stream': True}
            t0, reply = time.perf_counter(), ''
            with http.stream('POST', '/v1/chat/completions', json=body) as resp:
                for line in resp.iter_lines():
                    if line.startswith('data: {'):
                        piece = json.loads(line[6:])['choices'][0]['delta'].get('content')
                        if piece and not reply:
                            ttft = time.perf_counter() - t0
                        reply += piece or ''
            messages.append({'role': 'assistant', 'content': reply})
    return ttft


def engine_model(cfg, out_dir):
    """(runtime, model, tokenizer) for an engine in this process, set up as the server is (threads, dtype, compile)."""
    from seedgpt.checkpoint import load_model
    from seedgpt.engine import Engine
    from seedgpt.runtime import setup_runtime
    rt = setup_runtime(cfg.device, cfg.dtype)
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) - 1))
    model, tok = load_model(out_dir, rt.device, rt.ptdtype, cfg.quant)
    if cfg.compile:
        print(f"# compiled the step in {Engine(model, tok.vocab_size).compile():.1f} s", flush=True)
    return rt, model, tok


def profile_steps(cfg, out_dir, sizes=(1, 4, 16, 64), steps=20):
    """The median time of a decoding step of B rows, split into forward, sampling and the rest."""
    from seedgpt.engine import Engine, Request
    rt, model, tok = engine_model(cfg, out_dir)
    rnd = random.Random(cfg.seed)
    chunk_size = int(cfg.prefill_chunk.split(',')[0])
    times = {}
    model_forward = model.forward

    def timed(fn, key):  # fn, adding its time to times[key]
        def run(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            times[key] = times.get(key, 0.0) + time.perf_counter() - t
            return out
        return run
    print(f"# one decoding step, {rt.dtype}, {torch.get_num_threads()} torch threads, rows at positions 5-400; "
          f"median of {steps} steps, ms")
    print(f"{'rows':>4} {'step':>6} {'forward':>8} {'sample':>7} {'rest':>6} {'no keys':>8} {'+chunk':>7}")
    for B in sizes:
        engine = Engine(model, tok.vocab_size, max_batch=B + 1, prefill_chunk=chunk_size, draft_tokens=cfg.draft_tokens)
        reqs = [Request([rnd.randrange(tok.vocab_size) for _ in range(rnd.randint(5, 400))], 10 ** 6, temperature=1.0,
                        seed=b) for b in range(B)]
        for r in reqs:
            engine.submit(r)
        while engine.d < B:
            engine.step()
        rows = {'step': [], 'forward': [], 'sample': [], 'no keys': [], '+chunk': []}
        model.forward, engine.sample = timed(model_forward, 'forward'), timed(engine.sample, 'sample')
        dense = torch.randint(0, tok.vocab_size, (B, 1), device=rt.device)
        for i in range(steps + 2):
            times.clear()
            t = time.perf_counter()
            engine.step()
            rows['step'].append(time.perf_counter() - t)
            rows['forward'].append(times['forward'])
            rows['sample'].append(times['sample'])
            t = time.perf_counter()
            with torch.no_grad():
                model_forward(dense)
            rows['no keys'].append(time.perf_counter() - t)
            chunk = Request([rnd.randrange(tok.vocab_size) for _ in range(chunk_size + 1)], 1, temperature=1.0)
            engine.submit(chunk)  # the step that reads it: B decoding rows and one chunk
            t = time.perf_counter()
            engine.step()
            rows['+chunk'].append(time.perf_counter() - t)
            chunk.cancelled = True
        model.forward = model_forward
        ms = {k: 1000 * statistics.median(v[2:]) for k, v in rows.items()}
        print(f"{B:4d} {ms['step']:6.1f} {ms['forward']:8.1f} {ms['sample']:7.2f} "
              f"{ms['step'] - ms['forward'] - ms['sample']:6.2f} {ms['no keys']:8.1f} {ms['+chunk']:7.1f}", flush=True)


def engine_memory(cfg, out_dir):
    """Step the engine alone, its slots kept full with the mixed load's prompts, and print this process's RSS:
    the memory the engine's tensors and the kernels they compile take, without the server around them."""
    from seedgpt.engine import Engine, Request
    rt, model, tok = engine_model(cfg, out_dir)
    engine = Engine(model, tok.vocab_size, cfg.max_batch, prefill_chunk=int(cfg.prefill_chunk.split(',')[0]),
                    draft_tokens=cfg.draft_tokens)
    rnd, bs = random.Random(cfg.seed), model.config.block_size
    print(f"# the engine alone, {rt.dtype}, {torch.get_num_threads()} torch threads, {cfg.max_batch} slots; prompts "
          f"of 5-200 tokens, max_tokens 8-{cfg.engine_reply}; RSS every {max(1, cfg.engine_steps // 8)} steps",
          flush=True)
    t0 = time.perf_counter()
    for step in range(cfg.engine_steps + 1):
        while engine.running + engine.pending.qsize() < cfg.max_batch:
            prompt = [rnd.randrange(tok.vocab_size) for _ in range(rnd.randint(5, min(200, bs // 2)))]
            engine.submit(Request(prompt, rnd.randint(8, min(cfg.engine_reply, bs - len(prompt))), seed=step))
        if step % max(1, cfg.engine_steps // 8) == 0:
            rss = memory('VmRSS:') / 2**20
            print(f"  step {step:6d}  {time.perf_counter() - t0:6.0f} s  RSS {rss:7.1f} MB", flush=True)
        engine.step()


def soak(cfg, kind, out_dir, clients):
    """Load one continuous server for cfg.soak seconds with the mixed load; sample its RSS every second."""
    server = Server(cfg, out_dir, batching='continuous')
    with server as url:
        pid = server.proc.pid
        # warm up at full load: the allocator's pools, the threads and the connections' buffers settle
        load_test(url, clients, mixed_load(out_dir, kind == 'chat', 2 * clients, cfg.seed + 1))
        samples, done = [], threading.Event()

        def watch():
            t0 = time.perf_counter()
            while not done.wait(1.0):
                samples.append((time.perf_counter() - t0, memory('VmRSS:', pid) / 2**20))
                if len(samples) % max(1, int(cfg.soak / 10)) == 0:
                    print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MB", flush=True)
        start = memory('VmRSS:', pid) / 2**20
        print(f"# soak: {kind} model, {clients} clients, {cfg.soak:g} s, continuous batching, max_batch "
              f"{cfg.max_batch}; server RSS after warm-up {start:.1f} MB", flush=True)
        watcher = threading.Thread(target=watch)
        watcher.start()
        asks = itertools.cycle(mixed_load(out_dir, kind == 'chat', 4096, cfg.seed))  # seeds repeat after 4096
        r = load_test(url, clients, asks, time_limit=cfg.soak)
        done.set()
        watcher.join()
        end = memory('VmRSS:', pid) / 2**20
    rss = [m for _, m in samples]
    tenth = max(1, len(rss) // 10)
    # the first tenth is the load's own ramp; a leak keeps growing through the second half, a high-water mark does not
    second, middle, last = (statistics.mean(rss[a:a + tenth]) for a in (tenth, len(rss) // 2 - tenth, len(rss) - tenth))
    print(f"requests {r['requests']} ({len(r['errors'])} errors), {r['tokens']} tokens in {r['seconds']:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"RSS start {start:.1f} MB, end {end:.1f} MB, peak {max(rss + [end]):.1f} MB; "
          f"from the second tenth to the last {last - second:+.1f} MB, over the second half {last - middle:+.1f} MB: "
          + ("grows" if last - middle > max(4.0, 0.01 * middle) else "flat in the second half (within 4 MB or 1%)"))


def main(cfg):
    tmp = tempfile.TemporaryDirectory()  # removed at exit by its finalizer, whichever mode ran
    dirs = {}
    for kind in cfg.models.split(','):
        d = {'chat': cfg.chat_dir, 'base': cfg.base_dir}[kind]
        dirs[kind] = random_checkpoint(os.path.join(tmp.name, kind), kind == 'chat') if d == 'random' else d
    clients = [int(c) for c in cfg.clients.split(',')]
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')), '?')
    print(f"# {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; max_batch {cfg.max_batch}, "
          f"prefill_chunk {cfg.prefill_chunk}; load average {os.getloadavg()[0]:.2f} at start")
    if cfg.profile:
        for kind, out_dir in dirs.items():
            print(f"\n# {kind} model")
            profile_steps(cfg, out_dir)
        return
    if cfg.engine_steps:
        if cfg.engine_reply < 8:
            raise SystemExit(f"error: --engine_reply must be at least 8 (the shortest reply), got {cfg.engine_reply}")
        engine_memory(cfg, next(iter(dirs.values())))
        return
    if cfg.soak:
        soak(cfg, *next(iter(dirs.items())), max(clients))  # the first model
        return
    print(f"# {cfg.requests} requests per client per row; prompts of 5-200 tokens, max_tokens 8-200, temperature 1")
    print(f"{'model':>5} {'batching':>10} {'clients':>7} {'req/s':>7} {'tok/s':>7} {'busy':>7} {'ttft p50':>9} "
          f"{'ttft p99':>9} {'tbt p50':>8} {'tbt p99':>8}")
    ms = lambda xs, p: f"{1000 * percentile(xs, p):7.0f}ms"  # noqa: E731
    for _ in range(cfg.rounds):
        for kind, out_dir in dirs.items():
            chunks = cfg.prefill_chunk.split(',')
            schemes = [('url', chunks[0])] if cfg.url else [('static', chunks[0])] + [('continuous', c) for c in chunks]
            for batching, chunk in schemes:
                name = f"cont/{chunk}" if batching == 'continuous' and len(chunks) > 1 else batching
                server = None if cfg.url else Server(cfg, out_dir, batching=batching, prefill_chunk=chunk)
                with server or nullcontext(cfg.url) as url:
                    load_test(url, 4, mixed_load(out_dir, kind == 'chat', 8, cfg.seed + 1))  # warm up
                    for c in clients:
                        asks = mixed_load(out_dir, kind == 'chat', max(16, c * cfg.requests), cfg.seed)
                        r = load_test(url, c, asks)
                        print(f"{kind:>5} {name:>10} {c:7d} {r['requests'] / r['seconds']:7.2f} "
                              f"{r['tokens'] / r['seconds']:7.0f} {r['busy_pieces'] / r['busy_seconds']:7.0f} "
                              f"{ms(r['ttft'], 50)} {ms(r['ttft'], 99)} "
                              f"{ms(r['tbt'], 50)} {ms(r['tbt'], 99)}"
                              + (f"  ({len(r['errors'])} errors)" if r['errors'] else ''), flush=True)
    if cfg.turns and 'chat' in dirs and not cfg.url:
        print(f"\n# time to first token of turn {cfg.turns} of a chat (~40-token messages, 40-token replies), "
              f"one client, median of 5 chats")
        for _ in range(cfg.rounds):
            for cache in (False, True):
                with Server(cfg, dirs['chat'], prefix_cache=cache) as url:
                    fifth_turn(url, 2, seed=99)  # warm up
                    t = statistics.median(fifth_turn(url, cfg.turns, seed=s) for s in range(5))
                    print(f"prefix_cache={cache!s:5}  ttft {1000 * t:6.1f} ms", flush=True)


if __name__ == '__main__':
    main(load_config(Config))
