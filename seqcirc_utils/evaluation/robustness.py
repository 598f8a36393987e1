"""How stable is a circuit? The same task's circuit found again under changed choices.

One *run* finds one circuit at one threshold with one :class:`~seqcirc_utils.core.config.DiscoveryConfig`
(method, its options, ablation, metric, filter, split: the configuration a chapter's headline circuit comes
from). A run differs from the **base run** (base dataset seed, ``randAll`` corruption, the config's metric and
method) in exactly one *factor*:

- ``seed``: the dataset's seed (``seed, seed + 1, ...``: other prompts, same task and template); each seed's
  discovery prompts are one side of that seed's sequence-disjoint split (:func:`~seqcirc_utils.discovery.pipeline.split_pair`),
  its **held-out** prompts the other side (exactly as :func:`~seqcirc_utils.discovery.pipeline.discover` draws them);
- ``order``: the paper's sweep (a backward then a forward pass) against sweeps whose candidate order is
  shuffled (``random.Random(seed + r)``), each also **two passes** (the shuffled order, then its reverse over
  the survivors), so the orders differ in order only, not in how often a candidate is tried;
- ``corruption``: the corrupted prompts whose means replace ablated components (the six types of
  :data:`~seqcirc_utils.tasks.datasets.CORRUPTIONS`; greater-than has one and is skipped);
- ``metric``: the config's metric vs the KL divergence to the full model (KL has no useful gradient at the
  full model, so the fast method cannot rank with it: both levels of this factor use the sweep, so they
  differ in the metric only).

Every run's full-model baseline is checked (:func:`~seqcirc_utils.scoring.ablation.check_baseline` and the
faithfulness denominator); a run that fails it, or whose seed leaves too few prompts, is **listed**
(:attr:`RobustnessGrid.failed`) and used nowhere. A run that two factors share (the base run is the seed
factor's first level and the corruption factor's ``randAll``) is computed once and counted once wherever
runs are pooled (:func:`distinct_runs`: membership frequency, the core).

Statistics:

- **transfer matrix** (:func:`transfer_matrix`): every seed run's circuit scored (everything else ablated,
  the run's ablation and metric) on every seed's held-out split; the stability measure is the fraction of
  off-diagonal cells (a circuit on *another* seed's held-out prompts) that still reach the threshold, with a
  cluster-bootstrap interval over the source circuits (:meth:`TransferMatrix.pass_rate`). Circuits are
  scored many per batched pass (:func:`~seqcirc_utils.evaluation.nulls.circuit_metric_values`);
- **Jaccard against a reference** (:func:`jaccard_reference`): the mean pairwise Jaccard similarity of the
  seed runs' circuits beside the same statistic for random circuits of the same make-up (each circuit
  replaced by a draw of :func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`: heads per layer
  kept, MLPs within one layer), ``n_draws`` times (>= 99), with the observed percentile and one-sided p;
- per factor: each component's **membership frequency**, the **mean pairwise Jaccard**, the spread of size
  and score. The **core** of a task is the set of components present in at least ``min_frequency``
  (default 80 %) of its distinct runs.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import ParameterError, SeqcircError
from seqcirc_utils.core.options import N_RESAMPLES
from seqcirc_utils.core.stats import LEVEL, cluster_bootstrap_mean_ci
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.discovery.pipeline import (
    DRAW_GROWTH,
    HELDOUT_SEED_OFFSET,
    check_faithfulness_baseline,
    discovery_dataset,
    resolve_metric,
    split_pair,
)
from seqcirc_utils.discovery.pruning import PruningResult, prune, sweep_prune
from seqcirc_utils.evaluation.nulls import (
    DRAWS_PER_PASS,
    N_DRAWS,
    circuit_metric_values,
    matched_random_circuits,
    null_summary,
    statistic_of,
)
from seqcirc_utils.scoring.ablation import Ablator, check_baseline
from seqcirc_utils.tasks.datasets import CORRUPTIONS, GREATER_THAN, Split, TaskDataset, sequence_overlap

FACTORS = ("seed", "order", "corruption", "metric")
CORE_FREQUENCY = 0.8
BASE_CORRUPTION = "randAll"
PAPER_ORDER = "paper"
RANDOM_ORDER_METHOD = "sweep-random-order"


@dataclass
class RobustnessRun:
    """One circuit of the robustness grid and how it was found. ``run_id`` names the computation (dataset seed,
    corruption, metric, method): runs of two factors with one ``run_id`` are one run. ``dataset`` (not written
    to JSON) is the run's discovery dataset."""

    task: str
    factor: str
    level: str
    seed: int
    corruption: str
    metric: str
    method: str
    components: frozenset[Component]
    score: float
    full_metric: float
    n_prompts: int
    forward_passes: int
    seconds: float
    order: list[str] | None = field(default=None, repr=False)
    run_id: str = ""
    n_sequences: int | None = None
    dataset: TaskDataset | None = field(default=None, repr=False, compare=False)

    @property
    def n_components(self) -> int:
        return len(self.components)

    def to_json(self) -> dict:
        """JSON-ready dict (components as sorted strings)."""
        return {
            "task": self.task,
            "factor": self.factor,
            "level": self.level,
            "run_id": self.run_id,
            "seed": self.seed,
            "corruption": self.corruption,
            "metric": self.metric,
            "method": self.method,
            "components": [str(c) for c in sort_components(self.components)],
            "n_components": self.n_components,
            "score": self.score,
            "full_metric": self.full_metric,
            "n_prompts": self.n_prompts,
            "n_sequences": self.n_sequences,
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- set statistics


def jaccard(a: Iterable[Component], b: Iterable[Component]) -> float:
    """``|a & b| / |a | b|``; two empty circuits are identical (1.0)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def mean_pairwise_jaccard(circuits: Sequence[Iterable[Component]]) -> float:
    """Mean Jaccard similarity over all unordered pairs of ``circuits`` (NaN for fewer than two)."""
    sets = [set(c) for c in circuits]
    pairs = list(itertools.combinations(sets, 2))
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else math.nan


def membership_frequency(circuits: Sequence[Iterable[Component]], components: Sequence[Component]) -> pd.DataFrame:
    """Fraction of ``circuits`` that contain each of ``components`` (all of a model's, typically).

    Returns one row per component (in the given order): ``component, kind, layer, head`` (head index,
    None for MLPs), ``count`` and ``frequency`` (count / number of circuits).
    """
    if not circuits:
        raise ParameterError("membership frequency needs at least one circuit")
    sets = [set(c) for c in circuits]
    rows = []
    for c in components:
        count = sum(c in s for s in sets)
        rows.append(
            {
                "component": str(c),
                "kind": c.kind,
                "layer": c.layer,
                "head": c.index if c.is_head else None,
                "count": count,
                "frequency": count / len(sets),
            }
        )
    return pd.DataFrame(rows)


def core_components(
    circuits: Sequence[Iterable[Component]], min_frequency: float = CORE_FREQUENCY
) -> frozenset[Component]:
    """Components present in at least ``min_frequency`` of ``circuits`` (a fraction in (0, 1])."""
    if not 0 < min_frequency <= 1:
        raise ParameterError(f"min_frequency must be a fraction in (0, 1], got {min_frequency}")
    if not circuits:
        raise ParameterError("the core needs at least one circuit")
    sets = [set(c) for c in circuits]
    universe = set().union(*sets)
    # compare counts, not floats: present in >= ceil(min_frequency * n) circuits
    need = math.ceil(min_frequency * len(sets) - 1e-9)
    return frozenset(c for c in universe if sum(c in s for s in sets) >= need)


def membership_grid(frequency: pd.DataFrame, n_heads: int) -> pd.DataFrame:
    """A :func:`membership_frequency` table as a layer x column grid for a heatmap: ``layer``, ``column``
    (``"H0"`` ... ``"H{n_heads-1}"`` then ``"MLP"``) and ``value`` (the frequency), in that order."""
    rows = []
    for layer in sorted(frequency["layer"].unique()):
        at = frequency[frequency["layer"] == layer]
        heads = {int(r.head): r.frequency for r in at.itertuples() if r.kind == "head"}
        mlps = [r.frequency for r in at.itertuples() if r.kind == "mlp"]
        for h in range(n_heads):
            rows.append({"layer": int(layer), "column": f"H{h}", "value": float(heads.get(h, 0.0))})
        rows.append({"layer": int(layer), "column": "MLP", "value": float(mlps[0]) if mlps else 0.0})
    return pd.DataFrame(rows)


def factor_summary(runs: Sequence[RobustnessRun]) -> pd.DataFrame:
    """One row per (task, factor): ``n_runs``, ``mean_jaccard``, circuit size (mean, std, min, max) and
    score (mean, min, max; fractions of the full metric, each run under its own metric)."""
    rows = []
    keys = list(dict.fromkeys((r.task, r.factor) for r in runs))
    for task, factor in keys:
        group = [r for r in runs if r.task == task and r.factor == factor]
        sizes = pd.Series([r.n_components for r in group], dtype=float)
        scores = pd.Series([r.score for r in group], dtype=float)
        rows.append(
            {
                "task": task,
                "factor": factor,
                "n_runs": len(group),
                "levels": ", ".join(r.level for r in group),
                "mean_jaccard": mean_pairwise_jaccard([r.components for r in group]),
                "size_mean": sizes.mean(),
                "size_std": sizes.std(ddof=0),
                "size_min": int(sizes.min()),
                "size_max": int(sizes.max()),
                "score_mean": scores.mean(),
                "score_min": scores.min(),
                "score_max": scores.max(),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the factor loop


def check_factors(factors: Iterable[str]) -> list[str]:
    """Validate factor names (subset of :data:`FACTORS`); returns them in :data:`FACTORS` order."""
    factors = list(factors)
    unknown = sorted(set(factors) - set(FACTORS))
    if unknown:
        raise ParameterError(f"unknown robustness factor(s) {unknown}; valid: {', '.join(FACTORS)}")
    return [f for f in FACTORS if f in factors]


def robustness_dataset(
    model,
    model_name: str,
    task: str,
    *,
    seed: int,
    n_prompts: int,
    template: str,
    corruption: str = BASE_CORRUPTION,
    min_prompts: int = 8,
    filter_correct: bool = True,
    metric: str | None = None,
    split: Split | None = None,
    **dataset_kwargs,
) -> TaskDataset:
    """The dataset of one run, filtered as discovery filters (:func:`~seqcirc_utils.discovery.pipeline.discovery_dataset`
    with ``filter_correct`` and the metric, default the task's own), drawn 2x / 4x larger when a seed leaves fewer
    than ``min_prompts`` (:data:`~seqcirc_utils.discovery.pipeline.DRAW_GROWTH`); ``split`` is one side of a
    sequence split. Greater-than uses its own template and its one corruption."""
    options = dict(dataset_kwargs, n=n_prompts, seed=seed, split=split)
    if task != GREATER_THAN:
        options |= {"template": template, "corruption": corruption}
    return discovery_dataset(
        model,
        model_name,
        task,
        filter_correct=filter_correct,
        metric=resolve_metric(task, metric),
        min_prompts=min_prompts,
        growth=DRAW_GROWTH,
        **options,
    )


def _random_order_sweep(ablator: Ablator, threshold: float, order: Sequence[Component]) -> PruningResult:
    """A sweep in a shuffled order with the paper sweep's two passes: ``order``, then its reverse over the
    components still kept (the paper's forward pass runs roughly opposite to its backward pass)."""
    first = sweep_prune(ablator, [threshold], order=list(order), progress=False)[0]
    second = sweep_prune(ablator, [threshold], order=list(order)[::-1], start=first.components, progress=False)[0]
    return replace(
        second,
        forward_passes=first.forward_passes + second.forward_passes,
        seconds=first.seconds + second.seconds,
        removed_order=first.removed_order + second.removed_order,
    )


def _run(
    task: str,
    factor: str,
    level: str,
    run_id: str,
    ablator: Ablator,
    seed: int,
    corruption: str,
    config: DiscoveryConfig,
    how: str,
    order: Sequence[Component] | None,
) -> RobustnessRun:
    t0, p0 = time.perf_counter(), ablator.forward_passes
    threshold = config.thresholds[0]
    if order is not None:
        result, method = _random_order_sweep(ablator, threshold, order), RANDOM_ORDER_METHOD
    elif how == "sweep":
        result, method = sweep_prune(ablator, [threshold], order=config.sweep.order, progress=False)[0], "sweep"
    else:
        result = prune(ablator, [threshold], method=config.method, progress=False, **config.method_options())[0]
        method = str(config.method)
    return RobustnessRun(
        task,
        factor,
        level,
        seed,
        corruption,
        ablator.metric,
        method,
        result.components,
        result.score.score,
        ablator.full_metric,
        len(ablator.dataset),
        ablator.forward_passes - p0,
        time.perf_counter() - t0,
        [str(c) for c in order] if order is not None else None,
        run_id=run_id,
        n_sequences=ablator.dataset.n_sequences,
        dataset=ablator.dataset,
    )


def robustness_plan(
    task: str,
    factors: Sequence[str],
    *,
    n_seeds: int,
    n_orders: int,
    corruptions: Sequence[str],
    seed: int,
    metric: str,
) -> list[tuple[str, str]]:
    """The ``(factor, level)`` pairs of one task's grid, in run order. The order factor's levels are the
    paper's sweep order and ``random0 ... random{n_orders-1}``; greater-than has no corruption factor."""
    plan: list[tuple[str, str]] = []
    for factor in check_factors(factors):
        if factor == "seed":
            plan += [("seed", str(seed + k)) for k in range(n_seeds)]
        elif factor == "order":
            plan += [("order", PAPER_ORDER)] + [("order", f"random{r}") for r in range(n_orders)]
        elif factor == "corruption" and task != GREATER_THAN:
            plan += [("corruption", c) for c in corruptions]
        elif factor == "metric":
            plan += [("metric", metric), ("metric", "kl")]
    return plan


@dataclass
class RobustnessGrid:
    """One task's runs: ``runs`` in plan order (a shared run appears once per factor that includes it, with the
    same ``run_id``), ``failed`` (one row per planned run that was not used: ``task, factor, level, seed,
    corruption, metric, reason``), and ``heldout`` (seed -> the checked :class:`Ablator` of that seed's held-out
    prompts, for every seed run whose held-out prompts pass the filter and the baseline check; a seed whose
    held-out set fails is in ``failed`` with factor ``"heldout"``)."""

    task: str
    runs: list[RobustnessRun]
    failed: list[dict]
    heldout: dict[int, Ablator] = field(default_factory=dict, repr=False)
    config: DiscoveryConfig | None = None


def robustness_runs(
    model,
    info,
    model_name: str,
    task: str,
    config: DiscoveryConfig | None = None,
    *,
    factors: Sequence[str] = FACTORS,
    n_seeds: int = 5,
    n_orders: int = 5,
    corruptions: Sequence[str] = CORRUPTIONS,
    n_prompts: int = 24,
    template: str = "among_words",
    seed: int = 0,
    progress: bool = True,
    **dataset_kwargs,
) -> RobustnessGrid:
    """Every run of the robustness grid for one task (see the module docstring and :func:`robustness_plan`).

    ``config`` is the discovery configuration tested (one threshold; default ``DiscoveryConfig()``): the ``seed``
    and ``corruption`` factors run its method with its options; ``order`` uses the paper's sweep and randomly
    ordered two-pass sweeps (order ``r`` shuffled by ``random.Random(seed + r)``); ``metric`` uses the paper's sweep
    for both levels. Its ablation, filter, ``min_prompts`` and split apply to every run: with ``split="disjoint"``
    each seed's discovery prompts are that seed's discovery side and its held-out prompts (drawn for the seed
    factor, :attr:`RobustnessGrid.heldout`) the other side, as :func:`~seqcirc_utils.discovery.pipeline.discover`
    draws them. A run that two factors share is computed once (same ``run_id``). Every run's baseline is checked;
    a failing run is listed in ``failed``, not used. The same arguments give the same circuits.
    ``dataset_kwargs`` (e.g. ``prefix``) go to every dataset.
    """
    config = config or DiscoveryConfig()
    factors = check_factors(factors)
    for name, value in (("n_seeds", n_seeds), ("n_prompts", n_prompts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(n_orders, bool) or not isinstance(n_orders, int) or n_orders < 0:
        raise ParameterError(
            f"n_orders must be a non-negative integer (random orders beside the paper's), got {n_orders!r}"
        )
    bad = sorted(set(corruptions) - set(CORRUPTIONS))
    if bad:
        raise ParameterError(f"unknown corruption(s) {bad}; valid: {', '.join(CORRUPTIONS)}")
    if len(config.thresholds) != 1:
        raise ParameterError(f"robustness runs take one threshold, got {list(config.thresholds)}")
    metric = resolve_metric(task, config.metric)

    def data(s: int, corruption: str, role: int) -> TaskDataset:
        splits = split_pair(config.split, s, config.split_shares, config.min_sequences)
        return robustness_dataset(
            model,
            model_name,
            task,
            seed=s + (HELDOUT_SEED_OFFSET if role else 0),
            n_prompts=n_prompts,
            template=template,
            corruption=corruption,
            min_prompts=config.min_prompts,
            filter_correct=config.filter_correct,
            metric=metric,
            split=splits[role],
            **dataset_kwargs,
        )

    ablators: dict[tuple, Ablator | str] = {}  # (seed, corruption, metric) -> checked Ablator or why not

    def ablator(s: int, corruption: str, run_metric: str) -> Ablator | str:
        key = (s, corruption, run_metric)
        if key not in ablators:
            try:
                same_data = next(
                    (
                        a
                        for (s2, c2, _), a in ablators.items()
                        if (s2, c2) == (s, corruption) and isinstance(a, Ablator)
                    ),
                    None,
                )
                ds = same_data.dataset if same_data is not None else data(s, corruption, 0)
                ab = Ablator(model, info, ds, mode=config.ablation, metric=run_metric)
                check_baseline(ab, model_name)
                check_faithfulness_baseline(ab, config.n_resamples, config.bootstrap_seed)
                ablators[key] = ab
            except SeqcircError as err:
                ablators[key] = str(err)
        return ablators[key]

    done: dict[str, RobustnessRun] = {}
    runs: list[RobustnessRun] = []
    failed: list[dict] = []
    plan = robustness_plan(
        task, factors, n_seeds=n_seeds, n_orders=n_orders, corruptions=corruptions, seed=seed, metric=metric
    )
    for factor, level in tqdm(plan, desc=f"robustness {task}", disable=not progress, leave=False):
        s = int(level) if factor == "seed" else seed
        corruption = level if factor == "corruption" else BASE_CORRUPTION
        run_metric = level if factor == "metric" else metric
        how = {"order": "sweep" if level == PAPER_ORDER else level, "metric": "sweep"}.get(factor, str(config.method))
        run_id = f"seed={s} corruption={corruption} metric={run_metric} method={how}"
        ab = ablator(s, corruption, run_metric)
        if isinstance(ab, str):
            failed.append(
                {
                    "task": task,
                    "factor": factor,
                    "level": level,
                    "seed": s,
                    "corruption": corruption,
                    "metric": run_metric,
                    "reason": ab,
                }
            )
            continue
        if run_id not in done:
            order = None
            if how.startswith("random"):
                order = list(info.components)
                random.Random(seed + int(how.removeprefix("random"))).shuffle(order)
            done[run_id] = _run(task, factor, level, run_id, ab, s, corruption, config, how, order)
        runs.append(replace(done[run_id], factor=factor, level=level))
    heldout: dict[int, Ablator] = {}
    for r in runs:
        if r.factor != "seed" or r.seed in heldout:
            continue
        try:
            ds = data(r.seed, BASE_CORRUPTION, 1)
            overlap = sequence_overlap(r.dataset, ds)
            if config.split == "disjoint" and overlap:
                raise AssertionError(f"seed {r.seed}: held-out prompts share {overlap} sequences with discovery")
            held = Ablator(model, info, ds, mode=config.ablation, metric=metric)
            check_baseline(held, model_name)
            heldout[r.seed] = held
        except SeqcircError as err:
            failed.append(
                {
                    "task": task,
                    "factor": "heldout",
                    "level": str(r.seed),
                    "seed": r.seed,
                    "corruption": BASE_CORRUPTION,
                    "metric": metric,
                    "reason": str(err),
                }
            )
    return RobustnessGrid(task, runs, failed, heldout, config)


def distinct_runs(runs: Sequence[RobustnessRun]) -> list[RobustnessRun]:
    """Each computed run once (the first of those sharing a ``task`` and ``run_id``, e.g. the base run that is both
    the seed factor's first level and the corruption factor's ``randAll``): what pooled statistics count."""
    seen: dict[tuple[str, str], RobustnessRun] = {}
    for r in runs:
        seen.setdefault((r.task, r.run_id or f"{r.factor}={r.level}"), r)
    return list(seen.values())


# --------------------------------------------------------------------------- transfer and the Jaccard reference


def transfer_scores(
    circuits: Sequence[Iterable[Component]], ablators: Sequence[Ablator], draws_per_pass: int | None = DRAWS_PER_PASS
) -> np.ndarray:
    """``[len(circuits), len(ablators)]``: each circuit's score (m(C) / m(full), everything else ablated; for
    KL 1 - KL(C) / KL(empty)) on each ablator's prompts, with its means and metric. Circuits are scored
    ``draws_per_pass`` per batched forward call (:func:`~seqcirc_utils.evaluation.nulls.circuit_metric_values`):
    one prompt-batch pass per circuit and ablator. Equals ``ablator.score(circuit).score`` cell by cell."""
    circuits = [frozenset(c) for c in circuits]
    out = np.zeros((len(circuits), len(ablators)))
    for j, ab in enumerate(ablators):
        if circuits:
            values = circuit_metric_values(ab, circuits, draws_per_pass)
            out[:, j] = statistic_of(ab, values, "score").numpy()
    return out


@dataclass
class TransferMatrix:
    """Circuits (rows: the seed runs ``sources``, by dataset seed) scored on held-out splits (columns: ``targets``,
    by the seed whose split they are the held-out side of). ``scores[i, j]``: fraction of the full metric;
    ``overlap[i, j]``: sequence identities that row ``i``'s discovery prompts share with column ``j``'s held-out
    prompts (0 on the diagonal of a disjoint split; off the diagonal the splits are different partitions, so
    some sequences may recur)."""

    task: str
    threshold: float
    sources: list[int]
    targets: list[int]
    circuits: list[frozenset[Component]] = field(repr=False)
    scores: np.ndarray
    overlap: np.ndarray
    n_prompts: list[int]
    n_sequences: list[int]
    core: frozenset[Component] | None = field(default=None, repr=False)
    core_scores: np.ndarray | None = None

    @property
    def passes(self) -> np.ndarray:
        """``scores >= threshold`` (bool, same shape)."""
        return self.scores >= self.threshold

    def off_diagonal(self) -> list[tuple[int, int]]:
        """Cells ``(i, j)`` whose circuit and held-out split come from different seeds."""
        return [
            (i, j)
            for i in range(len(self.sources))
            for j in range(len(self.targets))
            if self.sources[i] != self.targets[j]
        ]

    def pass_rate(self, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
        """The stability measure: the fraction of off-diagonal cells that reach the threshold, with a percentile
        cluster-bootstrap interval over the source circuits (a resample draws circuits with replacement and
        takes every cell of each), beside the diagonal's rate (each circuit on its own seed's held-out split) and
        the mean off-diagonal score. ``{"n_runs", "n_cells", "n_pass", "pass_rate", "pass_ci95", "ci_unit",
        "diagonal_n", "diagonal_pass_rate", "mean_score", "mean_overlap"}`` (rate and interval None without
        off-diagonal cells)."""
        cells = self.off_diagonal()
        diagonal = [
            (i, j)
            for i in range(len(self.sources))
            for j in range(len(self.targets))
            if self.sources[i] == self.targets[j]
        ]
        passes = self.passes
        out = {
            "n_runs": len(self.sources),
            "n_cells": len(cells),
            "n_pass": int(sum(passes[c] for c in cells)),
            "pass_rate": None,
            "pass_ci95": None,
            "ci_unit": "circuit",
            "diagonal_n": len(diagonal),
            "diagonal_pass_rate": float(np.mean([passes[c] for c in diagonal])) if diagonal else None,
            "mean_score": float(np.mean([self.scores[c] for c in cells])) if cells else None,
            "mean_overlap": float(np.mean([self.overlap[c] for c in cells])) if cells else None,
        }
        if cells:
            values = torch.tensor([float(passes[c]) for c in cells], dtype=torch.float64)
            lo, hi = cluster_bootstrap_mean_ci(values, [self.sources[i] for i, _ in cells], n_resamples, seed, level)
            out |= {"pass_rate": float(values.mean()), "pass_ci95": [lo, hi]}
        return out

    def core_summary(self) -> dict | None:
        """The core on every held-out split: ``{"components", "n_components", "heldout": [{"heldout_seed",
        "score", "passes"}, ...], "mean_score", "n_pass", "n_splits"}`` (None without a core). Each split is
        disjoint from its own seed's discovery prompts only: the core was chosen from every seed's runs."""
        if self.core is None or self.core_scores is None:
            return None
        per = [
            {"heldout_seed": t, "score": float(v), "passes": bool(v >= self.threshold)}
            for t, v in zip(self.targets, self.core_scores)
        ]
        return {
            "components": [str(c) for c in sort_components(self.core)],
            "n_components": len(self.core),
            "heldout": per,
            "mean_score": float(np.mean(self.core_scores)) if per else None,
            "n_pass": sum(p["passes"] for p in per),
            "n_splits": len(per),
        }

    def rows(self) -> list[dict]:
        """One row per cell: ``task, source_seed, heldout_seed, score, passes, off_diagonal, overlap,
        n_prompts, n_sequences`` (the held-out split's)."""
        return [
            {
                "task": self.task,
                "source_seed": self.sources[i],
                "heldout_seed": self.targets[j],
                "score": float(self.scores[i, j]),
                "passes": bool(self.passes[i, j]),
                "off_diagonal": self.sources[i] != self.targets[j],
                "overlap": int(self.overlap[i, j]),
                "n_prompts": self.n_prompts[j],
                "n_sequences": self.n_sequences[j],
            }
            for i in range(len(self.sources))
            for j in range(len(self.targets))
        ]


def transfer_matrix(
    grid: RobustnessGrid,
    threshold: float | None = None,
    core: Iterable[Component] | None = None,
    draws_per_pass: int | None = DRAWS_PER_PASS,
) -> TransferMatrix:
    """Every seed run's circuit of ``grid`` on every seed's held-out split (:attr:`RobustnessGrid.heldout`), with
    the grid's ablation and metric, batched (:func:`transfer_scores`); ``threshold`` defaults to the grid's.
    ``core`` (e.g. :func:`core_components` of the runs) is scored in the same passes on every split
    (:attr:`TransferMatrix.core_scores`, :meth:`TransferMatrix.core_summary`)."""
    config = grid.config or DiscoveryConfig()
    threshold = config.thresholds[0] if threshold is None else threshold
    seeds = [r for r in grid.runs if r.factor == "seed"]
    targets = sorted(grid.heldout)
    ablators = [grid.heldout[t] for t in targets]
    circuits = [r.components for r in seeds]
    core = frozenset(core) if core is not None else None
    scores = transfer_scores(circuits + ([core] if core is not None else []), ablators, draws_per_pass)
    overlap = np.array(
        [
            [sequence_overlap(r.dataset, grid.heldout[t].dataset) if r.dataset is not None else -1 for t in targets]
            for r in seeds
        ],
        dtype=int,
    ).reshape(len(seeds), len(targets))
    return TransferMatrix(
        grid.task,
        threshold,
        [r.seed for r in seeds],
        targets,
        circuits,
        scores[: len(circuits)],
        overlap,
        [len(grid.heldout[t].dataset) for t in targets],
        [grid.heldout[t].dataset.n_sequences for t in targets],
        core,
        scores[len(circuits)] if core is not None else None,
    )


def matched_draws(
    info, circuits: Sequence[Iterable[Component]], n_draws: int = N_DRAWS, seed: int = 0, mlp_window: int = 1
) -> list[list[frozenset[Component]]]:
    """Per circuit, ``n_draws`` random circuits matched to it per layer
    (:func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`, circuit ``i`` seeded ``seed + i``)."""
    return [matched_random_circuits(info, c, n_draws, seed + i, mlp_window) for i, c in enumerate(circuits)]


def jaccard_reference(
    info, circuits: Sequence[Iterable[Component]], n_draws: int = N_DRAWS, seed: int = 0, mlp_window: int = 1
) -> dict:
    """The circuits' mean pairwise Jaccard against that of random circuits of the same make-up.

    Draw ``k`` replaces every circuit by its ``k``-th matched random circuit (:func:`matched_draws`: the same
    number of heads in every layer, as many MLPs within ``mlp_window`` layers) and takes their mean pairwise
    Jaccard. Returns ``{"observed", "n_circuits", "mlp_window", "seed", "null"}`` plus
    :func:`~seqcirc_utils.evaluation.nulls.null_summary` (``null_mean``, ``null_p5/p50/p95``,
    ``observed_percentile``, one-sided ``p_value``, ``n_draws``). Pure set arithmetic: no forward pass."""
    circuits = [frozenset(c) for c in circuits]
    if len(circuits) < 2:
        raise ParameterError(f"a Jaccard reference needs at least two circuits, got {len(circuits)}")
    observed = mean_pairwise_jaccard(circuits)
    draws = matched_draws(info, circuits, n_draws, seed, mlp_window)
    null = [mean_pairwise_jaccard([d[k] for d in draws]) for k in range(n_draws)]
    return {
        "observed": observed,
        **null_summary(observed, null),
        "n_circuits": len(circuits),
        "mlp_window": mlp_window,
        "seed": seed,
        "null": null,
    }


# --------------------------------------------------------------------------- tables


def runs_table(runs: Sequence[RobustnessRun]) -> pd.DataFrame:
    """One row per run (``RobustnessRun.to_json`` without the component list, plus ``circuit`` as text)."""
    rows = []
    for r in runs:
        d = r.to_json()
        d["circuit"] = " ".join(d.pop("components"))
        rows.append(d)
    return pd.DataFrame(rows)
