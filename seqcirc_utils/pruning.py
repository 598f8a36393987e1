"""Iterative node pruning: the paper's sweep (done right) and a fast attribution-ranked method.

**Sweep** (Lan, Torr & Barez): start from all heads and MLPs; a backward sweep (last layer to
first, a layer's MLP before its heads) then a forward sweep; a component is removed when the
circuit's score (metric with every non-circuit component mean-ablated, as a fraction of the full
model's) stays >= the threshold. The paper code's bugs are avoided by construction: the score is
recomputed from the current circuit for every candidate (no stale "previous score"), both sweeps
use the same units (a fraction), shapes come from the model, and means are computed once.

Speed: a candidate at layer L only changes layers >= L, so its pass resumes from the cached
residual stream entering block L (:meth:`Ablator.logits_from_layer`) and unembeds only the final
position; accepted removals refresh the cache for the layers above. ``resume=False`` runs full
passes (same circuit, used by the benchmark to show the difference).

**Several thresholds** give **nested** circuits: each lower threshold starts from the circuit of
the next higher one.

**Fast method**: rank components by attribution patching (activation difference x gradient: one
forward and one backward pass on the clean prompts, with the mean-ablation values as the
"corrupted" activations), binary-search the largest prefix of least-important components whose
removal keeps the score >= threshold, then one local sweep over the next components in the ranking.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .ablation import Ablator, CircuitScore, component_hook_name
from .types import Circuit, Component, sort_components

BACKWARD_THEN_FORWARD = "backward_then_forward"


def check_thresholds(thresholds: Iterable[float]) -> list[float]:
    """Validate thresholds (each in (0, 1]) and return them sorted high to low."""
    out = []
    for t in thresholds:
        t = float(t)
        if not 0 < t <= 1:
            raise ValueError(f"threshold {t} outside (0, 1]; thresholds are fractions of the full model's metric, e.g. 0.8")
        out.append(t)
    if not out:
        raise ValueError("give at least one threshold in (0, 1]")
    return sorted(set(out), reverse=True)


@dataclass
class PruningResult:
    """One threshold's circuit and how it was found."""

    threshold: float
    components: frozenset[Component]
    score: CircuitScore
    method: str
    forward_passes: int
    seconds: float
    removed_order: list[Component] = field(default_factory=list)

    @property
    def circuit(self) -> Circuit:
        return Circuit(self.components, {"threshold": self.threshold, "method": self.method})

    @property
    def heads(self) -> list[Component]:
        return self.circuit.heads

    @property
    def mlps(self) -> list[Component]:
        return self.circuit.mlps


def _sweep_order(components: Sequence[Component]) -> tuple[list[Component], list[Component]]:
    forward = sort_components(components)
    return list(reversed(forward)), forward


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

    def try_remove(self, c: Component, threshold: float) -> bool:
        """Score the circuit without ``c``; remove it when the score stays >= ``threshold``."""
        ablated = self.ablated(extra=c)
        if self.resume:
            logits, new_resid = self.ab.logits_from_layer(c.layer, self.resid[c.layer], ablated, keep_residuals=True)
        else:
            logits, new_resid = self.ab.logits(ablated), {}
        score = self.ab.fraction_of_full(self.ab.metric_value(logits))
        if score >= threshold:
            self.kept.discard(c)
            self.resid.update(new_resid)  # layers above c now see c ablated
            return True
        return False


def sweep_prune(
    ablator: Ablator,
    thresholds: Sequence[float] = (0.8,),
    order: str | Sequence[Component] = BACKWARD_THEN_FORWARD,
    resume: bool = True,
    start: Iterable[Component] | None = None,
    progress: bool = True,
) -> list[PruningResult]:
    """The paper's iterative node pruning, for one or several (nested) thresholds.

    ``order`` is ``"backward_then_forward"`` (the paper) or an explicit candidate order (used by
    :func:`order_study`; each candidate is tried once). Returns one result per threshold, highest first.
    """
    results = []
    kept = set(start) if start is not None else set(ablator.info.components)
    for threshold in check_thresholds(thresholds):
        t0, passes0 = time.perf_counter(), ablator.forward_passes
        state = _CircuitState(ablator, kept, resume)
        removed: list[Component] = []
        if isinstance(order, str):
            if order != BACKWARD_THEN_FORWARD:
                raise ValueError(f"unknown order {order!r}; valid: {BACKWARD_THEN_FORWARD} or a list of components")
            backward, forward = _sweep_order(sorted(state.kept))
            passes = [("backward", backward), ("forward", forward)]
        else:
            passes = [("custom", [c for c in order if c in state.kept])]
        for name, candidates in passes:
            for c in tqdm(candidates, desc=f"{name} sweep @ {threshold:g}", disable=not progress, leave=False):
                if c in state.kept and state.try_remove(c, threshold):
                    removed.append(c)
        kept = state.kept
        score = ablator.score(kept)
        results.append(PruningResult(threshold, frozenset(kept), score, "sweep",
                                     ablator.forward_passes - passes0, time.perf_counter() - t0, removed))
    return results


