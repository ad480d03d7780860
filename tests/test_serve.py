"""serve.py on 127.0.0.1 with tiny random models: the official openai client against the model's own generation
(stop strings, n, logprobs, usage), concurrent requests against each alone (the batching fault of static batches
included), hostile values beside good requests, error bodies, the queue limit, disconnects, timeouts, load."""
import codecs
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

httpx = pytest.importorskip('httpx', reason='the serve tests need httpx (pip install -e .[test])')
openai = pytest.importorskip('openai', reason='the serve tests need the openai client (pip install -e .[test])')
uvicorn = pytest.importorskip('uvicorn', reason='the serve tests need fastapi and uvicorn (pip install -e .[serve])')

from conftest import (NoCompiler, QUESTIONS, client, error_of, gated, greedy_reply, http, make_ckpt,  # noqa: E402
                      make_text, memorize, running)

from bench.serve import load_test
from model import GPT, GPTConfig
from seedgpt.chat import CHAT_SPECIALS, render_chat, render_prompt
from seedgpt.checkpoint import load_model, save_checkpoint
from seedgpt.generate import generate, generate_replies, generate_stream
from seedgpt.tokenizer import BPETokenizer, CharTokenizer, train_bpe
from serve import server as serve


@pytest.fixture(scope='module')
def base_model(tmp_path_factory):
    """(model, tok): a random tiny base model (block_size 32) with a char tokenizer and no special tokens, so its
    completions never end early: each runs to its max_tokens."""
    root = tmp_path_factory.mktemp('base')
    chars = sorted(set('abcdefgh '))
    meta = {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars)}
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=len(chars), bias=False)
    torch.manual_seed(0)
    save_checkpoint(str(root / 'ckpt.pt'), {'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args,
                                            'meta': meta})
    return load_model(root, 'cpu', torch.float32)


def wait_until(check, seconds=10):
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, "timed out waiting"
        time.sleep(0.01)


def test_models_and_health(chat_model):
    with running(*chat_model, name='tiny-chat') as url:
        models = client(url).models.list()
        assert [m.id for m in models.data] == ['tiny-chat']
        health = http(url).get('/health').json()
        assert health['status'] == 'ok' and health['chat'] and health['block_size'] == 64


def test_chat_with_openai_client(chat_model):
    model, tok = chat_model
    with running(model, tok) as url:
        for q in QUESTIONS:
            text, ids = greedy_reply(model, tok, q, 12)
            r = client(url).chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': q}],
                                                    temperature=0, max_tokens=12)
            assert r.object == 'chat.completion' and r.choices[0].message.role == 'assistant'
            assert r.choices[0].message.content == text
            assert r.choices[0].finish_reason == ('stop' if len(ids) < 12 else 'length')
            prompt = len(render_prompt(tok, [{'role': 'user', 'content': q}]))
            assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, len(ids))


def test_chat_streaming_with_openai_client(chat_model):
    model, tok = chat_model
    with running(model, tok) as url:
        text, _ = greedy_reply(model, tok, QUESTIONS[0], 30)
        chunks = list(client(url).chat.completions.create(
            model='tiny', messages=[{'role': 'user', 'content': QUESTIONS[0]}], temperature=0, max_tokens=30, stream=True))
        assert all(c.object == 'chat.completion.chunk' for c in chunks)
        assert chunks[0].choices[0].delta.role == 'assistant'
        assert len(chunks) > 3  # a chunk per token, not one at the end
        assert ''.join(c.choices[0].delta.content or '' for c in chunks) == text
        assert [c.choices[0].finish_reason for c in chunks][-1] in ('stop', 'length')
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_completions_with_openai_client(chat_model):
    model, tok = chat_model
    prompt = 'What is 1'
    x = torch.tensor([tok.encode(prompt)])
    ids = [i.item() for i in generate_stream(model, x, 20, temperature=0)]
    specials = set(tok.special_ids.values())
    end = next((k for k, i in enumerate(ids) if i in specials), len(ids))
    with running(model, tok) as url:
        r = client(url).completions.create(model='tiny', prompt=prompt, temperature=0, max_tokens=20)
        assert r.object == 'text_completion' and r.choices[0].text == tok.decode(ids[:end])
        assert r.choices[0].finish_reason == ('stop' if end < 20 else 'length')
        chunks = list(client(url).completions.create(model='tiny', prompt=prompt, temperature=0, max_tokens=20,
                                                     stream=True))
        assert ''.join(c.choices[0].text for c in chunks) == r.choices[0].text
        assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def completion_alone(model, tok, prompt, max_tokens):
    """The model's own greedy continuation of a base model's prompt, as text."""
    ids = generate(model, torch.tensor([tok.encode(prompt)]), max_tokens, temperature=0)[0, len(prompt):]
    return tok.decode(ids.tolist())


