"""How stable is a circuit? The same task's circuit found again under changed choices.

One *run* finds one circuit at one threshold. A run differs from the **base run** (base dataset seed,
``randAll`` corruption, the dataset's default metric, ``method``) in exactly one *factor*:

- ``seed``: the dataset's seed (``seed, seed + 1, ...``: other prompts, same task and template);
- ``order``: the paper's sweep (backward then forward) against sweeps whose candidate order is shuffled
  (``random.Random(seed + r)``; each candidate tried once, :func:`~seqcirc_utils.discovery.pruning.sweep_prune`
  with an explicit order);
- ``corruption``: the corrupted prompts whose means replace ablated components (the six types of
  :data:`~seqcirc_utils.tasks.datasets.CORRUPTIONS`; greater-than has one and is skipped);
- ``metric``: the dataset's default metric vs the KL divergence to the full model (KL has no useful
  gradient at the full model, so the fast method cannot rank with it: both levels of this factor
  use the sweep, so they differ in the metric only).

Per factor: each component's **membership frequency** (fraction of runs whose circuit keeps it), the
**mean pairwise Jaccard** similarity of the circuits, the spread of size and score. The **core** of a
task is the set of components present in at least ``min_frequency`` (default 80 %) of all its runs;
:func:`score_core` scores it as a circuit on the base dataset (in-sample) and on a fresh dataset
(held-out: seed + 1000, same task/template/filter, its own means).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
from tqdm.auto import tqdm

from seqcirc_utils.core.config import check_thresholds
from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import PruneMethod
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.discovery.pipeline import (
    DRAW_GROWTH,
    HELDOUT_SEED_OFFSET,
    discovery_dataset,
    heldout_scores,
    resolve_metric,
    score_with_ci,
)
from seqcirc_utils.discovery.pruning import prune, sweep_prune
from seqcirc_utils.scoring.ablation import Ablator, check_baseline
from seqcirc_utils.tasks.datasets import CORRUPTIONS, GREATER_THAN, TaskDataset

FACTORS = ("seed", "order", "corruption", "metric")
CORE_FREQUENCY = 0.8
BASE_CORRUPTION = "randAll"
PAPER_ORDER = "paper"


@dataclass
class RobustnessRun:
    """One circuit of the robustness grid and how it was found."""

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

    @property
    def n_components(self) -> int:
        return len(self.components)

    def to_json(self) -> dict:
        """JSON-ready dict (components as sorted strings)."""
        return {
            "task": self.task,
            "factor": self.factor,
            "level": self.level,
            "seed": self.seed,
            "corruption": self.corruption,
            "metric": self.metric,
            "method": self.method,
            "components": [str(c) for c in sort_components(self.components)],
            "n_components": self.n_components,
            "score": self.score,
            "full_metric": self.full_metric,
            "n_prompts": self.n_prompts,
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
    **dataset_kwargs,
) -> TaskDataset:
    """The dataset of one run, filtered as discovery filters (:func:`~seqcirc_utils.discovery.pipeline.discovery_dataset`
    with the task's own metric), drawn 2x / 4x larger when a seed leaves fewer than ``min_prompts``
    (:data:`~seqcirc_utils.discovery.pipeline.DRAW_GROWTH`). Greater-than uses its own template and its one corruption."""
    options = dict(dataset_kwargs, n=n_prompts, seed=seed)
    if task != GREATER_THAN:
        options |= {"template": template, "corruption": corruption}
    return discovery_dataset(
        model,
        model_name,
        task,
        metric=resolve_metric(task, None),
        min_prompts=min_prompts,
        growth=DRAW_GROWTH,
        **options,
    )


def _run(
    task: str,
    factor: str,
    level: str,
    ablator: Ablator,
    seed: int,
    corruption: str,
    method: str,
    order: Sequence[Component] | None,
    threshold: float,
) -> RobustnessRun:
    t0, p0 = time.perf_counter(), ablator.forward_passes
    if order is None:
        result = prune(ablator, [threshold], method=method, progress=False)[0]
    else:
        result = sweep_prune(ablator, [threshold], order=list(order), progress=False)[0]
        method = "sweep-random-order"
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


def robustness_runs(
    model,
    info,
    model_name: str,
    task: str,
    *,
    threshold: float = 0.8,
    factors: Sequence[str] = FACTORS,
    n_seeds: int = 5,
    n_orders: int = 5,
    corruptions: Sequence[str] = CORRUPTIONS,
    method: str = "fast",
    n_prompts: int = 24,
    template: str = "among_words",
    seed: int = 0,
    min_prompts: int = 8,
    progress: bool = True,
    **dataset_kwargs,
) -> list[RobustnessRun]:
    """Every run of the robustness grid for one task (see the module docstring and :func:`robustness_plan`).

    The ``seed`` and ``corruption`` factors use ``method`` (``"fast"`` or ``"sweep"``); ``order`` uses
    the paper's sweep and randomly ordered sweeps (order ``r`` shuffled by ``random.Random(seed + r)``);
    ``metric`` uses the paper's sweep for both levels. A run that two factors share is computed once
    (the base run: seed ``seed``, ``randAll``, default metric, ``method``; the paper's sweep on the base
    dataset: the ``order`` factor's ``paper`` level and the ``metric`` factor's default level). The same
    arguments give the same circuits. ``dataset_kwargs`` (e.g. ``prefix``) go to every dataset.
    """
    factors = check_factors(factors)
    for name, value in (("n_seeds", n_seeds), ("n_prompts", n_prompts)):
        if not isinstance(value, int) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(n_orders, int) or n_orders < 0:
        raise ParameterError(
            f"n_orders must be a non-negative integer (random orders beside the paper's), got {n_orders!r}"
        )
    bad = sorted(set(corruptions) - set(CORRUPTIONS))
    if bad:
        raise ParameterError(f"unknown corruption(s) {bad}; valid: {', '.join(CORRUPTIONS)}")
    PruneMethod.parse(method)  # ParameterError naming the pruning methods
    check_thresholds([threshold])

    def data(s: int, corruption: str = BASE_CORRUPTION) -> TaskDataset:
        return robustness_dataset(
            model,
            model_name,
            task,
            seed=s,
            n_prompts=n_prompts,
            template=template,
            corruption=corruption,
            min_prompts=min_prompts,
            **dataset_kwargs,
        )

    base_ds = data(seed)
    metric = resolve_metric(task, None)
    base_ab = Ablator(model, info, base_ds, metric=metric)
    check_baseline(base_ab, model_name)
    done: dict[tuple, RobustnessRun] = {}  # (dataset seed, corruption, metric, how) -> run
    runs: list[RobustnessRun] = []
    plan = robustness_plan(
        task, factors, n_seeds=n_seeds, n_orders=n_orders, corruptions=corruptions, seed=seed, metric=metric
    )
    for factor, level in tqdm(plan, desc=f"robustness {task}", disable=not progress, leave=False):
        s = int(level) if factor == "seed" else seed
        corruption = level if factor == "corruption" else BASE_CORRUPTION
        run_metric = level if factor == "metric" else metric
        how = {"order": "sweep" if level == PAPER_ORDER else level, "metric": "sweep"}.get(factor, method)
        key = (s, corruption, run_metric, how)
        if key not in done:
            if (s, corruption, run_metric) == (seed, BASE_CORRUPTION, metric):
                ab = base_ab
            elif (s, corruption) == (seed, BASE_CORRUPTION):
                ab = Ablator(model, info, base_ds, metric=run_metric)
            else:
                ab = Ablator(model, info, data(s, corruption), metric=run_metric)
            order = None
            if how.startswith("random"):
                order = list(info.components)
                random.Random(seed + int(how.removeprefix("random"))).shuffle(order)
            done[key] = _run(task, factor, level, ab, s, corruption, "sweep" if order else how, order, threshold)
        runs.append(replace(done[key], factor=factor, level=level))
    return runs


# --------------------------------------------------------------------------- the core


def score_core(
    model,
    info,
    model_name: str,
    task: str,
    core: Iterable[Component],
    *,
    n_prompts: int = 24,
    template: str = "among_words",
    seed: int = 0,
    heldout_seed: int | None = None,
    min_prompts: int = 8,
    **dataset_kwargs,
) -> dict:
    """Score ``core`` as a circuit (every other head and MLP mean-ablated, the task's own metric) on the
    base dataset (``in_sample``) and on a fresh one (``heldout``: seed ``seed + HELDOUT_SEED_OFFSET``
    unless given, same task, template and filter, its own means), each with a 95 % bootstrap interval.

    Returns ``{"components", "n_components", "metric", "score", "score_ci95", "in_sample": {"seed",
    "n_prompts", "score", "ci95"}, "heldout": {"seed", "n_prompts", "score", "ci95", ...}}`` (scores:
    fractions of the full metric; ``score``/``score_ci95`` repeat the in-sample ones, so the dict reads
    like a circuit record for :func:`~seqcirc_utils.discovery.pipeline.score_columns`).
    """
    core = sort_components(core)
    heldout_seed = seed + HELDOUT_SEED_OFFSET if heldout_seed is None else heldout_seed
    metric = resolve_metric(task, None)
    ds = robustness_dataset(
        model,
        model_name,
        task,
        seed=seed,
        n_prompts=n_prompts,
        template=template,
        min_prompts=min_prompts,
        **dataset_kwargs,
    )
    in_sample = score_with_ci(Ablator(model, info, ds, metric=metric), core)
    options = dict(dataset_kwargs, n=n_prompts) | ({} if task == GREATER_THAN else {"template": template})
    # The core comes from runs over many seeds of the whole space, so its held-out set is a labelled resample
    # ("split": "resampled") with its overlap with the base dataset stated, not a disjoint split.
    (heldout,), _ = heldout_scores(
        model,
        info,
        model_name,
        task,
        [core],
        seed=heldout_seed,
        metric=metric,
        min_prompts=min_prompts,
        discovery=ds,
        **options,
    )
    return {
        "components": [str(c) for c in core],
        "n_components": len(core),
        "metric": metric,
        "score": in_sample["score"],
        "score_ci95": in_sample["ci95"],
        "in_sample": {
            "seed": seed,
            "n_prompts": in_sample["n_prompts"],
            "score": in_sample["score"],
            "ci95": in_sample["ci95"],
        },
        "heldout": heldout,
    }


def runs_table(runs: Sequence[RobustnessRun]) -> pd.DataFrame:
    """One row per run (``RobustnessRun.to_json`` without the component list, plus ``circuit`` as text)."""
    rows = []
    for r in runs:
        d = r.to_json()
        d["circuit"] = " ".join(d.pop("components"))
        rows.append(d)
    return pd.DataFrame(rows)
