r"""
Measure seedgpt on this machine, side by side with nanoGPT, and print the results as markdown tables.

    python -m bench.speed                                            # every section, seedgpt alone
    python -m bench.speed --nanogpt=/path/to/nanoGPT                 # side by side with a nanoGPT checkout
    python -m bench.speed --nanogpt=/path/to/nanoGPT --out=bench.md  # also write the tables to a file
    python -m bench.speed --only=train,sample --quick                # some sections, fewer and shorter rounds
    python -m bench.speed --only=sample --nanogpt=/path/to/nanoGPT --threads=1 \
        --sample_others=False --sample_compile=False                 # the default decoding path vs nanoGPT alone
    python -m bench.speed --help                                     # every setting

Sections (--only): peak (matmul FLOP/s per dtype, the denominator of MFU); train (forward + backward +
clip + AdamW step at two sizes, fp32 and bf16 autocast; --compile adds torch.compile'd rows); sample
(tokens/s with and without the KV cache, fp32, bf16 and int8 weights, eager and compiled, and checks
that all give the same greedy tokens); prepare (GPT-2 BPE of the stdlib corpus: MB/s, cores used, and
peak memory for a corpus --copies times larger); coldops (a small op's cost after streaming memory; not
in the default list). Trained checkpoints side by side: python -m bench.checkpoints. nanoGPT is imported
at run time from the path given, never copied here. Progress goes to stderr, the tables to stdout.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.speed ...")

import contextlib
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

import model as seedgpt_model  # the module: bench compares implementations, each a module with GPT and GPTConfig
from seedgpt.config import load_config
from seedgpt.dataset import stdlib_files
from seedgpt.generate import generate
from seedgpt.int8 import quantize_int8
from seedgpt.measure import OtherLoad, child, device_name, markdown_table, progress, take_turns
from seedgpt.optim import configure_optimizers
from seedgpt.runtime import measured_matmul_flops, setup_runtime


@dataclass
class Config:
    nanogpt: str = ''  # path to a nanoGPT checkout to compare against; '' measures seedgpt alone
    only: str = 'peak,train,sample,prepare'  # sections to run, comma-separated (also: coldops)
    quick: bool = False  # 2 short rounds, 1 sampling run of 300 tokens, a 3x corpus: a smoke test only
    rounds: int = 5  # each model trains once per round, in turn, so a change in load hits all alike
    round_s: float = 4.0  # seconds each model trains per round (3 steps at least); the median round counts
    sample_rounds: int = 3  # timed generations per sampling case, alternated like the training rounds
    warmup: int = 3  # untimed steps first: oneDNN and the optimizer set themselves up
    sample_tokens: int = 500  # tokens per sampling run; past 256 it crosses the baby model's block_size
    sample_compile: bool = True  # also time the torch.compile'd one-token step (slow to compile: docs/benchmarks.md)
    copies: int = 10  # the big corpus of the memory test is this many copies of the stdlib corpus
    compile: bool = False  # also time seedgpt under torch.compile (the first steps compile, slowly on a CPU)
    device: str = 'auto'  # 'auto', 'cpu', 'cuda'; prepare always runs on the CPU
    threads: int = 0  # torch threads; 0 keeps torch's default (one per core). 1 on a CPU shared with other jobs
    sample_others: bool = True  # also time no cache, bf16 and int8 weights; False: the default path vs nanoGPT only
    out: str = ''  # also write the tables to this markdown file


SIZES = {  # name: (model shape, batch size); vocab 65 is tiny Shakespeare's characters
    'cpu-recipe': (dict(n_layer=4, n_head=4, n_embd=128, block_size=64), 12),  # nanoGPT's README CPU run
    'baby': (dict(n_layer=6, n_head=6, n_embd=384, block_size=256), 8),  # nanoGPT's shakespeare_char model
}
VOCAB = 65
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def peak(device, dtype):
    """The best of five windows: other load only ever lowers a window."""
    return measured_matmul_flops(device, dtype, seconds=0.4, windows=5)


def load_nanogpt(path):
    """nanoGPT's model.py as the module 'nanogpt_model', so it cannot shadow our own model.py."""
    file = os.path.join(os.path.expanduser(path), 'model.py')
    if not os.path.isfile(file):
        raise SystemExit(f"error: no model.py in {path}; pass --nanogpt=/path/to/a/nanoGPT/checkout")
    spec = importlib.util.spec_from_file_location('nanogpt_model', file)
    module = importlib.util.module_from_spec(spec)
    sys.modules['nanogpt_model'] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


