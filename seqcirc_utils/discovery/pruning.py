"""Iterative node pruning: the paper's sweep (done right) and a fast attribution-ranked method.

**Sweep** (Lan, Torr & Barez): start from all heads and MLPs; a backward sweep then a forward
sweep; a component is removed when the circuit's score (metric with every non-circuit component
mean-ablated, as a fraction of the full model's) stays >= the threshold. Candidate order
(:data:`SWEEP_ORDERS`):

- ``"paper"`` (default), as the paper's ``find_circuit_backw`` / ``find_circuit_forw``: the backward
  sweep visits layers from last to first, in each layer the MLP and then the heads in increasing
  index; the forward sweep visits layers from first to last, in each layer the heads in increasing
  index and then the MLP;
- ``"descending"``: the same, except that the backward sweep takes a layer's heads from the
  highest index down (this package's order before it followed the paper's).

The paper code's bugs are avoided by construction: the score is recomputed from the current
circuit for every candidate (no stale "previous score"), both sweeps use the same units (a
fraction), shapes come from the model, and means are computed once.

Speed: a candidate at layer L only changes layers >= L, so its pass resumes from the cached
residual stream entering block L (:meth:`Ablator.logits_from_layer`) and unembeds only the final
position; accepted removals refresh the cache for the layers above. ``resume=False`` runs full
passes (same circuit, used by the benchmark to show the difference).

**Several thresholds** give **nested** circuits: each lower threshold starts from the circuit of
the next higher one (and, in the fast method, from its score).

**Fast method**: rank components by integrated-gradient attribution
(:func:`~seqcirc_utils.scoring.attribution.attribution_scores`), search the largest prefix of
least-important components whose removal keeps the score >= threshold, and then (by default)
**refine** the circuit to a 1-minimal one: each remaining component, least important first, is
tried for removal (exactly scored, resumed from its layer) until every remaining component has
been tried against the final circuit and none can go (removing any single one drops the score
below the threshold). A pass budget (``max_refine_passes``) can stop the refinement early; the
result then says whether it is minimal and how many components are still removable (checked
exactly).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.config import FastConfig, SweepConfig, check_thresholds
from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import DESCENDING, METHODS, PAPER, SWEEP_ORDERS, PruneMethod, SweepOrder  # noqa: F401
from seqcirc_utils.core.types import Circuit, Component, sort_components
from seqcirc_utils.scoring.ablation import Ablator, CircuitScore
from seqcirc_utils.scoring.attribution import attribution_scores

CUSTOM = "custom"  # PruningResult.order of a sweep given an explicit candidate list


def check_order(order: SweepOrder | str) -> SweepOrder:
    """Validate a sweep order name (one of :data:`SWEEP_ORDERS`; a :class:`SweepOrder` is its string)."""
    return SweepOrder.parse(order)


@dataclass
class PruningResult:
    """One threshold's circuit and how it was found.

    ``order``: the sweep order (:data:`SWEEP_ORDERS`, ``"custom"`` for an explicit list; None for the
    fast method). ``minimal``: True when removing any single component was checked to drop the score
    below the threshold, False when a refinement budget stopped before that, None when not checked.
    ``removable_left``: how many components could still be removed one at a time (0 unless ``minimal``
    is False).
    """

    threshold: float
    components: frozenset[Component]
    score: CircuitScore
    method: str
    forward_passes: int
    seconds: float
    removed_order: list[Component] = field(default_factory=list)
    order: str | None = None
    minimal: bool | None = None
    removable_left: int = 0

    @property
    def circuit(self) -> Circuit:
        return Circuit(self.components, {"threshold": self.threshold, "method": self.method})

    @property
    def heads(self) -> list[Component]:
        return self.circuit.heads

    @property
    def mlps(self) -> list[Component]:
        return self.circuit.mlps


def sweep_order(components: Iterable[Component], order: str = PAPER) -> tuple[list[Component], list[Component]]:
    """The backward and forward sweeps' candidate lists for ``components`` (see the module docstring)."""
    check_order(order)
    forward = sort_components(components)
    backward: list[Component] = []
    for layer in sorted({c.layer for c in forward}, reverse=True):
        in_layer = [c for c in forward if c.layer == layer]
        heads = [c for c in in_layer if c.kind != "mlp"]  # increasing index (forward order)
        backward += [c for c in in_layer if c.kind == "mlp"] + (heads if order == PAPER else heads[::-1])
    return backward, forward


