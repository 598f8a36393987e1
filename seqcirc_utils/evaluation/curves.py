"""Faithfulness curves of node rankings: MIB's CPR and CMD (Mueller et al. 2025) for heads and MLPs.

A ranking method scores every component (higher = more important). For each circuit size ``k`` (a
fraction of all components, :data:`FRACTIONS`) the top-``k`` components are kept, everything else ablated
(the ablator's mode, means and metric), and the circuit's **normalised faithfulness**
``f(C_k) = (m(C_k) - m(empty)) / (m(full) - m(empty))`` is measured. Then, by the trapezoid rule:

- ``cpr`` = area under ``f`` over linear ``k`` with components ranked by **signed** score (higher is better;
  can exceed 1: a circuit can beat the full model);
- ``cmd`` = area under ``|1 - f|`` over linear ``k`` with components ranked by **absolute** score (lower is
  better, 0 ideal);
- ``cpr_log`` / ``cmd_log``: the same integrands over ``log10 k``, divided by the log range (a mean over
  orders of magnitude; the linear areas give the sizes from 20 to 100 % about 80 % of the weight).

Linear areas are not normalised (MIB integrates over ``k`` in ``[0.001, 1]``; here over
``[fractions[0], fractions[-1]]`` = ``[0.01, 1]`` by default, so f = 1 everywhere gives 0.99).

Rankings (:func:`removal_order_scores`, :func:`attribution_node_scores`, :func:`eap_ig_node_scores`,
:func:`random_scores`) all return ``{Component: score}``. Curve points are scored in batches
(:func:`~seqcirc_utils.evaluation.nulls.circuit_metric_values`): one prompt-batch pass per distinct point
(the full model's point is f = 1 without one); the empty circuit's pass is shared per ablator. The curve's
ablator should hold the **held-out** split (the ranking was chosen on discovery data).

**The null** (:func:`random_ranking_areas`): the areas of many seeded random rankings on the same ablator,
every draw's points scored together in batches: what a method's CPR / CMD is compared with
(:func:`seqcirc_utils.evaluation.methods.method_nulls`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.records import FaithfulnessCurve
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.discovery.edges.attribution import edge_attribution_node_sums
from seqcirc_utils.discovery.pipeline import check_faithfulness_baseline
from seqcirc_utils.evaluation.nulls import DRAWS_PER_PASS, circuit_metric_values, statistic_of
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.scoring.attribution import attribution_scores

#: Circuit sizes as fractions of all components (the issue's; MIB adds 0.001, 0.002, 0.005 for edges).
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CURVE_METHODS = ("sweep", "fast", "eap-ig", "random")


# --------------------------------------------------------------------------- areas


def _trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def curve_areas(fractions: Sequence[float], signed: Sequence[float], absolute: Sequence[float]) -> dict:
    """``{"cpr", "cmd", "cpr_log", "cmd_log"}`` of faithfulness points at ``fractions`` (increasing, in (0, 1]):
    trapezoid areas of ``signed`` and of ``|1 - absolute|`` over linear k, and over log10 k divided by the log
    range (see the module docstring)."""
    x = np.asarray(fractions, dtype=float)
    if x.size < 2 or np.any(np.diff(x) <= 0) or x[0] <= 0 or x[-1] > 1:
        raise ParameterError(f"fractions must increase within (0, 1] with at least two points, got {list(fractions)}")
    gap = np.abs(1.0 - np.asarray(absolute, dtype=float))
    logx = np.log10(x)
    width = logx[-1] - logx[0]
    return {
        "cpr": _trapezoid(signed, x),
        "cmd": _trapezoid(gap, x),
        "cpr_log": _trapezoid(signed, logx) / width,
        "cmd_log": _trapezoid(gap, logx) / width,
    }


def circuit_sizes(n_components: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """Component counts of the top-k circuits: ``max(1, round(fraction * n_components))`` per fraction."""
    return [max(1, int(round(f * n_components))) for f in fractions]


def ranked(scores: Mapping[Component, float], absolute: bool = False) -> list[Component]:
    """Components by score, highest first (``absolute``: by ``|score|``); ties in forward order."""
    order = sort_components(scores)
    return sorted(order, key=lambda c: -abs(scores[c]) if absolute else -scores[c])  # stable: forward order on ties


# --------------------------------------------------------------------------- rankings


def removal_order_scores(results: Sequence, components: Iterable[Component]) -> dict[Component, float]:
    """Scores from pruning's removal order (:class:`~seqcirc_utils.discovery.pruning.PruningResult` list,
    nested thresholds highest first): the first component removed scores 0, the next 1, ...; components
    never removed (the lowest threshold's circuit) score above every removed one (all equal). Unsigned."""
    removed = [c for r in results for c in r.removed_order]
    scores = {c: float(i) for i, c in enumerate(removed)}
    top = float(len(removed))
    return {c: scores.get(c, top) for c in components}


def attribution_node_scores(ablator: Ablator, ig_steps: int = 3) -> dict[Component, float]:
    """The fast method's round-1 ranking as scores: minus the integrated-gradient attribution of each
    component towards the all-ablated model (:func:`~seqcirc_utils.scoring.attribution.attribution_scores`,
    metric units; positive = ablating it lowers the metric = important)."""
    attr = attribution_scores(ablator, list(ablator.info.components), ig_steps=ig_steps)
    by_name = {str(c): c for c in ablator.info.components}
    return {by_name[name]: -float(value) for name, value in attr.items()}


def eap_ig_node_scores(
    ablator: Ablator, ig_steps: int = 5, attributions: Mapping | None = None
) -> dict[Component, float]:
    """EAP-IG node scores: per component, minus the sum of the attributions of every edge it sends or
    receives (:func:`~seqcirc_utils.discovery.edges.attribution.edge_attribution` over the full model,
    ``ig_steps`` steps; metric units, positive = its edges help). ``attributions``: reuse ``{Edge: value}``;
    without them the sums come from :func:`~seqcirc_utils.discovery.edges.attribution.edge_attribution_node_sums`
    (the same gradients, summed per node without scoring each edge: equal up to rounding, far faster)."""
    if attributions is None:
        sums = edge_attribution_node_sums(ablator, ablator.info.components, ig_steps=ig_steps)
        return {c: -float(sums[c]) for c in ablator.info.components}
    scores = {c: 0.0 for c in ablator.info.components}
    for edge, value in attributions.items():
        for c in (edge.sender, edge.receiver):
            if c is not None:
                scores[c] -= float(value)
    return scores


def random_scores(components: Iterable[Component], seed: int = 0) -> dict[Component, float]:
    """A seeded random ranking: a random permutation's ranks as scores."""
    order = sort_components(components)
    ranks = list(range(len(order)))
    random.Random(seed).shuffle(ranks)
    return {c: float(r) for c, r in zip(order, ranks)}


# --------------------------------------------------------------------------- the curve


def faithfulness_of_sets(
    ablator: Ablator,
    kept_sets: Sequence[frozenset[Component]],
    draws_per_pass: int | None = DRAWS_PER_PASS,
    progress: bool = False,
    desc: str = "curve points",
) -> dict[frozenset[Component], float]:
    """``{kept set: normalised faithfulness}`` of every distinct set in ``kept_sets`` on ``ablator``'s data,
    scored in batches (:func:`~seqcirc_utils.evaluation.nulls.circuit_metric_values`, one prompt-batch pass
    per distinct set). The set of every component is the full model: f = 1 by definition, no pass."""
    everything = frozenset(ablator.info.components)
    distinct = [s for s in dict.fromkeys(kept_sets) if s != everything]
    values = circuit_metric_values(ablator, distinct, draws_per_pass, progress=progress, desc=desc)
    f = dict(zip(distinct, statistic_of(ablator, values, "faithfulness").tolist())) if distinct else {}
    if everything in kept_sets:
        f[everything] = 1.0
    return f


def faithfulness_curve(
    ablator: Ablator,
    scores: Mapping[Component, float],
    method: str,
    fractions: Sequence[float] = FRACTIONS,
    signed: bool = True,
    seed: int | None = None,
    draws_per_pass: int | None = DRAWS_PER_PASS,
    description: str = "",
) -> FaithfulnessCurve:
    """The faithfulness curve of the ranking ``scores`` (every component of the ablator's model) on
    ``ablator``'s data, with CPR / CMD (:func:`curve_areas`).

    ``signed=False``: the scores carry no sign (a removal order, a random ranking): one ranking serves both
    curves. Otherwise the CPR curve ranks by score and the CMD curve by ``|score|``; points shared by both
    (the same top-k set) are scored once. Cost: one prompt-batch pass per distinct top-k set (at most
    ``2 * len(fractions)``, fewer when sets coincide), batched ``draws_per_pass`` per call, plus the empty
    circuit once per ablator. Raises :class:`~seqcirc_utils.core.errors.BaselineError` like a circuit
    record when the faithfulness denominator's interval includes 0.
    """
    components = list(ablator.info.components)
    missing = [str(c) for c in components if c not in scores]
    if missing:
        raise ParameterError(
            f"the ranking lacks {len(missing)} components (e.g. {missing[:3]}); score every head and MLP"
        )
    scores = {c: float(scores[c]) for c in components}
    t0, p0 = time.perf_counter(), ablator.forward_passes
    sizes = circuit_sizes(len(components), fractions)
    curve_areas(fractions, [0.0] * len(fractions), [0.0] * len(fractions))  # validates fractions
    check_faithfulness_baseline(ablator)
    by_signed, by_abs = ranked(scores), ranked(scores, absolute=signed)
    sets_signed = [frozenset(by_signed[:k]) for k in sizes]
    sets_abs = [frozenset(by_abs[:k]) for k in sizes]
    f = faithfulness_of_sets(ablator, sets_signed + sets_abs, draws_per_pass)
    f_signed, f_abs = [f[s] for s in sets_signed], [f[s] for s in sets_abs]
    spec = ablator.dataset.spec
    return FaithfulnessCurve(
        task=spec.task,
        method=method,
        fractions=[float(x) for x in fractions],
        sizes=sizes,
        faithfulness_signed=f_signed,
        faithfulness_abs=f_abs,
        **curve_areas(fractions, f_signed, f_abs),
        n_components=len(components),
        metric=ablator.metric,
        ablation=ablator.mode.value,
        n_prompts=len(ablator.dataset),
        empty_metric=float(ablator.empty_values().mean()),
        full_metric=float(ablator.full_metric),
        seed=seed,
        forward_passes=ablator.forward_passes - p0,
        seconds=time.perf_counter() - t0,
        description=description,
    )


def random_ranking_areas(
    ablator: Ablator,
    n_draws: int,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    draws_per_pass: int | None = DRAWS_PER_PASS,
    progress: bool = True,
) -> list[dict]:
    """The :func:`curve_areas` (``cpr, cmd, cpr_log, cmd_log``) of ``n_draws`` random rankings
    (:func:`random_scores` with seeds ``seed, seed + 1, ...``) on ``ablator``'s data: what a method's curve
    is compared with. Each is the curve :func:`faithfulness_curve` gives the ranking (``signed=False``: one
    curve serves CPR and CMD); every draw's top-k sets are scored together, ``draws_per_pass`` sets per
    batched call (one prompt-batch pass per distinct set; the full model's point is f = 1 without a pass)."""
    if n_draws < 1:
        raise ParameterError(f"n_draws must be >= 1, got {n_draws}")
    components = list(ablator.info.components)
    sizes = circuit_sizes(len(components), fractions)
    curve_areas(fractions, [0.0] * len(fractions), [0.0] * len(fractions))  # validates fractions
    check_faithfulness_baseline(ablator)
    per_draw = []
    for s in range(seed, seed + n_draws):
        order = ranked(random_scores(components, seed=s))
        per_draw.append([frozenset(order[:k]) for k in sizes])
    f = faithfulness_of_sets(
        ablator, [x for sets in per_draw for x in sets], draws_per_pass, progress, f"{n_draws} random rankings"
    )
    return [curve_areas(fractions, [f[x] for x in sets], [f[x] for x in sets]) for sets in per_draw]
