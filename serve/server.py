"""
Serve a checkpoint over HTTP with the OpenAI API, and a chat page for people.

    python -m serve.server --out_dir=out-sft-tasks --port=8000         # http://127.0.0.1:8000/ is the chat page
    python -m serve.server --out_dir=out-stdlib-char --max_batch=1     # a base model (completions only), one request at a time
    python -m serve.server --out_dir=out-sft-tasks --batching=static   # the old static batches, to compare
    python -m bench.serve --out_dir=out-sft-tasks                      # load test: continuous against static batches

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

Concurrency: continuous batching (seedgpt/engine.py states the scheduling rule). One worker thread decodes
up to max_batch rows in a pool of KV slots allocated at start; a request takes a free slot as soon as one
is free, reads its prompt in chunks between decode steps, and leaves the moment it ends, is cancelled
or times out. The HTTP side is asyncio: bodies are size-capped before they are read whole, then parsed
and tokenized in a thread (seedgpt/api.py), never on the event loop.

Limits: at most queue_size requests wait (then 503); max_tokens and n are capped; a prompt must leave
room for its max_tokens in block_size (else 400, never cropped); a request gets `timeout` seconds in all.
Bad input gets a 4xx and an OpenAI error body {"error": {"message", "type", "param", "code"}}.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m serve.server ...")

import asyncio
import json
import os
import queue
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch

from seedgpt.api import (ApiError, Protocol, TextStream, chat_logprobs, completion_logprobs, openai_tools,
                         run_tool_request)
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
    compile: bool = False  # torch.compile the blocks' norms and MLPs at start (its cost is printed); attention stays eager


def error_response(e):
    from fastapi.responses import JSONResponse
    return JSONResponse(e.body, status_code=e.status)


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


async def merged(streams):
    """(choice index, event) from several replies() at once, as they come; an ApiError in any ends all."""
    events = asyncio.Queue()

    async def pump(i, stream):
        try:
            async for event in stream:
                await events.put((i, event))
            await events.put((i, None))
        except ApiError as e:
            await events.put((i, e))
    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
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


def make_app(model, tok, cfg, name):
    """The FastAPI app serving `model` under the name `name`; its engine's worker runs while the app does."""
    from fastapi import FastAPI, Request as HttpRequest
    from fastapi.responses import FileResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    if cfg.batching not in ('continuous', 'static'):
        raise SystemExit(f"error: --batching must be 'continuous' or 'static', got {cfg.batching!r}")
    if min(cfg.max_batch, cfg.prefill_chunk, cfg.max_n) < 1:
        raise SystemExit("error: --max_batch, --prefill_chunk and --max_n must be at least 1")
    block_size = model.config.block_size
    engine = Engine(model, tok.vocab_size, cfg.max_batch, cfg.queue_size, cfg.prefill_chunk, cfg.prefix_cache,
                    static=cfg.batching == 'static')
    proto = Protocol(tok, block_size, cfg.max_tokens, cfg.max_prompt_tokens, cfg.max_n)
    if cfg.compile:
        try:
            print(f"compiled the step in {engine.compile():.1f} s", flush=True)
        except Exception as e:  # e.g. no C++ compiler on a CPU: torch.compile fails at its first call
            first = (str(e).strip().splitlines() or [''])[0][:200]
            raise SystemExit(f"error: --compile failed ({type(e).__name__}: {first}); serve without --compile") from None

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title='seedgpt', lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # 404 and 405 in the same shape
        code = 'not_found' if e.status_code == 404 else None
        return error_response(ApiError(e.status_code, str(e.detail), code=code))

    @app.exception_handler(Exception)
    async def server_error(request, e):
        return error_response(ApiError(500, "internal error; see the server's log", type='server_error'))

    async def answer(request, chat):
        """Read and check the request off the event loop, queue one row per sample, and send the replies:
        streamed as SSE, or whole."""
        raw = await read_body(request, cfg.max_body)
        loop = asyncio.get_running_loop()
        ask = await loop.run_in_executor(None, proto.parse, raw, chat)
        deadline = time.monotonic() + cfg.timeout
        stop_ids = proto.chat_stop if chat else proto.text_stop
        reqs = [Request(ask.prompt, ask.max_tokens, ask.temperature, ask.top_p, seed, stop_ids, ask.logprobs, loop,
                        ban_ids=ask.ban) for seed in ask.seeds]
        try:
            for r in reqs:
                engine.submit(r)
        except queue.Full:
            for r in reqs:
                r.cancelled = True
            raise ApiError(503, f"the server is busy ({cfg.queue_size} requests waiting); retry later",
                           type='server_error', code='queue_full') from None
        texts = [TextStream(tok, ask.stop, stop_ids, ask.tools) for _ in reqs]
        events = merged([replies(r, t, deadline, cfg.timeout) for r, t in zip(reqs, texts)])
        top = {'id': f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", 'created': int(time.time()),
               'object': 'chat.completion.chunk' if chat else 'text_completion', 'model': name}
        offsets = [0] * ask.n  # where each choice's next token starts in its text (completions' logprobs)

        def choice(i, text, tokens, finish, whole=False, calls=None):
            lp = None
            if ask.logprobs is not None and tokens:
                lp = chat_logprobs(tok, tokens) if chat else completion_logprobs(tok, tokens, offsets[i])
                offsets[i] += 0 if chat else sum(len(t) for t in lp['tokens'])
            if not chat:
                return {'index': i, 'text': text, 'logprobs': lp, 'finish_reason': finish}
            if whole:
                message = {'role': 'assistant', 'content': text}
                if calls:  # the text before the call, if any; OpenAI's null when there is none
                    message = {'role': 'assistant', 'content': text or None, 'tool_calls': calls}
                return {'index': i, 'message': message, 'logprobs': lp, 'finish_reason': finish}
            return {'index': i, 'delta': {'content': text} if text is not None else {}, 'logprobs': lp,
                    'finish_reason': finish}

        def usage(n):
            return {'prompt_tokens': len(ask.prompt), 'completion_tokens': n, 'total_tokens': len(ask.prompt) + n}

        def data(obj):
            return f"data: {json.dumps(obj)}\n\n"

        if ask.stream:
            async def sse():
                n = 0
                for i in range(ask.n if chat else 0):
                    yield data({**top, 'choices': [{'index': i, 'delta': {'role': 'assistant', 'content': ''},
                                                    'logprobs': None, 'finish_reason': None}]})
                try:
                    async for i, (what, a, b) in events:
                        if what == 'end':
                            n += b
                            yield data({**top, 'choices': [choice(i, None if chat else '', [], a)]})
                        elif what == 'calls':  # each call whole, in the shape the openai client accumulates
                            delta = {'tool_calls': [{'index': k, **c} for k, c in enumerate(a)]}
                            yield data({**top, 'choices': [{'index': i, 'delta': delta, 'logprobs': None,
                                                            'finish_reason': None}]})
                        elif a or (b and ask.logprobs is not None):
                            yield data({**top, 'choices': [choice(i, a, b, None)]})
                    if ask.include_usage:
                        yield data({**top, 'choices': [], 'usage': usage(n)})
                except ApiError as e:  # the 200 is sent: the error goes in the stream, as OpenAI does
                    yield data(e.body)
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type='text/event-stream', headers={'Cache-Control': 'no-cache'})

        # not streamed: nothing is sent until the end, so watch for the client hanging up meanwhile
        watch = asyncio.create_task(cancel_on_disconnect(request, reqs))
        pieces, tokens, finish, n = [[] for _ in reqs], [[] for _ in reqs], [None] * ask.n, 0
        calls = [None] * ask.n
        try:
            async for i, (what, a, b) in events:
                if what == 'text':
                    pieces[i].append(a)
                    tokens[i] += b
                elif what == 'calls':
                    calls[i] = a
                else:
                    finish[i], n = a, n + b
        finally:
            watch.cancel()
        if None in finish:  # the client went away: nobody reads this
            return Response(status_code=499)
        return {**top, 'object': 'chat.completion' if chat else 'text_completion', 'usage': usage(n),
                'choices': [choice(i, ''.join(pieces[i]), tokens[i], finish[i], True, calls[i]) for i in range(ask.n)]}

    @app.post('/v1/completions')
    async def completions(request: HttpRequest):
        return await answer(request, chat=False)

    @app.post('/v1/chat/completions')
    async def chat_completions(request: HttpRequest):
        return await answer(request, chat=True)

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
        return {'status': 'ok', 'model': name, 'chat': proto.chat_stop is not None, 'tools': proto.call_id is not None,
                'block_size': block_size, 'batching': cfg.batching, 'running': engine.running,
                'queued': engine.pending.qsize()}

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
          f"timeout {cfg.timeout:g} s)", flush=True)
    uvicorn.run(make_app(model, tok, cfg, name), host=cfg.host, port=cfg.port, log_level='warning')


if __name__ == '__main__':
    main(load_config(Config))
