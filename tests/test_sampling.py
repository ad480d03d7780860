"""The one sampler (seedgpt/sampling.py): exact against the distribution it should draw from.

A grid of N evenly spaced uniform numbers stands in for N random draws: the inverse CDF then picks each
token for a share of the grid within 1/N of its probability, with no sampling noise to allow for.
"""
import torch
from torch.nn import functional as F

from seedgpt.sampling import GREEDY_BELOW, draw, draws, filtered_probs, sample, top_logprobs

N = 10_000
GRID = (torch.arange(N, dtype=torch.float64) + 0.5) / N


def shares(logits, **settings):
    """How often each token is picked when the grid's draws meet the same row of logits (1, V)."""
    picked = sample(logits.expand(N, -1), uniform=GRID, **settings)
    return torch.bincount(picked, minlength=logits.size(-1)).double() / N


def test_draws_follow_the_softmax_at_the_temperature():
    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(0)) * 2
    for t in (0.5, 1.0, 2.0):
        want = F.softmax(logits[0].double() / t, dim=-1)
        torch.testing.assert_close(shares(logits, temperature=t), want, rtol=0, atol=1.0 / N)


def test_top_k_and_top_p_keep_the_likeliest_renormalised():
    probs = torch.tensor([0.05, 0.30, 0.15, 0.50], dtype=torch.float64)
    logits = probs.log().float()[None]
    for top_p, nucleus in [(0.45, [3]), (0.7, [1, 3]), (0.9, [1, 2, 3]), (1.0, [0, 1, 2, 3])]:
        want = torch.zeros(4, dtype=torch.float64)
        want[nucleus] = probs[nucleus] / probs[nucleus].sum()
        torch.testing.assert_close(shares(logits, top_p=top_p), want, rtol=0, atol=2.0 / N)
    want = torch.zeros(4, dtype=torch.float64)
    want[[1, 3]] = probs[[1, 3]] / probs[[1, 3]].sum()
    torch.testing.assert_close(shares(logits, top_k=2), want, rtol=0, atol=2.0 / N)


def test_greedy_rows_and_settings_per_row():
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample(logits, 0.0), logits.argmax(-1))
    assert torch.equal(sample(logits, GREEDY_BELOW / 2), logits.argmax(-1))
    # one row at a time gives what the batch gives, each row with its own temperature, top_k, top_p and draw
    t = torch.tensor([0.0, 0.7, 1.0, 1.3, 0.0, 2.0])
    k = torch.tensor([0, 5, 1, 30, 3, 0])
    p = torch.tensor([1.0, 0.9, 0.5, 1.0, 0.2, 0.95])
    u = draws(torch.Generator().manual_seed(2), 6)
    together = sample(logits, t, k, p, u)
    for b in range(6):
        assert sample(logits[b:b + 1], t[b:b + 1], k[b:b + 1], p[b:b + 1], u[b:b + 1]).item() == together[b].item()
    assert together[0] == logits[0].argmax() and together[2] == logits[2].argmax()  # top_k 1 is greedy


def test_filtered_probs_is_the_distribution_each_row_asks_for():
    """filtered_probs (what sample draws from, and what speculative sampling compares) against a reference
    written apart, row by row: sort, keep the top_k, renormalize, keep the nucleus, renormalize; one-hot
    for greedy rows. The same draws then pick the same tokens from it as sample()."""
    g = torch.Generator().manual_seed(3)
    N, V = 48, 11
    logits = 3 * torch.randn(N, V, generator=g)
    t = torch.tensor([0.0, 0.5, 1.0, 2.0] * (N // 4))
    k = torch.tensor([0, 3, 5, 11, 1, 0] * (N // 6))
    p = torch.tensor([1.0, 0.9, 0.5, 0.3] * (N // 4))
    probs = filtered_probs(logits, t, k, p)
    for b in range(N):
        if t[b] < GREEDY_BELOW:
            want = F.one_hot(logits[b].argmax(), V).double()
        else:
            ranked, order = F.softmax(logits[b].double() / t[b].double(), dim=-1).sort(descending=True)
            ranked = ranked * (torch.arange(V) < (k[b] if k[b] > 0 else V))
            ranked = ranked / ranked.sum()
            ranked = ranked * (ranked.cumsum(-1) - ranked <= p[b].double())
            want = torch.zeros(V, dtype=torch.float64).scatter(-1, order, ranked / ranked.sum())
        torch.testing.assert_close(probs[b], want, rtol=0, atol=1e-6)
    for settings in [(1.0, None, None), (0.7, 4, None), (1.3, None, 0.8), (t, k, p)]:
        u = draws(g, N)
        assert torch.equal(draw(filtered_probs(logits, *settings), u), sample(logits, *settings, uniform=u))


def test_no_draw_picks_a_token_of_probability_zero():
    """The largest uniform below 1, with tokens of probability 0 at the end and banned ones: a float32 draw
    rounded such a number to 1.0, and the search then landed past the last possible token."""
    logits = torch.tensor([[2.0, 1.0, 0.5, float('-inf'), 3.0, float('-inf')]])
    top = torch.tensor([1 - 2.0 ** -53], dtype=torch.float64)
    for settings, banned in [({}, []), ({'top_p': 0.5}, []), ({'top_k': 2}, []), ({'banned': [4]}, [4]),
                             ({'banned': [[0, 4]]}, [0, 4])]:
        for u in (top, torch.zeros(1, dtype=torch.float64)):
            picked = sample(logits, 1.0, uniform=u, **settings).item()
            assert logits[0, picked] > float('-inf') and picked not in banned


def test_banned_ids_are_never_drawn_nor_reported():
    logits = torch.zeros(1, 4)
    assert shares(logits, banned=[1, 2])[[1, 2]].sum() == 0
    chosen, top = top_logprobs(logits, torch.tensor([0]), 10, banned=[1, 2])
    assert [i for i, _ in top[0]] in ([0, 3], [3, 0]) and abs(chosen[0] - torch.tensor(0.5).log().item()) < 1e-6
