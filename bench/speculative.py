"""
Speculative decoding against plain decoding (seedgpt/speculative.py): tokens/s, the share of guesses kept and
tokens per forward of the model, per draft, on code, free text, tool-using chat answers and RL-like rollouts.

    python -m prepare.stdlib && python train.py config/stdlib_char.py && python train.py config/distill_stdlib.py
    python -m bench.speculative --out_dir=out-stdlib-char --drafts=ngram,out-stdlib-distill --text=input.txt
    python -m bench.speculative --out_dir= --only=fail          # a random-init model: guesses fail, the cost
    python -m bench.speculative --chat_dir=out-sft-tools --only=chat,rollouts --threads=1
    python -m bench.speculative --chat_dir=out-sft-tools --data_dir=data/tasks-tools --only=rl

Sections (--only): code (continue a real stdlib file, --code), text (continue --text, tiny Shakespeare by
default), each at temperature 0 and --temperature; fail (a random-init baby model at temperature 1, top_k 200:
nothing repeats, so prompt lookup rarely guesses and a guess is rarely kept: what drafting costs where it
fails); chat (a tool-using chat model's answers to a few questions, one at a time, as chat.talk) and rollouts
(the same questions as one batch at temperature 1, as RL's rollouts); engine (the serving engine's continuous
batching continuing 8 stdlib files, with and without prompt lookup per row); rl (RL's own rollouts, 256 answers
to the suite's train questions in one batch, with ended rows kept computing and with them leaving the batch).
Plain decoding and each draft run in turn, round by round (median of --rounds), timed by the wall clock and by
the process's CPU time (on cores shared with other jobs the wall clock also counts waits for a core). Runs whose
draft must give plain decoding's very tokens (prompt lookup always; a draft model at temperature 0) are checked
to. Progress goes to stderr, the table to stdout.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m bench.speculative ...")

import os
import random
import statistics
import sysconfig
import time
from dataclasses import dataclass

import torch

from model import GPT, GPTConfig
from seedgpt.agent import generate_with_tools
from seedgpt.chat import knows_tools, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.dataset import DATA_ROOT
from seedgpt.engine import Engine, Request
from seedgpt.generate import generate
from seedgpt.measure import device_name, markdown_table, progress, take_turns
from seedgpt.runtime import setup_runtime
from seedgpt.tasks import load_records, question


@dataclass
class Config:
    only: str = 'code,text,fail,chat,rollouts,engine,rl'  # sections to run, comma-separated
    out_dir: str = 'out-stdlib-char'  # the model of code and text (the quick start's)
    drafts: str = 'ngram'  # comma-separated: 'ngram' and/or out_dirs of smaller models on the same tokenizer
    chat_dir: str = 'out-sft-tools'  # a tool-using chat model (config/sft_tools.py) for chat, rollouts and rl
    data_dir: str = 'data/tasks-tools'  # rl's questions: the train split of the suite chat_dir learned
    rl_prompts: int = 32  # rl: questions per batch (config/rl_tools.py's prompts_per_step)
    rl_group: int = 8  # rl: answers per question (its group_size)
    code: str = 'json/decoder.py'  # the stdlib file to continue, under the stdlib's directory
    text: str = ''  # the free text to continue; '' is tiny Shakespeare where prepare.shakespeare puts it
    prompt_tokens: int = 128  # the prompt: the file's first tokens (cut to half the model's context)
    tokens: int = 300  # tokens generated per run
    temperature: float = 0.8  # code and text run at 0 and at this
    draft_tokens: int = 4  # the most guesses per forward
    rounds: int = 3  # timed runs per case, in turn with the other cases
    threads: int = 0  # torch threads; 0 keeps torch's default. 1 on a CPU shared with other jobs
    device: str = 'cpu'  # 'cpu', 'cuda', 'auto'
    seed: int = 1337


QUESTIONS = ['What is 4812+7533?', 'Reverse the word planet.', 'How many r are in strawberry?', 'What is 96*7?',
             'Hello!', 'What is 123-45?', 'Reverse the word museum.', 'How many s are in mississippi?']


def encodable(tok, text):
    """The text's ids, leaving out characters the tokenizer does not know (a char model's vocabulary)."""
    try:
        return tok.encode(text)
    except ValueError:
        return [i for c in text for i in (tok.encode(c) if known(tok, c) else [])]


def known(tok, c):
    try:
        return bool(tok.encode(c))
    except ValueError:
        return False


def load_drafts(cfg, rt, model):
    drafts = []
    for d in [d.strip() for d in cfg.drafts.split(',') if d.strip()]:
        drafts.append((d, d if d == 'ngram' else load_model(d, rt.device, rt.ptdtype)[0]))
    return drafts


def timed(cases, rounds, device):
    """{name: (median seconds, median CPU seconds, the stats and output of its last run)} for cases [(name,
    fn(stats) -> output)], run round by round in turn. The process's CPU time is what a run cost when other
    processes share the cores: the wall time also counts the waits for a core."""
    last, cpu = {name: None for name, _ in cases}, {name: [] for name, _ in cases}

    def run(name, fn):
        stats, clock = {}, time.process_time()
        last[name] = (stats, fn(stats))
        cpu[name].append(time.process_time() - clock)

    fns = [lambda n=name, f=fn: run(n, f) for name, fn in cases]
    times = {name: [] for name, _ in cases}
    for r, (timings, load) in enumerate(take_turns(fns, rounds, device)):
        for (name, _), (seconds, _) in zip(cases, timings):
            times[name].append(seconds)
        progress(f"round {r + 1}/{rounds}: " + ', '.join(f"{n} {statistics.median(ts):.2f}s" for n, ts in times.items())
                 + f" | other processes {load:.1f} cores")
    return {name: (statistics.median(times[name]), statistics.median(cpu[name]), *last[name]) for name, _ in cases}


def table_rows(what, results, count, exact, base='none'):
    """One row per case: tokens/s, against plain (the case named base), the guesses kept, tokens per forward,
    and whether the output is plain decoding's (for the cases that must give it)."""
    plain_s, plain_cpu, _, plain_out = results[base]
    rows = []
    for name, (seconds, cpu, stats, out) in results.items():
        n = count(out)
        kept = f"{stats['accepted'] / stats['drafted']:.0%} of {stats['drafted']}" if stats.get('drafted') else ''
        per_fwd = f"{(stats['forwards'] + stats['accepted']) / stats['forwards']:.2f}" if stats else '1.00'
        same = ('same' if out == plain_out else 'DIFFERENT') if name != base and exact(name) else ''
        rows.append([what, name, f"{n / seconds:,.1f}", f"{plain_s / seconds:.2f}x", f"{n / cpu:,.1f}",
                     f"{plain_cpu / cpu:.2f}x", kept, per_fwd, same])
    return rows


