"""The appendix's figures (notebook 90): every typed record the chapters wrote, drawn by kind, grouped by chapter.

The notebook only displays what these functions return (``figures.figure(chart, caption)``): per-head score
tables as small multiples (:func:`head_score_figures`), attention patterns side by side (:func:`pattern_figure`),
each distinct circuit once (:func:`distinct_circuits`, :func:`circuit_figure`) and edge circuits
(:func:`edge_circuit_figure`). Nothing is recomputed: every figure is drawn from the result files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt

from seqcirc_utils.core.records import AttentionPattern, CircuitRecord, HeadScores
from seqcirc_utils.core.result_records import circuits_in
from seqcirc_utils.core.results import chapter_of, find_records
from seqcirc_utils.discovery.edges.search import EdgeCircuit
from seqcirc_utils.report import plots

#: What each score column means (captions use these; a score not listed is named by its key).
SCORE_TEXT = {
    "estimated_drop": "the estimated drop, in points of the full model's metric, when the head alone is "
    "mean-ablated (attribution patching)",
    "drop_points": "the exact drop, in points of the full metric, when the head alone is ablated",
    "member": "mean attention from a sequence member to the member k places before it",
    "token": "mean attention from a sequence member to the token k positions before it",
    "same_type": "member_k1 - token_k1: red heads follow the previous member, blue heads the previous token",
    "final_to_last_member": "attention from the final position to the last member shown",
    "final_to_members": "attention from the final position to all members",
    "final_to_bos": "attention from the final position to the BOS token",
    "member_to_prev_member": "attention from each member to the previous member",
    "member_to_same_type": "attention from each member to earlier members",
    "member_to_first_member": "attention from each member to the first member",
    "copy": "OV copy score: fraction of members the head's OV circuit maps to themselves",
    "next": "OV successor score: fraction of members the head's OV circuit maps to the next member",
    "prev": "OV predecessor score: fraction of members mapped to the previous member",
    "mean": "mean direct logit attribution to logit(correct) - logit(last member), in nats",
    "std": "standard deviation over prompts of the direct logit attribution, in nats",
}
#: The group of files no notebook claims (drawn last).
OTHER = "other"

Figure = tuple[Any, str]  # (altair chart, caption)


def score_stem(score: str) -> str:
    """A score column without its offset suffix: ``member_k2`` -> ``member``."""
    return re.sub(r"_k\d+$", "", score)


def describe_score(score: str) -> str:
    """The caption text of a score column (``member_k2`` -> the ``member`` text; ``add2`` -> the add-k text;
    otherwise the key in backticks)."""
    stem = score_stem(score)
    if score in SCORE_TEXT or stem in SCORE_TEXT:
        return SCORE_TEXT.get(score, SCORE_TEXT.get(stem))
    if m := re.fullmatch(r"(add|sub)(\d+)", score):
        return (
            f"OV score: fraction of members mapped to the member {m.group(2)} places "
            f"{'after' if m.group(1) == 'add' else 'before'}"
        )
    return f"`{score}`"


def files_by_chapter(data: Mapping[str, Any], writers: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{chapter: {file name: JSON}}``: each file under the notebook that wrote it (:func:`chapter_of` of
    ``writers``, see :func:`~seqcirc_utils.core.results.result_writers`), chapters in order, :data:`OTHER` last."""
    groups: dict[str, dict[str, Any]] = {}
    for name, obj in data.items():
        groups.setdefault(chapter_of(name, dict(writers)) or OTHER, {})[name] = obj
    return {c: groups[c] for c in sorted(groups, key=lambda c: (c == OTHER, c))}


def head_score_figures(name: str, obj: Any) -> list[Figure]:
    """Small multiples of every per-head score table (:class:`HeadScores`) in one result file's JSON ``obj``:
    scores differing only by an offset k (``member_k1``, ``member_k2``) share one figure; panels by the table's
    panel columns that vary."""
    out = []
    for path, raw in find_records(obj, HeadScores.kind):
        record = HeadScores.from_json(raw)
        table = record.frame()
        panels = [c for c in record.panels if table[c].nunique() > 1]
        families: dict[str, list[str]] = {}
        for col in record.scores:
            families.setdefault(score_stem(str(col)), []).append(col)
        for stem, cols in families.items():
            split = f", one panel per {' and '.join(panels)}" if panels else ""
            ks = f" for k = {', '.join(c.rsplit('_k', 1)[1] for c in cols)} (columns)" if len(cols) > 1 else ""
            several = bool(panels) or len(cols) > 1
            caption = (
                f"Every head's {describe_score(cols[0])}{ks}{split}; layer 0 at the top"
                + (
                    ", one colour scale for all panels. Look for the cells that stand out, and whether the same "
                    "heads stand out in every panel."
                    if several
                    else ". Look for the cells that stand out."
                )
                + (f" ({record.description}.)" if record.description else "")
                + f" From `{name}`, `{path}`."
            )
            out.append((plots.head_heatmap_panels(table, cols, panels, value_title=stem), caption))
    return out


