"""Cluster bootstrap (intervals over sequence identities) against a brute-force loop, and its behaviour
when prompts are duplicated inside a cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqcirc_utils.core import stats


def _data(seed: int = 0):
    """Eleven prompts in five clusters of unequal size; numerator / denominator paired per prompt."""
    g = torch.Generator().manual_seed(seed)
    clusters = ["a", "a", "b", "c", "c", "c", "d", "b", "e", "e", "a"]
    den = 2.0 + torch.rand(len(clusters), generator=g, dtype=torch.float64)
    num = den * (0.5 + torch.rand(len(clusters), generator=g, dtype=torch.float64))
    return num, den, clusters


def _brute_force_ratio_ci(num, den, clusters, n_resamples, seed, level=0.95, complement=False):
    """An explicit loop: draw the clusters (same draws as the package), take every prompt of each drawn
    cluster (a cluster drawn twice contributes its prompts twice), ratio of the two means."""
    labels = list(dict.fromkeys(clusters))  # cluster code = order of first appearance
    members = {lab: [i for i, c in enumerate(clusters) if c == lab] for lab in labels}
    draws = stats.cluster_bootstrap_draws(len(labels), n_resamples, seed).tolist()
    ratios = []
    for row in draws:
        idx = [i for code in row for i in members[labels[code]]]
        r = float(num[idx].mean() / den[idx].mean())
        ratios.append(1 - r if complement else r)
    tail = (1 - level) / 2
    return tuple(np.quantile(np.array(ratios), [tail, 1 - tail]))


def test_cluster_ratio_ci_equals_brute_force_loop():
    num, den, clusters = _data()
    for seed, complement in [(0, False), (5, True)]:
        got = stats.cluster_bootstrap_ratio_ci(num, den, clusters, n_resamples=400, seed=seed, complement=complement)
        want = _brute_force_ratio_ci(num, den, clusters, 400, seed, complement=complement)
        assert got == pytest.approx(want, abs=1e-12)
    point = stats.ratio_of_means(num, den)
    lo, hi = stats.cluster_bootstrap_ratio_ci(num, den, clusters, n_resamples=400, seed=0)
    assert lo <= point <= hi and lo < hi


def test_cluster_mean_ci_equals_brute_force_and_is_seeded():
    num, _, clusters = _data(1)
    got = stats.cluster_bootstrap_mean_ci(num, clusters, n_resamples=300, seed=2)
    ones = torch.ones_like(num)
    assert got == pytest.approx(_brute_force_ratio_ci(num, ones, clusters, 300, 2), abs=1e-12)
    assert stats.cluster_bootstrap_mean_ci(num, clusters, n_resamples=300, seed=2) == got
    assert stats.cluster_bootstrap_mean_ci(num, clusters, n_resamples=300, seed=3) != got
    # paired series share their draws: the means of two series are those of each alone
    both = stats.cluster_bootstrap_means(torch.stack([num, 2 * num]), clusters, 50, 0)
    assert torch.allclose(both[1], 2 * stats.cluster_bootstrap_means(num, clusters, 50, 0))


def test_one_prompt_per_cluster_is_the_prompt_bootstrap():
    num, den, _ = _data(2)
    singletons = [f"s{i}" for i in range(len(num))]
    got = stats.cluster_bootstrap_ratio_ci(num, den, singletons, n_resamples=500, seed=4)
    assert got == pytest.approx(stats.bootstrap_ratio_ci(num, den, n_resamples=500, seed=4), abs=1e-12)


def test_duplicating_prompts_does_not_narrow_the_cluster_interval():
    """Eight sequences, one prompt each; then every prompt repeated 6 times (same sequence identity, as
    prompts that differ only in fillers). The prompt-level bootstrap treats the copies as new evidence
    and narrows (by about sqrt(6)); the cluster bootstrap gives the same interval as before."""
    g = torch.Generator().manual_seed(7)
    den = 1.0 + torch.rand(8, generator=g, dtype=torch.float64)
    num = den * (0.3 + torch.rand(8, generator=g, dtype=torch.float64))
    ids = [f"seq{i}" for i in range(8)]
    rep = 6
    num6, den6, ids6 = num.repeat_interleave(rep), den.repeat_interleave(rep), [i for i in ids for _ in range(rep)]

    def width(ci):
        return ci[1] - ci[0]

    base = stats.cluster_bootstrap_ratio_ci(num, den, ids, n_resamples=2000, seed=0)
    clustered = stats.cluster_bootstrap_ratio_ci(num6, den6, ids6, n_resamples=2000, seed=0)
    by_prompt = stats.bootstrap_ratio_ci(num6, den6, n_resamples=2000, seed=0)
    assert clustered == pytest.approx(base, abs=1e-12)  # duplicates change nothing: same draws, same means
    assert width(by_prompt) < 0.6 * width(clustered)  # the prompt-level interval is too narrow
    assert width(clustered) > 1.5 * width(by_prompt)


def test_bad_inputs():
    num, den, clusters = _data()
    with pytest.raises(ValueError, match="one label per prompt"):
        stats.cluster_bootstrap_ratio_ci(num, den, clusters[:-1])
    with pytest.raises(ValueError, match="pair prompt by prompt"):
        stats.cluster_bootstrap_ratio_ci(num, den[:5], clusters)
    with pytest.raises(ValueError, match="level"):
        stats.cluster_bootstrap_mean_ci(num, clusters, level=1.5)
    assert stats.n_clusters(clusters) == 5
