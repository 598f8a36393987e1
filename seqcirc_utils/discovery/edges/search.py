"""Edge circuits: iterative edge pruning inside a node circuit, and how faithfully it is reported.

The mechanism (which edges exist, how one is removed) is :mod:`seqcirc_utils.discovery.edges.patching`; the
attribution estimate (EAP, EAP-IG) is :mod:`seqcirc_utils.discovery.edges.attribution`. This module searches
for the edge circuit and reports it as an :class:`EdgeCircuit` record (``kind = "edge_circuit"``).

**Which nodes belong to an edge circuit.** The graph has a source (the input: the embedding, never
pruned, so it feeds every node's receivers directly), the nodes of the node circuit and a sink (the
logits). A node belongs to the edge circuit only when it lies on a path of *kept* edges from the
input to the logits (:func:`connected_nodes`); the others are **dangling**: whatever they compute
reaches the logits through no kept edge, so they are effectively ablated in the edge circuit.

**Three scores** (fractions of the full model's metric, every non-circuit component ablated):

- ``score``: the edge circuit's own score, every edge outside it removed by path patching;
- ``connected_score``: the connected nodes re-scored by node ablation (every other component,
  dangling ones included, ablated; every edge among the connected nodes present);
- ``node_score``: the node circuit the edges were pruned in.

``connected_score`` differs from ``score`` by the removed edges between connected nodes, and from
``node_score`` by the dangling nodes (it equals it when none dangles).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tqdm.auto import tqdm

from seqcirc_utils.core.config import check_thresholds
from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.options import EDGE_METHODS as METHODS  # noqa: F401 - METHODS re-exported
from seqcirc_utils.core.options import EdgeMethod
from seqcirc_utils.core.records import checked_json
from seqcirc_utils.core.types import Component, parse_component, sort_components
from seqcirc_utils.discovery.edges.attribution import edge_attribution
from seqcirc_utils.discovery.edges.patching import Edge, EdgePatcher, circuit_edges
from seqcirc_utils.discovery.pruning import largest_passing_prefix
from seqcirc_utils.scoring.ablation import Ablator

INPUT = "input"  # the graph's source node (the embedding)


# --------------------------------------------------------------------------- graph


def connected_nodes(components: Iterable[Component], kept: Iterable[Edge]) -> frozenset[Component]:
    """The nodes of ``components`` on a path of ``kept`` edges from the input to the logits.

    The input (embedding) sends to every node directly (its edges are never pruned), so a node is
    reachable from the input whenever it is in ``components``; it is connected when, in addition,
    a chain of kept edges leads from it to the logits (``receiver is None``). Edges touching a
    component outside ``components`` are ignored. Breadth-first search backward from the logits.
    """
    comps = frozenset(components)
    from_input = set(comps)  # every node reads the embedding through the residual stream
    into: dict[Component | None, list[Component]] = {}
    for e in kept:
        if e.sender in comps and (e.receiver is None or e.receiver in comps):
            into.setdefault(e.receiver, []).append(e.sender)
    to_logits: set[Component] = set()
    frontier: list[Component | None] = [None]
    while frontier:
        node = frontier.pop()
        for s in into.get(node, ()):
            if s not in to_logits:
                to_logits.add(s)
                frontier.append(s)
    return frozenset(from_input & to_logits)


def dangling_components(components: Iterable[Component], kept: Iterable[Edge]) -> list[Component]:
    """Components of ``components`` on no kept path from the input to the logits, sorted.

    Includes a node with no kept outgoing edge and one whose kept outgoing edges all lead to such
    nodes (see :func:`connected_nodes`).
    """
    comps = list(components)
    connected = connected_nodes(comps, kept)
    return [c for c in sort_components(comps) if c not in connected]


# --------------------------------------------------------------------------- the record


@dataclass
class EdgeCircuit:
    """An edge circuit inside a node circuit, and how it was found (the ``edge_circuit`` record).

    ``edges``/``removed``: kept/removed edges as ``{"sender", "receiver", "input", "score"}``, where
    ``score`` is the edge circuit's score (fraction of full) when that edge was tried for removal
    (exact) or its attribution-predicted score (eap/eap-ig), ``None`` when never tried. Kept edges
    include any into or out of dangling nodes (:attr:`connected_edges` leaves those out).
    ``score``, ``connected_score``, ``node_score``: the three scores of the module docstring.
    ``components``: the node circuit's nodes; ``connected``: those on a kept input -> logits path.
    ``dataset``: the dataset dict the scores were computed on (``TaskDataset.to_json()``), if known.
    """

    KIND: ClassVar[str] = "edge_circuit"
    SCHEMA_VERSION: ClassVar[int] = 2
    #: The result-record protocol of :mod:`seqcirc_utils.core.result_records` (``read_record``, ``read_result``).
    kind: ClassVar[str] = KIND
    schema_version: ClassVar[int] = SCHEMA_VERSION
    file: ClassVar[str] = "edges_*.json"

    threshold: float
    method: str
    edges: list[dict]
    removed: list[dict]
    score: float
    node_score: float
    connected_score: float | None
    components: frozenset[Component]
    connected: frozenset[Component]
    n_candidate_edges: int
    forward_passes: int
    seconds: float
    model: str | None = None
    task: str | None = None
    node_threshold: float | None = None
    ig_steps: int | None = None
    ablation: str | None = None
    metric: str | None = None
    dataset: dict | None = field(default=None, repr=False)

    @property
    def kept_edges(self) -> list[Edge]:
        """The kept edges as :class:`Edge` objects (pruning order)."""
        return [Edge.from_dict(d) for d in self.edges]

    @property
    def dangling(self) -> list[Component]:
        """Nodes of the node circuit on no kept input -> logits path, sorted."""
        return [c for c in sort_components(self.components) if c not in self.connected]

    @property
    def connected_edges(self) -> list[dict]:
        """The kept edges on a kept input -> logits path (both ends connected, or into the logits)."""
        return [
            d
            for d, e in zip(self.edges, self.kept_edges)
            if e.sender in self.connected and (e.receiver is None or e.receiver in self.connected)
        ]

    def edge_pairs(self, connected_only: bool = True) -> list[tuple[str, str]]:
        """``(sender, receiver)`` name pairs of the (connected) kept edges, for drawing; the logits
        are ``"logits"``. An edge into several inputs of one head gives one pair per input."""
        return [(d["sender"], d["receiver"]) for d in (self.connected_edges if connected_only else self.edges)]

    def faithfulness(self) -> dict:
        """The three scores and the node counts as one dict (the ``faithfulness`` key of the JSON).

        ``node_ablation_score`` is kept for readers of older files: it is the node circuit's score
        (edge pruning never drops a node), the same number as ``node_circuit_score``.
        """
        return {
            "edge_circuit_score": self.score,
            "node_circuit_score": self.node_score,
            "node_ablation_score": self.node_score,
            "node_ablation_score_connected": self.connected_score,
            "n_nodes": len(self.components),
            "n_connected": len(self.connected),
            "dangling": [str(c) for c in self.dangling],
        }

    def to_json(self) -> dict:
        """The record as a JSON-ready dict; :meth:`from_json` inverts it exactly.

        Keys: ``kind``, ``schema_version``, the dataclass fields (components as sorted names) and the
        derived ``scores`` (``edge_circuit``, ``connected_nodes``, ``node_circuit``), ``n_edges``,
        ``n_connected_edges``, ``n_connected``, ``dangling`` and ``faithfulness``.
        """
        return {
            "kind": self.KIND,
            "schema_version": self.SCHEMA_VERSION,
            "model": self.model,
            "task": self.task,
            "threshold": self.threshold,
            "node_threshold": self.node_threshold,
            "method": self.method,
            "ig_steps": self.ig_steps,
            "ablation": self.ablation,
            "metric": self.metric,
            "score": self.score,
            "connected_score": self.connected_score,
            "node_score": self.node_score,
            "scores": {
                "edge_circuit": self.score,
                "connected_nodes": self.connected_score,
                "node_circuit": self.node_score,
            },
            "edges": [dict(d) for d in self.edges],
            "n_edges": len(self.edges),
            "n_connected_edges": len(self.connected_edges),
            "n_candidate_edges": self.n_candidate_edges,
            "removed": [dict(d) for d in self.removed],
            "components": [str(c) for c in sort_components(self.components)],
            "connected": [str(c) for c in sort_components(self.connected)],
            "n_connected": len(self.connected),
            "dangling": [str(c) for c in self.dangling],
            "faithfulness": self.faithfulness(),
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
            "dataset": self.dataset,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EdgeCircuit:
        """Read a dict written by :meth:`to_json` (``kind == "edge_circuit"``, schema version 2)."""
        data = checked_json(
            data,
            cls.KIND,
            cls.SCHEMA_VERSION,
            (
                "threshold",
                "method",
                "edges",
                "removed",
                "score",
                "node_score",
                "connected_score",
                "components",
                "connected",
                "n_candidate_edges",
                "forward_passes",
                "seconds",
            ),
        )
        return cls(
            threshold=data["threshold"],
            method=data["method"],
            edges=[dict(d) for d in data["edges"]],
            removed=[dict(d) for d in data["removed"]],
            score=data["score"],
            node_score=data["node_score"],
            connected_score=data["connected_score"],
            components=frozenset(parse_component(c) for c in data["components"]),
            connected=frozenset(parse_component(c) for c in data["connected"]),
            n_candidate_edges=data["n_candidate_edges"],
            forward_passes=data["forward_passes"],
            seconds=data["seconds"],
            model=data.get("model"),
            task=data.get("task"),
            node_threshold=data.get("node_threshold"),
            ig_steps=data.get("ig_steps"),
            ablation=data.get("ablation"),
            metric=data.get("metric"),
            dataset=data.get("dataset"),
        )


EdgePruningResult = EdgeCircuit  # the name before the record was typed


def _ablator_labels(ablator: Ablator) -> dict:
    """Model, task, ablation, metric and dataset of the ablator's run, for the record."""
    ds = ablator.dataset
    return {
        "model": ds.model,
        "task": ds.task,
        "ablation": ablator.mode.value,
        "metric": ablator.metric,
        "dataset": ds.to_json(),
    }


