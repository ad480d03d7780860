"""
The one sampler: how the next token is chosen from the logits, for sample.py, the agent, RL's rollouts and
the serving engine alike.

    ids = sample(logits, temperature=0.8, top_k=200, top_p=0.95, uniform=draws(generator, B))

Every setting may be one value for all rows or a (B,) tensor of one value per row (a server's requests
each ask for their own). A row draws with its own uniform number, and its token depends on its own
logits, settings and draw alone, never on its batch neighbours'. It is the inverse of the cumulative
distribution: add the probabilities up in vocabulary order, and take the first token whose running sum
passes u times the total. filtered_probs is that distribution itself, for whatever compares it (speculative
sampling, seedgpt/speculative.py).
"""
import torch
from torch.nn import functional as F

# temperatures under this decode greedily: logits / 1e-40 would overflow to inf
GREEDY_BELOW = 1e-5


def draws(generator, B, device='cpu'):
    """(B,) uniform numbers in [0, 1), in float64: a float32 draw can round up to exactly 1.0 (1 - 2^-26
    does), and the inverse CDF would then land past the last token of non-zero probability."""
    return torch.rand(B, dtype=torch.float64, generator=generator).to(device)


def per_row(value, B, device, dtype=torch.float32):
    """A setting as a (B,) tensor: one value for all rows, or already one per row."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype).reshape(B)
    return torch.full((B,), float(value), device=device, dtype=dtype)


def ban(logits, ids):
    """logits with the ids never to generate at -inf: one list for every row, or one list per row."""
    if not ids:
        return logits
    V = logits.size(-1)
    if isinstance(ids[0], (list, tuple, set, frozenset)):  # one list per row
        pairs = [(b, i) for b, row in enumerate(ids) for i in row if i < V]
    else:
        pairs = [(b, i) for b in range(logits.size(0)) for i in ids if i < V]
    if pairs:
        b, i = torch.tensor(pairs, device=logits.device).unbind(1)
        logits = logits.index_put((b, i), torch.tensor(float('-inf'), device=logits.device))
    return logits


def filtered_probs(logits, temperature, top_k=None, top_p=None):
    """The distribution (N, V) in float64 that sample() draws each row of logits (N, V) from, normalized:
    softmax(logits / temperature), then top_k and top_p; a one-hot of the argmax for a row under GREEDY_BELOW.
    Speculative sampling (seedgpt/speculative.py) compares the model's and the draft's with it."""
    N, V = logits.shape
    t = per_row(temperature, N, logits.device)
    x = logits.float() / t.clamp(min=GREEDY_BELOW)[:, None]
    if top_k is not None:
        k = per_row(top_k, N, logits.device, torch.long)
        k = torch.where((k <= 0) | (k > V), V, k)
        if bool((k < V).any()):
            # each row's k-th largest logit is its threshold: everything below it goes
            kth = x.topk(int(k.max()), dim=-1).values.gather(-1, (k - 1)[:, None])
            x = x.masked_fill(x < kth, float('-inf'))
    # float64 sums: a float32 running sum that stops growing before its end (tiny probabilities added to
    # ~1) could leave u * total past it, and the search would land on a token of zero probability
    probs = F.softmax(x, dim=-1).double()
    if top_p is not None:
        p = per_row(top_p, N, logits.device, torch.float64)
        if bool((p < 1).any()):
            # the nucleus: the likeliest tokens until their mass reaches p. It is found on the sorted
            # probabilities, but the tokens stay in vocabulary order, so that a row's token for a given draw
            # does not depend on whether its batch neighbours asked for a nucleus too
            ranked = probs.sort(dim=-1, descending=True).values
            kept = (ranked.cumsum(dim=-1) - ranked <= p[:, None]).sum(dim=-1, keepdim=True)  # >= 1 per row
            probs = probs.masked_fill(probs < ranked.gather(-1, kept - 1), 0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    if isinstance(temperature, torch.Tensor) or temperature < GREEDY_BELOW:  # else no row is greedy: fewer ops
        probs = torch.where((t < GREEDY_BELOW)[:, None], F.one_hot(logits.argmax(dim=-1), V).double(), probs)
    return probs


def draw(probs, u):
    """One token (N,) from each row of probs (N, V), not necessarily normalized, by the inverse CDF at the
    float64 uniform numbers u (N,): add the probabilities up in vocabulary order, and take the first token
    whose running sum passes u times the total."""
    cdf = probs.cumsum(dim=-1)
    u = u.to(device=probs.device, dtype=torch.float64).reshape(-1, 1)
    # right=True: the first token whose running sum passes the draw, so never one of probability 0; and
    # never past the token where the sum reaches its total, whatever the rounding of u * total
    k = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return torch.minimum(k, (cdf < cdf[:, -1:]).sum(dim=-1, keepdim=True))[:, 0]


def sample(logits, temperature=1.0, top_k=None, top_p=None, uniform=None, banned=None):
    """The next token (B,) of each row of logits (B, V): a draw from filtered_probs.

    temperature: below GREEDY_BELOW a row takes its argmax (and uses no draw); else softmax(logits / t).
    top_k: keep each row's k likeliest tokens (None or 0: all). top_p: keep the smallest set of likeliest
    tokens whose mass reaches p (None or 1: all); the likeliest token is always kept. uniform: (B,) float64
    numbers in [0, 1), one per row (draws()); banned: ids never generated (one list, or one per row).
    """
    B, V = logits.shape
    logits = ban(logits, banned)
    scalar = not isinstance(temperature, torch.Tensor)
    if scalar and temperature < GREEDY_BELOW:  # the common greedy case in a few ops: decoding is op-bound
        return logits.argmax(dim=-1)
    t = per_row(temperature, B, logits.device)
    if not scalar and bool((t < GREEDY_BELOW).all()):
        return logits.argmax(dim=-1)
    if uniform is None:
        raise ValueError("sampling at temperature > 0 needs uniform draws (seedgpt.sampling.draws)")
    return draw(filtered_probs(logits, temperature, top_k, top_p), uniform)


def top_logprobs(logits, ids, k, banned=None):
    """Each row's chosen token's log-probability (B,) and its k likeliest alternatives [(id, logprob)] per
    row, under the model's own distribution (before temperature and top_p, as OpenAI reports them). Banned
    ids are never reported: there are fewer than k alternatives when the vocabulary has no more."""
    logp = F.log_softmax(ban(logits.float(), banned), dim=-1)
    chosen = logp.gather(-1, ids[:, None])[:, 0].tolist()
    top_lp, top_ids = logp.topk(min(k, logp.size(-1)), dim=-1)
    top = [[(i, lp) for i, lp in zip(ri, rl) if lp != float('-inf')]
           for ri, rl in zip(top_ids.tolist(), top_lp.tolist())]
    return chosen, top
