"""
Shared fixtures: a tiny char dataset, a tiny trained checkpoint, and helpers that run
train.py in-process or any script by subprocess, save a random chat checkpoint, or check a one-line error. Everything is written under pytest's tmp dirs.
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
from seedgpt import corpus  # noqa: E402
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
    corpus.prepare([str(src)], tokenizer='char', out_dir=str(out), block_size=16, quiet=True)
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


# -- serving: the engine, the server and their clients (tests/test_engine.py, test_serve*.py)

class NoCompiler(torch.nn.Module):
    """What torch.compile gives on a machine without a working C++ compiler: a module that fails at its first
    call (monkeypatch torch.compile to return one)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
