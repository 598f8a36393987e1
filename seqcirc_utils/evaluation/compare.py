"""Comparing circuits across tasks: overlap tables, shared sub-circuits, cross-task scores,
and the "analogous ablation" of one task's sub-circuit inside another task.

Circuits are ``{name: set of Components}``; :func:`circuits_from_records` builds them from the
circuit-JSON records of :mod:`seqcirc_utils.discovery.pipeline`.

Across thresholds (nested circuits, one ladder per task):

- :func:`overlap_by_threshold`: pairwise overlap of the tasks' circuits at every threshold;
- :func:`shared_by_threshold`: the components every task's circuit keeps, per threshold;
- :func:`sharing_null_by_threshold`: beside each observed overlap, the overlap of circuits of these sizes
  expected by chance (:func:`~seqcirc_utils.evaluation.nulls.sharing_null`: a layer-stratified permutation of
  membership, set arithmetic only): expected count, its 95 % range, p of observed >= null;
- :func:`control_comparison`: the reference for "the tasks share more than any two tasks do": pairs of tasks
  against pairs of a task and a control task (overlap beyond chance, cross-task scores);
- :func:`same_different`: each circuit against a reference circuit (same / dropped / added);
- :func:`random_circuits` + :func:`score_against_random`: a circuit scored on several datasets
  beside random circuits of the same size (matched per kind, or per layer);
- :func:`ablation_vs_random`: the analogous ablation of a sub-circuit's heads from the full model
  against random head sets of the same size.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Hashable, Iterable, Mapping

import pandas as pd

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import Circuit, Component, sort_components
from seqcirc_utils.discovery.pipeline import score_with_ci
from seqcirc_utils.evaluation.nulls import N_DRAWS, PAIR, circuit_null, sharing_null
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import Ablator, AblatorCache
from seqcirc_utils.tasks.datasets import TaskDataset

Circuits = Mapping[str, frozenset[Component]]


def circuits_from_records(records: Mapping[str, dict]) -> dict[str, frozenset[Component]]:
    """``{name: circuit-JSON record}`` -> ``{name: frozenset of Components}``."""
    return {name: Circuit.from_lists(r["heads"], r["mlps"]).components for name, r in records.items()}


def overlap_table(circuits: Circuits, kind: str | None = None) -> pd.DataFrame:
    """Pairwise ``intersection``, ``union``, ``jaccard`` (= |A & B| / |A | B|) for every pair of circuits.

    ``kind="head"`` or ``"mlp"`` restricts to one kind of component.
    """
    rows = []
    for a, b in itertools.combinations(circuits, 2):
        sa, sb = _only(circuits[a], kind), _only(circuits[b], kind)
        inter, union = sa & sb, sa | sb
        rows.append(
            {
                "a": a,
                "b": b,
                "size_a": len(sa),
                "size_b": len(sb),
                "intersection": len(inter),
                "union": len(union),
                "jaccard": len(inter) / len(union) if union else 1.0,
                "shared": " ".join(map(str, sort_components(inter))),
            }
        )
    return pd.DataFrame(rows)


def shared_components(circuits: Circuits, kind: str | None = None) -> list[Component]:
    """Components present in every circuit (the shared sub-circuit), in forward order."""
    sets = [_only(c, kind) for c in circuits.values()]
    return sort_components(set.intersection(*map(set, sets))) if sets else []


def membership_matrix(circuits: Circuits) -> pd.DataFrame:
    """Boolean table: one row per component in any circuit, one column per circuit (for upset/Venn charts)."""
    every = sort_components(set().union(*circuits.values()))
    return pd.DataFrame(
        {name: [c in comps for c in every] for name, comps in circuits.items()}, index=[str(c) for c in every]
    )


def cross_task_scores(
    model,
    info: ModelInfo,
    circuits: Circuits,
    datasets: Mapping[str, TaskDataset],
    mode: str = "mean",
    metric: str | None = None,
    ablators: AblatorCache | None = None,
) -> pd.DataFrame:
    """Score every circuit on every task's data: rows = circuit's task, columns = data's task.

    Each cell is the circuit's metric with everything else ablated, as a fraction of the full
    model's metric on that data (the paper: numerals circuit on number-word data, ...). The metric
    defaults per dataset (greater-than: probability difference; otherwise logit difference).
    ``ablators``: the caller's :class:`AblatorCache` (reuses the means of earlier calls on these datasets).
    """
    ablators = ablators if ablators is not None else AblatorCache(max_size=len(datasets) or 1)
    table = {}
    for data_name, ds in datasets.items():
        ab = ablators.get(model, info, ds, mode, metric)
        table[data_name] = {name: ab.score(comps).score for name, comps in circuits.items()}
    return pd.DataFrame(table).rename_axis(index="circuit", columns="data")


def cross_task_baselines(
    model,
    info: ModelInfo,
    circuits: Circuits,
    datasets: Mapping[str, TaskDataset],
    n_draws: int,
    seed: int = 0,
    ablators: AblatorCache | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The matched baseline of every off-diagonal cell of :func:`cross_task_scores` (one task's circuit on another
    task's data): ``n_draws`` random circuits matched per layer to the row's circuit
    (:func:`~seqcirc_utils.evaluation.nulls.circuit_null`, statistic ``score``, seed ``seed`` for every cell),
    scored on the column's data exactly like the circuit.

    One row per cell: ``circuit, data, score`` (the circuit's, a fraction of the full metric), ``null_mean,
    null_p5, null_p95, percentile`` (the score's in the null) and ``p`` (one-sided, the score above the null:
    ``(1 + #{null >= score}) / (n_draws + 1)``), ``n_draws``. Cost: ``n_draws + 1`` passes per cell.
    """
    ablators = ablators if ablators is not None else AblatorCache(max_size=len(datasets) or 1)
    rows = []
    for data_name, ds in datasets.items():
        ab = ablators.get(model, info, ds)
        for name, comps in circuits.items():
            if name == data_name:
                continue
            null = circuit_null(ab, comps, n_draws=n_draws, seed=seed, statistic="score", progress=progress)
            rows.append(
                {
                    "circuit": name,
                    "data": data_name,
                    "score": null.observed,
                    "null_mean": null.null_mean,
                    "null_p5": null.null_p5,
                    "null_p95": null.null_p95,
                    "percentile": null.observed_percentile,
                    "p": null.p_value,
                    "n_draws": null.n_draws,
                }
            )
    return pd.DataFrame(rows)


