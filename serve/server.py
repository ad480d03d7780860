"""
Serve a checkpoint over HTTP with the OpenAI API, and a chat page for people.

    python -m serve.server --out_dir=out-sft-tasks --port=8000         # http://127.0.0.1:8000/ is the chat page
    python -m serve.server --out_dir=out-stdlib-char --max_batch=1     # a base model (completions only), one at a time
    python -m serve.server --out_dir=out-sft-tasks --batching=static   # the old static batches, to compare
    python -m bench.serve --chat_dir=out-sft-tasks                     # load test: continuous against static batches

    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "out-sft-tasks", "messages": [{"role": "user", "content": "What is 48+75?"}]}'

Endpoints: POST /v1/completions and /v1/chat/completions (OpenAI shapes; "stream": true sends SSE
chunks, then `data: [DONE]`), GET /v1/models, GET /health, GET / (serve/page.html). One model per server:
the request's "model" is not checked. The chat endpoint needs a chat model (one with chat tokens);
completions work for any. Parameters read: messages or prompt, max_tokens (max_completion_tokens),
temperature, top_p, n, seed, stop, logprobs and top_logprobs, stream and stream_options.include_usage,
tools and tool_choice.

Tool calls (a model trained with tools, e.g. out-sft-tools) follow OpenAI's protocol: the request offers
tools, a reply that calls returns tool_calls with finish_reason "tool_calls", and the client runs the tool
and sends its result as a role 'tool' message; the server runs no tool for a chat completion. GET /tools
and POST /tools/run are seedgpt's own routes (not OpenAI's): its tools, and running one, for the chat page.

Concurrency: continuous batching (seedgpt/engine.py states the scheduling rule). One worker thread decodes up
to max_batch rows in a pool of KV slots allocated at start; a request takes a free slot as soon as one is
free, reads its prompt in chunks between decode steps, and leaves the moment it ends, is cancelled or times
out. A decoding row drafts by prompt lookup (draft_tokens; 0: off): up to that many guesses of its next
tokens, checked in the same forward, kept only where they are the tokens it samples anyway. The HTTP side is
asyncio: bodies are size-capped before they are read whole, then parsed and tokenized in a thread
(seedgpt/api.py), never on the event loop. seedgpt/api.py also shapes the replies (OpenAI's chunks and bodies,
logprobs, usage): this file holds the routes and the HTTP plumbing.

Limits: at most queue_size requests wait (then 503); max_tokens and n are capped; a prompt must leave
room for its max_tokens in block_size (else 400, never cropped); a request gets `timeout` seconds in all.
Bad input gets a 4xx and an OpenAI error body {"error": {"message", "type", "param", "code"}}.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m serve.server ...")

import asyncio
import os
import queue
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch

from seedgpt.api import ApiError, Protocol, Reply, TextStream, dumps, openai_tools, run_tool_request, sse
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.engine import Engine, Request
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    host: str = '127.0.0.1'  # 0.0.0.0 serves other machines too
    port: int = 8000
    max_batch: int = 16  # rows decoded together (KV slots of block_size, allocated at start); 1: one at a time
    queue_size: int = 64  # requests waiting beyond this many get 503
    max_tokens: int = 256  # the most tokens a request may ask for (also capped by the room left in block_size)
    max_prompt_tokens: int = 0  # the longest prompt accepted; 0 allows up to block_size - 1
    max_n: int = 16  # the most samples (n) one request may ask for; each takes a row
    max_body: int = 1 << 20  # bytes; a larger request body gets 413 before it is read whole
    batching: str = 'continuous'  # 'continuous', or 'static' (the old scheme, to compare: a batch runs to its end)
    prefill_chunk: int = 128  # prompt tokens read per step while others decode: a long prompt delays them by chunks
    prefix_cache: bool = True  # reuse a slot's cached keys and values for a prompt that starts with its tokens
    threads: int = 0  # torch threads; 0: one less than the cores this process may use (one is left to HTTP), at least 1
    timeout: float = 60.0  # seconds a request may take, waiting in the queue included
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16'
    quant: str = 'none'  # 'int8': int8 weights in the blocks
    compile: bool = False  # torch.compile the blocks' norms and MLPs at start (its cost printed); attention stays eager
    draft_tokens: int = 4  # prompt lookup's most guesses per row and step, checked in the same forward; 0: off


def json_response(body, status=200):
    """body as JSON (seedgpt.api.dumps: never NaN or inf)."""
    from fastapi.responses import Response
    return Response(dumps(body), status_code=status, media_type='application/json')


async def read_body(request, limit):
    """The body's bytes, refused with a 413 as soon as it is known to be larger than `limit`."""
    too_big = ApiError(413, f"the request body is larger than {limit} bytes", code='request_too_large')
    size = request.headers.get('content-length', '')
    if size.isdigit() and int(size) > limit:
        raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_big
        chunks.append(chunk)
    return b''.join(chunks)


