"""seedgpt/engine.py against the model run alone (seedgpt.generate.generate): seeded random mixes of prompts and max_tokens
arriving at random steps into a few KV slots, so rows join mid-decode, leave, read long prompts in chunks and
reuse cached prefixes; cancelled and failing rows beside good ones; the sampler (seedgpt.sampling) row by row, as
the engine calls it; what a seeded request keeps in any batch; NaN left in a slot; a failing compile.

The models run in float64: the batched and the lone paths add up the same numbers in different orders, and
in float32 a rare near-tie between two tokens could flip; in float64 a difference means a bug."""
import math
import random

import pytest
import torch

from conftest import NoCompiler

from model import GPT, GPTConfig
from seedgpt.engine import Engine, Request, packed_length
from seedgpt.generate import generate
from seedgpt.sampling import sample

V = 23


def tiny(pos='learned', block_size=48, vocab_size=V):
    """A random 2-layer model whose greedy continuations vary with the context (random weights at the usual
    0.02 scale give near-uniform logits and the same token over and over)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=block_size, vocab_size=vocab_size, pos=pos))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.double().eval()


def alone(model, prompt, max_tokens, stop_ids=()):
    """The request's greedy tokens and finish reason, run alone through seedgpt.generate.generate."""
    out = generate(model, torch.tensor([prompt]), max_tokens, temperature=0)[0, len(prompt):].tolist()
    end = next((k for k, i in enumerate(out) if i in stop_ids), None)
    return (out, 'length') if end is None else (out[:end + 1], 'stop')


def drain(req):
    """The tokens and the finish reason a request got."""
    tokens = []
    while True:
        item = req.out.get_nowait()
        if isinstance(item, str):
            return tokens, item
        tokens.append(item.id)


def random_mix(rnd, n, block_size, steps=80):
    """n (arrival step, prompt, max_tokens, stop_ids) with prompts of 1-30 tokens, some extending an earlier one."""
    mix = []
    for _ in range(n):
        prompt, arrival = [rnd.randrange(V) for _ in range(rnd.randint(1, 30))], rnd.randint(0, steps)
        if mix and rnd.random() < 0.3:  # a conversation's next turn, a while later: the prefix cache's case
            earlier = mix[-1]  # (arrival, prompt, max_tokens, stop)
            arrival = earlier[0] + len(earlier[1]) // 5 + earlier[2] + rnd.randint(0, 4)  # about when it ends
            prompt = (earlier[1] + prompt)[:block_size - 1]
        stop = {rnd.randrange(V)} if rnd.random() < 0.5 else set()
        mix.append((arrival, prompt, rnd.randint(1, block_size - len(prompt)), stop))
    return mix


def run(engine, mix, on_step=None):
    """Submit each request at its step, step the engine until all have ended; returns the Requests."""
    reqs = [None] * len(mix)
    step = 0
    while step <= max(m[0] for m in mix) or any(not r.ended for r in reqs):
        for k, (arrival, prompt, max_tokens, stop) in enumerate(mix):
            if arrival == step:
                reqs[k] = Request(prompt, max_tokens, temperature=0, stop_ids=stop)
                engine.submit(reqs[k])
        if on_step:
            on_step(engine, reqs, step)
        engine.step()
        step += 1
        assert step < 2000, "the engine does not finish"
    return reqs


@pytest.mark.parametrize('pos,chunk,static', [('learned', 7, False), ('rope', 5, False), ('rope', 64, False),
                                              ('learned', 7, True)])
@pytest.mark.parametrize('seed', [0, 1])
def test_random_mix_equals_each_request_alone(pos, chunk, static, seed):
    model = tiny(pos)
    mix = random_mix(random.Random(seed), 24, model.config.block_size)
    engine = Engine(model, V, max_batch=4, queue_size=64, prefill_chunk=chunk, static=static)
    pool = engine.cache.kv.data_ptr()
    seen = {'joined mid-decode': 0, 'prefix reused': 0, 'batch sizes': set()}
    admit = engine.admit

    def admit_and_count(req):
        seen['joined mid-decode'] += engine.d > 0
        admit(req)
        seen['prefix reused'] += req.fed > 0
    engine.admit = admit_and_count
    engine.cache.round_shapes = True  # as a bf16 model on a CPU has it: padded steps must change no row's tokens
    plan, padded = engine.cache.plan, []
    engine.cache.plan = lambda segments: padded.append(plan(segments).padding) or engine.cache
    reqs = run(engine, mix, lambda engine, reqs, step: seen['batch sizes'].add(engine.d))
    for (arrival, prompt, max_tokens, stop), req in zip(mix, reqs):
        assert drain(req) == alone(model, prompt, max_tokens, stop), (prompt, max_tokens, stop)
    assert engine.cache.kv.data_ptr() == pool and engine.running == 0
    assert max(seen['batch sizes']) >= 3  # rows decoded side by side
    if chunk >= 16 or static:  # steps of more than 16 tokens: some ran with padding, and no row's tokens changed
        assert max(padded) > 0
    if not static:
        assert seen['joined mid-decode'] and seen['prefix reused']


