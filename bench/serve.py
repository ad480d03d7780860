"""
Load-test the OpenAI-compatible server (serve/server.py) from outside, as its clients see it: continuous
batching against the static batches it replaced (--batching=static), alternated in one run, on a mixed
load: prompts of 5-200 tokens and max_tokens of 8-200, for a chat model and a base model, from 1, 4, 16
and 64 concurrent clients. Then the time to first token of a chat's 5th turn, prefix cache on and off.

    python -m bench.serve                                              # random baby-GPT-size models, 512 context
    python -m bench.serve --clients=16 --rounds=1 --models=base        # one row per scheme
    python -m bench.serve --chat_dir=out-sft-tasks --base_dir=out-stdlib-char

A model is a checkpoint directory, or 'random': a random model of baby-GPT size (6 layers of 384, 512
tokens of context, a char vocabulary) written to a temporary directory. Speed does not depend on the
weights. Requests sample at temperature 1 with a seed each, so both schemes generate the same tokens;
the random chat model then ends a reply at its <|end|> after ~70 tokens on average, as chat models end
early, while the base model (no special tokens) always runs to max_tokens.

Prints per row: requests/s, output tokens/s, and the p50 and p99 of the time to first token and of the
time between tokens (every gap between two tokens of a request, over all requests).
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.serve ...")

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
from dataclasses import dataclass

import torch

from model import GPT, GPTConfig
from seedgpt.chat import CHAT_SPECIALS
from seedgpt.checkpoint import load_checkpoint, save_checkpoint
from seedgpt.config import load_config
from seedgpt.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    clients: str = '1,4,16,64'  # concurrent clients, each sending requests back to back
    requests: int = 4  # requests per client in each row (at least 16 per row)
    rounds: int = 2  # static and continuous alternate this many times
    turns: int = 5  # the chat whose last turn's time to first token is measured (0: skip)
    seed: int = 0


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
    time_limit. Returns {'requests', 'errors', 'seconds', 'tokens', 'ttft', 'tbt', 'latency'}: ttft and latency
    one per request, tbt one per gap between two tokens of a request, in seconds."""
    import httpx
    todo = iter(asks)
    lock = threading.Lock()
    r = {'requests': 0, 'errors': [], 'tokens': 0, 'ttft': [], 'tbt': [], 'latency': []}
    t_end = time.perf_counter() + time_limit

    def client():
        with httpx.Client(base_url=url, timeout=time_limit, trust_env=False) as http:
            while time.perf_counter() < t_end:
                with lock:
                    ask = next(todo, None)
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
                    if resp.status_code != 200 or tokens is None:
                        r['errors'].append(resp.status_code)
                        continue
                    r['requests'] += 1
                    r['tokens'] += tokens
                    r['ttft'].append((times[0] if times else t1) - t0)  # an empty reply's first token is its end
                    r['tbt'] += [b - a for a, b in zip(times, times[1:])]
                    r['latency'].append(t1 - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    r['seconds'] = time.perf_counter() - t0
    return r


def percentile(xs, p):
    return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else (xs or [float('nan')])[0]


class Server:
    """`python -m serve.server` in a subprocess, for as long as the with block."""

    def __init__(self, cfg, out_dir, **settings):
        import httpx
        settings = dict(out_dir=out_dir, port=cfg.port, max_batch=cfg.max_batch, device=cfg.device, dtype=cfg.dtype,
                        quant=cfg.quant, threads=cfg.threads, queue_size=256, timeout=600, **settings)
        args = [sys.executable, '-m', 'serve.server'] + [f'--{k}={v}' for k, v in settings.items()]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
        self.url = f'http://127.0.0.1:{cfg.port}'
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


def main(cfg):
    tmp = tempfile.TemporaryDirectory()
    dirs = {}
    for kind in cfg.models.split(','):
        d = {'chat': cfg.chat_dir, 'base': cfg.base_dir}[kind]
        dirs[kind] = random_checkpoint(os.path.join(tmp.name, kind), kind == 'chat') if d == 'random' else d
    clients = [int(c) for c in cfg.clients.split(',')]
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')), '?')
    print(f"# {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; max_batch {cfg.max_batch}, "
          f"{cfg.requests} requests per client per row; prompts of 5-200 tokens, max_tokens 8-200, temperature 1")
    print(f"{'model':>5} {'batching':>10} {'clients':>7} {'req/s':>7} {'tok/s':>7} {'ttft p50':>9} {'ttft p99':>9} "
          f"{'tbt p50':>8} {'tbt p99':>8}")
    ms = lambda xs, p: f"{1000 * percentile(xs, p):7.0f}ms"  # noqa: E731
    for _ in range(cfg.rounds):
        for kind, out_dir in dirs.items():
            for batching in ('static', 'continuous'):
                with Server(cfg, out_dir, batching=batching) as url:
                    load_test(url, 4, mixed_load(out_dir, kind == 'chat', 8, cfg.seed + 1))  # warm up
                    for c in clients:
                        asks = mixed_load(out_dir, kind == 'chat', max(16, c * cfg.requests), cfg.seed)
                        r = load_test(url, c, asks)
                        print(f"{kind:>5} {batching:>10} {c:7d} {r['requests'] / r['seconds']:7.2f} "
                              f"{r['tokens'] / r['seconds']:7.0f} {ms(r['ttft'], 50)} {ms(r['ttft'], 99)} "
                              f"{ms(r['tbt'], 50)} {ms(r['tbt'], 99)}"
                              + (f"  ({len(r['errors'])} errors)" if r['errors'] else ''), flush=True)
    if cfg.turns and 'chat' in dirs:
        print(f"\n# time to first token of turn {cfg.turns} of a chat (~40-token messages, 40-token replies), "
              f"one client, median of 5 chats")
        for _ in range(cfg.rounds):
            for cache in (False, True):
                with Server(cfg, dirs['chat'], prefix_cache=cache) as url:
                    fifth_turn(url, 2, seed=99)  # warm up
                    t = statistics.median(fifth_turn(url, cfg.turns, seed=s) for s in range(5))
                    print(f"prefix_cache={cache!s:5}  ttft {1000 * t:6.1f} ms", flush=True)
    tmp.cleanup()


if __name__ == '__main__':
    main(load_config(Config))