def test_compiled_step_serves_the_same_tokens(base_model, tmp_path):
    """--compile: the blocks' norms and MLPs compiled at start (a copy of the model: the others stay eager); a
    batch of requests gets the tokens the eager server gives."""
    model, tok = base_model
    compiled = GPT(model.config)
    compiled.load_state_dict(model.state_dict())
    prompts = ['bad cab', 'a', 'feed a dead bee a cab']
    answers = []
    for m, settings in ((model, {}), (compiled.eval(), {'compile': True})):
        with running(m, tok, **settings) as url, ThreadPoolExecutor(3) as pool:
            answers.append(list(pool.map(lambda p: client(url).completions.create(
                model='base', prompt=p, max_tokens=8, temperature=0).choices[0].text, prompts)))
    assert answers[0] == answers[1] and all(len(a) == 8 for a in answers[0])
    assert all(hasattr(block.mlp, '_orig_mod') for block in compiled.transformer.h)


def test_compile_failure_is_one_line(base_model, monkeypatch, capfd):
    """No C++ compiler: torch.compile fails at its first call, in the engine's warm-up request. The server stops at
    start with one line, not a traceback (the warm-up's failure once ended its row quietly, the server started,
    and every request got a 500)."""
    model, tok = base_model
    copy = GPT(model.config)
    copy.load_state_dict(model.state_dict())
    monkeypatch.setattr(torch, 'compile', lambda module, **kwargs: NoCompiler())
    with pytest.raises(SystemExit) as e:
        serve.make_app(copy.eval(), tok, serve.Config(compile=True), 'base')
    assert str(e.value) == ("error: --compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler "
                            "found); serve without --compile")
    assert capfd.readouterr().err == ''


def test_base_model_serves_completions_only(base_model):
    model, tok = base_model
    assert isinstance(tok, CharTokenizer)
    with running(model, tok) as url:
        r = client(url).completions.create(model='base', prompt='bad cab', max_tokens=8, temperature=0)
        assert r.choices[0].finish_reason == 'length' and len(r.choices[0].text) == 8
        with pytest.raises(openai.BadRequestError) as e:
            client(url).chat.completions.create(model='base', messages=[{'role': 'user', 'content': 'a'}])
        assert e.value.body['code'] == 'not_a_chat_model'


def test_concurrent_requests_batched_as_alone(chat_model):
    """Three prompts of different lengths queued together decode as one batch, each row as alone, also after
    the shorter requests have left the batch. A seeded sampled request rides along: what holds for it is that
    it gets the same text each time alone; batched, its draws are the same (tests/test_engine.py), but in
    float32 its logits may differ in their last bits with the batch's shape, and a draw near a boundary between
    two tokens can flip (docs/serving.md, 'Seeds and batches')."""
    model, tok = chat_model
    lengths = [4, 12, 7]  # max_tokens: rows leave the batch at different steps
    expected = [greedy_reply(model, tok, q, n)[0] for q, n in zip(QUESTIONS, lengths)]
    with running(model, tok, max_batch=4) as url, gated(model) as gate:
        oai = client(url)
        ask = lambda q, n=10, **kw: oai.chat.completions.create(  # noqa: E731
            model='tiny', messages=[{'role': 'user', 'content': q}], max_tokens=n, **kw).choices[0].message.content
        with ThreadPoolExecutor(5) as pool:
            gate.open.clear()  # hold the worker in a first request while the others queue up
            first = pool.submit(ask, 'hold', temperature=0)
            assert gate.entered.wait(10)
            futures = [pool.submit(ask, q, n, temperature=0) for q, n in zip(QUESTIONS, lengths)]
            seeded = [pool.submit(ask, 'What is 1+2?', temperature=1.0, seed=7)]
            wait_until(lambda: http(url).get('/health').json()['queued'] == 4)
            gate.open.set()
            first.result()
            assert [f.result() for f in futures] == expected
            assert seeded[0].result()
        decoded = [segments[0][0] for segments in gate.segments if segments and segments[0][1] == 1]  # rows per step
        assert 4 in decoded and min(decoded[decoded.index(4):]) < 4  # four at a time, then fewer as rows left
        assert ask('What is 1+2?', temperature=1.0, seed=7) == ask('What is 1+2?', temperature=1.0, seed=7)