def analogous_ablation(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    sub_circuit: Iterable[Component],
    within: Iterable[Component] | None = None,
    mode: str = "mean",
    metric: str | None = None,
    ablators: AblatorCache | None = None,
) -> dict:
    """Ablate ``sub_circuit`` (e.g. the greater-than heads) inside another task.

    From the full model (``within=None``) or from that task's circuit ``within``: returns the
    score (fraction of the full metric) before and after removing the sub-circuit, and the drop.
    The metric defaults per dataset (greater-than: probability difference). ``ablators``: the caller's
    :class:`AblatorCache` (repeated calls on one dataset then compute its means once).
    """
    ab = (ablators if ablators is not None else AblatorCache(max_size=1)).get(model, info, dataset, mode, metric)
    base = set(info.components) if within is None else set(within)
    sub = set(sub_circuit)
    before = ab.score(base).score
    after = ab.score(base - sub).score
    return {"before": before, "after": after, "drop": before - after, "n_ablated": len(base & sub)}


def matched_random_heads(
    info: ModelInfo,
    sub_circuit: Iterable[Component],
    within: Iterable[Component] | None = None,
    n_samples: int = 5,
    seed: int = 0,
) -> list[list[Component]]:
    """Random head sets to compare an analogous ablation of ``sub_circuit``'s heads against.

    Each of the ``n_samples`` sets has as many heads as ``sub_circuit`` has inside ``within`` (the
    whole model when ``None``), drawn without replacement from the heads of ``within`` that are not
    in ``sub_circuit`` (fewer when there are not enough). Seeded: the same arguments give the same sets.
    """
    sub = {c for c in sub_circuit if c.is_head}
    pool_of = info.heads if within is None else [c for c in sort_components(within) if c.is_head]
    n = len([h for h in pool_of if h in sub])
    pool = [h for h in pool_of if h not in sub]
    rng = random.Random(seed)
    return [sort_components(rng.sample(pool, min(n, len(pool)))) for _ in range(n_samples)]


# --------------------------------------------------------------------------- across thresholds

#: How :func:`random_circuits` matches a circuit: ``"kind"`` the same number of heads and of MLPs drawn
#: from the whole model; ``"layer"`` every head replaced by a random head of the same layer, MLPs kept.
RANDOM_MATCHES = ("kind", "layer")
#: Statuses in a :func:`same_different` table.
SAME, DROPPED, ADDED = "same", "dropped", "added"


