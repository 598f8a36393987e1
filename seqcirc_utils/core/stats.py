"""Small statistics over prompts: bootstrap intervals of a ratio of means (over prompts, or over clusters of
prompts), and rank correlation.

A circuit's score is a ratio of two dataset means (the circuit's metric over the full model's, or
``1 - KL(circuit) / KL(nothing kept)``); the samples are small (15-30 prompts after filtering), so
every reported score carries a percentile bootstrap interval over prompts: prompts are resampled
with replacement, the ratio of the two resampled means is recomputed per resample, and the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those ratios are the interval. Resampling
is seeded (a :class:`torch.Generator`), so the same inputs and seed give the same interval.

Prompts are not independent: several share one **sequence identity** (:attr:`TaskDataset.sequence_ids`,
the member tuple; prompts differing only in fillers or corruptions). The **cluster bootstrap**
(:func:`cluster_bootstrap_ratio_ci`, :func:`cluster_bootstrap_mean_ci`) resamples the ``K`` distinct
identities with replacement (``K`` draws per resample) and takes *all* prompts of each drawn identity, so a
resample's mean is ``sum of the drawn clusters' prompt sums / their prompt count``. Its interval is over the
unit that is independent (``ci_unit = "sequence"``, ``n_clusters = K``): repeating prompts inside a cluster
does not narrow it, while the prompt-level :func:`bootstrap_ratio_ci` treats the copies as new evidence.
"""

from __future__ import annotations

import pandas as pd
import torch

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError
from seqcirc_utils.core.options import N_RESAMPLES

LEVEL = 0.95