def test_short_prompt_with_long_reply_batched_beside_long_prompt(base_model):
    """Each request fits in block_size (32) alone. Static batches left-padded them all to the longest prompt,
    so the short prompt's 31 new tokens ran past block_size and every row of the batch failed with a 500.
    Each row now has its own positions: every request gets what it gets alone."""
    model, tok = base_model
    asks = [('a', 31), ('bad cab bad cab bad cab ab', 6), ('hh', 24)]
    expected = [completion_alone(model, tok, p, n) for p, n in asks]
    with running(model, tok, max_batch=4) as url, gated(model) as gate:
        oai = client(url)
        complete = lambda p, n: oai.completions.create(  # noqa: E731
            model='base', prompt=p, max_tokens=n, temperature=0).choices[0].text
        with ThreadPoolExecutor(4) as pool:
            gate.open.clear()  # hold the worker in a first request while the others queue up
            first = pool.submit(complete, 'ab', 2)
            assert gate.entered.wait(10)
            futures = [pool.submit(complete, p, n) for p, n in asks]
            wait_until(lambda: http(url).get('/health').json()['queued'] == 3)
            gate.open.set()
            first.result()
            assert [f.result() for f in futures] == expected


def test_hostile_values_beside_good_rows(chat_model):
    """Requests at the edges of every accepted range (a temperature of 1e-40 once overflowed and failed its
    whole batch), batched with greedy ones: the greedy ones get what they get alone, the others a 200."""
    model, tok = chat_model
    expected = [greedy_reply(model, tok, q, 12)[0] for q in QUESTIONS]
    hostile = [dict(temperature=1e-40), dict(temperature=1e-300, top_p=5e-324), dict(temperature=2, top_p=1e-300),
               dict(temperature=2, seed=2 ** 200), dict(temperature=1.5, logprobs=True, top_logprobs=20, n=3),
               dict(temperature=0.5, stop=['a' * 256, '+', '<|end|>', ' ']), dict(max_completion_tokens=1)]
    with running(model, tok, max_batch=8) as url, gated(model) as gate:
        oai = client(url)
        ask = lambda q, **kw: oai.chat.completions.create(  # noqa: E731
            model='tiny', messages=[{'role': 'user', 'content': q}], max_tokens=12, **kw)
        with ThreadPoolExecutor(12) as pool:
            gate.open.clear()
            first = pool.submit(ask, 'hold', temperature=0)
            assert gate.entered.wait(10)
            bad = [pool.submit(ask, 'What is 1+1?', **kw) for kw in hostile]
            good = [pool.submit(ask, q, temperature=0) for q in QUESTIONS]
            wait_until(lambda: http(url).get('/health').json()['queued'] >= len(hostile) + len(QUESTIONS))
            gate.open.set()
            first.result()
            assert [f.result().choices[0].message.content for f in good] == expected
            for f in bad:
                r = f.result()
                assert all(c.finish_reason in ('stop', 'length') for c in r.choices)
        assert max(rows for segments in gate.segments for rows, T in segments if T == 1) == 8  # side by side


