"""Which single heads matter: every head's estimated ablation effect, checked exactly for the largest.

Exact single-head ablation (:func:`~seqcirc_utils.scoring.ablation.single_component_effects`) costs one
(partial) forward pass per head: hundreds of passes on a model of a few hundred heads, minutes on a
CPU per task. Attribution patching (:func:`~seqcirc_utils.scoring.attribution.attribution_scores`) estimates
every head's effect from one forward and one backward pass. :func:`head_importance` does both where
each pays off: the estimate for every head (the per-head maps of the book's appendix), and the exact
ablation for the heads whose estimate is largest in magnitude (the tables and the paper's
single-head-ablation anchor), so the estimate is checked where it matters.

Units: **points** of the full model's metric, ``drop = 100 * (1 - m(head ablated) / m(full))``;
positive = ablating the head hurts. The estimate of the same quantity is ``-100 * attr / m(full)``
with ``attr`` the first-order change of the metric.
"""

from __future__ import annotations

import pandas as pd

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import AblationMode
from seqcirc_utils.core.records import HeadScores
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import AblatorCache, single_component_effects
from seqcirc_utils.scoring.attribution import attribution_scores
from seqcirc_utils.tasks.datasets import TaskDataset


def estimated_drops(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    components=None,
    mode: AblationMode | str = "mean",
    metric: str | None = None,
    ablators: AblatorCache | None = None,
) -> pd.Series:
    """Attribution-patching estimate of each component's single-ablation drop, in points (Series by name).

    One forward and one backward pass for all ``components`` (default: every head). ``metric=None``
    picks the dataset's default (greater-than: probability difference; otherwise logit difference).
    ``ablators``: the caller's :class:`~seqcirc_utils.scoring.ablation.AblatorCache` (None: a fresh Ablator).
    """
    ab = (ablators if ablators is not None else AblatorCache(max_size=1)).get(model, info, dataset, mode, metric)
    attr = attribution_scores(ab, list(info.heads if components is None else components))
    return (-100.0 * attr / ab.full_metric).rename("estimated_drop")


def head_importance(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    exact_top: int = 10,
    mode: AblationMode | str = "mean",
    metric: str | None = None,
    progress: bool = True,
    ablators: AblatorCache | None = None,
) -> pd.DataFrame:
    """Every head's estimated single-ablation drop, and the exact drop for the ``exact_top`` largest.

    Returns one row per head (forward order) with ``component``, ``layer``, ``head``,
    ``estimated_drop`` (points, attribution patching), ``drop_points`` (points, exact mean/zero/
    resample ablation of that head alone from the full model; NaN for heads not checked) and
    ``exact`` (whether it was checked). The checked heads are the ``exact_top`` with the largest
    ``|estimated_drop|``. Cost: one forward + one backward pass, plus ``exact_top`` partial passes.
    ``ablators``: the caller's :class:`~seqcirc_utils.scoring.ablation.AblatorCache`; the estimate and the
    exact check share one Ablator either way.
    """
    if exact_top < 0:
        raise ParameterError(f"exact_top must be >= 0 (heads checked by exact ablation), got {exact_top}")
    ablators = ablators if ablators is not None else AblatorCache(max_size=1)
    metric = ablators.get(model, info, dataset, mode, metric).metric  # resolve the dataset's default once
    estimate = estimated_drops(model, info, dataset, info.heads, mode, metric, ablators=ablators)
    by_name = {str(h): h for h in info.heads}
    checked = [by_name[name] for name in estimate.abs().sort_values(ascending=False, kind="stable").index[:exact_top]]
    exact = (
        single_component_effects(model, info, dataset, checked, mode, metric, progress=progress, ablators=ablators)
        if checked
        else None
    )
    exact_drop = {} if exact is None else dict(zip(exact["component"], exact["drop_points"]))
    return pd.DataFrame(
        [
            {
                "component": str(h),
                "layer": h.layer,
                "head": h.index,
                "estimated_drop": float(estimate[str(h)]),
                "drop_points": exact_drop.get(str(h), float("nan")),
                "exact": str(h) in exact_drop,
            }
            for h in info.heads
        ]
    )


#: What ``estimated_drop`` measures, in the words the appendix's captions use.
ESTIMATED_DROP_DESCRIPTION = (
    "each head's estimated drop when mean-ablated alone (attribution patching; points of the full metric)"
)


def estimated_drop_scores(importance: pd.DataFrame, panel: str) -> HeadScores:
    """The ``estimated_drop`` column of :func:`head_importance` tables stacked with a ``panel`` label column
    (``task``, ``config``, ...) as a :class:`~seqcirc_utils.core.records.HeadScores` record, one panel per label."""
    return HeadScores.from_table(
        importance[["component", "estimated_drop", panel]], panels=[panel], description=ESTIMATED_DROP_DESCRIPTION
    )