class Impl:
    """One model family behind one interface: build a model and its optimizer, count its FLOPs."""

    def __init__(self, name, module, compile=False):
        self.name, self.module, self.compile = name, module, compile

    def build(self, shape, device):
        torch.manual_seed(1337)  # the same weights for every run of a size
        with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints parameter counts
            model = self.module.GPT(self.module.GPTConfig(**shape, vocab_size=VOCAB, bias=False, dropout=0.0))
            model.to(device)
            args = (0.1, 1e-3, (0.9, 0.95), device.split(':')[0])
            # seedgpt's model.py leaves optimizers to seedgpt/optim.py; nanoGPT's GPT makes its own
            opt = configure_optimizers(model, *args)[0] if self.ours else model.configure_optimizers(*args)
        return model, opt

    @property
    def ours(self):
        return self.module is seedgpt_model

    def generate(self, model, prompt, n, **kwargs):
        """The prompt and n new tokens: seedgpt.generate for ours, the model's own generate for nanoGPT's."""
        return generate(model, prompt, n, **kwargs) if self.ours else model.generate(prompt, n, **kwargs)

    def forward(self, model):
        """What a training step calls: the model itself, or its torch.compile'd version."""
        return torch.compile(model) if self.compile else model

    def flops_per_token(self, model):
        if hasattr(model, 'flops_per_token'):
            return model.flops_per_token()
        # nanoGPT's estimate_mfu formula (PaLM appendix B), without its fixed A100 peak
        cfg = model.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return 6 * model.get_num_params() + 12 * L * H * Q * T


# -----------------------------------------------------------------------------
# sections; each returns markdown

def bench_peak(cfg, rt):
    rows = []
    for name, dtype in DTYPES.items():
        progress(f"matmul peak {name}")
        rows.append([name, f"{peak(rt.device, dtype) / 1e12:.3f}"])
    return ("### matmul peak (2048x2048, best of 5 windows; the MFU denominator)\n\n" +
            markdown_table(['dtype', 'TFLOP/s'], rows))