def edge_circuit(
    ablator: Ablator,
    components: Iterable[Component],
    kept: Iterable[Edge],
    threshold: float,
    method: str = "given",
    tried: Mapping[Edge, float] | None = None,
    node_threshold: float | None = None,
    ig_steps: int | None = None,
) -> EdgeCircuit:
    """Score the edge circuit made of the ``kept`` edges of node circuit ``components``.

    Every candidate edge (:func:`~seqcirc_utils.discovery.edges.patching.circuit_edges`) not in ``kept`` is
    removed. Returns the :class:`EdgeCircuit` with its three scores; ``tried`` gives each edge's
    score when it was tried for removal (stored with the edge). Three forward passes (node circuit,
    edge circuit, connected nodes); ``forward_passes``/``seconds`` of the record count only these.
    """
    t0, p0 = time.perf_counter(), ablator.forward_passes
    patcher = EdgePatcher(ablator, components)
    candidates = circuit_edges(ablator.info, patcher.components)
    kept_set = set(kept)
    unknown = kept_set - set(candidates)
    if unknown:
        raise ParameterError(f"edges {', '.join(sorted(map(str, unknown)))} are not edges of the node circuit")
    tried = tried or {}
    kept_list = [e for e in candidates if e in kept_set]
    removed = [e for e in candidates if e not in kept_set]
    node_score = patcher.baseline_score()
    score = patcher.score(removed) if removed else node_score
    connected = connected_nodes(patcher.components, kept_list)
    connected_score = ablator.score(connected).score
    return EdgeCircuit(
        threshold=threshold,
        method=method,
        edges=[e.to_dict(tried.get(e)) for e in kept_list],
        removed=[e.to_dict(tried.get(e)) for e in removed],
        score=score,
        node_score=node_score,
        connected_score=connected_score,
        components=patcher.components,
        connected=connected,
        n_candidate_edges=len(candidates),
        forward_passes=ablator.forward_passes - p0,
        seconds=time.perf_counter() - t0,
        node_threshold=node_threshold,
        ig_steps=ig_steps,
        **_ablator_labels(ablator),
    )