def test_packed_length_bounds_the_shapes():
    """A step's sequence is padded to one of a few lengths (oneDNN keeps a compiled matmul per shape), by at most
    1/8 of its tokens, and not at all up to 16 tokens, where decoding steps are."""
    lengths = [packed_length(n) for n in range(1, 4097)]
    assert lengths[:16] == list(range(1, 17))
    assert all(n <= p <= n * 9 / 8 and packed_length(p) == p for n, p in enumerate(lengths, 1))
    assert len(set(lengths)) <= 16 + 8 * 8  # 8 lengths per doubling from 16 to 4096


def test_shapes_are_rounded_only_where_kernels_are_kept_per_shape():
    model = tiny()
    assert not Engine(model.float(), V).cache.round_shapes  # fp32: MKL keeps nothing per shape
    assert Engine(model.bfloat16(), V).cache.round_shapes  # bf16 on a CPU: oneDNN's caches


def test_greedy_output_is_varied():
    """The reference comparisons above mean something only if the outputs depend on the context."""
    model = tiny()
    outs = {tuple(alone(model, [i, 3, 5], 12)[0]) for i in range(V)}
    assert len(outs) > V // 2 and all(len(set(o)) > 2 for o in outs)


def test_cancelled_rows_leave_at_the_next_step_and_the_others_go_on():
    model = tiny('rope')
    bs = model.config.block_size
    mix = [(a, p, max(m, min(6, bs - len(p))), set()) for a, p, m, _ in random_mix(random.Random(2), 16, bs)]
    victims = {1, 4, 9, 12}

    def cancel(engine, reqs, step):  # a client hangs up once it has two tokens
        for k in victims:
            if reqs[k] is not None and reqs[k].generated >= 2:
                reqs[k].cancelled = True
    reqs = run(Engine(model, V, max_batch=4, prefill_chunk=6), mix, cancel)
    cancelled = 0
    for k, ((_, prompt, max_tokens, _), req) in enumerate(zip(mix, reqs)):
        tokens, reason = drain(req)
        expected = alone(model, prompt, max_tokens)
        if reason == 'cancelled':
            cancelled += 1
            assert k in victims and tokens == expected[0][:2]  # no token after the step it was cancelled at
        else:
            assert (tokens, reason) == expected
    assert cancelled >= 2


def test_a_failing_row_ends_alone():
    """A row whose forward fails (here: the model raises when it is fed token X, which only one request
    generates) ends with 'error'; the batch is retried row by row and every other row gets its tokens."""
    vocab = 200  # room for a token that one request alone writes
    model = tiny(vocab_size=vocab)
    rnd = random.Random(3)
    mix = [(rnd.randint(0, 10), [rnd.randrange(vocab) for _ in range(rnd.randint(2, 12))], 20, set()) for _ in range(6)]
    outs = [alone(model, p, m)[0] for _, p, m, _ in mix]
    # a token fed by one request only (generated and then fed back), seen nowhere else
    victim, poison = next((k, x) for k, out in enumerate(outs) for x in out[:-1]
                          if all(x not in o and x not in p for j, (o, (_, p, _, _)) in enumerate(zip(outs, mix))
                                 if j != k) and x not in mix[k][1])
    forward = model.forward

    failed = []

    def poisoned(idx, *args, **kwargs):
        if (idx == poison).any():
            failed.append(idx.size(1))
            raise RuntimeError("poisoned")
        return forward(idx, *args, **kwargs)
    model.forward = poisoned
    reqs = run(Engine(model, vocab, max_batch=4, prefill_chunk=8), mix)
    for k, (req, out) in enumerate(zip(reqs, outs)):
        tokens, reason = drain(req)
        if k == victim:
            assert reason == 'error' and tokens == out[:out.index(poison) + 1]
        else:
            assert (tokens, reason) == (out, 'length')
    assert failed[0] > 1 and failed[1:] == [1]  # the step's packed rows failed, then the row alone


