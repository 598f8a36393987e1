import math

import pytest
import torch

from seqcirc_utils import metrics


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
