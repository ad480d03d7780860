"""
Serve a checkpoint over HTTP with the OpenAI API, and a chat page for people.

    python -m serve.server --out_dir=out-sft-tasks --port=8000         # http://127.0.0.1:8000/ is the chat page
    python -m serve.server --out_dir=out-stdlib-char --max_batch=1     # a base model (completions only), one request at a time
    python -m bench.serve --out_dir=out-sft-tasks                      # load test: batched against one at a time

    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "out-sft-tasks", "messages": [{"role": "user", "content": "What is 48+75?"}]}'

Endpoints: POST /v1/completions and /v1/chat/completions (OpenAI shapes; "stream": true sends SSE
chunks, then `data: [DONE]`), GET /v1/models, GET /health, GET / (serve/page.html). One model per server:
the request's "model" is not checked. The chat endpoint needs a chat model (one with chat tokens);
completions work for any.

Concurrency: static batches. One worker thread takes up to max_batch queued requests, prefills them
as one left-padded batch into one KV cache and decodes them together, sending each row's tokens to
its client as they come. A row leaves the batch (its cache rows are dropped) when it ends, hits its
max_tokens, times out or its client goes away; requests that arrive meanwhile wait for the next
batch. Each request samples with its own temperature, top_p and random generator, so its tokens do
not depend on what it was batched with (exactly so at temperature 0).

Limits: at most queue_size requests wait (then 503); max_tokens is capped; a prompt must leave room
for its max_tokens in block_size (else 400, never cropped); a request gets `timeout` seconds in all.
Bad input gets a 4xx and an OpenAI error body {"error": {"message", "type", "param", "code"}}.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m serve.server ...")

import asyncio
import json
import math
import os
import queue
import random
import threading
import time
import traceback
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch

from model import KVCache
from seedgpt.chat import ROLES, chat_ids, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.generate import left_pad, sample_next
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    host: str = '127.0.0.1'  # 0.0.0.0 serves other machines too
    port: int = 8000
    max_batch: int = 16  # requests decoded together; 1 serves them one at a time
    queue_size: int = 64  # requests waiting beyond this many get 503
    max_tokens: int = 256  # the most tokens a request may ask for (also capped by the room left in block_size)
    max_prompt_tokens: int = 0  # the longest prompt accepted; 0 allows up to block_size - 1
    timeout: float = 60.0  # seconds a request may take, waiting in the queue included
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16'
    quant: str = 'none'  # 'int8': int8 weights in the blocks


class ApiError(Exception):
    """An error the client gets as an OpenAI-style body."""

    def __init__(self, status, message, param=None, code=None, type='invalid_request_error'):
        super().__init__(message)
        self.status, self.body = status, {'error': {'message': message, 'type': type, 'param': param, 'code': code}}


def error_response(e):
    from fastapi.responses import JSONResponse
    return JSONResponse(e.body, status_code=e.status)

# -----------------------------------------------------------------------------
# the worker: static batches over one KV cache


class Job:
    """One request: its prompt ids, how to sample, and the asyncio queue its tokens go back on.

    The worker puts each token id, then a finish reason ('stop', 'length' or 'error'). The request's
    handler sets `cancelled` when its client goes away or its time is up: the worker drops the row."""

    def __init__(self, prompt, max_tokens, temperature, top_p, seed, stop, device):
        self.prompt, self.max_tokens, self.temperature, self.top_p, self.stop = prompt, max_tokens, temperature, top_p, stop
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.loop, self.out = asyncio.get_running_loop(), asyncio.Queue()
        self.cancelled, self.n = False, 0

    def put(self, item):  # called from the worker thread
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening
            self.cancelled = True


class Engine:

    def __init__(self, model, vocab_size, max_batch, queue_size):
        self.model, self.vocab_size, self.max_batch = model, vocab_size, max_batch
        self.device = next(model.parameters()).device
        self.pending = queue.Queue(maxsize=queue_size)
        self.running = 0  # rows in the batch being decoded
        self.stopped = False
        self.thread = threading.Thread(target=self.work, daemon=True)

    def submit(self, job):
        try:
            self.pending.put_nowait(job)
        except queue.Full:
            raise ApiError(503, f"the server is busy ({self.pending.maxsize} requests waiting); retry later",
                           type='server_error', code='queue_full') from None

    def work(self):
        while not self.stopped:
            try:
                jobs = [self.pending.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            jobs = [j for j in jobs if not j.cancelled]
            if not jobs:
                continue
            try:
                self.decode(jobs)
            except Exception:  # a bug must not take the server down: these requests fail, the next ones run
                traceback.print_exc()
                for j in jobs:
                    j.put('error')
            self.running = 0

    @torch.no_grad()
    def decode(self, jobs):
        idx, pad = left_pad([j.prompt for j in jobs], self.device)
        cache = KVCache(self.model.config.n_layer, self.model.config.block_size)
        self.running = len(jobs)
        logits, _ = self.model(idx, cache=cache, pad=pad)  # (B, 1, V): the prefill
        while True:
            keep, next_ids = [], []
            for b, job in enumerate(jobs):
                if job.cancelled:
                    continue
                # row by row: each request has its own temperature, top_p and generator
                i = sample_next(logits[b, -1:].float(), job.temperature, None, job.top_p, job.generator).item()
                job.put(i)
                job.n += 1
                if i in job.stop or i >= self.vocab_size:
                    job.put('stop')
                elif job.n == job.max_tokens:
                    job.put('length')
                else:
                    keep.append(b)
                    next_ids.append(i)
            if not keep:
                return
            if len(keep) < len(jobs):  # drop the finished rows from the cache
                rows = torch.tensor(keep, device=self.device)
                cache.layers = [(k[rows], v[rows]) for k, v in cache.layers]
                jobs, pad = [jobs[b] for b in keep], pad[rows]
                self.running = len(jobs)
            x = torch.tensor(next_ids, device=self.device)[:, None]  # (B, 1)
            logits, _ = self.model(x, cache=cache, pad=pad)

# -----------------------------------------------------------------------------
# requests: checked by hand so every bad input gets the same OpenAI error body

NUMBER, INT, BOOL, STR = (int, float), (int,), (bool,), (str,)


def get(body, key, types, default=None):
    """body[key] if it has one of `types` (null counts as absent), else a 400 naming the parameter."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) != (types == BOOL) or not isinstance(value, types):
        want = {NUMBER: 'a number', INT: 'an integer', BOOL: 'a boolean', STR: 'a string'}[types]
        raise ApiError(400, f"'{key}' must be {want}, got {json.dumps(value)[:80]}", param=key, code='invalid_type')
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"'{key}' must be a finite number", param=key, code='invalid_value')
    return value


