"""
Load-test the OpenAI-compatible server (serve/server.py) from outside, as its clients see it: start it once
with max_batch=1 and once with max_batch, alternately, and send each the same streamed greedy chat requests
from 1, 4 and 16 concurrent clients.

    python -m bench.serve --out_dir=out-sft-tasks
    python -m bench.serve --out_dir=out-sft-tasks --clients=1,16,64 --requests=200 --rounds=3

Prints requests/s and the p50 and p99 of the time to first token and of the whole request, per row.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.serve ...")

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from seedgpt.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Config:
    out_dir: str = 'out-sft-tasks'  # the checkpoint to serve (a chat model)
    port: int = 8001  # where the server under test listens, on 127.0.0.1
    max_batch: int = 16  # the batched server's max_batch, against 1
    queue_size: int = 64  # the server's queue: at least the largest number of clients
    device: str = 'auto'  # the server's device, dtype and quant
    dtype: str = 'auto'
    quant: str = 'none'
    clients: str = '1,4,16'  # concurrent clients, each sending requests back to back
    requests: int = 96  # requests per measurement
    rounds: int = 2  # the one-at-a-time and batched servers alternate this many times


def load_test(url, clients, requests, prompts, max_tokens=16, time_limit=120.0):
    """`requests` chat requests (streamed, greedy) from `clients` threads, stopping early at time_limit.
    Returns {'requests', 'errors', 'seconds', 'ttft', 'latency'}, the last two lists of seconds."""
    import httpx
    todo = iter(range(requests))
    lock, ttft, latency, errors = threading.Lock(), [], [], []
    t_end = time.perf_counter() + time_limit

    def client():
        with httpx.Client(base_url=url, timeout=time_limit, trust_env=False) as http:
            while time.perf_counter() < t_end:
                with lock:
                    k = next(todo, None)
                if k is None:
                    return
                body = {'model': 'bench', 'stream': True, 'temperature': 0, 'max_tokens': max_tokens,
                        'messages': [{'role': 'user', 'content': prompts[k % len(prompts)]}]}
                t0, first = time.perf_counter(), None
                with http.stream('POST', '/v1/chat/completions', json=body) as r:
                    for line in r.iter_lines():  # the first token's chunk, not the opening one (its role only)
                        if first is None and line.startswith('data: {') and json.loads(line[6:])['choices'][0]['delta'].get('content'):
                            first = time.perf_counter()
                t1 = time.perf_counter()
                with lock:
                    if r.status_code != 200:
                        errors.append(r.status_code)
                    else:
                        ttft.append((first or t1) - t0)  # an empty reply's first token is its end
                        latency.append(t1 - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    return {'requests': len(latency), 'errors': errors, 'seconds': time.perf_counter() - t0, 'ttft': ttft,
            'latency': latency}


def percentile(xs, p):
    return statistics.quantiles(xs, n=100, method='inclusive')[p - 1] if len(xs) > 1 else xs[0]


def main(cfg):
    """Start `python -m serve.server` with max_batch=1 and with cfg.max_batch, alternately, and load each."""
    import httpx
    rnd = random.Random(0)
    prompts = [f"What is {rnd.randint(10, 99)}+{rnd.randint(10, 99)}?" for _ in range(64)]
    print(f"# {cfg.out_dir}, {cfg.requests} streamed greedy chat requests per row (max_tokens 16), "
          f"torch {torch.__version__}")
    print(f"{'max_batch':>9} {'clients':>7} {'req/s':>7} {'ttft p50':>9} {'ttft p99':>9} {'total p50':>9} {'total p99':>9}")
    for _ in range(cfg.rounds):
        for max_batch in (1, cfg.max_batch):
            port = cfg.port
            args = [sys.executable, '-m', 'serve.server', f'--out_dir={cfg.out_dir}', f'--port={port}',
                    f'--max_batch={max_batch}', f'--device={cfg.device}', f'--dtype={cfg.dtype}', f'--quant={cfg.quant}',
                    f'--queue_size={max(cfg.queue_size, 64)}']
            server = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f'http://127.0.0.1:{port}'
            try:
                for _ in range(600):
                    try:
                        if httpx.get(url + '/health', trust_env=False).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                load_test(url, 1, 4, prompts)  # warm up
                for clients in [int(c) for c in cfg.clients.split(',')]:
                    r = load_test(url, clients, cfg.requests, prompts)
                    ms = lambda xs, p: f"{1000 * percentile(xs, p):7.0f}ms"  # noqa: E731
                    print(f"{max_batch:9d} {clients:7d} {r['requests'] / r['seconds']:7.1f} {ms(r['ttft'], 50)} "
                          f"{ms(r['ttft'], 99)} {ms(r['latency'], 50)} {ms(r['latency'], 99)}"
                          + (f"  ({len(r['errors'])} errors)" if r['errors'] else ''), flush=True)
            finally:
                server.terminate()
                server.wait()



if __name__ == '__main__':
    main(load_config(Config))
