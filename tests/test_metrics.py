import math

import pytest
import torch

from seqcirc_utils.core import metrics


def test_logit_diff_and_accuracy_by_hand():
    logits = torch.tensor([[1.0, 3.0, 0.5], [2.0, -1.0, 4.0]])
    ans = torch.tensor([1, 2])
    wrong = torch.tensor([0, 0])
    assert metrics.logit_diff(logits, ans, wrong).tolist() == [2.0, 2.0]
    assert metrics.mean_logit_diff(logits, ans, wrong) == 2.0
    assert metrics.top1_accuracy(logits, ans) == 1.0
    assert metrics.top1_accuracy(logits, wrong) == 0.0


def test_percent_and_recovery():
    assert metrics.percent_of_full(3.0, 4.0) == 75.0
    assert metrics.normalised_recovery(patched=2.0, clean=4.0, corrupted=0.0) == 0.5
    assert metrics.normalised_recovery(patched=-1.0, clean=3.0, corrupted=1.0) == -1.0
    with pytest.raises(ZeroDivisionError):
        metrics.percent_of_full(1.0, 0.0)


def test_kl_by_hand():
    full = torch.log(torch.tensor([[0.5, 0.5]]))
    other = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert metrics.kl_to_full(other, full).item() == pytest.approx(expected, rel=1e-5)
    assert metrics.kl_to_full(full, full).item() == pytest.approx(0.0, abs=1e-7)


def test_prob_of():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert metrics.prob_of(logits, torch.tensor([2])).item() == pytest.approx(0.5)


def test_greater_than_pd_two_digit_by_hand():
    # 4 "values" only for the arithmetic; the two-digit rule is v > t vs v <= t
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    groups = [[0], [1], [2], [3]]
    pd = metrics.greater_than_prob_diff(probs.log(), torch.tensor([1]), groups)
    assert pd.item() == pytest.approx((0.3 + 0.4) - (0.1 + 0.2))


def test_greater_than_pd_digit_mode_excludes_tie():
    p = torch.full((1, 10), 0.1)
    groups = [[d] for d in range(10)]
    # tens digit 3: greater = 4..9 (0.6), smaller = 0..2 (0.3), the tie digit 3 is excluded
    pd = metrics.greater_than_prob_diff(p.log(), torch.tensor([3]), groups)
    assert pd.item() == pytest.approx(0.6 - 0.3)
    assert metrics.greater_than_thresholds(torch.tensor([1732]), 10).item() == 3
    assert metrics.greater_than_thresholds(torch.tensor([1732]), 100).item() == 32


def test_two_digit_prob_diff_by_chain_rule_enumeration():
    gen = torch.Generator().manual_seed(0)
    first = torch.rand(3, 10, generator=gen) / 10  # need not sum to 1 (other tokens have mass)
    second = torch.rand(3, 10, 10, generator=gen) / 10
    yy = torch.tensor([0, 37, 99])
    got = metrics.two_digit_prob_diff(first, second, yy)
    for b in range(3):
        expected = sum(
            (1 if 10 * a + c > int(yy[b]) else -1) * float(first[b, a] * second[b, a, c])
            for a in range(10)
            for c in range(10)
        )
        assert got[b].item() == pytest.approx(expected, rel=1e-5)
    # YY = 99: nothing is larger, the PD is minus the total two-digit mass
    assert got[2].item() == pytest.approx(-float((first[2, :, None] * second[2]).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="expected first"):
        metrics.two_digit_prob_diff(first[:, :9], second, yy)


def test_bootstrap_ratio_of_means_by_hand():
    from seqcirc_utils.core.stats import bootstrap_indices, bootstrap_ratio_ci, ratio_of_means

    gen = torch.Generator().manual_seed(1)
    den = torch.rand(20, generator=gen) + 0.5
    num = den * 0.8 + 0.1 * torch.randn(20, generator=gen)
    lo, hi = bootstrap_ratio_ci(num, den, n_resamples=500, seed=7)
    # independent: the same resamples, ratio of means (not mean of ratios), numpy percentiles
    import numpy as np

    idx = bootstrap_indices(20, 500, 7).numpy()
    n, d = num.double().numpy(), den.double().numpy()
    ratios = n[idx].mean(1) / d[idx].mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])), rel=1e-9)
    assert lo <= ratio_of_means(num, den) <= hi
    assert bootstrap_ratio_ci(num, den, n_resamples=500, seed=7) == (lo, hi)  # seeded
    assert bootstrap_ratio_ci(num, den, n_resamples=500, seed=8) != (lo, hi)
    # a constant per-prompt ratio has no spread; the complement flips the interval
    assert bootstrap_ratio_ci(2 * den, den, n_resamples=50) == pytest.approx((2.0, 2.0))
    clo, chi = bootstrap_ratio_ci(num, den, n_resamples=500, seed=7, complement=True)
    assert (clo, chi) == pytest.approx((1 - hi, 1 - lo))
    with pytest.raises(ValueError, match="pair prompt by prompt"):
        bootstrap_ratio_ci(num, den[:5])


def test_spearman_is_rank_pearson():
    import pandas as pd

    from seqcirc_utils.core.stats import spearman

    a = pd.Series([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, pd.Series([2.0, 1.0, 4.0, 3.0])) == pytest.approx(0.6)