# --------------------------------------------------------------------------- pruning


def prune_edges(
    ablator: Ablator,
    components: Iterable[Component],
    threshold: float = 0.8,
    method: EdgeMethod | str = EdgeMethod.EXACT,
    ig_steps: int = 5,
    progress: bool = True,
    node_threshold: float | None = None,
) -> EdgeCircuit:
    """Iterative edge pruning inside the node circuit ``components``; the :class:`EdgeCircuit`.

    ``method="exact"`` (ACDC-style path patching): receivers are processed from the logits backward
    (:func:`~seqcirc_utils.discovery.edges.patching.receiver_order`), each receiver's senders (upstream circuit
    components only) nearest first; an edge is removed when the edge circuit's score without it (all
    edges removed so far also removed) stays ``>= threshold``, else kept. One forward pass per edge.
    ``method="eap"``/``"eap-ig"``: edges are ranked by edge attribution patching (plain, or with
    ``ig_steps`` integrated-gradient steps) in the node circuit, and the largest prefix of the
    ranking (most positive predicted effect first) whose removal keeps the exact score ``>= threshold``
    is removed (interpolation/bisection search, a few exact passes).

    Edge pruning never deletes a node; a node left on no kept input -> logits path is reported as
    dangling and is not part of the edge circuit's node set (``connected``), which is re-scored by
    node ablation (``connected_score``). ``node_threshold`` (the node circuit's threshold) is only
    stored in the record.

    If the node circuit itself scores below ``threshold``, only edges whose removal lifts the score
    to ``>= threshold`` are removed.
    """
    threshold = check_thresholds([threshold])[0]
    method = EdgeMethod.parse(method)  # ParameterError naming the edge methods
    t0, p0 = time.perf_counter(), ablator.forward_passes
    patcher = EdgePatcher(ablator, components)
    candidates = circuit_edges(ablator.info, patcher.components)
    node_score = patcher.baseline_score()
    tried: dict[Edge, float] = {}
    removed: list[Edge] = []
    if method == "exact":
        current = node_score
        for e in tqdm(candidates, desc=f"edge pruning @ {threshold:g}", disable=not progress, leave=False):
            s = patcher.score(removed + [e])
            tried[e] = s
            if s >= threshold:
                removed.append(e)
                current = s
    else:
        current = _prune_by_attribution(
            patcher, candidates, threshold, ig_steps if method == "eap-ig" else 1, tried, removed, progress
        )
    removed_set = set(removed)
    kept = [e for e in candidates if e not in removed_set]
    result = edge_circuit(
        ablator,
        patcher.components,
        kept,
        threshold,
        method=method,
        tried=tried,
        node_threshold=node_threshold,
        ig_steps=ig_steps if method == "eap-ig" else None,
    )
    if abs(result.node_score - node_score) > 1e-4 or (method == "exact" and abs(result.score - current) > 1e-4):
        raise RuntimeError(
            f"edge circuit scores changed between identical passes: node {node_score} vs "
            f"{result.node_score}, edges {current} vs {result.score}"
        )
    result.forward_passes = ablator.forward_passes - p0
    result.seconds = time.perf_counter() - t0
    return result