# --------------------------------------------------------------------------- attribution ranking


def attribution_scores(
    ablator: Ablator,
    components: Sequence[Component] | None = None,
    ig_steps: int = 1,
    ablated: Iterable[Component] = (),
) -> pd.Series:
    """Attribution-patching estimate of each component's effect on the metric when ablated.

    ``attr(c) = sum_{batch-mean, pos} (value_c - act_c) . g_c`` where ``act_c`` is the clean activation,
    ``value_c`` its ablation value (per-position corrupted mean by default) and ``g_c`` the gradient of
    the metric. With ``ig_steps=1``, ``g_c`` is taken at the clean run (plain attribution patching:
    one forward + one backward pass). With ``ig_steps=k > 1``, ``g_c`` is averaged over k points
    ``act + alpha (value - act)`` (midpoints ``alpha = (i + 0.5) / k``) where *every* component is
    interpolated towards its ablation value at once (integrated gradients towards the all-ablated
    model; k forward + k backward passes), which ranks better when many components are removed
    together. ``ablated`` components stay ablated throughout (attribution *inside* a circuit).
    Units: the metric's (logit difference); negative = ablating it hurts.
    Returns a Series indexed by component string.
    """
    if ablator.metric == "kl":
        raise ValueError("attribution ranking needs a metric with a non-zero gradient (logit_diff or prob_diff), not kl")
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    from .forward import final_logits

    info = ablator.info
    components = list(info.components if components is None else components)
    names = sorted({component_hook_name(c) for c in components})
    ablator.ensure_values(names)
    clean: dict[str, torch.Tensor] = {}
    grad_sum: dict[str, torch.Tensor] = {}
    alphas = [0.0] if ig_steps == 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]
    ablation = ablator.hooks(list(ablated))  # run before the grabbers on the same hook points
    for alpha in alphas:
        probes: dict[str, torch.Tensor] = {}

        def grabber(name: str, alpha=alpha):  # keyed by our name: the hook point may report its native alias
            def grab(act, hook):
                if alpha == 0.0:
                    clean[name] = act.detach()
                # A zero-valued leaf added to the activation: its gradient is d metric / d activation,
                # the *total* effect (paths through later components stay in the graph).
                probe = torch.zeros_like(act, requires_grad=True)
                probes[name] = probe
                return act + alpha * (ablator.values[name].to(act) - act) + probe

            return grab

        with torch.enable_grad():
            logits = final_logits(ablator.model, ablator.tokens, batch_size=len(ablator.tokens),
                                  fwd_hooks=ablation + [(n, grabber(n)) for n in names], grad=True)
            grads = torch.autograd.grad(_differentiable_metric(ablator, logits), [probes[n] for n in names])
        ablator.forward_passes += 2  # one forward, one backward
        for n, g in zip(names, grads):
            grad_sum[n] = grad_sum.get(n, 0) + g / len(alphas)
    if not clean and not ablation:  # the full model's activations were cached by the Ablator
        clean = {n: ablator.clean_acts[n] for n in names}
    if not clean:  # integrated gradients inside a circuit: the start point needs one more pass
        def keep(name: str):
            def hook(act, hook):
                clean[name] = act.detach()
                return act

            return hook

        final_logits(ablator.model, ablator.tokens, batch_size=len(ablator.tokens),
                     fwd_hooks=ablation + [(n, keep(n)) for n in names])
        ablator.forward_passes += 1
    out = {}
    for c in components:
        n = component_hook_name(c)
        delta = (ablator.values[n] - clean[n]) * grad_sum[n]  # [batch, pos, ...]
        if ablator.positions is not None:
            delta = delta[:, ablator.positions]
        if c.kind == "head":
            val = delta[:, :, c.index].sum()
        elif c.kind == "neuron":
            val = delta[..., c.index].sum()
        else:
            val = delta.sum()
        out[str(c)] = float(val)
    return pd.Series(out, name="attribution")