class _CircuitState:
    """The current circuit plus a residual-stream cache that is always valid for it."""

    def __init__(self, ablator: Ablator, kept: set[Component], resume: bool):
        self.ab = ablator
        self.kept = set(kept)
        self.resume = resume
        self.universe = list(ablator.info.components)
        self.resid: dict[int, torch.Tensor] = {}
        if resume:
            _, self.resid = ablator.residuals(self.ablated())

    def ablated(self, extra: Component | None = None) -> list[Component]:
        return [c for c in self.universe if c not in self.kept or c == extra]

    def score_without(self, c: Component) -> tuple[float, dict[int, torch.Tensor]]:
        """The circuit's score (fraction of full) with ``c`` also ablated, and the residual streams
        above ``c``'s layer in that run (empty without ``resume``). One (partial) pass."""
        ablated = self.ablated(extra=c)
        if self.resume:
            logits, new_resid = self.ab.logits_from_layer(c.layer, self.resid[c.layer], ablated, keep_residuals=True)
        else:
            logits, new_resid = self.ab.logits(ablated), {}
        return self.ab.fraction_of_full(self.ab.metric_value(logits)), new_resid

    def try_remove(self, c: Component, threshold: float) -> bool:
        """Score the circuit without ``c``; remove it when the score stays >= ``threshold``."""
        score, new_resid = self.score_without(c)
        if score >= threshold:
            self.kept.discard(c)
            self.resid.update(new_resid)  # layers above c now see c ablated
            return True
        return False


def sweep_prune(
    ablator: Ablator,
    thresholds: Sequence[float] = (0.8,),
    order: str | Sequence[Component] = PAPER,
    resume: bool = True,
    start: Iterable[Component] | None = None,
    progress: bool = True,
) -> list[PruningResult]:
    """The paper's iterative node pruning, for one or several (nested) thresholds.

    ``order`` is one of :data:`SWEEP_ORDERS` (a backward then a forward sweep; default the paper's)
    or an explicit candidate list (used by :func:`order_study`; each candidate is tried once).
    Returns one result per threshold, highest first.
    """
    if isinstance(order, str):
        check_order(order)
    results = []
    kept = set(start) if start is not None else set(ablator.info.components)
    for threshold in check_thresholds(thresholds):
        t0, passes0 = time.perf_counter(), ablator.forward_passes
        state = _CircuitState(ablator, kept, resume)
        removed: list[Component] = []
        if isinstance(order, str):
            backward, forward = sweep_order(state.kept, order)
            passes = [("backward", backward), ("forward", forward)]
        else:
            passes = [(CUSTOM, [c for c in order if c in state.kept])]
        for name, candidates in passes:
            for c in tqdm(candidates, desc=f"{name} sweep @ {threshold:g}", disable=not progress, leave=False):
                if c in state.kept and state.try_remove(c, threshold):
                    removed.append(c)
        kept = state.kept
        score = ablator.score(kept)
        results.append(
            PruningResult(
                threshold,
                frozenset(kept),
                score,
                "sweep",
                ablator.forward_passes - passes0,
                time.perf_counter() - t0,
                removed,
                order=order if isinstance(order, str) else CUSTOM,
            )
        )
    return results


# --------------------------------------------------------------------------- the fast method


def largest_passing_prefix(
    score_at, n: int, threshold: float, start_score: float, guess: int | None = None
) -> tuple[int, float]:
    """The largest ``k`` in ``0..n`` with ``score_at(k) >= threshold``; returns ``(k, score_at(k))``.

    ``score_at(0) = start_score >= threshold`` is known. The score is assumed to fall roughly
    monotonically with ``k``. The first probe is ``guess`` (default ``n``); later probes interpolate
    linearly between the bracket's scores (regula falsi), with a bisection step whenever
    interpolation lands next to a bracket end, so a smooth score curve needs few evaluations and a
    rough one no more than about twice bisection's.
    """
    lo, s_lo = 0, start_score
    hi, s_hi = n + 1, None  # hi: smallest k known to fail (n + 1 = none known yet)
    probe = n if guess is None else min(max(int(guess), 1), n)
    cache: dict[int, float] = {}
    while hi - lo > 1 and probe is not None:
        s = cache[probe] = score_at(probe)
        if s >= threshold:
            lo, s_lo = probe, s
        else:
            hi, s_hi = probe, s
        if hi - lo <= 1:
            break
        if s_hi is None:  # nothing fails yet: try the largest untested k
            probe = n if n not in cache else None
            continue
        frac = (s_lo - threshold) / (s_lo - s_hi) if s_lo != s_hi else 0.5
        k = lo + int(round(frac * (hi - lo)))
        probe = k if lo + 1 < k < hi - 1 else (lo + hi) // 2  # interpolation stuck at an end: bisect
    return lo, s_lo