CHAT = '/v1/chat/completions'
USER = [{'role': 'user', 'content': 'What is 1+1?'}]
BAD = [  # (path, body, param, code): each must get a 400 with that param and code
    (CHAT, b'{"messages": [', None, 'invalid_json'),
    (CHAT, b'\xff\xfe', None, 'invalid_json'),
    (CHAT, [1, 2], None, 'invalid_json'),
    (CHAT, {'messages': 'hello'}, 'messages', 'invalid_type'),
    (CHAT, {}, 'messages', 'invalid_type'),
    (CHAT, {'messages': [{'role': 'wizard', 'content': 'hi'}]}, 'messages[0]', 'invalid_value'),
    (CHAT, {'messages': USER + [{'role': 'user'}]}, 'messages[1]', 'invalid_value'),
    (CHAT, {'messages': [{'role': 'user', 'content': 'x' * 70}]}, 'messages', 'context_length_exceeded'),
    (CHAT, {'messages': USER, 'max_tokens': 60}, 'max_tokens', 'context_length_exceeded'),
    (CHAT, {'messages': USER, 'max_tokens': 0}, 'max_tokens', 'invalid_value'),
    (CHAT, {'messages': USER, 'max_tokens': 1000}, 'max_tokens', 'invalid_value'),
    (CHAT, {'messages': USER, 'max_tokens': 2.5}, 'max_tokens', 'invalid_type'),
    (CHAT, {'messages': USER, 'max_tokens': True}, 'max_tokens', 'invalid_type'),
    (CHAT, {'messages': USER, 'temperature': -0.1}, 'temperature', 'invalid_value'),
    (CHAT, {'messages': USER, 'temperature': 'hot'}, 'temperature', 'invalid_type'),
    (CHAT, {'messages': USER, 'top_p': 0}, 'top_p', 'invalid_value'),
    (CHAT, {'messages': USER, 'top_p': 1.5}, 'top_p', 'invalid_value'),
    (CHAT, {'messages': USER, 'top_p': -1}, 'top_p', 'invalid_value'),
    (CHAT, {'messages': USER, 'stream': 'yes'}, 'stream', 'invalid_type'),
    (CHAT, {'messages': USER, 'temperature': 2.5}, 'temperature', 'invalid_value'),
    (CHAT, {'messages': USER, 'temperature': 1e9}, 'temperature', 'invalid_value'),
    (CHAT, {'messages': USER, 'n': 0}, 'n', 'invalid_value'),
    (CHAT, {'messages': USER, 'n': 17}, 'n', 'invalid_value'),
    (CHAT, {'messages': USER, 'logprobs': 3}, 'logprobs', 'invalid_type'),  # chat's logprobs is a switch
    (CHAT, {'messages': USER, 'logprobs': True, 'top_logprobs': 21}, 'top_logprobs', 'invalid_value'),
    (CHAT, {'messages': USER, 'top_logprobs': 2}, 'top_logprobs', 'invalid_value'),  # without logprobs
    (CHAT, {'messages': USER, 'stop': ['a', 'b', 'c', 'd', 'e']}, 'stop', 'invalid_value'),
    (CHAT, {'messages': USER, 'stop': ''}, 'stop', 'invalid_value'),
    (CHAT, {'messages': USER, 'stop': 5}, 'stop', 'invalid_value'),
    (CHAT, {'messages': USER, 'max_completion_tokens': 0}, 'max_completion_tokens', 'invalid_value'),
    (CHAT, {'messages': USER, 'stream_options': 3}, 'stream_options', 'invalid_type'),
    (CHAT, b'[' * 100_000 + b']' * 100_000, None, 'invalid_json'),  # nested past the parser's recursion limit
    (CHAT, b'{"messages": ' + b'[' * 100_000 + b']' * 100_000 + b'}', None, 'invalid_json'),
    ('/v1/completions', {'prompt': 'a', 'logprobs': 6}, 'logprobs', 'invalid_value'),
    ('/v1/completions', {'prompt': 'a' * 200_000}, 'prompt', 'context_length_exceeded'),  # refused before tokenizing
    (CHAT, b'{"messages": [{"role": "user", "content": "a"}], "temperature": NaN}', 'temperature', 'invalid_value'),
    ('/v1/completions', {'prompt': 5}, 'prompt', 'invalid_type'),
    ('/v1/completions', {'prompt': ''}, 'prompt', 'invalid_value'),
    ('/v1/completions', {'prompt': 'caf\u00e9 \u20ac'}, 'prompt', 'invalid_value'),  # not in the vocabulary
    ('/v1/completions', {'prompt': 'a' * 64}, 'prompt', 'context_length_exceeded'),
    ('/v1/completions', {'prompt': 'a', 'seed': 'x'}, 'seed', 'invalid_type'),
]


