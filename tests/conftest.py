"""
Shared fixtures: a tiny char dataset, a tiny trained checkpoint, and helpers that run train.py
in-process or any script by subprocess, save a random chat checkpoint, or check a one-line error.
Everything is written under pytest's tmp dirs.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from seedgpt import dataset  # noqa: E402
from seedgpt.checkpoint import save_checkpoint  # noqa: E402
from seedgpt.config import load_config  # noqa: E402
from seedgpt.tokenizer import gpt2_encoding

# one thread: these models are tiny, and on a shared 2-core machine a second thread mostly spins
torch.set_num_threads(1)

# the tiny model and run every training test starts from; a test appends what it varies
TINY = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--batch_size=4', '--eval_iters=2', '--eval_interval=1000', '--log_interval=1', '--warmup_iters=2',
        '--learning_rate=1e-2', '--min_lr=1e-3', '--compile=False']

WORDS = ('the cat sat on a mat and then it ran to see why every dog in town had gone quiet '
         'before noon while small birds sang over old stone walls near the river').split()


def make_text(n_words, seed=0):
    """Deterministic plain ASCII prose, one short line per sentence."""
    rnd = random.Random(seed)
    lines = []
    while n_words > 0:
        k = min(n_words, rnd.randint(4, 12))
        lines.append(' '.join(rnd.choice(WORDS) for _ in range(k)) + '.')
        n_words -= k
    return '\n'.join(lines) + '\n'


def write(path, text):
    """Write exactly these characters (no newline translation) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode('utf-8'))
    return path


def read_log(out_dir):
    with open(Path(out_dir) / 'log.jsonl') as f:
        return [json.loads(line) for line in f]


def train_losses(out_dir):
    """{iteration: logged training loss} from out_dir/log.jsonl."""
    return {row['iter']: row['loss'] for row in read_log(out_dir) if 'loss' in row}


def run_train(out_dir, data_dir, *args):
    """train.py in this process on the tiny config; returns the logged training losses."""
    cfg = load_config(train.Config, TINY + [f'--out_dir={out_dir}', f'--data_dir={data_dir}', *map(str, args)])
    train.main(cfg)
    return train_losses(out_dir)


def run_script(*args, timeout=120, env=None, **kwargs):
    """`python *args` from the repo root, capturing bytes-exact stdout and stderr as text."""
    env = dict(os.environ, PYTHONIOENCODING='utf-8', OMP_NUM_THREADS='1', **(env or {}))
    p = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, env=env,
                       timeout=timeout, **kwargs)
    p.stdout, p.stderr = p.stdout.decode('utf-8'), p.stderr.decode('utf-8')
    return p


def run_scripts(*argvs, inputs=None, timeout=120, env=None):
    """run_script for several scripts at once, each given its stdin bytes in inputs: a script's time is mostly
    start-up (importing torch), which runs side by side on the cores. The finished processes, in order."""
    env = dict(os.environ, PYTHONIOENCODING='utf-8', OMP_NUM_THREADS='1', **(env or {}))
    inputs = inputs or [None] * len(argvs)
    procs = [subprocess.Popen([sys.executable, *map(str, a)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=None if i is None else subprocess.PIPE)
             for a, i in zip(argvs, inputs)]
    done = []
    try:
        for p, i in zip(procs, inputs):
            out, err = p.communicate(i, timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out.decode('utf-8'), err.decode('utf-8')))
    finally:
        for p in procs:  # after a timeout: none left running
            if p.poll() is None:
                p.kill()
    return done


def make_ckpt(out_dir, meta, block_size=64):
    """A random tiny GPT saved the way train.py saves one.

    Its chat tokens' embeddings are zeroed: with tied embeddings a random model's likeliest next token
    is the one it just read, <|assistant|>, and every greedy reply would be empty.
    """
    torch.manual_seed(0)
    model_args = dict(n_layer=1, n_head=2, n_embd=32, block_size=block_size, vocab_size=meta['vocab_size'], bias=False)
    model = GPT(GPTConfig(**model_args))
    with torch.no_grad():
        model.transformer.wte.weight[len(meta['chars']):] = 0
    save_checkpoint(str(out_dir / 'ckpt.pt'), {'model': model.state_dict(), 'model_args': model_args, 'meta': meta,
                                               'config': {'data_dir': 'data/tasks'}})
    return out_dir