def overlap_by_threshold(circuits: Mapping[float, Circuits], kind: str | None = None) -> pd.DataFrame:
    """:func:`overlap_table` of the circuits at every threshold, with a ``threshold`` column first.

    ``circuits``: ``{threshold: {task: components}}``.
    """
    frames = [overlap_table(c, kind).assign(threshold=t) for t, c in circuits.items()]
    if not frames:
        return pd.DataFrame(
            columns=["threshold", "a", "b", "size_a", "size_b", "intersection", "union", "jaccard", "shared"]
        )
    out = pd.concat(frames, ignore_index=True)
    return out[["threshold", *[c for c in out.columns if c != "threshold"]]]


def shared_by_threshold(
    circuits: Mapping[float, Circuits], kind: str | None = None
) -> dict[float, frozenset[Component]]:
    """``{threshold: components kept by every task's circuit at that threshold}`` (:func:`shared_components`)."""
    return {t: frozenset(shared_components(c, kind)) for t, c in circuits.items()}


def sharing_null_by_threshold(
    info: ModelInfo,
    levels: Mapping[float, Circuits],
    n_permutations: int = N_DRAWS,
    seed: int = 0,
    kind: str | None = None,
    pairs: bool = True,
) -> pd.DataFrame:
    """:func:`~seqcirc_utils.evaluation.nulls.sharing_null` of the circuits at every threshold (``levels``:
    ``{threshold: {task: components}}``): one row per threshold and group (shared by all, each pair), the
    ``threshold`` column first, then ``group, a, b, tasks, kind, observed, expected, null_lo, null_hi,
    percentile, p, n_permutations``. Thresholds with fewer than two circuits are left out."""
    frames = [
        pd.DataFrame(sharing_null(info, c, n_permutations, seed, kind=kind, pairs=pairs)).assign(threshold=t)
        for t, c in levels.items()
        if len(c) >= 2
    ]
    if not frames:
        return pd.DataFrame(columns=["threshold", "group", "a", "b", "tasks", "kind", "observed", "expected"])
    out = pd.concat(frames, ignore_index=True)
    return out[["threshold", *[c for c in out.columns if c != "threshold"]]]


