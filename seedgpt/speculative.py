"""
Speculative decoding: a cheap draft guesses the next k tokens, the model checks all k in one forward, and
keeps the guesses it would have made itself. A one-token step on a CPU mostly streams the weights, and
checking k + 1 tokens streams them once too, so an accepted guess costs far less than a step of its own (on
a small model, whose step is mostly fixed costs per op, less so: docs/benchmarks.md measures it).

    for next_id in generate_stream(model, idx, 200, temperature=0, draft='ngram'):   # prompt lookup
    for next_id in generate_stream(model, idx, 200, temperature=0.8, draft=small):    # a smaller model

Two drafts:
  'ngram'  prompt lookup (as llama.cpp's server drafts): find the last few tokens earlier in the prompt
           and the text so far, and propose what followed them. No model, so it costs next to nothing;
           it pays on code and on answers that copy from the prompt or a tool's result.
  a model  a smaller seedgpt model on the same tokenizer (a distilled student) drafts k tokens, one at a
           time through its own KV cache.

Exact: the output is what plain decoding gives. At temperature 0 each guess is kept while it equals the
model's argmax, so the tokens are the same, token for token. Above 0, speculative sampling (Leviathan et al.
2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318): a guess x drawn from the draft's q is kept with
probability min(1, p(x) / q(x)), and the first one refused is replaced by a draw from norm(max(0, p - q)).
Each token is then distributed as p, the model's own distribution after temperature, top_k and top_p
(seedgpt/sampling.py's filtered_probs, which sample() draws from too). For 'ngram' q is a point mass on the
guess, keeping x with probability p(x): the same as letting the model sample each position with plain
decoding's own draws and keeping x while it is the token drawn, which is what verify_point does, so 'ngram'
gives plain decoding's very text for a seed. After the accepted guesses the model's own next token comes
free, from the same forward.

The KV cache rolls back past the first refused guess by setting its position back: the keys past it are
overwritten by the next forward. A batch of rows advances together (one cache position for all), so each
step keeps the fewest accepted among the rows; the kept tokens of every row are still exact, since where a
row stops is decided before its later tokens are drawn. k adapts (Pace): for prompt lookup, to the share of
guesses that come true and the measured cost of a longer forward, down to 0 where guesses fail; for a draft
model, it grows while every guess is kept and shrinks when one is refused.
"""
import time

import torch

from model import Cache, KVCache
from seedgpt.sampling import GREEDY_BELOW, draw, draws, filtered_probs, per_row, sample


def row_settings(value, B, K, device, dtype=torch.float32):
    """A setting for B rows as one for each of their K positions (B * K,), row-major; None stays None."""
    if value is None or not isinstance(value, torch.Tensor):
        return value
    return per_row(value, B, device, dtype).repeat_interleave(K)


def verify_point(logits, drafts, temperature, top_k=None, top_p=None, generator=None):
    """The model's verdict on K guesses per row that are point masses (ngram): (m, tokens (B, m + 1)). The
    model samples each position as plain decoding does, with sample() and the same draws in the same order,
    and a guess is kept while it is the token drawn; the first differing token is the model's own. So the
    text is plain decoding's for the same seed, and a guess x is kept with probability p(x): speculative
    sampling's min(1, p(x) / q(x)) for q a point mass on x. logits (B, K + 1, V), drafts (B, K)."""
    B, K = drafts.shape
    tokens = []
    for j in range(K + 1):
        u = draws(generator, B, logits.device) if temperature > 0 else None  # as generate_stream draws
        tokens.append(sample(logits[:, j], temperature, top_k, top_p, u))
        if j == K or bool((tokens[-1] != drafts[:, j]).any()):  # a batch keeps the fewest accepted
            break
    return len(tokens) - 1, torch.stack(tokens, dim=1) if len(tokens) > 1 else tokens[0][:, None]