async def read_body(request):
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})", code='invalid_json') from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code='invalid_json')
    return body


def make_job(body, prompt, stop, cfg, block_size, device):
    """A Job from the request's sampling settings, after checking them and the prompt's length."""
    temperature = get(body, 'temperature', NUMBER, 1.0)
    if temperature < 0:
        raise ApiError(400, f"'temperature' must be at least 0, got {temperature}", param='temperature', code='invalid_value')
    top_p = get(body, 'top_p', NUMBER, 1.0)
    if not 0 < top_p <= 1:
        raise ApiError(400, f"'top_p' must be in (0, 1], got {top_p}", param='top_p', code='invalid_value')
    if get(body, 'n', INT, 1) != 1:
        raise ApiError(400, "only n=1 is supported", param='n', code='unsupported')
    if body.get('stop') is not None:
        raise ApiError(400, "'stop' is not supported: replies end at the model's own end token", param='stop',
                       code='unsupported')
    limit = min(cfg.max_prompt_tokens or block_size - 1, block_size - 1)
    if len(prompt) > limit:
        raise ApiError(400, f"the prompt is {len(prompt)} tokens; this server takes at most {limit}",
                       param='messages' if 'messages' in body else 'prompt', code='context_length_exceeded')
    key = 'max_completion_tokens' if body.get('max_completion_tokens') is not None else 'max_tokens'
    max_tokens = get(body, key, INT)
    room = block_size - len(prompt)
    if max_tokens is None:
        max_tokens = min(cfg.max_tokens, room)
    elif not 1 <= max_tokens <= cfg.max_tokens:
        raise ApiError(400, f"'{key}' must be between 1 and {cfg.max_tokens}", param=key, code='invalid_value')
    elif max_tokens > room:
        raise ApiError(400, f"the model's context is {block_size} tokens: {len(prompt)} in the prompt leave room for "
                       f"{room}, not {max_tokens}; ask for fewer", param=key, code='context_length_exceeded')
    seed = get(body, 'seed', INT)
    seed = random.getrandbits(63) if seed is None else seed % 2 ** 63
    return Job(prompt, max_tokens, float(temperature), float(top_p), seed, stop, device)