def test_prefix_cache_reads_only_the_new_turn():
    """A conversation re-sent turn after turn: each turn's prompt starts with the last turn's prompt and reply,
    so only the new tokens are fed; the replies equal the lone model's."""
    model = tiny('rope', block_size=96)
    fed = []
    forward = model.forward
    model.forward = lambda idx, *a, **k: (fed.append(idx.shape[1]), forward(idx, *a, **k))[1]
    rnd = random.Random(4)
    for cache in (True, False):
        engine = Engine(model, V, max_batch=2, prefill_chunk=1000, prefix_cache=cache)
        history, prefills = [], []
        for turn in range(5):
            history += [rnd.randrange(V) for _ in range(4)]  # the user's new message
            fed.clear()
            req = Request(history, 8, temperature=0)
            engine.submit(req)
            while not req.ended:
                engine.step()
            tokens, _ = drain(req)
            assert tokens == alone(model, history, 8)[0]
            prefills.append(fed[0])
            history = history + tokens
        if cache:
            assert prefills[1:] == [1 + 4] * 4  # the reply's last token (sampled, never fed) and the new message
        else:
            assert prefills == [4 + 12 * t for t in range(5)]


def test_the_sampler_row_by_row():
    """The engine's sampling (seedgpt.sampling.sample with a (B,) tensor per setting and a float64 draw per row):
    each row samples from its own softmax(logits / temperature) cut to its top_p, with its own uniform, so a row's
    token does not depend on its neighbours; tiny temperatures are greedy, never inf or nan."""
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    t = torch.tensor([0.0, 1e-40, 1.0, 0.7, 1.0, 2.0])
    p = torch.tensor([1.0, 1.0, 1e-38, 0.9, 0.5, 1.0])
    u = torch.tensor([0.3, 0.99, 0.5, 0.1, 0.999, 0.6], dtype=torch.float64)
    together = sample(logits, t, top_p=p, uniform=u)
    for b in range(6):
        assert sample(logits[b:b + 1], t[b:b + 1], top_p=p[b:b + 1], uniform=u[b:b + 1]).item() == together[b].item()
    assert together[:3].tolist() == logits[:3].argmax(-1).tolist()
    # the uniform's quantiles give back the distribution: N evenly spaced draws land on each token N x p times
    N = 2000
    row = logits[3:4].expand(N, -1)
    evenly = (torch.arange(N, dtype=torch.float64) + 0.5) / N
    draws = sample(row, torch.full((N,), 0.7), top_p=torch.ones(N), uniform=evenly)
    probs = torch.softmax(logits[3] / 0.7, -1)
    assert (torch.bincount(draws, minlength=50) - probs * N).abs().max() <= 1.01
    # top_p: only the smallest set of likeliest tokens reaching p is ever drawn
    draws = sample(row, torch.full((N,), 0.7), top_p=torch.full((N,), 0.5), uniform=evenly)
    sorted_p, order = probs.sort(descending=True)
    nucleus = set(order[sorted_p.cumsum(0) - sorted_p <= 0.5].tolist())
    assert set(draws.tolist()) == nucleus