def pattern_figure(name: str, obj: Any) -> Figure | None:
    """The attention patterns (:class:`AttentionPattern`) of one result file side by side, or None."""
    charts = []
    for path, raw in find_records(obj, AttentionPattern.kind):
        pat = AttentionPattern.from_json(raw)
        frame = plots.matrix_frame(pat.pattern, row="query", col="key")
        frame["query"] = frame["query"].map(lambda i, labels=pat.query_labels: f"{i}: {labels[i]}")
        frame["key"] = frame["key"].map(lambda i, labels=pat.key_labels: f"{i}: {labels[i]}")
        charts.append(
            plots.matrix_heatmap(
                frame,
                row="query",
                col="key",
                value_title="attention",
                title=f"{pat.component} ({pat.description or path})",
            )
        )
    if not charts:
        return None
    caption = (
        f"Attention patterns stored in `{name}` (rows: the attending position, columns: the position attended "
        "to; darker = more attention). Look for the position each row attends to most."
    )
    return alt.hconcat(*charts).resolve_scale(color="shared"), caption


def distinct_circuits(files: Mapping[str, Any]) -> list[tuple[str, CircuitRecord]]:
    """``(file name, circuit)`` for each distinct circuit in ``files`` ({name: JSON}), first file first: a
    chapter's summary file may repeat the circuit of its ``circuit_*.json``. Circuits are the same when task,
    template, direction, threshold, method and components agree."""
    seen: dict[tuple, tuple[str, CircuitRecord]] = {}
    for name, obj in files.items():
        for r in circuits_in(obj):
            key = (r.task, r.template, r.direction, r.threshold, r.method, str(r.heads), str(r.mlps))
            seen.setdefault(key, (name, r))
    return list(seen.values())


def circuit_figure(n_layers: int, n_heads: int, circuits: Sequence[tuple[str, CircuitRecord]]) -> Figure:
    """One diagram per circuit of :func:`distinct_circuits`, side by side."""
    diagrams = [
        plots.circuit_diagram(
            n_layers,
            n_heads,
            sorted(r.components),
            title=f"{r.task} ({r.direction}) @ {r.threshold:g}: {len(r.heads)} heads, {len(r.mlps)} MLPs",
        )
        for _, r in circuits
    ]
    caption = (
        f"The circuits of this chapter ({', '.join(sorted({n for n, _ in circuits}))}): every head (circle) "
        "and MLP (square, right column) of the model, the kept ones red, layer 0 at the bottom. Compare the "
        "panels for the components every circuit keeps."
    )
    return alt.hconcat(*diagrams), caption


def edge_circuits_in(files: Mapping[str, Any]) -> list[EdgeCircuit]:
    """Every edge circuit record in ``files`` ({name: JSON}), typed."""
    return [EdgeCircuit.from_json(r) for obj in files.values() for _, r in find_records(obj, EdgeCircuit.KIND)]


def edge_circuit_figure(n_layers: int, n_heads: int, edge_circuits: Sequence[EdgeCircuit]) -> Figure:
    """The edge circuits side by side: connected nodes and kept edges."""
    charts = [
        plots.circuit_diagram(
            n_layers,
            n_heads,
            ec.connected,
            edges=ec.edge_pairs(),
            title=f"{ec.task} @ {ec.threshold:g}: {len(ec.connected_edges)} edges, {len(ec.connected)} nodes",
        )
        for ec in edge_circuits
    ]
    caption = (
        "The edge circuits of this chapter: the nodes (red) that lie on a kept path from the input to the "
        "logits and the kept edges between them (lines; edges into the logits end above the top layer). Grey "
        "nodes are ablated or left dangling by edge pruning. Look for the few edges that carry the task."
    )
    return alt.hconcat(*charts), caption