def one_line_error(p, *words):
    """The finished process `p` failed with one line on stderr, 'error: ...', naming each of words."""
    assert p.returncode != 0 and 'Traceback' not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:'), p.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope='session')
def gpt2_enc():
    """The offline GPT-2 encoding, built once per session (about 2 s)."""
    return gpt2_encoding()


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    """A ~60 KB single-document char dataset, prepared the way prepare/corpus.py does it."""
    root = tmp_path_factory.mktemp('chardata')
    src = write(root / 'corpus.txt', make_text(12000))
    out = root / 'data'
    dataset.prepare([str(src)], tokenizer='char', out_dir=str(out), block_size=16, quiet=True)
    return out


@pytest.fixture(scope='session')
def trained_out(tmp_path_factory, char_data):
    """out_dir of a tiny model trained for 30 iterations on char_data, holding ckpt.pt."""
    out = tmp_path_factory.mktemp('trained') / 'out'
    run_train(out, char_data, '--max_iters=30')
    return out


@pytest.fixture
def stand_ins(monkeypatch):
    """Lets stand-in models generate: seedgpt.generate's functions (stream_reply, generate_replies, and the
    agent and preference pairs built on them) take each token from the stand-in's stream(idx,
    max_new_tokens, pad) instead of a forward, so a test scripts the replies and checks what surrounds them."""
    import seedgpt.generate
    monkeypatch.setattr(seedgpt.generate, 'generate_stream',
                        lambda model, idx, max_new_tokens, pad=None, **sampling: model.stream(idx, max_new_tokens, pad))


# -- serving: the engine, the server and their clients (tests/test_engine.py, test_serve*.py); the clients' and
# the server's packages are imported where they are used, so that other tests run without them

import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402


class NoCompiler(torch.nn.Module):
    """What torch.compile gives on a machine without a working C++ compiler: a module that fails at its first
    call (monkeypatch torch.compile to return one)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")


QUESTIONS = ['What is 48+75?', 'Sort the letters of plumb.', 'Reverse cat.']


@pytest.fixture(scope='module')
def chat_model(tmp_path_factory):
    """(model, tok): a random tiny chat model (block_size 64) loaded the way serve.py loads one."""
    from prepare.tasks import prepare as prepare_tasks
    from seedgpt.checkpoint import load_model
    root = tmp_path_factory.mktemp('serve')
    meta = prepare_tasks(out_dir=str(root / 'tasks'), n_train=20, n_val=4, n_test=6, quiet=True)
    (root / 'out').mkdir()
    return load_model(make_ckpt(root / 'out', meta), 'cpu', torch.float32)


@contextmanager
def running(model, tok, name='tiny', **settings):
    """serve.py's app on a free 127.0.0.1 port in a thread; yields its base URL. The prefix cache is off unless
    asked for: the tests that hold the model with gated() check that whole prompts are read (it has its own tests)."""
    import uvicorn
    from serve import server as serve
    app = serve.make_app(model, tok, serve.Config(**{'prefix_cache': False, **settings}), name)
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=0, log_level='warning'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 10, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def gated(model, delay=0.0):
    """Wrap model.forward: each call's input shape is recorded (without the engine's padding: the tokens the rows
    read), and the (rows, tokens each) of each segment of the engine's packed rows (seedgpt.engine.SlotCache.plan);
    it waits while the gate is shut, then sleeps delay."""
    forward = model.forward

    class Gate:
        shapes, segments, entered, open = [], [], threading.Event(), threading.Event()

        def __call__(self, idx, *args, **kwargs):
            self.shapes.append((idx.size(0), idx.size(1) - getattr(kwargs.get('cache'), 'padding', 0)))
            self.segments.append([(len(pos), T) for _, pos, T in getattr(kwargs.get('cache'), 'segments', [])])
            self.entered.set()
            assert self.open.wait(timeout=30)
            time.sleep(delay)
            return forward(idx, *args, **kwargs)

    gate = Gate()
    gate.open.set()
    model.forward = gate
    try:
        yield gate
    finally:
        gate.open.set()
        del model.forward  # back to the class's forward


def client(url):
    """The official openai client of the server at url."""
    import httpx
    import openai
    return openai.OpenAI(base_url=url + '/v1', api_key='none', max_retries=0, http_client=httpx.Client(trust_env=False))


def http(url):
    import httpx
    return httpx.Client(base_url=url, trust_env=False, timeout=30)


def greedy_reply(model, tok, question, max_tokens):
    """The model's own greedy reply, through seedgpt.generate.generate_replies: what the server must return."""
    from seedgpt.chat import render_prompt
    from seedgpt.generate import generate_replies, reply_text
    ids = generate_replies(model, tok, [render_prompt(tok, [{'role': 'user', 'content': question}])], max_tokens,
                           temperature=0)[0]
    return reply_text(tok, ids), ids


