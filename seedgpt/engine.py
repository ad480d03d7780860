"""
The serving engine: continuous batching over a fixed pool of KV slots, in one worker thread.

    engine = Engine(model, vocab_size=tok.vocab_size, max_batch=16)
    engine.start()                         # the worker thread (or call engine.step() in a loop yourself)
    req = Request(prompt_ids, max_tokens=50, temperature=0.0, stop_ids={end_id})
    engine.submit(req)                     # queue.Full when queue_size requests already wait
    req.out                                # Token(id, logprob, top) items, then one finish reason

Memory: SlotCache holds max_batch x block_size positions per layer, allocated once; nothing grows
with the load. Slots 0 .. d-1 hold the rows that decode, so the decoding batch is a view of the pool (no
gather per token); the other slots hold rows still reading their prompts, and free slots, whose cached
tokens a later request may reuse.

The scheduling rule, at each step:
  1. cancelled rows (client gone, time up) leave, and their slots are free at once;
  2. waiting requests take free slots, oldest first. Each takes the free slot whose cached tokens share
     the longest prefix with its prompt (the prefix cache: a chat re-sends its history, and those
     tokens are not computed again), else the least recently used one;
  3. one forward holds every row that decodes (its last token) and, oldest first, chunks of the prompts
     still being read, up to prefill_chunk prompt tokens in all (whole prompts when no row decodes). A
     long prompt is read over several steps, so it holds the decoding rows up by one chunk per step,
     never by the whole prompt;
  4. each row that has fed all its ids samples its next token; a row that has just read its prompt
     joins the decoding rows for the next step.
A row ends at a stop id, at max_tokens, when cancelled, or when it fails; its slot is free at once.
prefill_chunk trades time between tokens for admissions: too small, and many chat clients ask for more
prompt tokens per step than it lets in, so the decoding rows run half full (docs/serving.md).
Every row has its own positions and sees only its own keys (SlotCache), so a request that fits
in block_size alone fits in any batch. Its logits equal its logits alone up to their last bits, which change
with the batch's shape (the matmuls add up in other orders). So a greedy row gets its lone tokens but at
near-ties, and a seeded row always gets its lone draws (one per token, from its own generator), and its lone
tokens until a draw lands where a boundary between two tokens moved (docs/serving.md, 'Seeds and batches').
A forward or sampling that fails is retried row by row: only the row that fails alone ends.

draft_tokens > 0 drafts by prompt lookup per row (seedgpt/speculative.py): a decoding row whose text so far
offers a guess feeds its last token and up to draft_tokens guesses in the same packed forward, as a segment of
its own, and gets logits at each; its guesses are kept while the token it samples (its own draws, in order, as
verify_point does) is the guess, so its tokens, logprobs and stops are the ones it gets without guessing. The
refused guesses' keys are zeroed, and the row's position moves past only what it kept.

static=True is the scheme this replaces, kept to compare against (bench/serve.py): requests are taken
only when no row is running, and their prompts are read whole. It runs the same step(), forward and
sampling: a faster step speeds up both schemes alike.
"""
import asyncio
import itertools
import queue
import random
import threading
import time
import traceback
from collections import namedtuple

import torch
from torch.nn import functional as F

from model import Cache
from seedgpt.sampling import GREEDY_BELOW, sample, top_logprobs
from seedgpt.speculative import Lookup, next_k

Token = namedtuple('Token', 'id logprob top')  # top: [(id, logprob), ...] when top logprobs were asked for


