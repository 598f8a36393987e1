"""The paper's GPT-2 small numbers beside this compendium's, read from ``results/<model>/*.json``.

Published values come from Lan, Torr & Barez (arXiv 2311.04131, EMNLP 2024) and, for greater-than,
Hanna, Liu & Variengien (NeurIPS 2023); see ``shared/reference/published-results.md``. Each
:class:`Anchor` names how to read the matching number from a result file; a missing file or key reads
as "not in this run". Files are read through their record types
(:func:`~seqcirc_utils.core.result_records.read_record`; circuit files by the one circuit reader,
:func:`~seqcirc_utils.core.result_records.read_circuits`). To compare a new result, add an :class:`Anchor` whose ``ours`` reads it.

Like with like: a circuit's score is shown in-sample first (the paper's scores are in-sample), with
its 95 % bootstrap interval and then the held-out score when the record has them. Greater-than's
probability difference is the exact two-digit PD (Hanna et al.'s) when the circuit record carries it;
a PD read from elsewhere is labelled with what it is. Each anchor's ``differs`` says what differs
between the published measurement and ours (the table's "what differs" column).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from seqcirc_utils.core.paths import PACKAGE_DATA
from seqcirc_utils.core.records import CircuitRecord
from seqcirc_utils.core.result_records import (
    Behaviour,
    MlpAblation,
    ResultRecord,
    SharedCircuits,
    SuccessorHeads,
    read_circuits,
    read_record,
)
from seqcirc_utils.core.types import parse_component

PUBLISHED_MODEL = "gpt2-small"
Reader = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class Anchor:
    """One published number, its source, and how to read ours from ``results/<model>/``."""

    quantity: str
    published: str
    source: str
    ours: Reader | None = None
    differs: str = ""


def _load(results: Path, record_type: type[ResultRecord]) -> Any | None:
    """The ``record_type`` record in ``results`` (None when its file is missing)."""
    path = results / record_type.file
    return read_record(path, record_type) if path.is_file() else None


def _behaviour_value(task: str, template: str, direction: str, column: str, percent: bool = False) -> Reader:
    def read(results: Path) -> str | None:
        data: Behaviour | None = _load(results, Behaviour)
        for row in data.rows if data else []:
            if (row.get("task"), row.get("template"), row.get("direction")) == (task, template, direction):
                value = row.get(column)
                if value is None:
                    return None
                return f"{100 * value:.1f} %" if percent else f"{value:.3f}"
        return None

    return read


#: The paper's numerals task in this run: ``numbers`` (two-digit numbers, digit tokens) where chapter 02 found
#: its circuit (SmolLM2), else ``digits`` (GPT-2, whose numbers up to 99 are single tokens).
NUMERALS = "numerals"
NUMERALS_TASKS = ("numbers", "digits")


def _task(results: Path, task: str) -> str:
    """``task``, or for :data:`NUMERALS` the first of :data:`NUMERALS_TASKS` with a circuit file in ``results``."""
    if task != NUMERALS:
        return task
    return next((t for t in NUMERALS_TASKS if (results / f"circuit_{t}.json").is_file()), NUMERALS_TASKS[-1])


def _which(results: Path, task: str) -> str:
    """The note that says which task stood for the numerals (empty for ``digits`` and the other tasks)."""
    return " (the numbers task: two-digit numbers)" if task == NUMERALS and _task(results, task) == "numbers" else ""


def _circuits(results: Path, task: str) -> list[CircuitRecord]:
    """The circuits of ``circuit_<task>.json`` (none when the file is missing)."""
    path = results / f"circuit_{_task(results, task)}.json"
    return read_circuits(path) if path.is_file() else []


def _circuit(results: Path, task: str, threshold: float = 0.8) -> CircuitRecord | None:
    return next((r for r in _circuits(results, task) if abs(float(r.threshold) - threshold) < 1e-9), None)


def _heads(record: CircuitRecord) -> list[str]:
    return [f"{l}.{h}" for l, h in record.heads]


def _any_circuit(results: Path, task: str, threshold: float = 0.8) -> CircuitRecord | None:
    """The record at ``threshold`` or, failing that, the file's lowest-threshold record."""
    record = _circuit(results, task, threshold)
    if record is not None:
        return record
    records = _circuits(results, task)
    return min(records, key=lambda r: r.threshold) if records else None