def test_bad_input_gets_openai_error_bodies(chat_model):
    with running(*chat_model, max_tokens=100, max_body=300_000) as url:
        h = http(url)
        for path, body, param, code in BAD:
            r = h.post(path, content=body) if isinstance(body, bytes) else h.post(path, json=body)
            error_of(r, 400, param, code)
        error_of(h.get('/v1/nothing'), 404, code='not_found')
        error_of(h.get(CHAT), 405)
        # the openai client sees the same body, and the server is still up and right
        with pytest.raises(openai.BadRequestError) as e:
            client(url).chat.completions.create(model='tiny', messages=USER, temperature=-1)
        assert e.value.body['param'] == 'temperature'
        assert h.post(CHAT, json={'messages': USER, 'max_tokens': 3}).status_code == 200
    with running(*chat_model, max_body=1000) as url:
        # too large: refused from its Content-Length, or as it arrives when it has none (chunked)
        error_of(http(url).post(CHAT, content=b' ' * 1001), 413, code='request_too_large')
        error_of(http(url).post(CHAT, content=iter([b' ' * 400] * 3)), 413, code='request_too_large')
        assert http(url).post(CHAT, json={'messages': USER, 'max_tokens': 3}).status_code == 200


def test_parsing_and_tokenizing_never_block_the_event_loop(chat_model, monkeypatch):
    """A request is parsed and tokenized in a thread: while one is stuck there, other clients and /health are
    answered (a 20 MB prompt once held everyone up for ~10 s while it was tokenized on the event loop)."""
    from seedgpt.api import Protocol
    gate, parse = threading.Event(), Protocol.parse

    def stuck_parse(self, raw, chat):
        assert gate.wait(10)
        return parse(self, raw, chat)
    monkeypatch.setattr(Protocol, 'parse', stuck_parse)
    with running(*chat_model) as url, ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(http(url).post, CHAT, json={'messages': USER, 'max_tokens': 2})
        time.sleep(0.2)
        assert http(url).get('/health').status_code == 200 and not stuck.done()
        gate.set()
        assert stuck.result().status_code == 200


def test_full_queue_returns_503(chat_model):
    model, tok = chat_model
    with running(model, tok, max_batch=1, queue_size=1) as url, gated(model) as gate:
        gate.open.clear()
        body = {'messages': USER, 'max_tokens': 4, 'temperature': 0}
        with ThreadPoolExecutor(2) as pool:
            running_one = pool.submit(http(url).post, CHAT, json=body)
            assert gate.entered.wait(10)  # in the worker
            queued = pool.submit(http(url).post, CHAT, json=body)
            wait_until(lambda: http(url).get('/health').json()['queued'] == 1)
            error_of(http(url).post(CHAT, json=body), 503, code='queue_full')
            with pytest.raises(openai.APIStatusError) as e:
                client(url).chat.completions.create(model='tiny', messages=USER)
            assert e.value.status_code == 503
            gate.open.set()
            assert running_one.result().status_code == 200 and queued.result().status_code == 200


