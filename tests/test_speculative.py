"""Speculative decoding (seedgpt/speculative.py) against plain decoding: the same tokens at temperature 0,
for both drafts, alone and in padded batches, within the context and past its window's jumps; the same
distribution above it, top_k and top_p included, checked against the exact one on a small vocabulary."""
import math

import pytest
import torch
from torch.nn import functional as F

from model import GPT, GPTConfig
from seedgpt.generate import generate, left_pad
from seedgpt import speculative
from seedgpt.speculative import Pace, next_k


class Clock:
    """A clock that moves one second per reading: every step of prompt lookup then costs the same, so Pace's
    choice of k follows the guesses alone and not the machine's load (a test that asserts guesses were kept
    must not depend on how busy the cores are)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


@pytest.fixture(autouse=True)
def steady_clock(monkeypatch):
    monkeypatch.setattr(speculative, 'time', Clock())


def lively(seed, scale=10.0, **kw):
    """A tiny random model with its matrices scaled up: a plain one at init is near uniform and repeats one
    token forever, which every draft guesses; scaled, its greedy text varies and guesses fail too."""
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=11)
    cfg.update(kw)
    model = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model


def noisy_copy(model, seed, noise=0.3, block_size=8, n_layer=None):
    """A draft that agrees with the model often but not always: its weights plus noise, a shorter context
    (so its own window jumps too) and possibly fewer blocks."""
    cfg = dict(vars(model.config), block_size=block_size, n_layer=n_layer or model.config.n_layer)
    draft = GPT(GPTConfig(**cfg)).eval()
    state = {k: v[:block_size] if k.endswith('wpe.weight') else v for k, v in model.state_dict().items()}
    draft.load_state_dict(state, strict=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            if p.dim() > 1:
                p.add_(noise * p.std() * torch.randn(p.shape, generator=g))
    return draft


MODEL = lively(0)
DRAFTS = {'ngram': 'ngram', 'model': noisy_copy(MODEL, 1), 'itself': MODEL}


@pytest.mark.parametrize('draft', DRAFTS)
@pytest.mark.parametrize('new', [8, 60])  # within block_size 16; past it, the window jumps several times
def test_greedy_tokens_equal_plain_decoding(draft, new):
    idx = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])
    stats = {}
    plain = generate(MODEL, idx, new, temperature=0)
    fast = generate(MODEL, idx, new, temperature=0, draft=DRAFTS[draft], draft_tokens=4, stats=stats)
    assert torch.equal(fast, plain)
    assert stats['forwards'] + stats['accepted'] == new  # every forward gives one token, plus the accepted
    if draft == 'itself':  # a draft that is the model is always right: k grows to its most
        assert stats['accepted'] == stats['drafted'] > new // 2
    elif new == 60:  # the comparison means something: guesses were both kept and refused
        assert 0 < stats['accepted'] < stats['drafted']


@pytest.mark.parametrize('pad', [False, True])
def test_ngram_sampling_gives_plain_decodings_text(pad):
    """Above temperature 0, prompt lookup is checked by the model sampling each position with plain decoding's
    own draws: the same seed gives the same text, top_k and top_p included, past the window's jumps."""
    rows = [[1, 2, 3, 1, 2, 3, 1], [4, 5], [7, 7, 1, 7, 7]]
    idx, pad = left_pad(rows) if pad else (torch.tensor([[1, 2, 1, 2, 1]]), None)
    model = MODEL if pad is None else lively(0, block_size=64)  # room for a padded batch's 50 tokens
    new, stats = 50, {}
    plain, fast = (generate(model, idx, new, temperature=0.5, top_k=6, top_p=0.9, pad=pad, stats=stats,
                            generator=torch.Generator().manual_seed(7), **extra) for extra in ({}, dict(draft='ngram')))
    assert torch.equal(fast, plain)
    assert stats['accepted'] > 0


@pytest.mark.parametrize('draft', DRAFTS)
def test_greedy_padded_batch_equals_plain_batch(draft):
    """Rows of different lengths decoded together: each row as the plain batch gives it (which is what the
    row gets alone, tests/test_generate.py), though the batch keeps only the fewest accepted per step."""
    idx, pad = left_pad([[1, 2, 3, 1, 2, 3, 1], [4, 5], [7, 7, 1, 7, 7]])
    plain = generate(MODEL, idx, 9, temperature=0, pad=pad)
    fast = generate(MODEL, idx, 9, temperature=0, pad=pad, draft=DRAFTS[draft])
    assert torch.equal(fast, plain)


def test_bad_draft_is_refused():
    other = lively(2, vocab_size=12)
    with pytest.raises(ValueError, match='tokenizer'):
        generate(MODEL, torch.tensor([[1]]), 4, temperature=0, draft=other)
    with pytest.raises(ValueError, match='KV cache'):
        generate(MODEL, torch.tensor([[1]]), 4, temperature=0, draft='ngram', use_cache=False)