def _at_threshold(record: CircuitRecord, threshold: float) -> str:
    t = record.threshold
    return "" if t is None or abs(float(t) - threshold) < 1e-9 else f" (ours at {100 * float(t):.0f} %)"


def _circuit_heads(task: str, any_threshold: bool = False) -> Reader:
    def read(results: Path) -> str | None:
        record = _any_circuit(results, task) if any_threshold else _circuit(results, task)
        if record is None:
            return None
        return f"{len(record.heads)}: {' '.join(_heads(record))}" + _at_threshold(record, 0.8) + _which(results, task)

    return read


def _interval(ci) -> str:
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def score_text(record: CircuitRecord) -> str:
    """A circuit's score as the page shows it: in-sample first (the paper's kind), its 95 % interval,
    then the held-out score and interval when the record has them."""
    text = f"{100 * record.score:.2f} %"
    if record.score_ci95 or record.heldout:
        text += " in-sample" + _interval(record.score_ci95)
        held = record.heldout
        if held:
            text += f"; held-out {100 * held['score']:.2f} %{_interval(held.get('ci95'))} ({held['n_prompts']} prompts)"
    return text


def _circuit_score(task: str) -> Reader:
    def read(results: Path) -> str | None:
        record = _circuit(results, task)
        return None if record is None else score_text(record) + _which(results, task)

    return read


def _circuit_mlps(task: str, any_threshold: bool = False) -> Reader:
    def read(results: Path) -> str | None:
        record = _any_circuit(results, task) if any_threshold else _circuit(results, task)
        if record is None:
            return None
        mlps = " ".join(f"MLP{m}" for m in record.mlps)
        return f"{len(record.mlps)} kept: {mlps}" + _at_threshold(record, 0.8) + _which(results, task)

    return read


def _greater_than_pd(results: Path) -> str | None:
    """The full model's greater-than PD: the exact two-digit PD from the circuit record (Hanna et al.'s
    quantity) when present, else the behaviour table's next-token PD, labelled as what it is."""
    record = _any_circuit(results, "greater_than")
    exact = record.extra.get("exact_prob_diff") if record is not None else None
    if exact:
        how = "exact two-digit PD by the chain rule" if exact.get("mode") == "digit" else "two-digit PD"
        return f"{100 * exact['full']:.1f} % ({how}, {record.n_prompts} prompts, filter: {record.filter})"
    value = _behaviour_value("greater_than", "pure", "increasing", "prob_diff", percent=True)(results)
    if value is None:
        return None
    return f"{value} (next-token PD: the tens-digit approximation where years split into digits)"


def _greater_than_circuit_score(results: Path) -> str | None:
    """The greater-than circuit's score in its pruning metric, and its exact two-digit PD score."""
    record = _any_circuit(results, "greater_than")
    if record is None:
        return None
    text = f"{record.extra.get('pruning_metric', record.metric)}: {score_text(record)}"
    exact = record.extra.get("exact_prob_diff")
    if exact:
        text += f"; exact two-digit PD: {100 * exact['score']:.2f} %{_interval(exact.get('ci95'))} in-sample"
        held = (record.heldout or {}).get("exact_prob_diff")
        if held:
            text += f", {100 * held['score']:.2f} %{_interval(held.get('ci95'))} held-out"
    return text + _at_threshold(record, 0.8)


def _shared_heads(results: Path) -> str | None:
    records = [_circuit(results, t) for t in (NUMERALS, "number_words", "months")]
    if any(r is None for r in records):
        return None
    shared = set.intersection(*(set(_heads(r)) for r in records))
    ordered = sorted(shared, key=lambda s: tuple(int(x) for x in s.split(".")))
    return f"{len(ordered)}: {' '.join(ordered)}" + _which(results, NUMERALS)


def _cross_task(circuit_task: str, data_task: str) -> Reader:
    """The ``circuit_task`` circuit's score on ``data_task`` data (notebook 02's cross-task table)."""

    def read(results: Path) -> str | None:
        data: SharedCircuits | None = _load(results, SharedCircuits)
        cross = data.cross_task_percent if data else {}
        data_name, circuit_name = _task(results, data_task), _task(results, circuit_task)
        value = cross.get(data_name, {}).get(circuit_name)  # {data: {circuit: percent}}
        note = _which(results, circuit_task) or _which(results, data_task)
        return None if value is None else f"{value:.1f} %{note}"

    return read