def test_disconnect_stops_generation(chat_model):
    model, tok = chat_model
    with running(model, tok) as url, gated(model, delay=0.02) as gate:
        with http(url) as h, h.stream('POST', CHAT, json={'messages': USER, 'max_tokens': 40, 'stream': True,
                                                          'temperature': 0}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith('data: ')
            assert next(line for line in lines if line)  # a token streamed: then the client hangs up
        wait_until(lambda: http(url).get('/health').json()['running'] == 0)
        calls = len(gate.shapes)
        time.sleep(0.2)
        assert len(gate.shapes) == calls < 20  # the row was dropped well before its 40 tokens
        assert http(url).post(CHAT, json={'messages': USER, 'max_tokens': 2}).status_code == 200


def test_disconnect_frees_the_slot_without_streaming(chat_model):
    """A client that gives up on a non-streamed reply (here: its read timeout) frees its slot at the next token;
    the only slot then serves the next request at once."""
    model, tok = chat_model
    with running(model, tok, max_batch=1) as url, gated(model, delay=0.02) as gate:
        body = {'messages': USER, 'max_tokens': 40, 'temperature': 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + CHAT, json=body, timeout=0.3, trust_env=False)
        wait_until(lambda: http(url).get('/health').json()['running'] == 0, seconds=2)
        assert len(gate.shapes) < 30  # well before its 40 tokens
        assert http(url).post(CHAT, json={**body, 'max_tokens': 2}).status_code == 200


def chat(url, q='What is 48+75?', **kw):
    return client(url).chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': q}], **kw)


def test_stop_strings_across_tokens(chat_model, base_model):
    """A stop string of several characters (so several tokens of a char model) ends the reply before it, streamed
    or not, with finish_reason 'stop'; a stop string that never comes changes nothing."""
    for (model, tok), endpoint in [(base_model, 'completions'), (chat_model, 'chat')]:
        with running(model, tok) as url:
            def ask(**kw):
                if endpoint == 'chat':
                    r = chat(url, temperature=0, max_tokens=24, **kw)
                    return r.choices[0].message.content, r.choices[0].finish_reason
                r = client(url).completions.create(model='base', prompt='bad cab', temperature=0, max_tokens=24, **kw)
                if kw.get('stream'):
                    chunks = list(r)
                    return ''.join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
                return r.choices[0].text, r.choices[0].finish_reason
            full, finish = ask()
            assert len(full) >= 8, full
            stop = full[4:7]  # three characters: three tokens
            cut = full[:full.index(stop)]
            assert ask(stop=stop) == (cut, 'stop')
            assert ask(stop=['zzzz', stop, 'yyy']) == (cut, 'stop')
            assert ask(stop='qqqq') == (full, finish)
            if endpoint == 'completions':
                assert ask(stop=stop, stream=True) == (cut, 'stop')


def test_n_samples_and_seeds(chat_model):
    """n samples are independent (sample i is seeded seed + i), streamed or not, with usage summed over them."""
    model, tok = chat_model
    with running(model, tok) as url:
        r = chat(url, n=3, temperature=1.0, seed=11, max_tokens=10)
        texts = [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]
        assert [c.index for c in r.choices] == [0, 1, 2] and len(set(texts)) > 1
        assert texts == [chat(url, temperature=1.0, seed=11 + i, max_tokens=10).choices[0].message.content
                         for i in range(3)]
        assert r.usage.completion_tokens == sum(
            chat(url, temperature=1.0, seed=11 + i, max_tokens=10).usage.completion_tokens for i in range(3))
        streamed = ['', '', '']
        chunks = list(chat(url, n=3, temperature=1.0, seed=11, max_tokens=10, stream=True,
                           stream_options={'include_usage': True}))
        for c in chunks[:-1]:
            streamed[c.choices[0].index] += c.choices[0].delta.content or ''
        assert streamed == texts and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens == len(
            render_prompt(tok, [{'role': 'user', 'content': 'What is 48+75?'}]))


def test_logprobs(chat_model, base_model):
    """logprobs of the model's own distribution: the greedy token is the top one, and its logprob is the lone
    model's log-softmax; chat's top_logprobs and completions' logprobs give that many alternatives."""
    model, tok = chat_model
    q = [{'role': 'user', 'content': QUESTIONS[0]}]
    prompt = render_prompt(tok, q)
    with running(model, tok) as url:
        r = chat(url, QUESTIONS[0], temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert ''.join(e.token for e in content) == r.choices[0].message.content
        ids = generate_replies(model, tok, [prompt], 8, temperature=0)[0]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids]), torch.zeros(1, len(prompt) + len(ids), dtype=torch.long))[0][0]
            logits[:, tok.special_ids['<|call|>']] = float('-inf')  # no tools offered: the model may not call
            logp = torch.log_softmax(logits, -1)
        for k, e in enumerate(content):
            assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token
            assert abs(e.logprob - logp[len(prompt) - 1 + k, ids[k]].item()) < 1e-4
        streamed = [e for c in chat(url, QUESTIONS[0], temperature=0, max_tokens=8, logprobs=True, top_logprobs=3,
                                    stream=True) if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in content]
        r = chat(url, QUESTIONS[0], temperature=0, max_completion_tokens=3)  # the newer name of max_tokens
        text, ids = greedy_reply(model, tok, QUESTIONS[0], 3)
        assert (r.choices[0].message.content, r.usage.completion_tokens) == (text, len(ids))
    model, tok = base_model
    with running(model, tok) as url:
        r = client(url).completions.create(model='base', prompt='bad cab', temperature=0, max_tokens=6, logprobs=2)
        lp = r.choices[0].logprobs
        assert ''.join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 6
        assert all(len(top) == 2 and max(top.values()) == pytest.approx(p) for top, p in zip(lp.top_logprobs,
                                                                                            lp.token_logprobs))
        assert lp.text_offset == list(range(6))
        chunks = client(url).completions.create(model='base', prompt='bad cab', temperature=0, max_tokens=6, logprobs=2,
                                                stream=True)
        streamed = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs]
        assert sum((s.tokens for s in streamed), []) == lp.tokens
        assert sum((s.text_offset for s in streamed), []) == list(range(6))