def verify(logits, drafts, q, temperature, top_k=None, top_p=None, generator=None):
    """The model's verdict on K guesses per row drawn from the draft's distributions q (B, K, V), by
    speculative sampling: (m, tokens (B, m + 1)). logits (B, K + 1, V) are the model's at the positions that
    predict each guess and the one after; drafts (B, K). Every row keeps its first m guesses, m the fewest
    any row accepted, then one token of its own."""
    B, K, V = q.shape
    settings = [row_settings(s, B, K + 1, logits.device, d) for s, d in
                ((temperature, torch.float32), (top_k, torch.long), (top_p, torch.float64))]
    p = filtered_probs(logits.reshape(B * (K + 1), V), *settings).view(B, K + 1, V)
    p_d, q_d = (x.gather(-1, drafts[..., None])[..., 0] for x in (p[:, :K], q))  # (B, K) each guess's p, q
    u = torch.rand(B, K, dtype=torch.float64, generator=generator).to(logits.device)
    ok = u * q_d < p_d  # accept with probability min(1, p / q); q_d > 0, as the draft drew it
    n = ok.long().cumprod(dim=1).sum(dim=1)  # (B,) each row's accepted prefix
    m = int(n.min())
    own = p[:, m]  # (B, V): the model's distribution at the first position not all rows accepted
    if m < K:
        refused = (n == m)[:, None]
        # after a refusal, the mass p has beyond q: norm(max(0, p - q)), never empty when p(x) < q(x)
        rest = (own - q[:, m]).clamp(min=0)
        rest = torch.where(refused & (rest.sum(dim=-1, keepdim=True) > 0), rest, own)
        token = torch.where(refused[:, 0], draw(rest, draws(generator, B, logits.device)), drafts[:, m])
    else:
        token = draw(own, draws(generator, B, logits.device))
    return m, torch.cat([drafts[:, :m], token[:, None]], dim=1)


class Lookup:
    """Prompt lookup for one row: the tokens that followed the latest earlier occurrence of the text's last n
    tokens, trying the longest n first (a longer match is a surer guess).

    It keeps, for every n-gram seen, where the token after its latest occurrence is: a dict updated as tokens
    come, so a lookup costs a few dict reads, not a scan of the text. It also keeps how often its first guess
    turned out right (a running average, over guesses used or not: the text shows it anyway), and guesses
    nothing while that is under min_rate, where checking a guess would cost more than it brings."""

    def __init__(self, max_n=4, min_n=2, min_rate=0.25):
        self.max_n, self.min_n, self.min_rate = max_n, min_n, min_rate
        self.seq, self.after = [], {}  # the text so far; n-gram -> index of the token after its latest occurrence
        self.rate, self.guess = 0.5, None  # the running share of right first guesses; the last first guess

    def absorb(self, tokens):
        """Append the text's next tokens (the first one says whether the last first guess was right)."""
        if self.guess is not None and tokens:
            self.rate += ((tokens[0] == self.guess) - self.rate) / 16
            self.guess = None
        seq, after = self.seq, self.after
        for token in tokens:
            for n in range(self.min_n, min(self.max_n, len(seq)) + 1):
                after[tuple(seq[-n:])] = len(seq)
            seq.append(token)

    def propose(self, k):
        """Up to k guesses for the next tokens (a list); none while too few first guesses come true."""
        seq, after, found = self.seq, self.after, []
        for n in range(min(self.max_n, len(seq)), self.min_n - 1, -1):
            i = after.get(tuple(seq[-n:]))
            if i is not None:
                found = seq[i:i + max(k, 1)]  # one at least: the first guess is scored even when none is asked
                break
        self.guess = found[0] if found else None
        return found[:k] if self.rate >= self.min_rate else []