def packed_length(n):
    """The length a step's sequence of n tokens is padded to: n itself up to 16, above that the next of a few
    lengths per doubling (at most 1/8 more tokens). oneDNN compiles a matmul for each shape it meets and
    keeps up to a thousand of them: a mixed load's packed lengths take hundreds of values, so the server's
    memory kept growing as new ones turned up. Padded, a step has one of a few dozen lengths, and the cache
    stops growing (docs/serving.md has the figures). Only bf16 and fp16 on a CPU need it: fp32 matmuls go
    to MKL, which keeps nothing per shape."""
    step = 1 << max(0, n.bit_length() - 4)  # 1 below 16, 2 from 16, 4 from 32, ... : 8 lengths per doubling
    return -(-n // step) * step


class SlotCache(Cache):
    """Keys and values of many sequences decoded side by side: a pool of `slots` rows of block_size
    positions per layer, allocated once.

    A step's rows go through the model in one forward, their new tokens packed in one sequence (1, N):
    plan() says which slots they are and where each row's tokens go; then the model meets it through
    model.Cache's interface: positions() gives each token its position, attend() each layer's attention,
    and `last` each row's last token, where the logits are taken. Reading the weights once per step, not once per
    row or prompt, is what a CPU's decoding time goes to. Each row sees only its own keys, up to itself: no row is
    padded to another's length, so a sequence that fits alone fits beside any other. The keys past a row's position
    are masked out (a batch reads up to its longest row, rounded up); the engine still zeroes what a new row does
    not reuse, since a masked weight of 0 times a NaN left there is NaN.
    """

    def __init__(self, config, slots, dtype=torch.float32, device='cpu'):
        hs = config.n_embd // config.n_head
        # (layer, k or v, slot, head, position, hs): one tensor, so moving a slot moves all layers in one copy
        self.kv = torch.zeros(config.n_layer, 2, slots, config.n_head, config.block_size, hs, dtype=dtype,
                              device=device)
        self.block_size = config.block_size
        # shapes rounded (packed_length, and the keys' length): bf16 and fp16 on a CPU compile and keep kernels
        # per shape; fp32 does not, and there the rounding only cost time (docs/serving.md)
        self.round_shapes = dtype != torch.float32 and self.kv.device.type == 'cpu'

    def plan(self, segments):
        """segments: [(start, pos, T)]: rows start .. start + len(pos) - 1 of the pool, row b reading T new
        tokens from position pos[b]; the forward's sequence holds them segment after segment, row after row,
        then `padding` tokens that no row reads (see packed_length)."""
        self.segments, self.last, n = segments, [], 0
        for start, pos, T in segments:
            if max(pos) + T > self.block_size:
                raise ValueError(f"sequence of length {max(pos) + T} is longer than block_size {self.block_size}")
            self.last += [n + (b + 1) * T - 1 for b in range(len(pos))]
            n += len(pos) * T
        self.padding = packed_length(n) - n if self.round_shapes else 0
        return self

    def positions(self, T, device):
        """The packed tokens' positions (1, N), and per segment its (B, T) positions and key masks for attend."""
        self.where = []
        for start, pos, T in self.segments:
            cols = torch.tensor(pos, device=device)[:, None] + torch.arange(T, device=device)  # (B, T)
            # the keys up to the longest row, rounded up to a multiple of 32 (the mask hides the ones past each
            # row): with bf16, the attention kernel compiles a matrix-product kernel for each key length and
            # query chunk it meets and keeps them all, so a length per token would grow memory for hours
            L = max(pos) + T
            keys = torch.arange(min(self.block_size, -(-L // 32) * 32) if self.round_shapes else L, device=device)
            self.where.append((cols, (keys <= cols[..., None]).unsqueeze(1)))  # (B, 1, T, L): itself and before
        pos = [cols.flatten() for cols, _ in self.where]
        if self.padding:  # padding: position 0, read by no row
            pos.append(torch.zeros(self.padding, dtype=torch.long, device=device))
        return torch.cat(pos)[None]

    def attend(self, i, q, k, v):
        """Layer i's attention for the packed rows: q, k, v (1, nh, N, hs) -> (1, nh, N, hs). Each segment's
        new keys and values go to their slots, then its rows attend to their own slots."""
        out, n = [], 0
        for (start, pos, T), (cols, mask) in zip(self.segments, self.where):
            B = len(pos)
            # each segment's rows: (B, nh, T, hs)
            qs, ks, vs = (t[0, :, n:n + B * T].unflatten(1, (B, T)).transpose(0, 1) for t in (q, k, v))
            K, V = self.kv[i, :, start:start + B].unbind(0)  # (B, nh, block_size, hs) views of the pool
            if B == 1:  # a prompt's chunk: one slice
                K[:, :, pos[0]:pos[0] + T], V[:, :, pos[0]:pos[0] + T] = ks, vs
            else:  # row b's tokens go to its own positions cols[b]
                rows = torch.arange(B, device=q.device)[:, None]  # (B, 1)
                K[rows, :, cols], V[rows, :, cols] = ks.transpose(1, 2), vs.transpose(1, 2)  # (B, T, nh, hs)
            L = mask.size(-1)
            y = F.scaled_dot_product_attention(qs, K[:, :, :L], V[:, :, :L], attn_mask=mask)  # (B, nh, T, hs)
            out.append(y.transpose(0, 1).flatten(1, 2))  # (nh, B * T, hs)
            n += B * T
        if self.padding:  # the padding attends to nothing
            out.append(q.new_zeros(q.size(1), self.padding, q.size(-1)))
        return torch.cat(out, dim=1)[None]

    def swap(self, i, j, n):
        """Exchange the first n positions of slots i and j (their sequences, in every layer)."""
        if i != j and n > 0:
            a = self.kv[:, :, i, :, :n].clone()
            self.kv[:, :, i, :, :n] = self.kv[:, :, j, :, :n]
            self.kv[:, :, j, :, :n] = a


class Request:
    """One sequence to generate: its prompt ids, how to sample it, and the queue its tokens go to.

    out receives a Token per generated id, then one finish reason: 'stop' (a stop id, sent before it),
    'length' (max_tokens), 'cancelled' or 'error'. With an asyncio loop, out is an asyncio.Queue filled
    from the worker thread through that loop; without one, a thread-safe queue.SimpleQueue.
    ban_ids: ids never generated: their logits are -inf before sampling (and in the logprobs reported).
    """

    def __init__(self, prompt, max_tokens, temperature=1.0, top_p=1.0, seed=None, stop_ids=(), logprobs=None,
                 loop=None, ban_ids=()):
        self.prompt, self.max_tokens = list(prompt), max_tokens
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.logprobs = logprobs  # None, or how many top alternatives to report with each token's logprob
        self.stop_ids = frozenset(stop_ids)
        self.ban_ids = sorted(set(ban_ids))
        self.error = None  # the exception that ended it, when it ended with 'error'
        self.rng = random.Random(seed)  # one uniform number per token: the same draws however it is batched
        self.ids = list(prompt)  # the prompt, then the generated ids
        self.fed = 0  # how many of ids have their keys and values in the slot
        self.cancelled = False  # set by whoever waits on out: the row leaves at the next step
        self.ended = False  # set by the engine once the finish reason is sent
        self.lookup, self.guess, self.k = None, [], 0  # prompt lookup's state, this step's guesses, the next k
        self.loop = loop
        self.out = asyncio.Queue() if loop is not None else queue.SimpleQueue()

    @property
    def generated(self):
        return len(self.ids) - len(self.prompt)


class Slot:
    """What one row of the pool holds: a running request, or the tokens left cached by the last one."""

    def __init__(self):
        self.req, self.tokens, self.used = None, [], 0

    def length(self):  # positions worth keeping when the slot moves
        return self.req.fed if self.req is not None else len(self.tokens)


class Engine:

    def __init__(self, model, vocab_size, max_batch=16, queue_size=64, prefill_chunk=128, prefix_cache=True,
                 static=False, draft_tokens=0):
        self.model, self.vocab_size = model, vocab_size
        self.draft_tokens = draft_tokens  # prompt lookup's most guesses per row and step; 0: none
        self.device = model.lm_head.weight.device
        self.cache = SlotCache(model.config, max_batch, model.lm_head.weight.dtype, self.device)
        self.slots = [Slot() for _ in range(max_batch)]
        self.d = 0  # slots[:d] are the decoding rows
        self.pending = queue.Queue(maxsize=queue_size)
        self.prefill_chunk, self.prefix_cache, self.static = prefill_chunk, prefix_cache, static
        self.clock = 0  # steps taken: slots remember when they were last used
        self.admissions = itertools.count()  # the order in which rows read their prompts
        self.wake, self.stopped = threading.Event(), False
        self.thread = threading.Thread(target=self.work, daemon=True)

    def compile(self):
        """torch.compile the parts of every step whose work is the same for each token: each block's norms and MLP,
        one graph for any number of packed tokens. Attention stays eager: its segments change from step to step,
        and a graph for each arrangement would compile without end. One short request is run through at once,
        so the compiling happens here and not in a client's request. Returns the seconds it took.
        Call it before start(). On a CPU it needs a C++ compiler."""
        for block in self.model.transformer.h:
            for name in ('ln_1', 'ln_2', 'mlp'):
                setattr(block, name, torch.compile(getattr(block, name), dynamic=True))
        t = time.perf_counter()
        req = Request([0] * 5, 3, temperature=0.0)  # one step of 5 prompt tokens, then steps of 1: both shapes
        self.submit(req)
        while not req.ended:
            self.step()
        if req.error is not None:  # a row's failure ends the row quietly; here it must stop whoever compiles
            raise req.error
        return time.perf_counter() - t

    def submit(self, req):
        self.pending.put_nowait(req)  # raises queue.Full
        self.wake.set()

    @property
    def running(self):
        return sum(s.req is not None for s in self.slots)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopped = True
        self.wake.set()

    def work(self):
        while not self.stopped:
            if not self.running and self.pending.empty():
                self.wake.wait(0.1)  # nothing to do: sleep until a request comes
                self.wake.clear()
                continue
            try:
                self.step()
            except Exception as e:  # a bug must not take the server down: the running rows fail, the next ones run
                traceback.print_exc()
                failed = [s.req for s in self.slots if s.req is not None]
                for req in failed:
                    req.ended, req.error = True, e
                for i, s in enumerate(self.slots):  # whatever the step left half written is cleared
                    s.req, s.tokens = None, []
                    self.clear(i)
                self.d = 0
                self.deliver([(req, 'error') for req in failed])

    # -- the slots

    def index(self, req):
        return next(i for i, s in enumerate(self.slots) if s.req is req)

    def swap(self, i, j):
        self.cache.swap(i, j, max(self.slots[i].length(), self.slots[j].length()))
        self.slots[i], self.slots[j] = self.slots[j], self.slots[i]

    def admit(self, req):
        """Put req in the free slot with the longest cached prefix of its prompt; only the rest is computed."""
        def shared(slot):  # at least the prompt's last token is fed again: its logits give the first token
            n, limit = 0, min(len(slot.tokens), len(req.prompt) - 1) if self.prefix_cache else 0
            while n < limit and slot.tokens[n] == req.prompt[n]:
                n += 1
            return n
        free = [s for s in self.slots[self.d:] if s.req is None]
        slot = max(free, key=lambda s: (shared(s), -s.used))
        req.fed = shared(slot)
        self.clear(self.slots.index(slot), req.fed, len(slot.tokens))  # what it does not reuse
        slot.req, slot.tokens = req, []

    def clear(self, i, start=0, end=None):
        """Zero positions start .. end - 1 of slot i in every layer. A row's keys past its position are masked out,
        but a masked weight of 0 times a NaN or inf left there by an earlier request is still NaN. So a slot holds
        zeros past its length(): cleared here when it is taken (the old tokens it does not reuse) or when a failure
        may have left it half written; a swap moves the first max(length()) positions of both slots, so the
        zeros move with them."""
        self.cache.kv[:, :, i, :, start:end] = 0  # (layer, k or v, slot, head, position, hs)

    def free(self, req, reason, events):
        i = self.index(req)
        slot = self.slots[i]
        # the slot keeps what it holds for the prefix cache, unless a failure may have left it half written
        slot.req, slot.tokens, slot.used = None, (req.ids[:req.fed] if reason != 'error' else []), self.clock
        if reason == 'error':
            self.clear(i)
        elif req.fed > len(slot.tokens):  # guesses kept past a stop id: their keys go
            self.clear(i, len(slot.tokens), req.fed)
        req.ended = True
        events.append((req, reason))
        if i < self.d:  # keep the decoding rows together: the last of them takes the hole
            self.swap(i, self.d - 1)
            self.d -= 1

    # -- a step

    @torch.no_grad()
    def step(self):
        """One scheduling step (the module's docstring gives the rule)."""
        self.clock += 1
        events = []
        for s in list(self.slots):
            if s.req is not None and s.req.cancelled:
                self.free(s.req, 'cancelled', events)
        if not self.static or not self.running:
            while any(s.req is None for s in self.slots):
                try:
                    req = self.pending.get_nowait()
                except queue.Empty:
                    break
                if req.cancelled:
                    events.append((req, 'cancelled'))
                    continue
                req.admitted = next(self.admissions)
                self.admit(req)
        # one forward: the decoding rows, then chunks of prompts within the prefill budget
        segments = self.decoding()
        reading = len(segments)  # where the prompts' chunks start
        budget = self.prefill_chunk if self.d and not self.static else self.cache.block_size * len(self.slots)
        for req in sorted((s.req for s in self.slots[self.d:] if s.req is not None), key=lambda r: r.admitted):
            if budget <= 0:
                break
            T = min(len(req.prompt) - req.fed, budget)
            budget -= T
            segments.append((self.index(req), [req], T))
        if segments:
            self.finish(self.advance(segments), events)
        for _, (req,), _ in segments[reading:]:
            if not req.ended and req.fed == len(req.prompt):  # its prompt is read: it decodes from the next step
                self.swap(self.index(req), self.d)
                self.d += 1
        self.deliver(events)

    def decoding(self):
        """The decoding rows' segments: runs of rows feeding their last token, and each row with guesses alone,
        feeding its last token and its guesses (seedgpt/speculative.py's prompt lookup, per row)."""
        segments = []
        for b, s in enumerate(self.slots[:self.d]):
            r = s.req
            r.guess = self.guesses(r)
            if r.guess or not segments or segments[-1][2] > 1:
                segments.append((b, [r], 1 + len(r.guess)))
            else:  # the run of one-token rows goes on
                segments[-1][1].append(r)
        return segments

    def guesses(self, r):
        """Up to r.k guesses of r's next tokens that fit its max_tokens and the context."""
        if not self.draft_tokens:
            return []
        if r.lookup is None:
            r.lookup, r.k = Lookup(), self.draft_tokens
        r.lookup.absorb(r.ids[len(r.lookup.seq):])
        k = min(r.k, r.max_tokens - r.generated - 1, self.cache.block_size - len(r.ids))
        return r.lookup.propose(k) if k > 0 else []

    def advance(self, segments):
        """Feed the segments' tokens ([(start slot, rows, T)]: T more ids of each row) in one forward, and
        sample the next token of each row that has then fed all its ids. Returns [(row, Token or 'error')].
        A forward of several rows that fails is run again row by row: only a row that fails alone ends."""
        rows = [(r, T) for _, rs, T in segments for r in rs]
        try:
            plan = self.cache.plan([(start, [r.fed for r in rs], T) for start, rs, T in segments])
            ids = [i for r, T in rows for i in (r.ids[r.fed:r.fed + T] + r.guess)[:T]] + [0] * plan.padding
            x = torch.tensor([ids], device=self.device)  # (1, N)
            if any(r.guess for r, _ in rows):  # logits at a guessing row's every token, not just its last
                plan.last = [i for (r, T), last in zip(rows, plan.last)
                             for i in (range(last - T + 1, last + 1) if r.guess else (last,))]
            logits, _ = self.model(x, cache=plan)  # (1, logits rows, V): at each row's last token (or tokens)
            first = list(itertools.accumulate((1 + len(r.guess) for r, _ in rows), initial=0))
            done = [b for b, (r, T) in enumerate(rows) if r.fed + T == len(r.ids) + len(r.guess)]
            tokens = self.check([rows[b][0] for b in done], logits[0].float(), [first[b] for b in done])
        except Exception as e:
            if len(rows) == 1:  # the row's exception goes with it: whoever waits on it logs it (or raises it)
                rows[0][0].error = e
                return [(rows[0][0], 'error')]
            alone = [(start + b, [r], T) for start, rs, T in segments for b, r in enumerate(rs)]
            return [out for segment in alone for out in self.advance([segment])]
        kept = dict(zip(done, (len(ts) - 1 for ts in tokens)))  # the guesses each row keeps
        slots = [start + b for start, rs, _ in segments for b in range(len(rs))]
        for b, (r, T) in enumerate(rows):
            if not r.guess:
                r.fed += T
                continue
            r.fed += 1 + kept[b]
            self.clear(slots[b], r.fed, r.fed + T - 1 - kept[b])  # the refused guesses' keys: zeros past length()
            r.k, r.guess = next_k(r.k, len(r.guess), kept[b], self.draft_tokens), []
        return [(rows[b][0], t) for b, ts in zip(done, tokens) for t in ts]

    def check(self, rows, logits, first):
        """Each row's tokens [Token] from its logits starting at row first[b] of logits (N, V): the token the
        row samples after its last one, and where it has guesses, the tokens at the guesses' positions while
        each sampled token is the guess (verify_point's rule: the row's draws and tokens are the plain ones)."""
        out = [[t] for t in self.sample(rows, logits[first])] if rows else []
        going = [b for b, r in enumerate(rows) if r.guess]
        for j in itertools.count():
            going = [b for b in going if j < len(rows[b].guess) and out[b][-1].id == rows[b].guess[j]]
            if not going:
                return out
            for b, t in zip(going, self.sample([rows[b] for b in going], logits[[first[b] + j + 1 for b in going]])):
                out[b].append(t)

    def sample(self, rows, logits):
        """A Token for each row from its logits (B, V): one batched sampling (seedgpt.sampling) and one transfer
        for all rows. Each row draws one uniform number per token from its own generator, whatever its
        neighbours do, so a seeded request gets the same draws in any batch."""
        banned = [r.ban_ids for r in rows] if any(r.ban_ids for r in rows) else None
        t = torch.tensor([r.temperature for r in rows], device=logits.device)
        u = None
        if max(r.temperature for r in rows) >= GREEDY_BELOW:  # all greedy: no draws, as alone
            u = torch.tensor([r.rng.random() for r in rows], dtype=torch.float64, device=logits.device)
        p = torch.tensor([r.top_p for r in rows], device=logits.device)
        ids = sample(logits, t, top_p=p, uniform=u, banned=banned)
        if all(r.logprobs is None for r in rows):
            return [Token(i, None, None) for i in ids.tolist()]
        # a char model may have fewer than 20 tokens: top_logprobs gives what there is, banned ids never
        chosen, top = top_logprobs(logits, ids, max(r.logprobs or 0 for r in rows), banned)
        return [Token(i, lp, tp[:r.logprobs] if r.logprobs is not None else None)
                for i, lp, tp, r in zip(ids.tolist(), chosen, top, rows)]

    def finish(self, results, events):
        """Send each row its token; end the rows that hit a stop id, their max_tokens or an error."""
        for req, tok in results:
            if req.ended:  # a stop id or max_tokens came before this row's later tokens of the step
                continue
            if tok == 'error':
                self.free(req, 'error', events)
                continue
            req.ids.append(tok.id)
            events.append((req, tok))
            if tok.id in req.stop_ids or tok.id >= self.vocab_size:
                self.free(req, 'stop', events)
            elif req.generated >= req.max_tokens:
                self.free(req, 'length', events)

    def deliver(self, events):
        """Hand a step's tokens to their requests: one wake-up of each event loop per step, not one per token."""
        by_loop = {}
        for req, item in events:
            if req.loop is None:
                req.out.put(item)
            else:
                by_loop.setdefault(req.loop, []).append((req, item))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(put_all, items)
            except RuntimeError:  # the loop has closed: nobody is listening
                for req, _ in items:
                    req.cancelled = True


def put_all(items):
    for req, item in items:
        req.out.put_nowait(item)