def _layer_dot_head(component: str) -> str:
    """``"L3.H2"`` -> ``"3.2"``, the paper's layer.head notation."""
    c = parse_component(component)
    return f"{c.layer}.{c.index}"


def _single_head_ablation(task: str, top: int = 6) -> Reader:
    """The ``top`` heads whose single ablation costs ``task`` most (notebook 02), as "-points"."""

    def read(results: Path) -> str | None:
        data: SharedCircuits | None = _load(results, SharedCircuits)
        rows = [r for r in (data.single_head_ablation if data else []) if r["task"] == _task(results, task)]
        if not rows:
            return None
        rows = sorted(rows, key=lambda r: r["drop_points"], reverse=True)[:top]
        text = ", ".join(f"{_layer_dot_head(r['component'])} {-r['drop_points']:.1f}" for r in rows) + " points"
        return text + _which(results, task)

    return read


def _mlp_ablation(task: str, top: int = 3) -> Reader:
    """The ``top`` MLPs whose single ablation leaves ``task`` the least (notebook 05), in % kept."""

    def read(results: Path) -> str | None:
        data: MlpAblation | None = _load(results, MlpAblation)
        rows = [r for r in (data.mlp_effects if data else []) if r["task"] == task]
        if not rows:
            return None
        rows = sorted(rows, key=lambda r: r["kept_%"])[:top]
        return ", ".join(f"{r['component']} {r['kept_%']:.1f}" for r in rows) + " (the least kept)"

    return read


def _best_next_heads(families: tuple[str, ...] = ("digits", "number_words")) -> Reader:
    """Each family's best OV "next" head and its score (notebook 07), with the scoring setting."""

    def read(results: Path) -> str | None:
        data: SuccessorHeads | None = _load(results, SuccessorHeads)
        overview = {r["family"]: r for r in (data.overview if data else [])}
        parts = [
            f"{f.replace('_', ' ')} {overview[f]['best_next']} {100 * overview[f]['best_next_score']:.1f} %"
            for f in families
            if f in overview
        ]
        if not parts:
            return None
        return ", ".join(parts) + f" (best head each; top-{data.top_k} over the {data.over})"

    return read


def _logit_lens_first_layer(results: Path) -> str | None:
    """The most common first layer at which the answer is top-1 (notebook 07's logit lens)."""
    data: SuccessorHeads | None = _load(results, SuccessorHeads)
    rows = [r for r in (data.logit_lens_first_top1 if data else []) if r["layer"] >= -1]  # -2: never top-1
    if not rows:
        return None
    mode = max(rows, key=lambda r: (r["first_top1"], -r["layer"]))
    total = sum(r["first_top1"] for r in data.logit_lens_first_top1)
    return f"first top-1 at layer {mode['layer']} in {mode['first_top1']} / {total} prompts ({data.focus})"