def test_pace_weighs_the_guesses_kept_against_a_longer_forward():
    pace = Pace(4, timed=True)
    pace.update(4, 4, None, 0.5)  # a refill is not timed, and with no one-token step timed yet k follows next_k
    assert pace.k == 4 and pace.seconds == {}
    pace.update(0, 0, 1.0, 0.5)
    pace.update(4, 1, 1.5, 0.5)  # five tokens cost 1.5 one-token forwards: an eighth more per token
    for a, k in [(0.95, 4), (0.3, 1), (0.1, 0)]:
        for _ in range(4):  # k is chosen again every 4 steps
            pace.update(0, 0, 1.0, a)
        assert pace.k == k, a
    assert pace.cost(2) == pytest.approx(1.25)  # not measured: along the five-token forward's slope
    model_draft = Pace(4, timed=False)  # its k follows the tokens alone, whatever the clock says
    model_draft.update(4, 1, 1.5, None)
    assert model_draft.k == 2


def test_k_adapts():
    assert next_k(3, 3, 3, 6) == 4 and next_k(6, 6, 6, 6) == 6  # all kept: one more, up to the most
    assert next_k(5, 5, 1, 6) == 2 and next_k(5, 5, 0, 6) == 1  # a refusal: the accepted count plus one
    assert next_k(4, 0, 0, 6) == 4  # no guess this step (no ngram match): unchanged


# the exact distribution of L tokens after a prompt, on a vocabulary of 4, as plain sampling defines it
V, L, PROMPT = 4, 3, [1, 0, 0, 1, 0, 0, 1, 0]  # a prompt whose lookups the model often takes
SETTINGS = dict(temperature=0.9, top_k=3, top_p=0.9)


def reference_probs(model, prefixes, temperature, top_k, top_p):
    """The filtered next-token distribution after each prefix, written independently of the library: sort,
    keep the top_k, renormalize, keep their nucleus, renormalize."""
    with torch.no_grad():
        logits, _ = model(torch.tensor(prefixes))
    probs = F.softmax(logits[:, -1].double() / temperature, dim=-1)
    ranked, order = probs.sort(dim=-1, descending=True)
    ranked = ranked * (torch.arange(V) < top_k)
    ranked = ranked / ranked.sum(dim=-1, keepdim=True)
    ranked = ranked * (ranked.cumsum(dim=-1) - ranked <= top_p)  # the likeliest until their mass reaches top_p
    kept = torch.zeros_like(probs).scatter(-1, order, ranked)
    return kept / kept.sum(dim=-1, keepdim=True)


def exact_distribution(model, **settings):
    """{sequence of L tokens: its probability}, by enumerating every prefix."""
    dist = {(): 1.0}
    for _ in range(L):
        seqs = list(dist)
        probs = reference_probs(model, [PROMPT + list(s) for s in seqs], **settings)
        dist = {s + (i,): dist[s] * float(probs[j, i]) for j, s in enumerate(seqs) for i in range(V)}
    return dist