def test_timeout(chat_model):
    model, tok = chat_model
    with running(model, tok, timeout=0.3) as url, gated(model, delay=0.05):
        body = {'messages': USER, 'max_tokens': 40, 'temperature': 0}
        error_of(http(url).post(CHAT, json=body), 504, code='timeout')
        with http(url).stream('POST', CHAT, json={**body, 'stream': True}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith('data: ')]
        assert r.status_code == 200 and events[-1] == '[DONE]'
        assert json.loads(events[-2])['error']['code'] == 'timeout'
        wait_until(lambda: http(url).get('/health').json()['running'] == 0)


def test_load(chat_model):
    """A bounded load test (bench.serve's): 8 clients, 40 streamed requests, a 30 s limit; every request answered,
    with the prefix cache on (the questions repeat)."""
    asks = [(CHAT, {'messages': [{'role': 'user', 'content': QUESTIONS[k % 3]}], 'max_tokens': 8, 'temperature': 0})
            for k in range(40)]
    with running(*chat_model, max_batch=4, queue_size=16, prefix_cache=True) as url:
        r = load_test(url, clients=8, asks=asks, time_limit=30)
        assert r['errors'] == [] and r['requests'] == 40 and r['tokens'] > 40
        assert all(0 < t <= total for t, total in zip(r['ttft'], r['latency']))


WORDS = 'caf\u00e9 \u4e2d\u6587 \U0001f642 ok'  # characters of 2, 3 and 4 bytes in UTF-8


@pytest.fixture(scope='module')
def bpe_model():
    """(model, tok): a learned byte-level BPE with the chat tokens, learnt from ASCII only, so each byte of a
    character beyond ASCII is a token of its own; and a tiny GPT trained in a few seconds until it writes WORDS
    as its chat reply and after 'say:' (each of its multi-byte characters over several tokens)."""
    tok = BPETokenizer(train_bpe([make_text(300)], 300, CHAT_SPECIALS))
    assert len(tok.encode(WORDS)) > len(WORDS) + 5  # whole characters over several tokens
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=tok.vocab_size))
    chat, mask = render_chat(tok, [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': WORDS}])
    plain = tok.encode('say: ' + WORDS)
    return memorize(model, [(chat, mask), (plain, [1] * len(plain))], steps=300), tok


def test_logprobs_of_tokens_that_split_a_character(bpe_model):
    """A byte-level token may hold part of a character. Its logprobs entry carries its own bytes (which join into
    the reply's bytes), and its token text is 'bytes:' and the bytes escaped; completions' text_offset counts
    characters of the text, and top_logprobs keeps every alternative apart. (Each token was decoded alone: the
    bytes of U+FFFD, offsets counted in U+FFFDs, and alternatives that each held part of a character collided
    in one key.)"""
    model, tok = bpe_model
    n = len(tok.encode(WORDS))
    with running(model, tok) as url:
        r = client(url).chat.completions.create(model='bpe', messages=[{'role': 'user', 'content': 'hi'}],
                                                temperature=0, max_tokens=n + 1, logprobs=True, top_logprobs=5)
        content = r.choices[0].logprobs.content
        assert r.choices[0].message.content == WORDS and len(content) == n
        assert b''.join(bytes(e.bytes) for e in content) == WORDS.encode()
        for e in content + [t for e in content for t in e.top_logprobs]:
            data = bytes(e.bytes)
            whole = data.decode('utf-8', 'ignore').encode() == data
            assert e.token == (data.decode() if whole else 'bytes:' + data.decode('utf-8', 'backslashreplace')), e
        halves = [e.token for e in content if e.bytes in ([0xc3], [0xa9])]  # the two bytes of \u00e9
        assert halves == ['bytes:\\xc3', 'bytes:\\xa9']
        assert all(len({bytes(t.bytes) for t in e.top_logprobs}) == 5 for e in content)
        streamed = [e for c in client(url).chat.completions.create(
            model='bpe', messages=[{'role': 'user', 'content': 'hi'}], temperature=0, max_tokens=n + 1, logprobs=True,
            top_logprobs=5, stream=True) if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in content]

        n = len(tok.encode(' ' + WORDS))
        for stream in (False, True):
            r = client(url).completions.create(model='bpe', prompt='say:', temperature=0, max_tokens=n, logprobs=5,
                                               stream=stream)
            chunks = list(r) if stream else [r]
            text = ''.join(c.choices[0].text for c in chunks)
            lp = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs]
            tokens, offsets = sum((x.tokens for x in lp), []), sum((x.text_offset for x in lp), [])
            assert text == ' ' + WORDS and len(tokens) == n
            raw = [codecs.escape_decode(t[6:].encode())[0] if t.startswith('bytes:') else t.encode() for t in tokens]
            assert b''.join(raw) == text.encode() and '\ufffd' not in ''.join(tokens)
            ids = tok.encode(text)  # the text's characters before each token (a token inside one: where it starts)
            assert offsets == [len(tok.decode(ids[:k]).rstrip('\ufffd')) for k in range(n)]
            assert all(len(top) == 5 for x in lp for top in x.top_logprobs)


def test_lone_surrogates_get_400(chat_model, bpe_model):
    """"x\ud800y" is valid JSON but not Unicode text. In a prompt, a message or a stop string it is a 400 naming
    the parameter, for a char model and a learned BPE alike (Hugging Face's tokenizer raised TypeError: a 500;
    a stop string was taken and never matched)."""
    lone = 'x\ud800y'
    for model, tok in (chat_model, bpe_model):
        with running(model, tok) as url:
            h = http(url)
            for path, body, param in [
                    ('/v1/completions', {'prompt': lone}, 'prompt'),
                    (CHAT, {'messages': [{'role': 'user', 'content': lone}]}, 'messages[0]'),
                    (CHAT, {'messages': USER + [{'role': 'assistant', 'content': None, 'tool_calls': [
                        {'id': 'c', 'type': 'function', 'function': {'name': 'calc', 'arguments': '{}'}}]},
                        {'role': 'tool', 'content': lone, 'tool_call_id': 'c'}]}, 'messages[2]'),
                    (CHAT, {'messages': USER, 'stop': ['ok', lone]}, 'stop'),
                    ('/v1/completions', {'prompt': 'a', 'stop': lone}, 'stop')]:
                raw = json.dumps({**body, 'max_tokens': 2})  # ASCII: the surrogate as its \\ud800 escape
                error = error_of(h.post(path, content=raw), 400, param, 'invalid_value')
                assert 'surrogate' in error['message']
            assert h.post(CHAT, json={'messages': USER, 'max_tokens': 2}).status_code == 200


@pytest.fixture(scope='module')
def small_chat_model(tmp_path_factory):
    """(model, tok): a random chat model of 9 tokens (3 characters and the 6 chat tokens), fewer than the 20
    top_logprobs a request may ask for."""
    chars = list('ab ')
    meta = {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars) + len(CHAT_SPECIALS),
            'special_tokens': {s: len(chars) + i for i, s in enumerate(CHAT_SPECIALS)}}
    root = tmp_path_factory.mktemp('small')
    return load_model(make_ckpt(root, meta), 'cpu', torch.float32)