def bench_train(cfg, rt, impls):
    rows, ratio_rows, busy = [], [], []
    for size, (shape, batch) in SIZES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.randint(VOCAB, (batch, shape['block_size']), generator=g).to(rt.device)
        y = torch.randint(VOCAB, (batch, shape['block_size']), generator=g).to(rt.device)
        runs = []
        for impl in impls:
            for dname, dtype in DTYPES.items():
                model, opt = impl.build(shape, rt.device)
                ctx = (lambda d=dtype: torch.autocast(rt.device_type, dtype=d)) if dtype != torch.float32 \
                    else contextlib.nullcontext  # fp32: what nanoGPT's train.py does on a CPU

                def step(model=model, fwd=impl.forward(model), opt=opt, ctx=ctx):  # one iteration, as train.py does
                    with ctx():
                        _, loss = fwd(x, y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)

                progress(f"train {size} {impl.name} {dname}: warm-up")
                for _ in range(cfg.warmup):
                    step()
                runs.append(dict(impl=impl, model=model, dtype=dname, step=step, ms=[], steps=0))
                del step
        # the same wall time each, so a burst of other load costs every run alike
        turns = take_turns([run['step'] for run in runs], cfg.rounds, rt.device, seconds=cfg.round_s, calls=3)
        for r, (timings, load) in enumerate(turns):
            for run, (seconds, steps) in zip(runs, timings):
                run['ms'].append(seconds * 1000 / steps)
                run['steps'] += steps
            busy.append(load)
            progress(f"train {size} round {r + 1}/{cfg.rounds}: " +
                     ', '.join(f"{u['impl'].name} {u['dtype']} {u['ms'][-1]:.0f} ms" for u in runs) +
                     f" | other processes {busy[-1]:.1f} cores")
        tokens = batch * shape['block_size']
        for run in runs:
            ms = statistics.median(run['ms'])
            run['tok_s'], run['best'] = tokens / ms * 1000, tokens / min(run['ms']) * 1000
            mfu = run['impl'].flops_per_token(run['model']) * run['tok_s'] / peak(rt.device, DTYPES[run['dtype']])
            rows.append([size, run['impl'].name, run['dtype'], f"{run['steps']}", f"{ms:.1f}",
                         f"{min(run['ms']):.1f}-{max(run['ms']):.1f}", f"{run['tok_s']:,.0f}", f"{mfu * 100:.1f}%"])
            del run['model'], run['step']  # free the weights and optimizer state before the next size
        if cfg.nanogpt:
            # on the medians, and on each run's fastest round: the one least disturbed by other processes
            ours = [{u['dtype']: u[k] for u in runs if u['impl'] is impls[0]} for k in ('tok_s', 'best')]
            theirs = [{u['dtype']: u[k] for u in runs if u['impl'] is impls[1]} for k in ('tok_s', 'best')]
            pairs = [('best dtype vs best dtype', lambda o, t: max(o.values()) / max(t.values())),
                     ('best dtype vs nanoGPT as its train.py runs on a CPU (fp32)',
                      lambda o, t: max(o.values()) / t['fp32'])]
            pairs += [(f"{d} vs {d}", lambda o, t, d=d: o[d] / t[d]) for d in DTYPES]
            for i, (what, ratio) in enumerate(pairs):
                med, fast = ratio(ours[0], theirs[0]), ratio(ours[1], theirs[1])
                ratio_rows.append([size, what, f"{med:.2f}x", f"{fast:.2f}x"])
    out = (f"### training: forward + backward + clip + AdamW step (median ms/iter of {cfg.rounds} rounds, "
           f"bias=False, dropout 0, vocab {VOCAB}; other processes used {statistics.median(busy):.1f} cores "
           f"in the median round, {max(busy):.1f} at most)\n\n" +
           markdown_table(['size', 'model', 'dtype', 'steps', 'ms/iter', 'range', 'tokens/s', 'MFU'], rows))
    if ratio_rows:
        out += "\n\nseedgpt / nanoGPT tokens/s:\n\n" + markdown_table(
            ['size', 'compared', 'ratio (medians)', 'ratio (fastest rounds)'], ratio_rows)
    return out


def sampling_cases(cfg, impls, shape, device, prompt, kw):
    """[(model, label, weights, generate's extra arguments)] and the models, built and warmed up; activations
    are fp32 unless the weights are bf16."""
    cases = [(impls[0], 'cache', 'fp32', dict(use_cache=True))]  # sample.py's default path, with fp32 weights
    if cfg.sample_others:
        cases += [(impls[0], 'no cache', 'fp32', dict(use_cache=False)),
                  (impls[0], 'cache', 'bf16', dict(use_cache=True)),  # what sample.py does on a bf16 CPU
                  (impls[0], 'cache', 'int8', dict(use_cache=True))]
    if cfg.sample_compile:
        cases += [(impls[0], 'cache, compiled', w, dict(use_cache=True, compile=True)) for w in ('fp32', 'int8')]
    cases += [(impl, '(its own)', 'fp32', {}) for impl in impls[1:]]
    models = []
    for impl, label, weights, extra in cases:
        model, _ = impl.build(shape, device)
        model.eval()
        if weights == 'bf16':
            model.to(torch.bfloat16)
        elif weights == 'int8':
            quantize_int8(model)
        progress(f"sample: warm-up {impl.name} {label} {weights}" + (' (compiling)' if extra.get('compile') else ''))
        # a compiled step also meets its second cache (the window's jump) before the timed runs
        impl.generate(model, prompt, shape['block_size'] + 8 if extra.get('compile') else 8, **kw, **extra)
        models.append(model)
    return cases, models