def _prune_by_attribution(
    patcher: EdgePatcher,
    candidates: list[Edge],
    threshold: float,
    ig_steps: int,
    tried: dict[Edge, float],
    removed: list[Edge],
    progress: bool,
) -> float:
    """Remove the largest attribution-ranked prefix of ``candidates`` that keeps the score
    ``>= threshold`` (appended to ``removed``; predicted scores into ``tried``); returns the score."""
    ab = patcher.ab
    attr = edge_attribution(ab, patcher.components, candidates, ig_steps=ig_steps, progress=progress)
    base = patcher.baseline_score()
    predicted = {e: base + ab.fraction_of_full(v) - ab.fraction_of_full(0.0) for e, v in attr.items()}
    order = sorted(candidates, key=lambda e: (-predicted[e], str(e)))
    tried.update(predicted)
    cumulative = base
    guess = 0
    for k, e in enumerate(order):
        cumulative += predicted[e] - base
        if cumulative >= threshold:
            guess = k + 1
    lo, lo_score = largest_passing_prefix(
        lambda k: patcher.score(order[:k]), len(order), threshold, base, max(guess, 1)
    )
    if base < threshold and lo == 0:
        return base
    removed += order[:lo]
    return lo_score


# --------------------------------------------------------------------------- faithfulness


def faithfulness(ablator: Ablator, result: EdgeCircuit) -> dict:
    """The edge circuit's three scores and node counts (:meth:`EdgeCircuit.faithfulness`).

    Returns ``{"edge_circuit_score", "node_circuit_score", "node_ablation_score",
    "node_ablation_score_connected", "n_nodes", "n_connected", "dangling"}`` (fractions of the full
    model's metric; ``node_ablation_score`` is the node circuit's score, kept for older readers).
    The scores are those of the record; ``ablator`` re-scores the connected nodes only when the
    record lacks that score (``connected_score`` is None).
    """
    if result.connected_score is None:
        result.connected_score = ablator.score(result.connected).score
    return result.faithfulness()


def score_with_faithfulness(ablator: Ablator, result: EdgeCircuit) -> tuple[float, dict]:
    """``(edge circuit patching score, faithfulness dict)`` for one pruning result."""
    return result.score, faithfulness(ablator, result)


def run_edges(
    circuit_record: dict,
    threshold: float,
    method: str = "exact",
    ig_steps: int = 5,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Edge pruning for one circuit-JSON record (see :mod:`seqcirc_utils.discovery.pipeline`); the CLI's output dict.

    Returns :meth:`EdgeCircuit.to_json` of the result (model and task from the circuit record).
    """
    from seqcirc_utils.core.types import Circuit
    from seqcirc_utils.models.loading import load_model
    from seqcirc_utils.tasks.datasets import TaskDataset

    for key in ("model", "heads", "mlps", "dataset"):
        if key not in circuit_record:
            raise BadFileError(f"circuit JSON lacks key {key!r}; needs model, heads, mlps, dataset")
    model, info = load_model(circuit_record["model"], device=device)
    ds = TaskDataset.from_json(circuit_record["dataset"])
    ablator = Ablator(
        model, info, ds, mode=circuit_record.get("ablation", "mean"), metric=circuit_record.get("metric", "logit_diff")
    )
    circuit = Circuit.from_lists(circuit_record["heads"], circuit_record["mlps"])
    result = prune_edges(
        ablator,
        circuit.components,
        threshold,
        method=method,
        ig_steps=ig_steps,
        progress=progress,
        node_threshold=circuit_record.get("threshold"),
    )
    result.model = circuit_record["model"]
    result.task = circuit_record.get("task", result.task)
    return result.to_json()