def bootstrap_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """Prompt indices of ``n_resamples`` bootstrap resamples of ``n`` prompts, ``[n_resamples, n]`` (seeded)."""
    if n < 1:
        raise TooFewPromptsError(f"a bootstrap needs at least one prompt, got n={n}")
    if n_resamples < 1:
        raise ParameterError(f"n_resamples must be >= 1, got {n_resamples}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n, (n_resamples, n), generator=gen)


def bootstrap_ratio_ci(
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    complement: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(numerator) / mean(denominator)`` over prompts.

    ``numerator`` and ``denominator`` are per-prompt values ``[n]`` (paired: both resampled with the
    same indices). With ``complement=True`` the statistic is ``1 - ratio`` (the KL score). Resamples
    whose denominator mean is 0 are dropped. Returns ``(lo, hi)`` in the statistic's units.
    """
    if not 0 < level < 1:
        raise ParameterError(f"level must be in (0, 1), got {level}")
    num = torch.as_tensor(numerator, dtype=torch.float64).detach().cpu().flatten()
    den = torch.as_tensor(denominator, dtype=torch.float64).detach().cpu().flatten()
    if num.shape != den.shape:
        raise ValueError(f"numerator {tuple(num.shape)} and denominator {tuple(den.shape)} must pair prompt by prompt")
    idx = bootstrap_indices(len(num), n_resamples, seed)
    num_means, den_means = num[idx].mean(1), den[idx].mean(1)
    ok = den_means != 0
    if not bool(ok.any()):
        raise ZeroDivisionError("every resample's denominator mean is 0; the ratio is undefined")
    ratio = num_means[ok] / den_means[ok]
    if complement:
        ratio = 1.0 - ratio
    tail = (1.0 - level) / 2
    lo, hi = torch.quantile(ratio, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return float(lo), float(hi)


CI_UNIT_SEQUENCE = "sequence"
CI_UNIT_PROMPT = "prompt"


def cluster_codes(clusters) -> tuple[torch.Tensor, int]:
    """Integer cluster codes ``[n]`` (``0..K-1`` in order of first appearance) for cluster labels
    (any hashables, e.g. :attr:`TaskDataset.sequence_ids`), and ``K`` the number of distinct clusters."""
    codes: dict = {}
    out = [codes.setdefault(c, len(codes)) for c in clusters]
    if not out:
        raise ValueError("a cluster bootstrap needs at least one prompt")
    return torch.tensor(out, dtype=torch.long), len(codes)


def cluster_bootstrap_draws(n_clusters: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """Cluster codes drawn with replacement, ``[n_resamples, n_clusters]`` (seeded): resample ``r`` takes
    every prompt of clusters ``draws[r, 0], draws[r, 1], ...`` (a cluster drawn twice counts twice)."""
    return bootstrap_indices(n_clusters, n_resamples, seed)


def cluster_bootstrap_means(
    values: torch.Tensor, clusters, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> torch.Tensor:
    """Per-resample means of ``values`` under the cluster bootstrap.

    ``values``: ``[n]`` or ``[n_series, n]`` per-prompt values (several series are resampled with the
    *same* draws, paired); ``clusters``: ``n`` cluster labels. Returns ``[n_resamples]`` or
    ``[n_series, n_resamples]``: for each resample, the mean over all prompts of the drawn clusters.
    Computed from per-cluster sums and counts (no ragged index lists).
    """
    vals = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    squeeze = vals.dim() == 1
    vals = vals.reshape(1, -1) if squeeze else vals
    codes, k = cluster_codes(clusters)
    if vals.shape[1] != len(codes):
        raise ValueError(f"{vals.shape[1]} values but {len(codes)} cluster labels; give one label per prompt")
    sums = torch.zeros(vals.shape[0], k, dtype=torch.float64).index_add_(1, codes, vals)  # [series, K]
    counts = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, torch.ones(len(codes), dtype=torch.float64))
    draws = cluster_bootstrap_draws(k, n_resamples, seed)  # [R, K]
    means = sums[:, draws].sum(-1) / counts[draws].sum(-1)  # [series, R]
    return means[0] if squeeze else means


def _percentile_interval(stat: torch.Tensor, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2
    lo, hi = torch.quantile(stat, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return float(lo), float(hi)


def cluster_bootstrap_ratio_ci(
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    clusters,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    complement: bool = False,
) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of ``mean(numerator) / mean(denominator)``.

    ``numerator``, ``denominator``: paired per-prompt values ``[n]``; ``clusters``: ``n`` labels (the
    prompts' sequence identities). Each resample draws the ``K`` clusters with replacement and takes all
    their prompts (:func:`cluster_bootstrap_means`); resamples whose denominator mean is 0 are dropped.
    ``complement=True``: the statistic is ``1 - ratio``. With every prompt its own cluster this is
    exactly :func:`bootstrap_ratio_ci` (same draws for the same seed). Returns ``(lo, hi)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    num = torch.as_tensor(numerator, dtype=torch.float64).detach().cpu().flatten()
    den = torch.as_tensor(denominator, dtype=torch.float64).detach().cpu().flatten()
    if num.shape != den.shape:
        raise ValueError(f"numerator {tuple(num.shape)} and denominator {tuple(den.shape)} must pair prompt by prompt")
    num_means, den_means = cluster_bootstrap_means(torch.stack([num, den]), list(clusters), n_resamples, seed)
    ok = den_means != 0
    if not bool(ok.any()):
        raise ZeroDivisionError("every resample's denominator mean is 0; the ratio is undefined")
    ratio = num_means[ok] / den_means[ok]
    return _percentile_interval(1.0 - ratio if complement else ratio, level)


def cluster_bootstrap_mean_ci(
    values: torch.Tensor, clusters, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of ``mean(values)`` (``values`` ``[n]``, ``clusters`` ``n`` labels)."""
    return _percentile_interval(cluster_bootstrap_means(values, list(clusters), n_resamples, seed), level)


def n_clusters(clusters) -> int:
    """The number of distinct cluster labels."""
    return len(set(clusters))


def ratio_of_means(numerator: torch.Tensor, denominator: torch.Tensor, complement: bool = False) -> float:
    """The point estimate matching :func:`bootstrap_ratio_ci`: ``mean(num) / mean(den)`` (or ``1 -`` it)."""
    num = torch.as_tensor(numerator, dtype=torch.float64).flatten()
    den = torch.as_tensor(denominator, dtype=torch.float64).flatten()
    ratio = float(num.mean() / den.mean())
    return 1.0 - ratio if complement else ratio


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation (Pearson on average ranks; needs no scipy)."""
    return float(a.rank().corr(b.rank()))


def roc_auc(scores, positives) -> float:
    """Area under the ROC curve of ``scores`` (``{item: score}``, higher = predicted positive) against the
    set ``positives``: the probability that a random positive scores above a random negative, ties counting
    one half (the Mann-Whitney statistic). NaN when either class is empty."""
    pos = [float(v) for k, v in scores.items() if k in positives]
    neg = [float(v) for k, v in scores.items() if k not in positives]
    if not pos or not neg:
        return float("nan")
    values = pd.Series(pos + neg).rank()  # average ranks: ties count one half
    rank_sum = float(values.iloc[: len(pos)].sum())
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