async def replies(req, text, deadline, timeout):
    """('text', piece, tokens) as the tokens come, ('calls', tool_calls, []) if the reply calls tools, then
    ('end', finish_reason, completion_tokens); nothing more if the row was cancelled. Ends the row when it
    stops at a stop string or on the timeout (504)."""
    seen = 0
    try:
        while True:
            try:
                item = await asyncio.wait_for(req.out.get(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(504, f"the request took longer than {timeout:g} s", type='server_error',
                               code='timeout') from None
            if item == 'error':
                if req.error is not None:  # the engine keeps a row's exception for whoever waits on it: the log
                    traceback.print_exception(req.error)
                raise ApiError(500, "generation failed; see the server's log", type='server_error')
            if item == 'cancelled':
                return
            if isinstance(item, str):  # 'stop' (an end token) or 'length'
                calls, piece = text.end(item)
                yield 'text', piece, text.take_tokens()
                if calls:
                    yield 'calls', calls, []
                yield 'end', 'tool_calls' if calls else 'stop' if text.stopped else item, seen
                return
            seen += 1
            piece = text.feed(item)
            if text.stopped:  # a stop string: not sent, and the row leaves at the next step
                yield 'text', piece, text.take_tokens()
                yield 'end', 'stop', seen
                return
            if piece:
                yield 'text', piece, text.take_tokens()
    finally:
        req.cancelled = True  # a no-op once the row has ended


async def pump(i, stream, events):
    """Put (i, event) for each event of one replies() on the events queue, then (i, None), or (i, its ApiError)."""
    try:
        async for event in stream:
            await events.put((i, event))
        await events.put((i, None))
    except ApiError as e:
        await events.put((i, e))


async def merged(streams):
    """(choice index, event) from several replies() at once, as they come; an ApiError in any ends all."""
    events = asyncio.Queue()
    tasks = [asyncio.create_task(pump(i, s, events)) for i, s in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while True:
                i, event = await events.get()
                if event is None:
                    break
                if isinstance(event, ApiError):
                    raise event
                yield i, event
    finally:
        for t in tasks:
            t.cancel()


async def cancel_on_disconnect(request, reqs):
    """Cancel the rows when the client hangs up. The body is read, so the next message is the disconnect."""
    while (await request.receive())['type'] != 'http.disconnect':
        pass
    for r in reqs:
        r.cancelled = True


async def stream(reply, events):
    """The SSE body of a streamed reply: a chunk per event, then `data: [DONE]`. The 200 is sent with the first
    chunk, so an error after it goes in the stream, as OpenAI does."""
    for chunk in reply.opening():
        yield chunk
    try:
        async for i, event in events:
            chunk = reply.event(i, event)
            if chunk:
                yield chunk
        for chunk in reply.closing():
            yield chunk
    except ApiError as e:
        yield sse(e.body)
    yield "data: [DONE]\n\n"


async def whole(request, reply, events, reqs):
    """The reply as one body, once every choice has ended. Nothing is sent until then, so the client's
    connection is watched meanwhile: a client that hangs up frees its rows at the next step."""
    watch = asyncio.create_task(cancel_on_disconnect(request, reqs))
    try:
        async for i, event in events:
            reply.add(i, event)
    finally:
        watch.cancel()
    if not reply.complete:  # the client went away: nobody reads this
        from fastapi.responses import Response
        return Response(status_code=499)
    return json_response(reply.body())


def compile_engine(engine):
    """--compile: compile the engine's step at start, or stop with one line (e.g. no C++ compiler on a CPU,
    where torch.compile fails at its first call: the engine's warm-up request raises it)."""
    try:
        print(f"compiled the step in {engine.compile():.1f} s", flush=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [''])[0][:200]
        raise SystemExit(f"error: --compile failed ({type(e).__name__}: {first}); serve without --compile") from None


class Service:
    """What the routes share: the model's engine, the request checks (seedgpt.api.Protocol) and the settings."""

    def __init__(self, model, tok, cfg, name):
        if cfg.batching not in ('continuous', 'static'):
            raise SystemExit(f"error: --batching must be 'continuous' or 'static', got {cfg.batching!r}")
        if min(cfg.max_batch, cfg.prefill_chunk, cfg.max_n) < 1:
            raise SystemExit("error: --max_batch, --prefill_chunk and --max_n must be at least 1")
        if cfg.draft_tokens < 0:
            raise SystemExit(f"error: --draft_tokens must be 0 (no drafting) or more, got {cfg.draft_tokens}")
        self.tok, self.cfg, self.name = tok, cfg, name
        self.engine = Engine(model, tok.vocab_size, cfg.max_batch, cfg.queue_size, cfg.prefill_chunk,
                             cfg.prefix_cache, static=cfg.batching == 'static', draft_tokens=cfg.draft_tokens)
        self.proto = Protocol(tok, model.config.block_size, cfg.max_tokens, cfg.max_prompt_tokens, cfg.max_n)
        if cfg.compile:
            compile_engine(self.engine)

    def submit(self, ask, chat, loop):
        """One engine row per sample of the request, queued; a 503 (and none queued) when the queue is full."""
        stop_ids = self.proto.chat_stop if chat else self.proto.text_stop
        reqs = [Request(ask.prompt, ask.max_tokens, ask.temperature, ask.top_p, seed, stop_ids, ask.logprobs, loop,
                        ban_ids=ask.ban) for seed in ask.seeds]
        try:
            for r in reqs:
                self.engine.submit(r)
        except queue.Full:
            for r in reqs:
                r.cancelled = True
            raise ApiError(503, f"the server is busy ({self.cfg.queue_size} requests waiting); retry later",
                           type='server_error', code='queue_full') from None
        return reqs, stop_ids

    async def answer(self, request, chat):
        """Read and check the request off the event loop, queue one row per sample, and send the replies:
        streamed as SSE, or whole."""
        from fastapi.responses import StreamingResponse
        raw = await read_body(request, self.cfg.max_body)
        loop = asyncio.get_running_loop()
        ask = await loop.run_in_executor(None, self.proto.parse, raw, chat)
        deadline = time.monotonic() + self.cfg.timeout
        reqs, stop_ids = self.submit(ask, chat, loop)
        texts = [TextStream(self.tok, ask.stop, stop_ids, ask.tools) for _ in reqs]
        events = merged([replies(r, t, deadline, self.cfg.timeout) for r, t in zip(reqs, texts)])
        reply = Reply(self.tok, ask, chat, self.name)
        if ask.stream:
            return StreamingResponse(stream(reply, events), media_type='text/event-stream',
                                     headers={'Cache-Control': 'no-cache'})
        return await whole(request, reply, events, reqs)

    def health(self):
        return {'status': 'ok', 'model': self.name, 'chat': self.proto.chat_stop is not None,
                'tools': self.proto.call_id is not None, 'block_size': self.proto.block_size,
                'batching': self.cfg.batching, 'running': self.engine.running, 'queued': self.engine.pending.qsize()}


def make_app(model, tok, cfg, name):
    """The FastAPI app serving `model` under the name `name`; its engine's worker runs while the app does."""
    from fastapi import FastAPI, Request as HttpRequest
    from fastapi.responses import FileResponse
    from starlette.exceptions import HTTPException

    service = Service(model, tok, cfg, name)

    @asynccontextmanager
    async def lifespan(app):
        service.engine.start()
        yield
        service.engine.stop()

    app = FastAPI(title='seedgpt', lifespan=lifespan)
    app.state.engine = service.engine

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return json_response(e.body, e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # 404 and 405 in the same shape
        e = ApiError(e.status_code, str(e.detail), code='not_found' if e.status_code == 404 else None)
        return json_response(e.body, e.status)

    @app.exception_handler(Exception)
    async def server_error(request, e):
        return json_response(ApiError(500, "internal error; see the server's log", type='server_error').body, 500)

    @app.post('/v1/completions')
    async def completions(request: HttpRequest):
        return await service.answer(request, chat=False)

    @app.post('/v1/chat/completions')
    async def chat_completions(request: HttpRequest):
        return await service.answer(request, chat=True)

    @app.get('/v1/models')
    async def models():
        return {'object': 'list', 'data': [{'id': name, 'object': 'model', 'created': 0, 'owned_by': 'seedgpt'}]}

    @app.get('/tools')
    async def tools():  # seedgpt's own route, not OpenAI's: the tools the server can run for a client
        return {'tools': openai_tools()}

    @app.post('/tools/run')
    async def tools_run(request: HttpRequest):  # seedgpt's own route: runs one of them (the chat page's calls)
        raw = await read_body(request, cfg.max_body)
        return await asyncio.get_running_loop().run_in_executor(None, run_tool_request, raw)

    @app.get('/health')
    async def health():
        return service.health()

    page = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page.html')

    @app.get('/')
    async def chat_page():
        return FileResponse(page, media_type='text/html')

    return app


def main(cfg):
    import uvicorn
    rt = setup_runtime(cfg.device, cfg.dtype)
    # PyTorch's default (every core) fights the event loop and the tokenizer thread for the CPU: on a
    # loaded 2-core machine a 50-token request took 3 s instead of 0.08 s
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    torch.set_num_threads(cfg.threads or max(1, cores - 1))
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype, cfg.quant)
    name = os.path.basename(os.path.normpath(cfg.out_dir))
    print(f"serving {name} on {rt.device} in {rt.dtype} with {torch.get_num_threads()} threads: "
          f"http://{cfg.host}:{cfg.port}/ ({cfg.batching} batching, max_batch {cfg.max_batch}, queue {cfg.queue_size}, "
          f"draft_tokens {cfg.draft_tokens}, timeout {cfg.timeout:g} s)", flush=True)
    uvicorn.run(make_app(model, tok, cfg, name), host=cfg.host, port=cfg.port, log_level='warning')


if __name__ == '__main__':
    main(load_config(Config))