def refine_to_minimal(
    ablator: Ablator,
    kept: Iterable[Component],
    threshold: float,
    ranking: Sequence[Component] = (),
    max_passes: int | None = None,
    progress: bool = True,
) -> tuple[set[Component], list[Component], bool, int]:
    """Remove single components from the circuit ``kept`` until it is 1-minimal at ``threshold``.

    Candidates are tried in ``ranking`` order (least important first; components of ``kept`` missing
    from it follow in forward order), each scored exactly with every other non-circuit component
    ablated, the pass resumed from the candidate's layer. A candidate is removed when the score
    stays >= ``threshold``. A candidate that failed is tried again only if a later removal changed
    the circuit, so the refinement ends as soon as every remaining component has failed against
    the final circuit (it is then 1-minimal). ``max_passes`` bounds the passes over the candidate
    list (None = until minimal; 0 = only check). Returns ``(kept, removed, minimal, removable_left)``
    where ``removable_left`` counts the components that could still be removed one at a time
    (checked exactly against the final circuit when the budget stopped the refinement; 0 when minimal).
    """
    if max_passes is not None and max_passes < 0:
        raise ParameterError(f"max_refine_passes must be >= 0 or None (no limit), got {max_passes}")
    state = _CircuitState(ablator, set(kept), resume=True)
    ranked = [c for c in dict.fromkeys(ranking) if c in state.kept]
    unranked = sort_components(state.kept - set(ranked))
    candidates = ranked + unranked
    failed: set[Component] = set()  # components known to fail against the *current* circuit
    removed: list[Component] = []
    passes = 0
    bar = tqdm(desc=f"refining @ {threshold:g}", disable=not progress, leave=False)
    while not state.kept <= failed and (max_passes is None or passes < max_passes):
        passes += 1
        for c in candidates:
            if c not in state.kept or c in failed:
                continue
            bar.update(1)
            if state.try_remove(c, threshold):
                removed.append(c)
                failed.clear()  # the circuit changed: earlier failures may pass now
            else:
                failed.add(c)
    unchecked = sort_components(state.kept - failed)
    removable_left = sum(state.score_without(c)[0] >= threshold for c in unchecked)
    bar.close()
    return state.kept, removed, removable_left == 0, removable_left


def fast_prune(
    ablator: Ablator,
    thresholds: Sequence[float] = (0.8,),
    rounds: int = 2,
    frontier: int = 0,
    ig_steps: int = 3,
    progress: bool = True,
    minimal: bool = True,
    max_refine_passes: int | None = None,
) -> list[PruningResult]:
    """Attribution-ranked pruning: a few rounds of (attribute, search a prefix), then a refinement.

    Round 1 ranks all components by integrated-gradient attribution towards the all-ablated model
    (:func:`~seqcirc_utils.scoring.attribution.attribution_scores` with ``ig_steps``); later rounds re-rank
    the remaining components by plain attribution *inside the current circuit* (removed components
    stay ablated). Ranking is most positive first (least needed). Each round finds the largest prefix
    whose removal keeps the score >= threshold with :func:`largest_passing_prefix`, starting from the
    prefix the attributions themselves predict (current metric + cumulative attribution). Rounds stop
    after ``rounds`` or when one removes nothing; then the next ``frontier`` components of the last
    ranking are each tried once. With ``minimal`` (default), :func:`refine_to_minimal` then makes the
    circuit 1-minimal, trying candidates in the last ranking's order (``max_refine_passes`` bounds
    it; the result records ``minimal`` and ``removable_left``); without, ``minimal`` is None (not
    checked). Several thresholds are nested (highest first): each lower threshold starts from the
    circuit and the score of the one above. Forward passes are counted, attribution's forward and
    backward passes and partial (resumed) passes included.

    Plain attribution (gradient at the clean run) ranks badly when most components are removed at
    once (measured on SmolLM2 digits: the prefix search stalls near the full model); integrated
    gradients rank well. ``benchmarks/discovery.py`` measures passes, size and score.
    """
    results = []
    kept = set(ablator.info.components)
    current = ablator.full_metric  # the metric of the circuit we start from
    for threshold in check_thresholds(thresholds):
        t0, p0 = time.perf_counter(), ablator.forward_passes
        removed: list[Component] = []
        order: list[Component] = []
        lo = 0
        for round_ in tqdm(range(rounds), desc=f"fast pruning @ {threshold:g}", disable=not progress, leave=False):
            if not kept:
                break
            ablated_now = [c for c in ablator.info.components if c not in kept]
            steps = ig_steps if round_ == 0 else 1
            attr = attribution_scores(ablator, sorted(kept), ig_steps=steps, ablated=ablated_now)
            attr = attr.sort_values(ascending=False, kind="stable")
            by_name = {str(c): c for c in kept}
            order = [by_name[n] for n in attr.index]
            predicted = [ablator.fraction_of_full(current + s) for s in attr.cumsum().tolist()]
            guess = max([k + 1 for k, s in enumerate(predicted) if s >= threshold], default=1)

            def score_at(k: int, order=order) -> float:
                return ablator.score(kept - set(order[:k])).score

            start = ablator.fraction_of_full(current)
            lo, lo_score = largest_passing_prefix(score_at, len(order), threshold, start, guess)
            kept -= set(order[:lo])
            removed += order[:lo]
            if lo:
                current = _metric_from_fraction(ablator, lo_score)
            if lo == 0:
                break
        for c in order[lo + 1 : lo + 1 + frontier]:
            if c in kept and ablator.score(kept - {c}).score >= threshold:
                kept.discard(c)
                removed.append(c)
        is_minimal, removable_left = None, 0
        if minimal:
            kept, refined, is_minimal, removable_left = refine_to_minimal(
                ablator, kept, threshold, order[lo:], max_refine_passes, progress
            )
            removed += refined
        score = ablator.score(kept)
        current = score.circuit_metric  # the next (lower) threshold starts from this circuit's score
        results.append(
            PruningResult(
                threshold,
                frozenset(kept),
                score,
                "fast",
                ablator.forward_passes - p0,
                time.perf_counter() - t0,
                removed,
                order=None,
                minimal=is_minimal,
                removable_left=removable_left,
            )
        )
    return results