def continuation(cfg, rt, model, drafts, what, ids, temperature):
    """Plain decoding and each draft continuing the prompt ids."""
    x = torch.tensor([ids], device=rt.device)
    cases = []
    for name, d in [('none', None)] + drafts:
        def fn(stats, d=d):
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            out = generate(model, x, cfg.tokens, temperature=temperature, draft=d, draft_tokens=cfg.draft_tokens,
                           stats=stats, generator=g, top_k=200 if what == 'fail' else None)
            return out[0, len(ids):].tolist()
        cases.append((name, fn))
    progress(f"{what}, temperature {temperature}: {len(ids)}-token prompt, {cfg.tokens} new tokens")
    results = timed(cases, cfg.rounds, rt.device)
    return table_rows(f"{what}, t={temperature:g}", results, len,
                      lambda name: name == 'ngram' or temperature == 0)


def chat(cfg, rt, batch):
    """The tool-chat model's answers to QUESTIONS: one at a time (chat.talk), or as one batch at temperature 1
    (RL's rollouts); tokens are the ones the model wrote."""
    model, tok = load_model(cfg.chat_dir, rt.device, rt.ptdtype)
    if not knows_tools(tok):
        raise SystemExit(f"error: {cfg.chat_dir} is not a tool-using chat model (config/sft_tools.py)")
    prompts = [render_prompt(tok, [{'role': 'user', 'content': q}]) for q in QUESTIONS]
    temperature = 1.0 if batch else 0.0
    cases = []
    for name, d in (('none', None), ('ngram', 'ngram')):
        def fn(stats, d=d):
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            groups = [prompts] if batch else [[p] for p in prompts]
            return [t.ids for group in groups for t in generate_with_tools(
                model, tok, group, 64, temperature=temperature, draft=d, stats=stats, generator=g)]
        cases.append((name, fn))
    what = f"rollouts, batch {len(prompts)}, t=1" if batch else "chat answers, one at a time, t=0"
    progress(what)
    return table_rows(what, timed(cases, cfg.rounds, rt.device), lambda out: sum(len(t) for t in out),
                      lambda name: True)


def rl(cfg, rt):
    """RL's rollouts as feedback/rl.py samples them (config/rl_tools.py): prompts_per_step train questions of
    the suite, group_size answers each, in one batch at temperature 1 through the agent, with every row kept
    computing to the batch's end ('rows stay', as before) and with ended rows leaving the batch ('rows leave',
    generate_replies' default). The same seed gives both the same questions; tokens are the ones the model wrote."""
    model, tok = load_model(cfg.chat_dir, rt.device, rt.ptdtype)
    if not knows_tools(tok):
        raise SystemExit(f"error: {cfg.chat_dir} is not a tool-using chat model (config/sft_tools.py)")
    records = load_records(cfg.data_dir, 'train')
    if not 1 <= cfg.rl_prompts <= len(records) or cfg.rl_group < 1:
        raise SystemExit(f"error: --rl_prompts must be 1 to {len(records)} (the train questions of {cfg.data_dir}) "
                         f"and --rl_group at least 1, got {cfg.rl_prompts} and {cfg.rl_group}")
    picked = random.Random(cfg.seed).sample(records, cfg.rl_prompts)
    prompts = [render_prompt(tok, question(r)) for r in picked for _ in range(cfg.rl_group)]
    cases = []
    for name, narrow in (('rows stay', False), ('rows leave', True)):
        def fn(stats, narrow=narrow):
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            return [t.ids for t in generate_with_tools(model, tok, prompts, 96, 2, temperature=1.0, draft=None,
                                                       narrow=narrow, generator=g)]
        cases.append((name, fn))
    what = f"RL rollouts, {cfg.rl_prompts} x {cfg.rl_group}, t=1"
    progress(what)
    return table_rows(what, timed(cases, cfg.rounds, rt.device), lambda out: sum(len(t) for t in out),
                      lambda name: False, base='rows stay')