def greedy_checks(cfg, keys, models, prompt):
    """Greedy decoding must not depend on the cache (also after the window jumps past block_size), nor on
    compiling: one line per comparison."""
    n, checks = cfg.sample_tokens, []
    for weights in ('fp32', 'int8') if cfg.sample_others else ('fp32',):
        model = models[keys.index(('seedgpt', 'cache', weights))]
        progress(f"sample: greedy checks, {weights}, {n} tokens")
        a = generate(model, prompt, n, temperature=0.0, use_cache=True)
        others = [('no cache', dict(use_cache=False))] + [('compiled', dict(compile=True))] * cfg.sample_compile
        for what, extra in others:
            b = generate(model, prompt, n, temperature=0.0, **extra)
            diff = '' if torch.equal(a, b) else f" at token {int((a != b).nonzero()[0, 1])}"
            checks.append(f"{weights} cache vs {what}: {'IDENTICAL' if not diff else 'DIFFERENT' + diff}")
    return checks


def sampling_summary(times, n):
    """The default path against nanoGPT's sample.py, and the KV cache against none, in words."""
    speeds = {key: n / statistics.median(ts) for key, ts in times.items()}
    default, no_cache = ('seedgpt', 'cache', 'fp32'), ('seedgpt', 'no cache', 'fp32')
    nano = ('nanoGPT', '(its own)', 'fp32')
    summary = ''
    if nano in times:
        # each round's ratio: the two ran back to back, so a change in other load hits both alike
        paired = statistics.median(a / b for a, b in zip(times[nano], times[default]))
        fastest = min(times[nano]) / min(times[default])
        summary = ("\n\nDefault decoding path (KV cache, fp32 weights and activations, eager) vs nanoGPT's sample.py: "
                   f"**{speeds[default] / speeds[nano]:.1f}x** on the medians ({speeds[default]:,.1f} vs "
                   f"{speeds[nano]:,.1f} tok/s), {paired:.1f}x the median of each round's ratio, "
                   f"{fastest:.1f}x on the fastest rounds.")
    if no_cache in speeds:
        summary += f"\n\nKV cache speedup over no cache (fp32): {speeds[default] / speeds[no_cache]:.1f}x."
    return summary


def bench_sample(cfg, rt, impls):
    shape, _ = SIZES['baby']
    n = cfg.sample_tokens
    prompt = torch.zeros((1, 1), dtype=torch.long, device=rt.device)  # a 1-token prompt, batch 1
    kw = dict(temperature=1.0, top_k=200)  # nanoGPT's sample.py defaults
    cases, models = sampling_cases(cfg, impls, shape, rt.device, prompt, kw)

    def sample(impl, model, extra):
        assert impl.generate(model, prompt, n, **kw, **extra).shape == (1, n + 1)

    keys = [(impl.name, label, weights) for impl, label, weights, _ in cases]
    times, busy = {key: [] for key in keys}, []
    fns = [lambda i=impl, m=model, e=extra: sample(i, m, e) for (impl, _, _, extra), model in zip(cases, models)]
    for r, (timings, load) in enumerate(take_turns(fns, cfg.sample_rounds, rt.device)):
        for key, (seconds, _) in zip(keys, timings):
            times[key].append(seconds)
        busy.append(load)
        progress(f"sample round {r + 1}/{cfg.sample_rounds}, {n} tokens: " +
                 ', '.join(f"{' '.join(key)} {n / ts[-1]:.1f} tok/s" for key, ts in times.items()) +
                 f" | other processes {busy[-1]:.1f} cores")
    nano = times.get(('nanoGPT', '(its own)', 'fp32'))
    rows = []
    for key, ts in times.items():
        # medians, and the fastest runs: the ones least disturbed by other processes
        vs = [f"{statistics.median(nano) / statistics.median(ts):.1f}x", f"{min(nano) / min(ts):.1f}x"] if nano \
            else ['', '']
        rows.append([*key, f"{n / statistics.median(ts):,.1f}", f"{n / min(ts):,.1f}", *vs])
    bs = shape['block_size']
    where = f"crossing block_size {bs}" if n > bs else f"within block_size {bs}: pass more to test the window"
    return (f"### sampling: baby model (random init), batch 1, 1-token prompt, {n} new tokens, temperature 1, "
            f"top_k 200 (median of {cfg.sample_rounds} alternated runs, {torch.get_num_threads()} torch threads; "
            f"other processes used {statistics.median(busy):.1f} cores in the median round)\n\n" +
            markdown_table(['model', 'KV cache', 'weights', 'tokens/s (median)', 'tokens/s (fastest)',
                            'vs nanoGPT (medians)', 'vs nanoGPT (fastest)'], rows) + sampling_summary(times, n) +
            f"\n\nGreedy (temperature 0) tokens, {n} tokens ({where}): " +
            '; '.join(greedy_checks(cfg, keys, models, prompt)))