def _metric_from_fraction(ablator: Ablator, fraction: float) -> float:
    """Invert :meth:`Ablator.fraction_of_full` for logit_diff / prob_diff (fraction x full metric)."""
    return fraction * ablator.full_metric


def prune(
    ablator: Ablator,
    thresholds: Sequence[float],
    method: PruneMethod | str = PruneMethod.SWEEP,
    progress: bool = True,
    *,
    sweep: SweepConfig | None = None,
    fast: FastConfig | None = None,
) -> list[PruningResult]:
    """Dispatch to :func:`sweep_prune` (``"sweep"``, with ``sweep``'s order, default ``"paper"``) or
    :func:`fast_prune` (``"fast"``, with ``fast``'s rounds, frontier, integration steps and refinement: 1-minimal
    by default). The other method's config is refused (a one-line ParameterError): its options would be
    ignored. Sweep circuits record ``minimal=None``."""
    method = PruneMethod.parse(method)  # ParameterError naming the methods
    if method == PruneMethod.SWEEP:
        if fast is not None:
            raise ParameterError("fast options apply to method='fast' only; the sweep takes sweep=SweepConfig(...)")
        order = (sweep or SweepConfig()).order
        return sweep_prune(ablator, thresholds, order=check_order(order), progress=progress)
    if sweep is not None:
        raise ParameterError(
            "sweep options (the order) apply to method='sweep' only; the fast method ranks by attribution"
        )
    f = fast or FastConfig()
    return fast_prune(
        ablator,
        thresholds,
        rounds=f.rounds,
        frontier=f.frontier,
        ig_steps=f.ig_steps,
        progress=progress,
        minimal=f.minimal,
        max_refine_passes=f.max_refine_passes,
    )


# --------------------------------------------------------------------------- order studies


def order_study(
    ablator: Ablator, threshold: float = 0.8, seeds: Sequence[int] = range(5), progress: bool = True
) -> tuple[pd.DataFrame, list[PruningResult]]:
    """Prune with K random candidate orders; how often each component survives.

    Each seed shuffles all components (``random.Random(seed)``) and tries each once.
    Returns ``(frequency table, results)``; the table has ``component``, ``kind``, ``layer``,
    ``survival`` (fraction of orders whose circuit keeps it), sorted by survival.
    """
    results = []
    for seed in tqdm(list(seeds), desc="random orders", disable=not progress, leave=False):
        order = list(ablator.info.components)
        random.Random(seed).shuffle(order)
        results.append(sweep_prune(ablator, [threshold], order=order, progress=False)[0])
    rows = []
    for c in ablator.info.components:
        rows.append(
            {
                "component": str(c),
                "kind": c.kind,
                "layer": c.layer,
                "survival": sum(c in r.components for r in results) / len(results),
            }
        )
    table = pd.DataFrame(rows).sort_values(["survival", "layer"], ascending=[False, True]).reset_index(drop=True)
    return table, results