def error_of(r, status, param=None, code=None):
    """The OpenAI error body of response r, checked: its status, and the param and code it names."""
    assert r.status_code == status, r.text
    error = r.json()['error']
    assert set(error) == {'message', 'type', 'param', 'code'} and error['message']
    assert error['param'] == param and (code is None or error['code'] == code), error
    return error


# the tool-calling model (tests/test_serve_tools.py, test_serve_browser.py)

ADD = [{'role': 'user', 'content': 'What is 48+75?'}]
COUNT = [{'role': 'user', 'content': 'How many r in strawberry?'}]


def calls(name, arguments, content=None):
    return {'role': 'assistant', 'content': content,
            'tool_calls': [{'id': 'call_0', 'type': 'function', 'function': {'name': name, 'arguments': arguments}}]}


CONVERSATIONS = [  # what the model learns by heart: a call, the result, the answer; text before a call; no call
    ADD + [calls('calc', '{"expression": "48+75"}'), {'role': 'tool', 'content': '123', 'tool_call_id': 'call_0'},
           {'role': 'assistant', 'content': 'It is 123.'}],
    COUNT + [calls('count', '{"letter": "r", "word": "strawberry"}', 'Counting.'),
             {'role': 'tool', 'content': '3', 'tool_call_id': 'call_0'}, {'role': 'assistant', 'content': 'Three.'}],
    [{'role': 'user', 'content': 'Reverse cat.'}, {'role': 'assistant', 'content': 'tac'}],
]


def memorize(model, rows, steps):
    """Train `model` on rows of (ids, loss mask) until it writes them word for word (or `steps` run out), the
    loss on the masked-in tokens only, as train.py's on chat data; returns it in eval mode."""
    T = max(len(ids) for ids, _ in rows)
    x = torch.tensor([ids[:-1] + [0] * (T - len(ids)) for ids, _ in rows])
    y = torch.tensor([[i if m else -1 for i, m in zip(ids[1:], mask[1:])] + [-1] * (T - len(ids))
                      for ids, mask in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break
    return model.eval()


@pytest.fixture(scope='module')
def caller():
    """(model, tok): a tiny GPT trained in a few seconds until it writes the conversations above word for word. The
    calls come from the weights, through the server's own engine: nothing in the server is stubbed."""
    from seedgpt.chat import CHAT_SPECIALS, render_chat, render_prompt
    from seedgpt.tokenizer import CharTokenizer
    tok = CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=128, vocab_size=tok.vocab_size))
    memorize(model, [render_chat(tok, c) for c in CONVERSATIONS], steps=400)
    for c in CONVERSATIONS:  # it has learnt them: each assistant turn, greedily, from what comes before
        for k in [k for k, m in enumerate(c) if m['role'] == 'assistant']:
            reply = own_reply(model, tok, c[:k])
            assert render_prompt(tok, c[:k]) + reply == render_chat(tok, c[:k + 1])[0], c[k]
    return model, tok


def own_reply(model, tok, messages, max_tokens=40, ban=()):
    """The model's own greedy reply (ids, its end token included): generate_replies, or with `ban` a plain loop
    with those ids' logits at -inf."""
    from seedgpt.chat import render_prompt, stop_ids
    from seedgpt.generate import generate_replies
    prompt = render_prompt(tok, messages)
    if not ban:
        return generate_replies(model, tok, [prompt], max_tokens, temperature=0)[0]
    ids = []
    with torch.no_grad():
        while len(ids) < max_tokens and not (ids and ids[-1] in stop_ids(tok)):
            logits = model(torch.tensor([prompt + ids]))[0][0, -1]
            logits[list(ban)] = float('-inf')
            ids.append(int(logits[:tok.vocab_size].argmax()))
    return ids