def chi_square_z(counts, dist, n):
    """The chi-square statistic of counts against n * dist, as a standard normal z (Wilson-Hilferty), over
    cells expected 5 times or more; the rarer cells are pooled into one."""
    big = [s for s, p in dist.items() if n * p >= 5]
    cells = [(counts.get(s, 0), n * dist[s]) for s in big]
    rest = n - sum(c for c, _ in cells), n - sum(e for _, e in cells)
    if rest[1] >= 5:
        cells.append(rest)
    x2, df = sum((c - e) ** 2 / e for c, e in cells), len(cells) - 1
    return ((x2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


def spec_counts(model, draft, n, rows, seed, stats):
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor([PROMPT] * rows)
    counts = {}
    for _ in range(n // rows):
        out = generate(model, idx, L, draft=draft, draft_tokens=3, generator=g, stats=stats, **SETTINGS)
        for row in out[:, len(PROMPT):].tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return counts


def test_sampling_distribution_is_the_models(monkeypatch):
    """Speculative sampling draws sequences from the model's filtered distribution, with either draft and in
    batches. The test: a chi-square over the 64 sequences of 3 tokens, as a z score (Wilson-Hilferty). Under
    the right distribution z is close to standard normal, so z < 4 fails a right sampler about once in
    30,000 seeds, and the seeds are fixed. It can fail: the same counts against the unfiltered distribution
    (top_k and top_p left out), and a verifier given the wrong q (uniform, as a bug that mixes up the draft's
    distribution would), give z far above 8."""
    model = lively(3, scale=3.0, vocab_size=V, n_embd=16, n_layer=1)
    draft = noisy_copy(model, 4, noise=2.0, n_layer=1)
    exact = exact_distribution(model, **SETTINGS)
    n = 3000
    for name, d, rows in [('ngram', 'ngram', 1), ('model', draft, 1), ('model, batch', draft, 3)]:
        stats = {}
        counts = spec_counts(model, d, n, rows, seed=5, stats=stats)
        assert 0.2 < stats['accepted'] / stats['drafted'] < 0.9, (name, stats)  # both paths taken, often
        assert chi_square_z(counts, exact, n) < 4, name
        if name == 'model':
            unfiltered = exact_distribution(model, temperature=0.9, top_k=V, top_p=1.0)
            assert chi_square_z(counts, unfiltered, n) > 8
    right = speculative.verify
    monkeypatch.setattr(speculative, 'verify', lambda logits, drafts, q, *a: right(
        logits, drafts, None if q is None else torch.full_like(q, 1 / V), *a))
    assert chi_square_z(spec_counts(model, draft, n, 1, seed=5, stats={}), exact, n) > 8


def test_agent_gives_the_plain_paths_traces(caller):
    """The agent (chat.talk, chat.eval, RL's rollouts) decodes a lone greedy row with prompt lookup by default,
    and a batch or a sampled row when asked: the traces, calls and answers are the plain path's, greedy and
    sampled with a seed. A sampled lone row does not guess by default."""
    from conftest import CONVERSATIONS
    from seedgpt.agent import generate_with_tools
    from seedgpt.chat import render_prompt
    model, tok = caller
    prompts = [render_prompt(tok, c[:1]) for c in CONVERSATIONS]
    cases = [(prompts[:1], 'auto', 0.0), (prompts, 'ngram', 0.0), (prompts[:1], 'ngram', 0.8), (prompts, 'ngram', 0.8)]
    for rows, draft, temperature in cases:
        stats = {}
        plain, fast = (generate_with_tools(model, tok, rows, 40, temperature=temperature, draft=d, stats=stats,
                                           generator=torch.Generator().manual_seed(3)) for d in (None, draft))
        assert [(t.ids, t.mask, t.calls, t.answer) for t in fast] == [(t.ids, t.mask, t.calls, t.answer) for t in plain]
        assert stats['accepted'] > 0, (len(rows), draft, temperature)
    assert any(t.calls for t in plain)
    stats = {}
    generate_with_tools(model, tok, prompts[:1], 40, temperature=0.8, stats=stats)
    assert not stats.get('drafted')


@pytest.mark.parametrize('pos,chunk', [('learned', 7), ('rope', 64)])
@pytest.mark.parametrize('seed', [0, 1])
def test_engine_drafting_rows_equal_each_request_alone(pos, chunk, seed):
    """The serving engine with prompt lookup per row, inside continuous batching (rows join, leave, read prompts
    in chunks, reuse cached prefixes): each greedy request gets its lone tokens, stop ids and max_tokens kept."""
    import random
    from test_engine import alone, drain, random_mix, run, tiny
    from seedgpt.engine import Engine
    model = tiny(pos)
    mix = random_mix(random.Random(seed), 24, model.config.block_size)
    mix = [(a, p * 3 if len(p) * 3 < 40 else p, min(m, 48 - 3 * len(p)) if len(p) * 3 < 40 else m, stop)
           for a, p, m, stop in mix]  # prompts that repeat themselves: lookups find guesses
    engine = Engine(model, model.config.vocab_size, max_batch=4, prefill_chunk=chunk, draft_tokens=4)
    kept = []
    check = engine.check
    engine.check = lambda rows, logits, first: kept.append(sum(len(r.guess) > 0 for r in rows)) or check(
        rows, logits, first)
    reqs = run(engine, mix)
    for (arrival, prompt, max_tokens, stop), req in zip(mix, reqs):
        assert drain(req) == alone(model, prompt, max_tokens, stop), (prompt, max_tokens, stop)
    assert sum(kept) > 10 and engine.running == 0


def test_engine_drafting_seeded_rows_and_logprobs(monkeypatch):
    """A seeded row's tokens and logprobs are the same with guesses as without (verify_point's rule: its own
    draws, one per token, in order)."""
    from test_engine import tiny
    from seedgpt import engine as engine_module
    from seedgpt.engine import Engine, Request
    counts = {'guessed': 0, 'kept': 0}

    def count(k, K, m, most):
        counts['guessed'] += K
        counts['kept'] += m
        return next_k(k, K, m, most)
    monkeypatch.setattr(engine_module, 'next_k', count)
    model = tiny('rope')
    prompts = [[1, 2, 3, 4, 1, 2, 3, 4, 1, 2], [5, 6, 5, 6, 5, 6], [7, 8, 9, 7, 8, 9, 7]]
    outs = []
    for draft_tokens in (0, 4):
        engine = Engine(model, model.config.vocab_size, max_batch=3, draft_tokens=draft_tokens)
        reqs = [Request(p, 30, temperature=0.3, top_p=0.9, seed=11 + k, logprobs=2) for k, p in enumerate(prompts)]
        for r in reqs:
            engine.submit(r)
        while any(not r.ended for r in reqs):
            engine.step()
        outs.append([[r.out.get_nowait() for _ in range(r.out.qsize())] for r in reqs])
    for plain, fast in zip(*outs):
        assert fast[-1] == plain[-1] == 'length'
        assert [t.id for t in fast[:-1]] == [t.id for t in plain[:-1]]
        # logprobs from a forward of several tokens: the same up to the last bits (float64 here)
        assert [t.logprob for t in fast[:-1]] == pytest.approx([t.logprob for t in plain[:-1]], abs=1e-9)
        assert [[i for i, _ in t.top] for t in fast[:-1]] == [[i for i, _ in t.top] for t in plain[:-1]]
    assert 0 < counts['kept'] < counts['guessed']