def _differentiable_metric(ablator: Ablator, logits: torch.Tensor) -> torch.Tensor:
    from . import metrics

    ds = ablator.dataset
    if ablator.metric == "prob_diff":
        groups = ds.greater_than_groups
        t = metrics.greater_than_thresholds(ds.years, len(groups))
        return metrics.greater_than_prob_diff(logits, t, groups).mean()
    return metrics.logit_diff(logits, ds.answer_ids, ds.incorrect_ids).mean()


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


def fast_prune(
    ablator: Ablator,
    thresholds: Sequence[float] = (0.8,),
    rounds: int = 2,
    frontier: int = 0,
    ig_steps: int = 3,
    progress: bool = True,
) -> list[PruningResult]:
    """Attribution-ranked pruning: a few rounds of (attribute, search a prefix), then a local sweep.

    Round 1 ranks all components by integrated-gradient attribution towards the all-ablated model
    (:func:`attribution_scores` with ``ig_steps``); later rounds re-rank the remaining components by
    plain attribution *inside the current circuit* (removed components stay ablated). Ranking is
    most positive first (least needed). Each round finds the largest prefix whose removal keeps the
    score >= threshold with :func:`largest_passing_prefix`, starting from the prefix the
    attributions themselves predict (current metric + cumulative attribution). Rounds stop after
    ``rounds`` or when one removes nothing; then the next ``frontier`` components of the last
    ranking are each tried once. Several thresholds are nested (highest first). Forward passes are
    counted, attribution's forward and backward passes included.

    Plain attribution (gradient at the clean run) ranks badly when most components are removed at
    once (measured on SmolLM2 digits: the prefix search stalls near the full model); integrated
    gradients rank well. ``benchmarks/discovery.py`` measures passes, size and score.
    """
    results = []
    kept = set(ablator.info.components)
    for threshold in check_thresholds(thresholds):
        t0, p0 = time.perf_counter(), ablator.forward_passes
        removed: list[Component] = []
        order: list[Component] = []
        lo = 0
        current = ablator.full_metric
        for round_ in tqdm(range(rounds), desc=f"fast pruning @ {threshold:g}", disable=not progress, leave=False):
            if not kept:
                break
            ablated_now = [c for c in ablator.info.components if c not in kept]
            steps = ig_steps if round_ == 0 else 1
            attr = attribution_scores(ablator, sorted(kept), ig_steps=steps, ablated=ablated_now)
            attr = attr.sort_values(ascending=False)
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
        score = ablator.score(kept)
        results.append(PruningResult(threshold, frozenset(kept), score, "fast",
                                     ablator.forward_passes - p0, time.perf_counter() - t0, removed))
    return results


def _metric_from_fraction(ablator: Ablator, fraction: float) -> float:
    """Invert :meth:`Ablator.fraction_of_full` for logit_diff / prob_diff (fraction x full metric)."""
    return fraction * ablator.full_metric


def prune(ablator: Ablator, thresholds: Sequence[float], method: str = "sweep", progress: bool = True) -> list[PruningResult]:
    """Dispatch to :func:`sweep_prune` (``"sweep"``) or :func:`fast_prune` (``"fast"``)."""
    if method == "sweep":
        return sweep_prune(ablator, thresholds, progress=progress)
    if method == "fast":
        return fast_prune(ablator, thresholds, progress=progress)
    raise ValueError(f"unknown pruning method {method!r}; valid: sweep, fast")


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
        rows.append({"component": str(c), "kind": c.kind, "layer": c.layer,
                     "survival": sum(c in r.components for r in results) / len(results)})
    table = pd.DataFrame(rows).sort_values(["survival", "layer"], ascending=[False, True]).reset_index(drop=True)
    return table, results
