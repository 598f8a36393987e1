"""Comparing circuits across tasks: overlap tables, shared sub-circuits, cross-task scores,
and the "analogous ablation" of one task's sub-circuit inside another task.

Circuits are ``{name: set of Components}``; :func:`circuits_from_records` builds them from the
circuit-JSON records of :mod:`seqcirc_utils.circuits`.
"""

from __future__ import annotations

import itertools
import random
from typing import Iterable, Mapping

import pandas as pd

from .ablation import get_ablator
from .models import ModelInfo
from .tasks import TaskDataset
from .types import Circuit, Component, sort_components

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
        rows.append({"a": a, "b": b, "size_a": len(sa), "size_b": len(sb), "intersection": len(inter),
                     "union": len(union), "jaccard": len(inter) / len(union) if union else 1.0,
                     "shared": " ".join(map(str, sort_components(inter)))})
    return pd.DataFrame(rows)


def shared_components(circuits: Circuits, kind: str | None = None) -> list[Component]:
    """Components present in every circuit (the shared sub-circuit), in forward order."""
    sets = [_only(c, kind) for c in circuits.values()]
    return sort_components(set.intersection(*map(set, sets))) if sets else []


def membership_matrix(circuits: Circuits) -> pd.DataFrame:
    """Boolean table: one row per component in any circuit, one column per circuit (for upset/Venn charts)."""
    every = sort_components(set().union(*circuits.values()))
    return pd.DataFrame({name: [c in comps for c in every] for name, comps in circuits.items()},
                        index=[str(c) for c in every])


def cross_task_scores(
    model, info: ModelInfo, circuits: Circuits, datasets: Mapping[str, TaskDataset], mode: str = "mean",
    metric: str | None = None,
) -> pd.DataFrame:
    """Score every circuit on every task's data: rows = circuit's task, columns = data's task.

    Each cell is the circuit's metric with everything else ablated, as a fraction of the full
    model's metric on that data (the paper: numerals circuit on number-word data, ...). The metric
    defaults per dataset (greater-than: probability difference; otherwise logit difference).
    """
    table = {}
    for data_name, ds in datasets.items():
        ab = get_ablator(model, info, ds, mode, metric)
        table[data_name] = {name: ab.score(comps).score for name, comps in circuits.items()}
    return pd.DataFrame(table).rename_axis(index="circuit", columns="data")


def analogous_ablation(
    model, info: ModelInfo, dataset: TaskDataset, sub_circuit: Iterable[Component],
    within: Iterable[Component] | None = None, mode: str = "mean", metric: str | None = None,
) -> dict:
    """Ablate ``sub_circuit`` (e.g. the greater-than heads) inside another task.

    From the full model (``within=None``) or from that task's circuit ``within``: returns the
    score (fraction of the full metric) before and after removing the sub-circuit, and the drop.
    The metric defaults per dataset (greater-than: probability difference).
    """
    ab = get_ablator(model, info, dataset, mode, metric)
    base = set(info.components) if within is None else set(within)
    sub = set(sub_circuit)
    before = ab.score(base).score
    after = ab.score(base - sub).score
    return {"before": before, "after": after, "drop": before - after, "n_ablated": len(base & sub)}


def matched_random_heads(
    info: ModelInfo, sub_circuit: Iterable[Component], within: Iterable[Component] | None = None,
    n_samples: int = 5, seed: int = 0,
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


def _only(components: Iterable[Component], kind: str | None) -> set[Component]:
    if kind not in (None, "head", "mlp"):
        raise ValueError(f"unknown component kind {kind!r}; valid: head, mlp (or None for both)")
    return {c for c in components if kind is None or c.kind == kind}