class NgramDraft:
    """Prompt lookup (Lookup) for each row of a batch, which gets the shortest row's guess length: its rows are
    kept only as far as the fewest accepted."""

    def __init__(self, B, pad):
        self.rows = [Lookup() for _ in range(B)]
        self.pad = [int(p) for p in pad] if pad is not None else [0] * B
        self.seen = 0  # the columns of ids read so far

    def propose(self, ids, t, k, pad, sampling):
        """(B, K <= k) guesses for positions t.. of ids (B, >= t), and None: each is a point mass."""
        for b, row in enumerate(ids[:, self.seen:t].tolist()):
            self.rows[b].absorb(row[max(0, self.pad[b] - self.seen):])  # without the padding
        self.seen = t
        guesses = [r.propose(k) for r in self.rows]
        K = min(len(g) for g in guesses)
        if K == 0:
            return ids[:, :0], None
        return torch.tensor([g[:K] for g in guesses], dtype=ids.dtype, device=ids.device), None

    @property
    def rate(self):
        """The share of first guesses that come true, in the row where it is lowest."""
        return min(r.rate for r in self.rows)

    def accepted(self, t, m):
        pass


class ModelDraft:
    """A smaller model drafts k tokens one at a time, from the same settings as the model samples with, and
    keeps its own KV cache and window (its block_size may be shorter). Its cache rolls back like the
    model's: to the tokens it holds that are still the text."""

    def __init__(self, model, pad):
        self.model, self.pad, self.bs = model, pad, model.config.block_size
        self.cache, self.start, self.held = None, 0, 0  # the cache holds the text's tokens [start, held)

    def propose(self, ids, t, k, pad, sampling):
        temperature, top_k, top_p, generator = sampling
        k = min(k, self.bs // 2)
        if k == 0:
            return ids[:, :0], None
        if self.cache is None or t + k - 1 - self.start > self.bs:
            # the draft's window is full: jump as generate_stream does, keeping the last half-window
            self.start = max(0, t - self.bs // 2)
            pad = None if self.pad is None else (self.pad - self.start).clamp(min=0)
            self.cache, self.held = KVCache(self.model.config, pad), self.start
        self.cache.pos = self.held - self.start  # roll back to the tokens that are still the text
        x, drafts, qs = ids[:, self.held:t], [], []
        greedy = not isinstance(temperature, torch.Tensor) and temperature < GREEDY_BELOW
        for _ in range(k):
            logits, _ = self.model(x, cache=self.cache)
            logits = logits[:, -1, :]
            if greedy:
                x = logits.argmax(dim=-1, keepdim=True)
            else:
                q = filtered_probs(logits, temperature, top_k, top_p)
                x = draw(q, draws(generator, ids.size(0), ids.device))[:, None]
                qs.append(q)
            drafts.append(x)
        self.held = t + k - 1  # the last draft was never fed
        return torch.cat(drafts, dim=1), torch.stack(qs, dim=1) if qs else None

    def accepted(self, t, m):
        self.held = min(self.held, t + m)  # drafts past the accepted ones are not the text


def make_draft(draft, model, B, pad):
    """The per-stream draft for generate_stream's draft argument: 'ngram' or a model."""
    if draft == 'ngram':
        return NgramDraft(B, pad)
    if isinstance(draft, torch.nn.Module):
        if draft.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"the draft's vocabulary ({draft.config.vocab_size}) is not the model's "
                             f"({model.config.vocab_size}): it needs the same tokenizer")
        return ModelDraft(draft, pad)
    raise ValueError(f"unknown draft {draft!r}: 'ngram', a model, or None")


def next_k(k, K, m, max_k):
    """The next step's number of guesses: one more while every guess is kept, back to the accepted count
    plus one after a refusal. A step with no guess (no ngram match) leaves k as it is."""
    if K == 0:
        return k
    return min(max_k, k + 1) if m == K else max(1, m + 1)


class Pace:
    """How many guesses the next step checks, up to `most`.

    Prompt lookup's guesses change only the speed (the text is plain decoding's whatever is guessed), so there k
    is the one that promises the most tokens per second: with a the share of first guesses that come true, k
    guesses give about 1 + a + ... + a^k tokens (each kept only after the ones before it) for a step (guessing,
    a forward of k + 1 tokens, checking) whose seconds are measured as they come. A small model's forward is
    mostly fixed costs per op, so one of several tokens costs more than reading the weights once suggests, and
    where few guesses come true k falls to 0 (k is chosen again every few steps: a small model's step is short,
    and the choice is part of it). A draft model's guesses also decide which random draws are used, so there k
    follows the tokens alone (next_k), and a seed always gives the same text."""

    def __init__(self, most, timed):
        self.most, self.timed, self.k, self.steps = most, timed, most, 0
        self.seconds = {}  # tokens per forward -> running mean of its step's seconds (not the cache's refills)

    def cost(self, k):
        """The seconds of a step checking k guesses: measured, else along the longest measured one's slope, else
        a tenth more per guess."""
        if k + 1 in self.seconds:
            return self.seconds[k + 1]
        T = max(self.seconds)
        slope = (self.seconds[T] / self.seconds[1] - 1) / (T - 1) if T > 1 else 0.1
        return self.seconds[1] * (1 + slope * k)

    def update(self, K, m, seconds, a):
        """After a step that checked K guesses and kept m in `seconds` (None: it refilled the cache, which is
        no measure of a step); a is the share of first guesses that come true."""
        if seconds is not None:
            s = self.seconds.get(K + 1, seconds)
            self.seconds[K + 1] = s + (seconds - s) / 8
        self.steps += 1
        if not self.timed or 1 not in self.seconds:
            self.k = next_k(self.k, K, m, self.most)
        elif self.steps % 4 == 0:
            self.k = max(range(self.most + 1), key=lambda k: sum(a ** i for i in range(k + 1)) / self.cost(k))


def speculative_stream(model, idx, max_new_tokens, draft, draft_tokens=4, temperature=1.0, top_k=None,
                       top_p=None, generator=None, pad=None, stats=None):
    """generate_stream with a draft: yields the same next tokens (B, 1), several per forward of the model.
    The window jumps past block_size exactly where generate_stream's does, so the tokens stay the same:
    a step's guesses never cross the window's end. stats, a dict, counts 'forwards', 'drafted' and
    'accepted' tokens."""
    bs = model.config.block_size
    B, T = idx.shape
    ids = idx.new_empty(B, T + max_new_tokens)
    ids[:, :T] = idx
    drafter, sampling = make_draft(draft, model, B, pad), (temperature, top_k, top_p, generator)
    pace = Pace(draft_tokens, timed=isinstance(drafter, NgramDraft))
    start = max(0, T - bs)
    cache, window, t = None, None, T
    stats = {} if stats is None else stats
    while t < T + max_new_tokens:
        if t - start > bs:
            start = t - bs // 2  # generate_stream's jump, at the same token
        with torch.inference_mode():
            # guesses that fit in the window and in max_new_tokens; the last token is always the model's own
            room = min(bs - (t - start), T + max_new_tokens - t - 1)
            clock = time.perf_counter()
            drafts, q = drafter.propose(ids, t, min(pace.k, room), pad, sampling) if room > 0 else (ids[:, :0], None)
            K = drafts.size(1)
            refill = window != start
            if refill:  # a fresh cache of the whole window, the guesses checked in the same forward
                cache, window = KVCache(model.config, pad), start
                x = ids[:, start:t]
            else:
                cache.pos = t - 1 - start
                x = ids[:, t - 1:t]
            cache.last = slice(-(K + 1), None) if K else Cache.last  # logits at the guesses too
            logits, _ = model(torch.cat([x, drafts], dim=1) if K else x, cache=cache)
            if q is None:  # point masses (ngram), or greedy
                m, tokens = verify_point(logits, drafts, temperature, top_k, top_p, generator)
            else:
                m, tokens = verify(logits, drafts, q, temperature, top_k, top_p, generator)
            ids[:, t:t + m + 1] = tokens
            cache.pos = t + m - start  # keep the accepted guesses' keys; the next forward overwrites the rest
            drafter.accepted(t, m)
            seconds = None if refill else time.perf_counter() - clock  # the whole step: guessing, forward, checking
        for key, n in (('forwards', 1), ('drafted', K), ('accepted', m)):
            stats[key] = stats.get(key, 0) + n
        pace.update(K, m, seconds, drafter.rate if pace.timed else None)
        for j in range(m + 1):
            yield ids[:, t + j:t + j + 1]
        t += m + 1