# runs one prepare in a fresh process, so its peak RSS is its own; argv: out_dir, then 'stdlib' or dirs
PREPARE_CHILD = r"""
import json, os, sys, time
from seedgpt.dataset import find_files, prepare, stdlib_files  # run from the repo root (cwd), so seedgpt imports
from seedgpt.measure import memory
out_dir, inputs = sys.argv[1], sys.argv[2:]
files = stdlib_files()[1] if inputs == ['stdlib'] else find_files(inputs)
nbytes = sum(os.path.getsize(f) for f in files)
base = memory('VmRSS:')  # the imports alone
wall, cpu = time.perf_counter(), time.process_time()
meta = prepare(inputs, tokenizer='gpt2', out_dir=out_dir, files=files, source=['bench'], quiet=True)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
tokens = meta['train_tokens'] + meta['val_tokens']
print(json.dumps(dict(bytes=nbytes, files=len(files), wall=wall, cpu=cpu, tokens=tokens, base=base,
                      rss=memory('VmHWM:'))))
"""


def bench_prepare(cfg, rt):
    root, files = stdlib_files()
    others = OtherLoad()

    def run(label, inputs, tmp):
        progress(f"prepare {label}")
        others.cores()
        r = child(PREPARE_CHILD, os.path.join(tmp, 'out'), *inputs)
        r['others'] = others.cores()
        progress(f"prepare {label}: {r['bytes'] / 1e6:.1f} MB in {r['wall']:.1f} s, "
                 f"peak RSS {r['rss'] / 2**20:.0f} MiB | other processes {r['others']:.1f} cores")
        return r

    with tempfile.TemporaryDirectory() as tmp:
        one = run('1x (stdlib)', ['stdlib'], tmp)
        big_dir = os.path.join(tmp, 'big')
        progress(f"writing a {cfg.copies}x corpus: {cfg.copies} copies of {len(files)} stdlib files as .txt")
        for c in range(cfg.copies):
            os.makedirs(os.path.join(big_dir, f'copy{c}'))
            for i, f in enumerate(files):
                with open(f, 'rb') as src, open(os.path.join(big_dir, f'copy{c}', f'{i:05d}.txt'), 'wb') as dst:
                    dst.write(src.read())
        big = run(f'{cfg.copies}x', [big_dir], tmp)
    rows = []
    for label, r in [('1x (stdlib)', one), (f'{cfg.copies}x', big)]:
        rows.append([label, f"{r['files']:,}", f"{r['bytes'] / 1e6:.1f}", f"{r['tokens'] / 1e6:.2f}M",
                     f"{r['wall']:.1f}", f"{r['bytes'] / 1e6 / r['wall']:.2f}",
                     f"{r['cpu'] / r['wall']:.2f} of {os.cpu_count()}", f"{r['base'] / 2**20:.0f}",
                     f"{r['rss'] / 2**20:.0f}", f"{r['others']:.1f}"])
    growth = big['rss'] / one['rss'] - 1
    return ("### prepare: GPT-2 BPE of the stdlib corpus (each run in its own process)\n\n" +
            markdown_table(['corpus', 'files', 'MB', 'tokens', 'seconds', 'MB/s', 'cores used (CPU s / wall s)',
                            'RSS after imports MiB', 'peak RSS MiB', 'other processes (cores)'], rows) +
            f"\n\nPeak RSS growth {cfg.copies}x vs 1x: {growth * 100:+.1f}%")