def control_comparison(
    pair_rows: pd.DataFrame,
    tasks: Iterable[str],
    control: str,
    cross: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> dict:
    """Do ``tasks`` share more with each other than with the ``control`` task? The reference for "the sequence
    tasks share more than any two tasks do", from one threshold's pair rows of
    :func:`~seqcirc_utils.evaluation.nulls.sharing_null` (rows ``group == "pair"`` with ``a, b, observed,
    expected, p``) and, optionally, a :func:`cross_task_scores` table ``cross`` (rows circuit, columns data).

    Overlap is compared beyond chance: ``excess = observed - expected``. Returns ``{"tasks", "control",
    "task_pairs", "control_pairs"`` (counts), ``"task_excess_mean", "control_excess_mean",
    "control_excess_max"``, ``"task_pairs_above_control"`` (task pairs whose excess exceeds every control pair's),
    ``"task_pairs_above_chance", "control_pairs_above_chance"`` (p <= ``alpha``), ``"cross_between_tasks"``
    (mean score of a task's circuit on another task's data), ``"cross_tasks_on_control"`` (the tasks' circuits on
    the control's data), ``"cross_control_on_tasks"`` (the control's circuit on the tasks' data)``}``; means over
    no pair are None.
    """
    tasks = [t for t in tasks if t != control]
    pairs = pair_rows[pair_rows["group"] == PAIR]
    within = pairs[pairs["a"].isin(tasks) & pairs["b"].isin(tasks)]
    with_control = pairs[
        ((pairs["a"] == control) & pairs["b"].isin(tasks)) | ((pairs["b"] == control) & pairs["a"].isin(tasks))
    ]

    def mean(values) -> float | None:
        values = [float(v) for v in values]
        return statistics.fmean(values) if values else None

    task_excess = list(within["observed"] - within["expected"])
    control_excess = list(with_control["observed"] - with_control["expected"])
    out = {
        "tasks": tasks,
        "control": control,
        "task_pairs": len(within),
        "control_pairs": len(with_control),
        "task_excess_mean": mean(task_excess),
        "control_excess_mean": mean(control_excess),
        "control_excess_max": max(control_excess) if control_excess else None,
        "task_pairs_above_control": (
            sum(e > max(control_excess) for e in task_excess) if control_excess and task_excess else None
        ),
        "task_pairs_above_chance": int((within["p"] <= alpha).sum()),
        "control_pairs_above_chance": int((with_control["p"] <= alpha).sum()),
        "cross_between_tasks": None,
        "cross_tasks_on_control": None,
        "cross_control_on_tasks": None,
    }
    if cross is not None and control in cross.index and control in cross.columns:
        present = [t for t in tasks if t in cross.index and t in cross.columns]
        out["cross_between_tasks"] = mean(cross.loc[a, b] for a in present for b in present if a != b)
        out["cross_tasks_on_control"] = mean(cross.loc[t, control] for t in present)
        out["cross_control_on_tasks"] = mean(cross.loc[control, t] for t in present)
    return out


def same_different(reference: Iterable[Component], circuits: Mapping[Hashable, Iterable[Component]]) -> pd.DataFrame:
    """Each circuit against ``reference``, component by component.

    Rows: every component of the reference or of any circuit (forward order, as ``"L1.H2"`` text);
    columns: the circuits' labels; cells: ``"same"`` (in the reference and the circuit), ``"dropped"``
    (in the reference only), ``"added"`` (in the circuit only) or ``""`` (in neither).
    """
    ref = set(reference)
    sets = {k: set(v) for k, v in circuits.items()}
    every = sort_components(ref.union(*sets.values()))

    def status(c: Component, s: set[Component]) -> str:
        if c in ref:
            return SAME if c in s else DROPPED
        return ADDED if c in s else ""

    return pd.DataFrame(
        {k: [status(c, s) for c in every] for k, s in sets.items()},
        index=pd.Index([str(c) for c in every], name="component"),
    )


def same_different_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per circuit (column of a :func:`same_different` table): ``same, dropped, added`` counts and the
    share of the reference kept (``kept_of_reference`` = same / (same + dropped))."""
    rows = []
    for label in table.columns:
        col = table[label]
        n = {k: int((col == k).sum()) for k in (SAME, DROPPED, ADDED)}
        ref = n[SAME] + n[DROPPED]
        rows.append({"circuit": label, **n, "kept_of_reference": n[SAME] / ref if ref else float("nan")})
    return pd.DataFrame(rows)


def random_circuits(
    info: ModelInfo,
    components: Iterable[Component],
    n_samples: int = 5,
    seed: int = 0,
    match: str = "kind",
) -> list[frozenset[Component]]:
    """``n_samples`` random circuits matched to ``components`` (seeded: same arguments, same circuits).

    ``match="kind"``: as many heads and as many MLPs as ``components``, drawn without replacement
    from all of the model's heads and MLPs. ``match="layer"``: each head of ``components`` is replaced
    by a head drawn from the same layer (the layer's heads outside ``components`` first, so the draw
    differs from the circuit wherever the layer allows), its MLPs are kept; so the random circuit has
    the same heads per layer and the same MLPs, and differs only in which heads.
    """
    if match not in RANDOM_MATCHES:
        raise ParameterError(f"unknown match {match!r}; valid: {', '.join(RANDOM_MATCHES)}")
    comps = set(components)
    heads = [c for c in comps if c.is_head]
    mlps = [c for c in comps if c.is_mlp]
    rng = random.Random(seed)
    out = []
    for _ in range(n_samples):
        if match == "kind":
            drawn = rng.sample(list(info.heads), len(heads)) + rng.sample(list(info.mlps), len(mlps))
        else:
            drawn = list(mlps)
            for layer in sorted({h.layer for h in heads}):
                n = sum(h.layer == layer for h in heads)
                layer_heads = [h for h in info.heads if h.layer == layer]
                outside = [h for h in layer_heads if h not in comps]
                inside = [h for h in layer_heads if h in comps]
                pick = rng.sample(outside, min(n, len(outside)))
                drawn += pick + rng.sample(inside, n - len(pick))
        out.append(frozenset(drawn))
    return out


class _Scores:
    """Scores of circuits on one ablator, each distinct set scored once (nested thresholds repeat sets)."""

    def __init__(self, ablator: Ablator, n_resamples: int, seed: int):
        self.ablator, self.n_resamples, self.seed = ablator, n_resamples, seed
        self.cache: dict[frozenset[Component], dict] = {}

    def __call__(self, kept: Iterable[Component], with_ci: bool = False) -> dict:
        key = frozenset(kept)
        if key not in self.cache or (with_ci and "ci95" not in self.cache[key]):
            if with_ci:
                self.cache[key] = score_with_ci(self.ablator, key, self.n_resamples, self.seed, faithfulness=False)
            else:
                self.cache[key] = {"score": self.ablator.score(key).score}
        return self.cache[key]


def score_against_random(
    info: ModelInfo,
    circuits: Mapping[Hashable, Iterable[Component]],
    ablators: Mapping[Hashable, Ablator],
    n_random: int = 5,
    seed: int = 0,
    match: str = "kind",
    n_resamples: int = 1000,
    random_on: Iterable[Hashable] | None = None,
) -> pd.DataFrame:
    """Score every circuit on every ablator's data beside ``n_random`` matched random circuits.

    ``circuits``: ``{label: components}`` (e.g. the shared-by-all circuit per threshold);
    ``ablators``: ``{data label: Ablator}`` (e.g. ``"digits"`` in-sample and held-out). The random
    circuits of a label are drawn once (:func:`random_circuits`, seed ``seed + i`` for the i-th label)
    and scored on every dataset. One row per (circuit, data): ``circuit, data, heads, mlps,
    score, ci_lo, ci_hi`` (fraction of the full metric, 95 % bootstrap interval over prompts, see
    :func:`~seqcirc_utils.discovery.pipeline.score_with_ci`), ``random_mean, random_min, random_max,
    random_sd`` (over the random circuits), ``n_random``, ``beats_random`` (score > every random
    circuit's) and ``components`` (text). Identical circuits (and random draws) are scored once per dataset.
    ``random_on``: the data labels on which the random circuits are scored (default all; elsewhere the
    random columns are NaN, ``n_random`` 0 and ``beats_random`` False), to spend fewer forward passes.
    """
    scorers = {d: _Scores(ab, n_resamples, seed) for d, ab in ablators.items()}
    random_on = set(ablators) if random_on is None else set(random_on)
    if random_on - set(ablators):
        raise ParameterError(
            f"random_on {sorted(map(str, random_on - set(ablators)))} not among the data labels "
            f"{[str(d) for d in ablators]}"
        )
    rows = []
    for i, (label, comps) in enumerate(circuits.items()):
        comps = frozenset(comps)
        randoms = random_circuits(info, comps, n_random, seed + i, match)
        for d, score in scorers.items():
            own = score(comps, with_ci=True)
            rand = [score(r)["score"] for r in randoms] if d in random_on else []
            rows.append(
                {
                    "circuit": label,
                    "data": d,
                    "heads": sum(c.is_head for c in comps),
                    "mlps": sum(c.is_mlp for c in comps),
                    "score": own["score"],
                    "ci_lo": own["ci95"][0],
                    "ci_hi": own["ci95"][1],
                    "random_mean": statistics.fmean(rand) if rand else float("nan"),
                    "random_min": min(rand, default=float("nan")),
                    "random_max": max(rand, default=float("nan")),
                    "random_sd": statistics.pstdev(rand) if rand else float("nan"),
                    "n_random": len(rand),
                    "beats_random": bool(rand) and own["score"] > max(rand),
                    "components": " ".join(map(str, sort_components(comps))),
                }
            )
    return pd.DataFrame(rows)


def ablation_vs_random(
    ablator: Ablator,
    sub_circuit: Iterable[Component],
    n_random: int = 5,
    seed: int = 0,
) -> dict:
    """Ablate ``sub_circuit``'s heads from the full model on ``ablator``'s data, and as many random heads.

    Returns ``{"n_ablated", "score", "drop", "random_drops", "random_drop"}``: the score (fraction of
    the full metric) with those heads ablated and everything else intact, ``drop = 1 - score``, the
    drops of ``n_random`` head sets of the same size drawn from the heads outside the sub-circuit
    (:func:`matched_random_heads`) and their mean (NaN without draws). One forward pass per set.
    """
    heads = sort_components(c for c in sub_circuit if c.is_head)
    score = ablator.score_ablated(heads) if heads else 1.0
    drops = (
        [
            1.0 - (ablator.score_ablated(r) if r else 1.0)
            for r in matched_random_heads(ablator.info, heads, None, n_random, seed)
        ]
        if heads
        else []
    )
    return {
        "n_ablated": len(heads),
        "score": score,
        "drop": 1.0 - score,
        "random_drops": drops,
        "random_drop": statistics.fmean(drops) if drops else (0.0 if not heads else float("nan")),
    }


def sharing_by_threshold(
    levels: Mapping[float, Circuits],
    ablators: Mapping[str, Ablator],
    reference: str,
    n_random: int = 5,
    seed: int = 0,
    n_permutations: int = N_DRAWS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """How each task's circuit shares with the ``reference`` task's circuit (e.g. greater-than), per threshold.

    ``levels``: ``{threshold: {task: components}}`` (nested ladders, the reference among the tasks);
    ``ablators``: ``{task: Ablator}`` on each task's data. One row per (threshold, other task):
    ``threshold, task, reference_size, task_size, shared_heads, shared_components, head_jaccard,
    jaccard, shared`` (the shared heads as text), then the analogous ablation both ways, from the full
    model (:func:`ablation_vs_random`, ``n_random`` matched random head sets, seeded): ``ref_in_task_drop``
    / ``ref_in_task_random`` (the reference circuit's heads ablated, scored on the task) and
    ``task_in_ref_drop`` / ``task_in_ref_random`` (the task's heads ablated, scored on the reference),
    in fractions of each task's full metric. Identical head sets are ablated once per dataset.

    Beside ``shared_heads``, the heads two circuits of these sizes share by chance
    (:func:`~seqcirc_utils.evaluation.nulls.sharing_null`, ``n_permutations`` layer-stratified permutations of
    both circuits, heads only): ``shared_heads_expected``, its 95 % range ``shared_heads_lo`` /
    ``shared_heads_hi``, ``shared_heads_p`` (p of observed >= null) and ``shared_heads_above_chance``
    (p <= ``alpha``; :func:`lost_at` of this column is where sharing beyond chance is lost).
    """
    memo: dict[tuple[str, frozenset[Component]], dict] = {}

    def ablate(task: str, comps: Iterable[Component]) -> dict:
        key = (task, frozenset(c for c in comps if c.is_head))
        if key not in memo:
            memo[key] = ablation_vs_random(ablators[task], key[1], n_random, seed)
        return memo[key]

    rows = []
    for t, circuits in levels.items():
        ref = set(circuits[reference])
        for task, comps in circuits.items():
            if task == reference:
                continue
            comps = set(comps)
            ref_h, task_h = _only(ref, "head"), _only(comps, "head")
            a, b = ablate(task, ref), ablate(reference, comps)
            null = sharing_null(
                ablators[reference].info, {reference: ref, task: comps}, n_permutations, seed, kind="head", pairs=False
            )[0]
            rows.append(
                {
                    "threshold": t,
                    "task": task,
                    "reference_size": len(ref),
                    "task_size": len(comps),
                    "shared_heads": len(ref_h & task_h),
                    "shared_components": len(ref & comps),
                    "head_jaccard": len(ref_h & task_h) / len(ref_h | task_h) if ref_h | task_h else 1.0,
                    "jaccard": len(ref & comps) / len(ref | comps) if ref | comps else 1.0,
                    "shared": " ".join(map(str, sort_components(ref_h & task_h))),
                    "ref_in_task_drop": a["drop"],
                    "ref_in_task_random": a["random_drop"],
                    "task_in_ref_drop": b["drop"],
                    "task_in_ref_random": b["random_drop"],
                    "shared_heads_expected": null["expected"],
                    "shared_heads_lo": null["null_lo"],
                    "shared_heads_hi": null["null_hi"],
                    "shared_heads_p": null["p"],
                    "shared_heads_above_chance": null["p"] <= alpha,
                    "n_permutations": null["n_permutations"],
                }
            )
    return pd.DataFrame(rows)


def lost_at(table: pd.DataFrame, value: str, by: str = "task", threshold: str = "threshold") -> dict:
    """Per ``by`` group, the highest threshold from which ``value`` is <= 0 at that and every lower threshold.

    E.g. with ``value="shared_heads"``: the threshold at which a task's circuit no longer shares any
    head with the other circuit (and never does again further down the nested ladder). ``None`` where
    it still has some at the lowest threshold; the highest threshold itself where it never has any.
    """
    out = {}
    for key, group in table.groupby(by, sort=False):
        g = group.sort_values(threshold, ascending=False)
        lost = None
        for t, v in zip(g[threshold], g[value]):
            if v > 0:
                lost = None
            elif lost is None:
                lost = float(t)
        out[key] = lost
    return out


def _only(components: Iterable[Component], kind: str | None) -> set[Component]:
    if kind not in (None, "head", "mlp"):
        raise ParameterError(f"unknown component kind {kind!r}; valid: head, mlp (or None for both)")
    return {c for c in components if kind is None or c.kind == kind}