ENGINE_FILES = ['json/decoder.py', 'json/encoder.py', 'textwrap.py', 'string.py', 'bisect.py', 'heapq.py',
                'shlex.py', 'fnmatch.py']


def engine(cfg, rt, model, tok):
    """The serving engine (seedgpt/engine.py) continuing 8 stdlib files' openings, greedily, 4 rows at a time,
    so rows join and leave mid-decode: without guesses and with prompt lookup per row (draft_tokens). Tokens
    per forward counts every row's tokens over the engine's steps."""
    stdlib = sysconfig.get_paths()['stdlib']
    prompts = []
    for name in ENGINE_FILES:
        with open(os.path.join(stdlib, name), encoding='utf-8') as f:
            prompts.append(encodable(tok, f.read())[:min(cfg.prompt_tokens, model.config.block_size // 2)])
    new = min(cfg.tokens, model.config.block_size - max(len(p) for p in prompts))
    cases = []
    for name, k in (('none', 0), ('ngram', cfg.draft_tokens)):
        def fn(stats, k=k):
            e = Engine(model, tok.vocab_size, max_batch=4, draft_tokens=k)
            reqs = [Request(p, new, temperature=0.0) for p in prompts]
            for r in reqs:
                e.submit(r)
            steps = 0
            while any(not r.ended for r in reqs):
                e.step()
                steps += 1
            out = [r.ids[len(r.prompt):] for r in reqs]
            stats.update(forwards=steps, accepted=sum(len(o) for o in out) - steps)
            return out
        cases.append((name, fn))
    what = f"engine, {len(prompts)} requests, 4 rows, t=0"
    progress(f"{what}: {new} new tokens each")
    return table_rows(what, timed(cases, cfg.rounds, rt.device), lambda out: sum(len(o) for o in out),
                      lambda name: True)


def main(cfg):
    rt = setup_runtime(cfg.device, 'float32', cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sections = [s.strip() for s in cfg.only.split(',') if s.strip()]
    rows = []
    if {'code', 'text', 'engine'} & set(sections):
        model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype)
        drafts = load_drafts(cfg, rt, model)
        text_file = cfg.text or os.path.join(DATA_ROOT, 'tinyshakespeare.txt')
        files = {'code': os.path.join(sysconfig.get_paths()['stdlib'], cfg.code), 'text': text_file}
        for what in [s for s in ('code', 'text') if s in sections]:
            try:
                with open(files[what], encoding='utf-8') as f:
                    text = f.read()
            except OSError as e:
                raise SystemExit(f"error: cannot read the {what} to continue ({e.strerror}: {files[what]}); "
                                 f"pass --{what}=...")
            ids = encodable(tok, text)[:min(cfg.prompt_tokens, model.config.block_size // 2)]
            for temperature in (0.0, cfg.temperature):
                rows += continuation(cfg, rt, model, drafts, what, ids, temperature)
        if 'engine' in sections:
            rows += engine(cfg, rt, model, tok)
    if 'fail' in sections:
        torch.manual_seed(cfg.seed)  # bench.speed's baby model, random init, vocabulary of 65
        baby = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)).to(rt.device).eval()
        rows += continuation(cfg, rt, baby, [('ngram', 'ngram')], 'fail', [0], 1.0)
    for section, batch in (('chat', False), ('rollouts', True)):
        if section in sections:
            rows += chat(cfg, rt, batch)
    if 'rl' in sections:
        rows += rl(cfg, rt)
    print(f"### speculative decoding: {device_name(rt)}, {torch.get_num_threads()} torch threads, fp32, batch 1 "
          f"unless said, {cfg.tokens} new tokens per run, up to {cfg.draft_tokens} guesses per forward, median of "
          f"{cfg.rounds} alternated runs\n")
    print(markdown_table(['text', 'draft', 'tokens/s', 'vs plain', 'tokens per CPU s', 'vs plain (CPU)',
                          'guesses kept', 'tokens per forward', 'tokens vs plain'], rows))


if __name__ == '__main__':
    main(load_config(Config))