# The published numbers live in data/published_anchors.json (display data, never computed with).
_PUBLISHED: dict[str, str] = json.loads((PACKAGE_DATA / "published_anchors.json").read_text(encoding="utf-8"))[
    "anchors"
]
PAPER = "Lan et al. 2024"
HANNA = "Hanna et al. 2023"
_IN_SAMPLE = (
    "paper: in-sample on its filtered prompts; ours: in-sample first (95 % bootstrap interval over "
    "prompts), then held-out on a fresh seed"
)
_CIRCUIT = "different model and prompts unless this run is GPT-2 small; circuits found on our filtered prompts"
ANCHORS: tuple[Anchor, ...] = (
    Anchor(
        "p(correct), digits, pure, increasing",
        _PUBLISHED["p(correct), digits, pure, increasing"],
        PAPER,
        _behaviour_value("digits", "pure", "increasing", "p_correct"),
    ),
    Anchor(
        "greater-than probability difference",
        _PUBLISHED["greater-than probability difference"],
        HANNA,
        _greater_than_pd,
        "both the two-digit PD; Hanna et al.: every prompt, YY 02-98; ours: YY 10-89 where years split into digits, "
        "prompts kept whose top-1 is a year token",
    ),
    Anchor(
        "greater-than circuit: heads",
        _PUBLISHED["greater-than circuit: heads"],
        HANNA,
        _circuit_heads("greater_than", any_threshold=True),
        "published circuits come from path patching / ACDC; ours from node pruning at a threshold of the pruning metric",
    ),
    Anchor(
        "greater-than circuit: MLPs",
        _PUBLISHED["greater-than circuit: MLPs"],
        HANNA,
        _circuit_mlps("greater_than", any_threshold=True),
        "as for the heads",
    ),
    Anchor(
        "greater-than circuit: score",
        "n/a",
        HANNA,
        _greater_than_circuit_score,
        "no published node-circuit score; ours in the pruning metric (tens-digit PD approximation for digit "
        "tokenizers) and in the exact two-digit PD",
    ),
    Anchor(
        "numerals circuit at 80 %: heads",
        _PUBLISHED["numerals circuit at 80 %: heads"],
        PAPER,
        _circuit_heads(NUMERALS),
        _CIRCUIT,
    ),
    Anchor(
        "numerals circuit at 80 %: MLPs", _PUBLISHED["numerals circuit at 80 %: MLPs"], PAPER, _circuit_mlps(NUMERALS)
    ),
    Anchor(
        "numerals circuit at 80 %: score",
        _PUBLISHED["numerals circuit at 80 %: score"],
        PAPER,
        _circuit_score(NUMERALS),
        _IN_SAMPLE,
    ),
    Anchor(
        "number-words circuit at 80 %: heads",
        _PUBLISHED["number-words circuit at 80 %: heads"],
        PAPER,
        _circuit_heads("number_words"),
        _CIRCUIT,
    ),
    Anchor(
        "number-words circuit at 80 %: MLPs",
        _PUBLISHED["number-words circuit at 80 %: MLPs"],
        PAPER,
        _circuit_mlps("number_words"),
    ),
    Anchor(
        "number-words circuit at 80 %: score",
        _PUBLISHED["number-words circuit at 80 %: score"],
        PAPER,
        _circuit_score("number_words"),
        _IN_SAMPLE,
    ),
    Anchor(
        "months circuit at 80 %: heads",
        _PUBLISHED["months circuit at 80 %: heads"],
        PAPER,
        _circuit_heads("months"),
        _CIRCUIT,
    ),
    Anchor("months circuit at 80 %: MLPs", _PUBLISHED["months circuit at 80 %: MLPs"], PAPER, _circuit_mlps("months")),
    Anchor(
        "heads shared by all three circuits", _PUBLISHED["heads shared by all three circuits"], PAPER, _shared_heads
    ),
    Anchor(
        "numerals circuit on number-word data",
        _PUBLISHED["numerals circuit on number-word data"],
        PAPER,
        _cross_task(NUMERALS, "number_words"),
    ),
    Anchor(
        "number-word circuit on numerals",
        _PUBLISHED["number-word circuit on numerals"],
        PAPER,
        _cross_task("number_words", NUMERALS),
    ),
    Anchor(
        "months circuit on numerals", _PUBLISHED["months circuit on numerals"], PAPER, _cross_task("months", NUMERALS)
    ),
    Anchor(
        "single-head ablation from the full model (numerals)",
        _PUBLISHED["single-head ablation from the full model (numerals)"],
        PAPER,
        _single_head_ablation(NUMERALS),
    ),
    Anchor(
        "MLP ablation, % of full kept (numerals)",
        _PUBLISHED["MLP ablation, % of full kept (numerals)"],
        PAPER,
        _mlp_ablation("digits"),
    ),
    Anchor(
        "OV 'next' score of the paper's successor head (top-5)",
        _PUBLISHED["OV 'next' score of the paper's successor head (top-5)"],
        PAPER,
        _best_next_heads(),
    ),
    Anchor(
        "logit lens: layer 9's top token is the answer",
        _PUBLISHED["logit lens: layer 9's top token is the answer"],
        PAPER,
        _logit_lens_first_layer,
    ),
    Anchor(
        "digits pure sequences: circuit size",
        _PUBLISHED["digits pure sequences: circuit size"],
        f"{PAPER} (earlier version)",
    ),
)


def comparison_table(results: str | Path, anchors: tuple[Anchor, ...] = ANCHORS) -> pd.DataFrame:
    """One row per anchor: quantity, published (GPT-2 small), this run (or "not in this run"), source,
    and what differs between the two measurements."""
    results = Path(results)
    rows = []
    for a in anchors:
        ours = a.ours(results) if a.ours is not None else None
        rows.append(
            {
                "quantity": a.quantity,
                "published (GPT-2 small)": a.published,
                "this run": ours if ours is not None else "not in this run",
                "source": a.source,
                "what differs": a.differs,
            }
        )
    return pd.DataFrame(rows)