def bench_coldops(cfg):
    """What a small op costs right after a matrix product: a one-token step reads every weight once (a baby GPT's
    weights are far more than a core's L2: docs/benchmarks.md), flushing each core's caches before each op that
    follows. Here a sum streams the MB."""
    x, w, h, n = torch.randn(1, 384), torch.ones(384), torch.randn(1, 1536), 200 if cfg.quick else 2000
    ops, sizes, rows = {'LayerNorm of 384': lambda: F.layer_norm(x, (384,), w), 'GELU (tanh) of 1,536':
                        lambda: F.gelu(h, approximate='tanh'), 'add of 384': lambda: x + x}, [0, 0.5, 1, 2, 4, 8], []
    for name, op in ops.items():
        rows.append([name])
        for buf, total in ((torch.randn(max(1, int(mb * 2 ** 18))), 0) for mb in sizes):
            for i in range(n + 50):
                _ = buf.sum() if buf.numel() > 1 else None  # the stream (none for 'alone')
                t = time.perf_counter_ns()
                op()
                total += (time.perf_counter_ns() - t) * (i >= 50)
            rows[-1].append(f"{total / n / 1e3:.1f}")
    return (f"### small ops after streaming memory (us per op, mean of {n}, {torch.get_num_threads()} torch "
            "threads)\n\n" +
            markdown_table(['op', *[f"after {mb:g} MB" if mb else 'alone' for mb in sizes]], rows))


def main(cfg):
    if cfg.quick:
        cfg.rounds, cfg.round_s, cfg.warmup, cfg.sample_rounds = 2, 1.0, 2, 1
        cfg.sample_tokens, cfg.copies = min(cfg.sample_tokens, 300), min(cfg.copies, 3)
    sections = [s.strip() for s in cfg.only.split(',') if s.strip()]
    unknown = set(sections) - {'peak', 'train', 'sample', 'prepare', 'coldops'}
    if unknown:
        raise SystemExit(f"error: unknown section(s) {', '.join(sorted(unknown))}; choose from "
                         "peak,train,sample,prepare,coldops (checkpoints are compared by python -m bench.checkpoints)")
    rt = setup_runtime(cfg.device, 'float32')
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    impls = [Impl('seedgpt', seedgpt_model)]
    if cfg.nanogpt:
        impls.append(Impl('nanoGPT', load_nanogpt(cfg.nanogpt)))
    if cfg.compile:
        impls.append(Impl('seedgpt compiled', seedgpt_model, compile=True))
    device, start, load0, others = device_name(rt), time.time(), os.getloadavg()[0], OtherLoad()
    progress(f"seedgpt bench | torch {torch.__version__} | {rt.device} ({device}) | {torch.get_num_threads()} "
             f"threads | sections {','.join(sections)}" + (' | quick' if cfg.quick else ''))
    run = {'peak': lambda: bench_peak(cfg, rt), 'train': lambda: bench_train(cfg, rt, impls),
           'sample': lambda: bench_sample(cfg, rt, [i for i in impls if not i.compile]),
           'prepare': lambda: bench_prepare(cfg, rt), 'coldops': lambda: bench_coldops(cfg)}
    parts = [fn() for name, fn in run.items() if name in sections]
    busy = others.cores()
    warning = (f"\n\n**Other processes kept {busy:.1f} of {os.cpu_count()} cores busy on average during this run: "
               f"the timings are skewed; rerun on an idle machine before quoting them.**" if busy > 0.1 else '')
    head = (f"## seedgpt bench{' (quick)' if cfg.quick else ''}\n\n"
            f"torch {torch.__version__} | {rt.device}: {device}, {os.cpu_count()} cores, {torch.get_num_threads()} "
            f"torch threads | {'vs nanoGPT' if cfg.nanogpt else 'seedgpt alone'} | load average {load0:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end | {time.time() - start:.0f} s | {time.strftime('%Y-%m-%d %H:%M')}"
            + warning)
    text = '\n\n'.join([head] + parts) + '\n'
    print(text)
    if cfg.out:
        with open(cfg.out, 'w', encoding='utf-8') as f:
            f.write(text)
        progress(f"wrote {cfg.out}")


if __name__ == '__main__':
    main(load_config(Config))