def test_a_draw_just_below_one_never_picks_an_impossible_token():
    """u = the largest float64 below 1, through the engine: the token is one of non-zero probability, inside the
    top_p nucleus and never banned. (A float32 draw rounded that u up to exactly 1.0, and the search then landed
    on the last token of the sorted vocabulary: outside the nucleus, or a banned one.)"""
    model = tiny()
    last = math.nextafter(1.0, 0.0)
    cases = [(0.5, ()), (1.0, range(V // 2, V)), (0.9, range(0, V, 3))]  # (top_p, ban_ids)
    engine = Engine(model, V, max_batch=len(cases))
    reqs = [Request([1, 2, 3], 12, temperature=1.0, top_p=p, seed=0, ban_ids=ban) for p, ban in cases]
    for r in reqs:
        r.rng.random = lambda: last
        engine.submit(r)
    while not all(r.ended for r in reqs):
        engine.step()
    for (top_p, ban), r in zip(cases, reqs):
        tokens, _ = drain(r)
        assert len(tokens) == 12
        for k, i in enumerate(tokens):
            with torch.no_grad():
                logits = model(torch.tensor([r.prompt + tokens[:k]]))[0][0, -1]
            logits[list(ban)] = float('-inf')
            probs = torch.softmax(logits, -1)
            ranked, order = probs.sort(descending=True)
            nucleus = set(order[ranked.cumsum(0) - ranked <= top_p].tolist())
            assert i not in ban and probs[i] > 0 and i in nucleus, (k, i)


def test_seeded_sampling_is_the_same_batched_and_alone():
    model = tiny()
    rnd = random.Random(5)
    mix = [(seed, [rnd.randrange(V) for _ in range(rnd.randint(2, 15))], 15) for seed in range(6)]

    def sampled(requests):
        engine = Engine(model, V, max_batch=4, prefill_chunk=5)
        reqs = [Request(p, m, temperature=0.9, top_p=0.95, seed=seed, logprobs=3) for seed, p, m in requests]
        for r in reqs:
            engine.submit(r)
        while not all(r.ended for r in reqs):
            engine.step()
        out = []
        for r in reqs:
            items = []
            while isinstance(item := r.out.get_nowait(), tuple):
                items.append(item)
            out.append([(i.id, round(i.logprob, 5), [(j, round(lp, 5)) for j, lp in i.top]) for i in items])
        return out
    together = sampled(mix)
    assert [sampled([m])[0] for m in mix] == together
    assert len({tuple(t[0] for t in o) for o in together}) == len(mix)
    assert all(len(i[2]) == 3 and i[2][0][1] >= i[1] for o in together for i in o)


def test_banned_ids_are_never_generated():
    """A row's ban_ids are never sampled, greedy or not, even where one is the argmax; its neighbours, which
    ban nothing, still get their tokens as alone."""
    model = tiny()
    rnd = random.Random(6)
    prompts = [[rnd.randrange(V) for _ in range(rnd.randint(2, 10))] for _ in range(4)]
    firsts = [alone(model, p, 1)[0][0] for p in prompts]
    engine = Engine(model, V, max_batch=4, prefill_chunk=5)
    free = Request(prompts[0], 12, temperature=0)
    greedy = Request(prompts[1], 12, temperature=0, ban_ids=[firsts[1], 3])  # its own argmax, at the first token
    hot = Request(prompts[2], 12, temperature=1.5, seed=0, ban_ids=range(0, V, 2))
    for r in (free, greedy, hot):
        engine.submit(r)
    while not all(r.ended for r in (free, greedy, hot)):
        engine.step()
    assert drain(free) == alone(model, prompts[0], 12)
    tokens, _ = drain(greedy)
    assert tokens[0] != firsts[1] and not {firsts[1], 3} & set(tokens) and len(tokens) == 12
    tokens, _ = drain(hot)
    assert all(i % 2 for i in tokens) and len(tokens) == 12


def test_seeded_draws_do_not_depend_on_the_batch():
    """What batching keeps for a seeded request in any dtype: one uniform draw per token from its own generator, the
    k-th token from the k-th draw, alone or batched. Its tokens are then the same wherever its logits are: in
    float64 (test_seeded_sampling_is_the_same_batched_and_alone), not always in float32, where a row's logits
    change in their last bits with the batch's shape and a draw near a boundary between two tokens can flip
    (docs/serving.md, 'Seeds and batches')."""
    model = tiny().float()
    rnd = random.Random(7)
    mix = [(seed, [rnd.randrange(V) for _ in range(rnd.randint(2, 15))], 12) for seed in range(5)]

    def draws(requests):  # each request's (token index, uniform) as drawn
        engine = Engine(model, V, max_batch=4, prefill_chunk=5)
        reqs, seen = [], []
        for seed, p, m in requests:
            reqs.append(Request(p, m, temperature=1.0, seed=seed))
            seen.append([])
            reqs[-1].rng.random = lambda r=reqs[-1], log=seen[-1], draw=reqs[-1].rng.random: (
                log.append((r.generated, draw())) or log[-1][1])
            engine.submit(reqs[-1])
        while not all(r.ended for r in reqs):
            engine.step()
        return seen
    together = draws(mix)
    assert together == [draws([m])[0] for m in mix]
    assert all([k for k, _ in d] == list(range(12)) for d in together)  # one draw per token, none between


def test_nan_left_in_a_free_slot_never_reaches_a_new_row():
    """A slot keeps what its last request left there (the prefix cache). Were those keys and values NaN (an earlier
    request's activations overflowed), a new row in that slot must still get its own tokens: its keys past its
    position are masked out, but a masked weight of 0 times NaN is NaN, so the engine zeroes what the new row does
    not reuse."""
    model = tiny()
    engine = Engine(model, V, max_batch=2, prefill_chunk=64)
    old = Request([5] * 30, 10, temperature=0)
    engine.submit(old)
    while not old.ended:
        engine.step()
    (i,) = [k for k, s in enumerate(engine.slots) if s.tokens]
    engine.cache.kv[:, :, i, :, :len(engine.slots[i].tokens)] = float('nan')  # as an overflowing request would
    long, short = [1 + k % 7 for k in range(25)], [2, 3, 4]  # the short one goes to the NaN slot, the other is LRU
    reqs = [Request(p, 12, temperature=0) for p in (long, short)]
    for r in reqs:
        engine.submit(r)
    while not all(r.ended for r in reqs):
        engine.step()
    assert engine.slots[i].req is None and [drain(r) for r in reqs] == [alone(model, p, 12) for p in (long, short)]


def test_compile_raises_when_its_warm_up_fails(monkeypatch):
    """Engine.compile runs one request through the compiled step; when that fails (no C++ compiler: torch.compile
    fails at its first call), compile raises the error instead of ending the row quietly, so that a server stops
    at start and not at every client's request."""
    model = tiny()
    monkeypatch.setattr(torch, 'compile', lambda module, **kwargs: NoCompiler())
    with pytest.raises(RuntimeError, match='InvalidCxxCompiler'):
        Engine(model, V).compile()
