"""Small statistics over prompts: bootstrap intervals of a ratio of means, and rank correlation.

A circuit's score is a ratio of two dataset means (the circuit's metric over the full model's, or
``1 - KL(circuit) / KL(nothing kept)``); the samples are small (15-30 prompts after filtering), so
every reported score carries a percentile bootstrap interval over prompts: prompts are resampled
with replacement, the ratio of the two resampled means is recomputed per resample, and the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those ratios are the interval. Resampling
is seeded (a :class:`torch.Generator`), so the same inputs and seed give the same interval.
"""

from __future__ import annotations

import pandas as pd
import torch

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError

N_RESAMPLES = 1000
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


def ratio_of_means(numerator: torch.Tensor, denominator: torch.Tensor, complement: bool = False) -> float:
    """The point estimate matching :func:`bootstrap_ratio_ci`: ``mean(num) / mean(den)`` (or ``1 -`` it)."""
    num = torch.as_tensor(numerator, dtype=torch.float64).flatten()
    den = torch.as_tensor(denominator, dtype=torch.float64).flatten()
    ratio = float(num.mean() / den.mean())
    return 1.0 - ratio if complement else ratio


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation (Pearson on average ranks; needs no scipy)."""
    return float(a.rank().corr(b.rank()))