async def replies(job, tok, request, timeout):
    """('text', piece) as the tokens come, then ('end', finish_reason, completion_tokens).

    Cancels the job when the client disconnects (and stops), or on the timeout (a 504 ApiError)."""
    deadline = time.monotonic() + timeout
    pending = []  # BPE may split a character over tokens: send only what decodes whole
    try:
        while True:
            try:
                item = await asyncio.wait_for(job.out.get(), timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                if time.monotonic() >= deadline:
                    raise ApiError(504, f"the request took longer than {timeout:g} s", type='server_error',
                                   code='timeout') from None
                if await request.is_disconnected():
                    return
                continue
            if item == 'error':
                raise ApiError(500, "generation failed; see the server's log", type='server_error')
            if isinstance(item, str):
                if pending:
                    yield 'text', tok.decode(pending)
                yield 'end', item, job.n
                return
            if item in job.stop or item >= tok.vocab_size:
                continue
            pending.append(item)
            text = tok.decode(pending)
            if not text.endswith('\ufffd'):
                yield 'text', text
                pending = []
    finally:
        job.cancelled = True  # a no-op once the job has ended


def make_app(model, tok, cfg, name):
    """The FastAPI app serving `model` under the name `name`; its worker runs while the app does."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    block_size = model.config.block_size
    engine = Engine(model, tok.vocab_size, cfg.max_batch, cfg.queue_size)
    try:
        chat_stop = set(chat_ids(tok).values())
    except SystemExit:
        chat_stop = None  # a base model: completions only
    # completions of any model end at a special token: <|endoftext|> or a chat token
    text_stop = set(getattr(tok, 'special_ids', {}).values()) | ({tok.eot} if hasattr(tok, 'eot') else set())

    @asynccontextmanager
    async def lifespan(app):
        engine.thread.start()
        yield
        engine.stopped = True

    app = FastAPI(title='seedgpt', lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # 404 and 405 in the same shape
        return error_response(ApiError(e.status_code, str(e.detail), code='not_found' if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def server_error(request, e):
        return error_response(ApiError(500, "internal error; see the server's log", type='server_error'))

    async def respond(request, body, prompt, stop, chunk, whole, opening=None):
        """Queue the job; stream `opening` (if any), then chunk(text, finish_reason) as SSE; or return
        whole(text, finish_reason, usage)."""
        stream = get(body, 'stream', BOOL, False)
        job = make_job(body, prompt, stop, cfg, block_size, engine.device)
        engine.submit(job)
        events = replies(job, tok, request, cfg.timeout)
        if stream:
            async def sse():
                if opening:
                    yield f"data: {json.dumps(opening)}\n\n"
                try:
                    async for event in events:
                        piece = chunk(event[1], None) if event[0] == 'text' else chunk(None, event[1])
                        yield f"data: {json.dumps(piece)}\n\n"
                except ApiError as e:  # the 200 is sent: the error goes in the stream, as OpenAI does
                    yield f"data: {json.dumps(e.body)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type='text/event-stream', headers={'Cache-Control': 'no-cache'})
        pieces, finish, n = [], None, 0
        async for event in events:
            if event[0] == 'text':
                pieces.append(event[1])
            else:
                finish, n = event[1], event[2]
        if finish is None:  # the client went away
            return None
        usage = {'prompt_tokens': len(prompt), 'completion_tokens': n, 'total_tokens': len(prompt) + n}
        return whole(''.join(pieces), finish, usage)

    def head(kind):
        return {'id': f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}", 'object': kind,
                'created': int(time.time()), 'model': name}

    @app.post('/v1/completions')
    async def completions(request: Request):
        body = await read_body(request)
        text = get(body, 'prompt', STR)
        if not text:
            raise ApiError(400, "'prompt' must be a non-empty string", param='prompt', code='invalid_value')
        try:
            prompt = tok.encode(text)
        except ValueError as e:
            raise ApiError(400, str(e), param='prompt', code='invalid_value') from None
        top = head('text_completion')

        def chunk(text, finish):
            return {**top, 'choices': [{'index': 0, 'text': text or '', 'logprobs': None, 'finish_reason': finish}]}

        def whole(text, finish, usage):
            return {**top, 'choices': [{'index': 0, 'text': text, 'logprobs': None, 'finish_reason': finish}],
                    'usage': usage}
        return await respond(request, body, prompt, text_stop, chunk, whole)

    @app.post('/v1/chat/completions')
    async def chat_completions(request: Request):
        body = await read_body(request)
        if chat_stop is None:
            raise ApiError(400, f"{name} is a base model without chat tokens; use /v1/completions", code='not_a_chat_model')
        messages = body.get('messages')
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", param='messages', code='invalid_type')
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get('role') not in ROLES or not isinstance(m.get('content'), str):
                raise ApiError(400, f"messages[{i}] must be {{'role': one of {', '.join(ROLES)}, 'content': a string}}",
                               param=f'messages[{i}]', code='invalid_value')
        try:
            prompt = render_prompt(tok, [{'role': m['role'], 'content': m['content']} for m in messages])
        except ValueError as e:
            raise ApiError(400, str(e), param='messages', code='invalid_value') from None
        top = head('chat.completion.chunk')

        def chunk(text, finish, delta=None):
            delta = delta or ({'content': text} if text is not None else {})
            return {**top, 'choices': [{'index': 0, 'delta': delta, 'logprobs': None, 'finish_reason': finish}]}

        def whole(text, finish, usage):
            return {**top, 'object': 'chat.completion', 'usage': usage, 'choices': [
                {'index': 0, 'message': {'role': 'assistant', 'content': text}, 'logprobs': None, 'finish_reason': finish}]}
        opening = chunk(None, None, {'role': 'assistant', 'content': ''})
        return await respond(request, body, prompt, chat_stop, chunk, whole, opening)

    @app.get('/v1/models')
    async def models():
        return {'object': 'list', 'data': [{'id': name, 'object': 'model', 'created': 0, 'owned_by': 'seedgpt'}]}

    @app.get('/health')
    async def health():
        return {'status': 'ok', 'model': name, 'chat': chat_stop is not None, 'block_size': block_size,
                'running': engine.running, 'queued': engine.pending.qsize()}

    page = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page.html')

    @app.get('/')
    async def chat_page():
        return FileResponse(page, media_type='text/html')

    return app

def main(cfg):
    import uvicorn
    rt = setup_runtime(cfg.device, cfg.dtype)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype, cfg.quant)
    name = os.path.basename(os.path.normpath(cfg.out_dir))
    print(f"serving {name} on {rt.device} in {rt.dtype}: http://{cfg.host}:{cfg.port}/ "
          f"(max_batch {cfg.max_batch}, queue {cfg.queue_size}, timeout {cfg.timeout:g} s)", flush=True)
    uvicorn.run(make_app(model, tok, cfg, name), host=cfg.host, port=cfg.port, log_level='warning')


if __name__ == '__main__':
    main(load_config(Config))