def no_constants(name):
    raise ValueError(f"{name} is not JSON")


def test_banned_ids_never_reported_and_json_never_infinite(small_chat_model):
    """top_logprobs=20 of a 9-token vocabulary, no tools: <|call|> is banned, so its logprob is -inf. It is never
    reported, and no reply holds NaN or Infinity (it was in top_logprobs at -inf: a 500 whole, and
    '-Infinity', which is not JSON, streamed)."""
    model, tok = small_chat_model
    body = {'messages': [{'role': 'user', 'content': 'ab'}], 'max_tokens': 6, 'temperature': 0, 'logprobs': True,
            'top_logprobs': 20}
    with running(model, tok) as url:
        r = http(url).post(CHAT, json=body)
        assert r.status_code == 200, r.text
        content = json.loads(r.text, parse_constant=no_constants)['choices'][0]['logprobs']['content']
        assert content and all(len(e['top_logprobs']) == tok.vocab_size - 1 for e in content)
        assert '<|call|>' not in {t['token'] for e in content for t in e['top_logprobs']}
        with http(url).stream('POST', CHAT, json={**body, 'stream': True}) as s:
            chunks = [json.loads(line[6:], parse_constant=no_constants) for line in s.iter_lines()
                      if line.startswith('data: {')]
        streamed = [e for c in chunks if c['choices'] and c['choices'][0]['logprobs']
                    for e in c['choices'][0]['logprobs']['content']]
        assert [e['token'] for e in streamed] == [e['token'] for e in content]
        assert all(len(e['top_logprobs']) == tok.vocab_size - 1 for e in streamed)
