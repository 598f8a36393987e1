"""Typed records of the chapters' result files (``results/<model>/<name>.json``), one type per file kind.

Every chapter writes its results as one of these records and every reader (the Findings page, the
published-results page, the appendix, the tests) reads them back through the type: ``read_record(path,
Behaviour)`` (:func:`seqcirc_utils.core.records.read_record`) checks ``kind``, ``schema_version`` and
the keys, and returns the record. The pattern is :mod:`seqcirc_utils.core.records`': a frozen dataclass
whose fields are the file's JSON keys (in the order the file has them), the class constants ``kind``,
``schema_version`` and ``file`` (the file name, ``*`` for a field of the name), an exact ``to_json`` /
``from_json`` pair (``R.from_json(d).to_json() == d``) and one check (:func:`checked_json`).

Nested typed records (:class:`CircuitRecord`, :class:`HeadScores`, :class:`AttentionPattern`) are typed
fields and come back typed. Tables are lists of row dicts; a table field annotated with
``Annotated[..., Columns("a", "b")]`` declares the columns every row must have (the ones readers use; a
writer may add more), and a dict field annotated the same way declares the keys it must have. A record
of one of these types is written by the notebook constructing it (``write_json_atomic(path, Behaviour(...))``)
-- no hand-written ``kind`` or ``schema_version``.

:data:`RESULT_RECORDS` lists every type here; README's "Result records" section is tested against it
(``tests/test_records.py``). Torch-free: this module imports only the standard library and
:mod:`seqcirc_utils.core.records`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from seqcirc_utils.core.errors import BadFileError
from seqcirc_utils.core.records import (
    AttentionPattern,
    CircuitRecord,
    FaithfulnessCurve,
    HeadScores,
    NullDistribution,
    checked_json,
)

Rows = list[dict[str, Any]]
R = TypeVar("R")


class Columns:
    """Declared columns of a table field (every row has them) or declared keys of a dict field."""

    def __init__(self, *names: str) -> None:
        self.names: tuple[str, ...] = names

    def __repr__(self) -> str:
        return f"Columns{self.names!r}"


def _strip(hint: Any) -> tuple[Any, Columns | None]:
    """``(type, Columns or None)`` of a field's annotation (``Annotated[T, Columns(...)]`` -> ``T``)."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, next((m for m in meta if isinstance(m, Columns)), None)
    return hint, None


def _decode(hint: Any, value: Any) -> Any:
    """A JSON value as the declared type: nested records via their ``from_json``, lists / dicts element-wise."""
    hint, _ = _strip(hint)
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        typed = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(typed[0], value) if len(typed) == 1 else copy.deepcopy(value)
    from_json = getattr(hint, "from_json", None) if isinstance(hint, type) else None
    if callable(from_json):
        return from_json(value)
    if origin is list and isinstance(value, list):
        (arg,) = typing.get_args(hint) or (Any,)
        return [_decode(arg, v) for v in value]
    if origin is dict and isinstance(value, dict):
        _, arg = typing.get_args(hint) or (str, Any)
        return {k: _decode(arg, v) for k, v in value.items()}
    return copy.deepcopy(value)


def _encode(value: Any) -> Any:
    """A field's JSON form: nested records as ``to_json()``, lists / dicts element-wise, tuples as lists."""
    if callable(getattr(value, "to_json", None)):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return copy.deepcopy(value)


class ResultRecord:
    """Base of the typed result records (subclasses are frozen dataclasses whose fields are the JSON keys)."""

    kind: ClassVar[str]
    schema_version: ClassVar[int]
    #: The file the record is written to in ``results/<model>/`` (``*`` for a part of the name).
    file: ClassVar[str]

    # ------------------------------------------------------------------ the schema, from the annotations
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The record's JSON keys after ``kind`` and ``schema_version``, in file order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def json_keys(cls) -> tuple[str, ...]:
        """Every JSON key of the record: ``kind``, ``schema_version``, then :meth:`field_names`."""
        return ("kind", "schema_version", *cls.field_names())

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls, include_extras=True)

    @classmethod
    def declared_columns(cls) -> dict[str, tuple[str, ...]]:
        """``{field: columns}`` of the fields annotated with :class:`Columns` (table columns or dict keys)."""
        hints = cls._hints()
        out = {}
        for name in cls.field_names():
            _, columns = _strip(hints[name])
            if columns is not None:
                out[name] = columns.names
        return out

    def __post_init__(self) -> None:
        for name, columns in self.declared_columns().items():
            value = getattr(self, name)
            if value is None:
                continue
            rows = [value] if isinstance(value, Mapping) else value
            if not isinstance(rows, list):
                raise ValueError(f"{self.kind} record: {name!r} must be a list of rows, got {type(value).__name__}")
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise ValueError(f"{self.kind} record: {name}[{i}] must be a JSON object, got {type(row).__name__}")
                missing = [c for c in columns if c not in row]
                if missing:
                    where = name if isinstance(value, Mapping) else f"{name}[{i}]"
                    raise ValueError(f"{self.kind} record: {where} lacks {missing} (declared: {list(columns)})")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The file's JSON object: ``kind``, ``schema_version``, then every field (nested records as JSON)."""
        return {
            "kind": self.kind,
            "schema_version": self.schema_version,
            **{name: _encode(getattr(self, name)) for name in self.field_names()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        """``to_json``'s inverse; a one-line ``ValueError`` for another kind or version, missing or unknown keys,
        or a table row without a declared column."""
        data = checked_json(data, cls.kind, cls.schema_version, cls.json_keys())
        unknown = [k for k in data if k not in cls.json_keys()]
        if unknown:
            raise ValueError(
                f"{cls.kind} record has unknown keys {unknown} (a {cls.kind!r} record has "
                f"{list(cls.json_keys())}; a new key needs a field and a schema_version bump)"
            )
        hints = cls._hints()
        return cls(**{name: _decode(hints[name], data[name]) for name in cls.field_names()})


# --------------------------------------------------------------------------- circuit files


@dataclass(frozen=True)
class CircuitFile(ResultRecord):
    """A circuit file (``circuit_<task>.json``, ``seqcirc circuit --out``): one :class:`CircuitRecord` per threshold."""

    kind: ClassVar[str] = "circuit_file"
    schema_version: ClassVar[int] = 1
    file: ClassVar[str] = "circuit_*.json"

    circuits: list[CircuitRecord]

    def at(self, threshold: float | None = None) -> CircuitRecord:
        """The circuit at ``threshold`` (the lowest-threshold one for ``None``); a one-line ``ValueError``
        naming the thresholds the file has otherwise."""
        if not self.circuits:
            raise ValueError("the circuit file holds no circuits")
        if threshold is None:
            return min(self.circuits, key=lambda r: r.threshold)
        for record in self.circuits:
            if abs(record.threshold - threshold) < 1e-9:
                return record
        raise ValueError(f"no circuit at threshold {threshold}; valid: {[r.threshold for r in self.circuits]}")


# --------------------------------------------------------------------------- one record per chapter file


@dataclass(frozen=True)
class Behaviour(ResultRecord):
    """01: the behaviour table (accuracy, p(correct), logit difference, PD per task, template and direction)."""

    kind: ClassVar[str] = "behaviour"
    schema_version: ClassVar[int] = 1
    file: ClassVar[str] = "behaviour.json"

    model: str
    n_prompts: int
    seed: int
    smoke: bool
    templates: list[str]
    prefix: dict[str, Any]
    rows: Annotated[
        Rows, Columns("task", "template", "direction", "n", "top1_accuracy", "p_correct", "logit_diff", "prob_diff")
    ]
    prefixes: dict[str, dict[str, Any]]
    prefix_rows: Annotated[Rows, Columns("task", "template", "direction", "prefix", "n", "top1_accuracy")]


@dataclass(frozen=True)
class SharedCircuits(ResultRecord):
    """02: the circuits of every task at the main threshold, their overlap and cross-task scores; schema 2: the
    control task, the overlap expected by chance and the control's reference; schema 3: the matched baselines of
    the cross-task cells."""

    kind: ClassVar[str] = "shared_circuits"
    schema_version: ClassVar[int] = 3
    file: ClassVar[str] = "shared_circuits.json"

    model: str
    template: str
    threshold: float
    method: str
    smoke: bool
    summary: Annotated[Rows, Columns("task", "threshold", "heads", "mlps", "score")]
    overlap: Rows
    shared: list[str]
    cross_task_percent: dict[str, dict[str, float | None]]
    membership: Rows
    head_importance: HeadScores
    single_head_ablation: Annotated[Rows, Columns("task", "component", "drop_points")]
    #: The control task (random-token induction copying), found the same way; None without one (schema 2).
    control: str | None = None
    #: task -> the method its circuits were found by (the control included) (schema 2).
    methods: dict[str, str] | None = None
    #: The overlap of circuits of these sizes expected by chance at ``threshold`` (``evaluation.nulls.sharing_null``:
    #: shared by all sequence tasks, then every pair, the control's included) (schema 2).
    overlap_null: Annotated[
        Rows | None, Columns("group", "a", "b", "tasks", "observed", "expected", "null_lo", "null_hi", "p")
    ] = None
    #: The reference for "the sequence tasks share more than any two tasks do" (``evaluation.compare.control_comparison``
    #: over the tasks found the same way as the control) (schema 2).
    control_reference: Annotated[
        dict[str, Any] | None,
        Columns("tasks", "control", "task_pairs", "control_pairs", "task_excess_mean", "control_excess_max"),
    ] = None
    #: Every off-diagonal cross-task cell against matched random circuits (``evaluation.compare.cross_task_baselines``:
    #: ``circuit, data, score, null_mean, null_p5, null_p95, percentile, p, n_draws``; scores as fractions) (schema 3).
    cross_task_baselines: Annotated[
        Rows | None,
        Columns("circuit", "data", "score", "null_mean", "null_p5", "null_p95", "percentile", "p", "n_draws"),
    ] = None


@dataclass(frozen=True)
class SharedByThreshold(ResultRecord):
    """02: the circuit shared by all tasks at each threshold, scored against matched random circuits; schema 3: every
    threshold's overlap beside the overlap expected by chance, and where sharing is lost against it."""

    kind: ClassVar[str] = "shared_by_threshold"
    schema_version: ClassVar[int] = 3
    file: ClassVar[str] = "shared_by_threshold.json"

    model: str
    template: str
    method: str
    smoke: bool
    thresholds: list[float]
    reference_threshold: float
    n_random: int
    random_match: str
    seed: int
    shared: dict[str, list[str]]
    scores: Annotated[Rows, Columns("threshold", "data", "heads", "mlps", "score", "beats_random")]
    same_different: Annotated[Rows, Columns("threshold", "task", "same", "dropped", "added")]
    shared_same_different: Annotated[Rows, Columns("component")]
    #: The threshold whose shared-by-all circuit is tested against its null (schema 2).
    null_threshold: float | None = None
    #: data label (``<task> held-out``) -> the shared-by-all circuit against matched random circuits (schema 2).
    nulls: dict[str, NullDistribution] | None = None
    #: The control task whose pairs appear in ``sharing_null`` (None without one) (schema 3).
    control: str | None = None
    #: Layer-stratified permutations of the sharing null (schema 3).
    n_permutations: int | None = None
    #: Per threshold, the observed overlap beside the overlap expected by chance (schema 3).
    sharing_null: Annotated[
        Rows | None, Columns("threshold", "group", "tasks", "observed", "expected", "null_lo", "null_hi", "p")
    ] = None
    #: ``"shared"``: the highest threshold from which no component is shared by all; ``"beyond_chance"``: from which
    #: the shared-by-all count is not above chance (p > 0.05) (None: never) (schema 3).
    lost_at: Annotated[dict[str, float | None] | None, Columns("shared", "beyond_chance")] = None


@dataclass(frozen=True)
class GreaterThanOverlap(ResultRecord):
    """03: the greater-than circuit against a sequence circuit: overlap and analogous ablation."""

    kind: ClassVar[str] = "greater_than_overlap"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "greater_than_overlap.json"

    model: str
    threshold: float
    method: str
    smoke: bool
    sequence_task: str
    greater_than_circuit: CircuitRecord
    sequence_circuit: CircuitRecord
    overlap: Rows
    analogous_ablation: Annotated[Rows, Columns("ablated", "task scored", "inside", "drop_points")]
    cross_task_percent: dict[str, dict[str, float | None]]
    shared_heads: list[str]
    head_importance: HeadScores
    single_head_ablation: Annotated[Rows, Columns("task", "component", "drop_points")]
    estimated_drop_rank_correlation: float | None
    #: Draws of each analogous-ablation null (schema 2).
    n_draws: int | None = None
    #: ``"<source> heads on <task>"`` -> the score of every component but the source circuit's heads against every
    #: component but matched random heads (statistic ``score``; the claim's p is the lower tail) (schema 2).
    nulls: dict[str, NullDistribution] | None = None


@dataclass(frozen=True)
class GreaterThanThresholds(ResultRecord):
    """03: nested circuits down a threshold ladder; where each task stops sharing heads with greater-than; schema 2:
    the heads shared by chance beside every observed count."""

    kind: ClassVar[str] = "greater_than_thresholds"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "greater_than_thresholds.json"

    model: str
    smoke: bool
    method: str
    minimal: bool
    thresholds: list[float]
    tasks: list[str]
    n_prompts: int
    n_random: int
    seed: int
    circuits: Annotated[Rows, Columns("task", "threshold", "heads", "mlps")]
    sharing: Annotated[
        Rows,
        Columns(
            "threshold",
            "task",
            "shared_heads",
            "shared_heads_expected",
            "shared_heads_lo",
            "shared_heads_hi",
            "shared_heads_p",
        ),
    ]
    lost_at: dict[str, float | None]
    records: dict[str, list[CircuitRecord]]
    #: Layer-stratified permutations of the shared-heads null (schema 2).
    n_permutations: int | None = None
    #: task -> the highest threshold from which its shared heads are not above chance (p > 0.05) at that and every
    #: lower threshold (None: above chance at the lowest) (schema 2).
    lost_beyond_chance: dict[str, float | None] | None = None


@dataclass(frozen=True)
class DecreasingCircuits(ResultRecord):
    """04: increasing against decreasing circuits per (task, length): head overlap and cross-task scores.
    Schema 2: the summary rows carry ``task, direction, length`` (configs of more than one task, e.g. digits and
    numbers; config names ``<task> inc-<length>``)."""

    kind: ClassVar[str] = "decreasing_circuits"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "decreasing_circuits.json"

    model: str
    task: str
    template: str
    threshold: float
    method: str
    smoke: bool
    summary: Annotated[Rows, Columns("config", "task", "direction", "length")]
    head_overlap: Annotated[Rows, Columns("a", "b", "jaccard")]
    cross_task_percent: dict[str, dict[str, float | None]]
    shared_heads: list[str]
    circuits: dict[str, CircuitRecord]
    head_importance: HeadScores
    single_head_ablation: Annotated[Rows, Columns("config", "component", "drop_points")]


@dataclass(frozen=True)
class StepKCircuits(ResultRecord):
    """04: step-k behaviour, the step-k circuit against the step-1 one and add-k OV scores. The circuit keys
    (``summary`` ... ``circuit``) are null when ``error`` says why no step-k circuit was found."""

    kind: ClassVar[str] = "step_k_circuits"
    schema_version: ClassVar[int] = 1
    file: ClassVar[str] = "step_k_circuits.json"

    model: str
    task: str
    template: str
    threshold: float
    method: str
    smoke: bool
    steps: list[int]
    families: list[str]
    step_k: int
    length: int
    behaviour: Annotated[Rows, Columns("family", "step")]
    error: str | None
    ov_scores: HeadScores
    summary: Rows | None
    overlap: Annotated[Rows | None, Columns("kind", "intersection", "jaccard")]
    cross_task_percent: dict[str, dict[str, float | None]] | None
    ov_groups: Annotated[Rows | None, Columns("heads", "n", "mean_next")]
    circuit: CircuitRecord | None


@dataclass(frozen=True)
class MlpAblation(ResultRecord):
    """05: single-MLP ablation per task, the key MLP's neurons, head -> MLP path patching, the length study."""

    kind: ClassVar[str] = "mlp_ablation"
    schema_version: ClassVar[int] = 1
    file: ClassVar[str] = "mlp_ablation.json"

    model: str
    template: str
    direction: str
    smoke: bool
    mlp_effects: Annotated[Rows, Columns("task", "component", "kept_%")]
    key_mlp: str
    neuron_attribution_top: dict[str, Any]
    neuron_ablation: Annotated[Rows, Columns("ablated", "kept_%")]
    head_to_key_mlp: Rows
    key_mlps: dict[str, list[str]]
    patch_within: str
    head_to_mlp: Annotated[Rows, Columns("sender", "receiver", "task", "effect")]
    length_study: Annotated[
        dict[str, Any], Columns("task", "directions", "lengths", "n_prompts", "skipped", "mlp_effects")
    ]


@dataclass(frozen=True)
class InductionOffsets(ResultRecord):
    """06: induction-offset scores per head, on regular and irregularly spaced prompts. Schema 2 adds the
    verdict's parameters: ``contrast`` (|same_type_k1| above which a head is same-type or positional), ``top_n``
    and ``regular_spacing`` (family -> token distances between consecutive members of the regular prompts)."""

    kind: ClassVar[str] = "induction_offsets"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "induction_offsets.json"

    model: str
    n_prompts: int
    seed: int
    smoke: bool
    families: list[str]
    template: str
    attention_template: str
    max_offset: int
    n_members: int
    gap: int
    offsets: Annotated[Rows, Columns("prompts", "family", "component", "member_k1", "token_k1", "same_type_k1")]
    pairs: Rows
    attention: Rows
    member_to_member: dict[str, AttentionPattern]
    contrast: float
    top_n: int
    regular_spacing: dict[str, list[int]]


@dataclass(frozen=True)
class SuccessorHeads(ResultRecord):
    """07: OV successor scores, the top next head's tables, direct logit attribution and the logit lens."""

    kind: ClassVar[str] = "successor_heads"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "successor_heads.json"

    model: str
    smoke: bool
    families: list[str]
    skipped: Any
    kinds: list[str]
    over: str
    top_k: int
    embedding: str
    focus: str
    template: str
    seed: int
    n_prompts: int
    n_kept: int
    n_lens: int
    overview: Annotated[Rows, Columns("family", "best_next", "best_next_score", "chance")]
    scores: HeadScores
    top_next_head: Annotated[dict[str, Any], Columns("component", "ov_member_table", "qk_table", "final_to_members")]
    dla: Rows
    dla_heads: HeadScores
    dla_logit_diff: float
    logit_lens_first_top1: Annotated[Rows, Columns("layer", "first_top1")]
    direction: str
    lens_template: str
    logit_lens_by_length: Annotated[Rows, Columns("direction", "length", "median_first_top1")]
    logit_lens_by_length_counts: Rows
    logit_lens_by_length_skipped: Any
    #: Schema 2: the top next heads on two-digit ``numbers`` prompts (``task, refused, n_prompts, n_sequences,
    #: final_to_members, dla_top, dla_logit_diff, best_dla_rank, logit_lens_first_top1``), None when skipped.
    numbers_prompts: dict[str, Any] | None = None


@dataclass(frozen=True)
class EdgeCircuits(ResultRecord):
    """08: the edge circuit inside each task's node circuit, and EAP against exact path patching."""

    kind: ClassVar[str] = "edge_circuits"
    schema_version: ClassVar[int] = 1
    file: ClassVar[str] = "edge_circuits.json"

    model: str
    smoke: bool
    edge_method: str
    summary: Annotated[Rows, Columns("task", "candidate_edges", "kept_edges", "connected_edges", "edge_circuit_%")]
    eap_vs_exact: Annotated[dict[str, Any], Columns("n_edges", "spearman")]
    eap_vs_exact_edges: Rows


@dataclass(frozen=True)
class Robustness(ResultRecord):
    """09: the headline circuits found again across seeds (and, optionally, orders, corruptions and metrics):
    the transfer matrix, the Jaccard against random circuits, each task's core; the planted check.

    Schema 2: ``parameters`` hold each task's discovery config (``configs``); ``runs`` carry ``run_id`` (a run
    two factors share is one computation, counted once in ``membership`` and the core) and ``n_sequences``;
    ``failed`` lists planned runs whose baseline or prompt check failed (not used); ``transfer`` has one row per
    (circuit of seed, held-out split of seed) cell; ``stability`` (task -> off-diagonal pass rate with its
    cluster-bootstrap interval over circuits, the diagonal's rate, mean score and overlap); ``jaccard`` (task ->
    the seed circuits' mean pairwise Jaccard against matched random circuits: null summary and draws); ``core``
    (task -> the core's components and its score on every held-out split); ``cpu_seconds`` beside ``seconds``."""

    kind: ClassVar[str] = "robustness"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "robustness.json"

    model: str
    smoke: bool
    parameters: dict[str, Any]
    runs: Annotated[Rows, Columns("task", "factor", "level", "run_id", "seed", "components", "n_components", "score")]
    failed: Annotated[Rows, Columns("task", "factor", "level", "reason")]
    summary: Annotated[Rows, Columns("task", "factor", "mean_jaccard")]
    transfer: Annotated[Rows, Columns("task", "source_seed", "heldout_seed", "score", "passes", "off_diagonal")]
    stability: dict[str, dict[str, Any]]
    jaccard: dict[str, dict[str, Any]]
    membership: dict[str, Rows]
    core: dict[str, Any]
    planted: Annotated[Rows, Columns("method", "precision", "recall")]
    seconds: float
    cpu_seconds: float


@dataclass(frozen=True)
class Knockout(ResultRecord):
    """10: the successor heads knocked out: what each task keeps, what is predicted instead, the backups.

    Schema 2: heads chosen on each task's ``selection_dataset``, everything else measured on its
    sequence-disjoint ``evaluation_dataset`` (``split``); the drop against ``n_draws`` same-layer random
    knockouts (``knockout_null``, per task), compensation against the same (``compensation_null``), and the
    knockout under each replacement (``replacement_knockouts``)."""

    kind: ClassVar[str] = "knockout"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "knockout.json"

    model: str
    smoke: bool
    tasks: list[str]
    skipped: Any
    template: str
    prefix: str
    seed: int
    n_prompts: int
    focus: str
    n_kept: dict[str, int]
    successor_heads: list[str]
    candidates: Annotated[Rows, Columns("component", "selected")]
    random_heads: list[list[str]]
    knockouts: Annotated[Rows, Columns("task", "condition", "kept_%", "copy")]
    categories: list[str]
    predictions: Annotated[Rows, Columns("task", "condition", "category")]
    backups: Annotated[
        dict[str, Any],
        Columns("task", "threshold", "method", "rounds", "intact", "knocked_out", "joins", "leaves", "membership"),
    ]
    compensation: HeadScores
    compensation_logit_diff: dict[str, Any]
    negative_heads: Rows
    negative_heads_checked: Any
    position_drops: Annotated[dict[str, Any], Columns("task", "n_prompts", "labels", "cells")]
    split: Annotated[dict[str, Any], Columns("roles", "seed", "n_sequences", "overlap")]
    selection_dataset: dict[str, Any]
    evaluation_dataset: dict[str, Any]
    n_draws: int
    knockout_null: dict[str, NullDistribution]
    knockout_intervals: Annotated[Rows, Columns("task", "drop_points", "ci95", "ci_unit", "n_clusters")]
    compensation_null: dict[str, NullDistribution]
    replacements: list[str]
    replacement_knockouts: Annotated[Rows, Columns("task", "replacement", "condition", "kept_%")]


@dataclass(frozen=True)
class ActivationEditing(ResultRecord):
    """11: next -> prev edits of the successor heads, and format steering against baseline directions.

    Schema 2: heads chosen and steering directions fitted on each task's ``selection_dataset``, every edit and
    steering measured on its sequence-disjoint ``evaluation_dataset`` (``split``); the edit's hit rate above an
    ablation-only control with intervals (``edit_effects``) and against ``n_draws`` same-layer random head sets
    (``edit_null``); steering at one alpha fixed in advance (``steer_alpha``) against random-halves, unrelated and
    Gaussian directions of the same norm (``steering_effects``, ``steering_baselines``, ``steering_null``)."""

    kind: ClassVar[str] = "activation_editing"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "activation_editing.json"

    model: str
    smoke: bool
    template: str
    prefix: str
    seed: int
    n_prompts: int
    n_source: int
    skipped: Any
    n_kept: dict[str, int]
    successor_heads: list[str]
    candidates: Rows
    random_heads: list[list[str]]
    function_edits: Annotated[Rows, Columns("task", "edit_kind", "edit", "hit", "hit_ci95", "in_prompt")]
    function_edit_prompts: Rows
    steer_layer: int
    alphas: list[float]
    directions: Rows
    steering: Rows
    steering_summary: Annotated[Rows, Columns("pair", "direction", "alpha", "hit")]
    split: Annotated[dict[str, Any], Columns("roles", "seed", "n_sequences", "overlap")]
    selection_dataset: dict[str, Any]
    evaluation_dataset: dict[str, Any]
    n_draws: int
    edit_effects: Annotated[
        Rows,
        Columns(
            "task",
            "edit_kind",
            "hit",
            "control_hit",
            "effect",
            "effect_ci95",
            "ci_unit",
            "n_clusters",
            "n_matched",
            "hit_in_prompt",
        ),
    ]
    edit_null: dict[str, NullDistribution]
    steer_alpha: float
    n_steer_draws: int
    steering_effects: Annotated[Rows, Columns("pair", "hit", "hit_ci95", "correct", "n_prompts", "n_clusters")]
    steering_baselines: Annotated[Rows, Columns("pair", "direction", "draw", "hit")]
    steering_null: dict[str, dict[str, NullDistribution]]


@dataclass(frozen=True)
class Representations(ResultRecord):
    """12: the residual stream across formats: PCA, order separability, value cosines, the value-step direction.

    Schema 2: depths and directions chosen on each family's ``selection_dataset``, everything reported measured
    on its sequence-disjoint ``evaluation_dataset`` (``split``: the read values partitioned between the roles);
    permutation nulls of the maximum over depths (``nulls``), the same analysis on a random-weight model of the
    same shape (``random_control``, ``random_nulls``), shuffled twins with the last member kept
    (``corruption``), and the successor test of the value-step direction (``successor``)."""

    kind: ClassVar[str] = "representations"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "representations.json"

    model: str
    smoke: bool
    seed: int
    prefix: str
    families: list[str]
    template: str
    length: int
    corruption: str
    n_prompts: int
    member_index: int
    n_components: int
    n_folds: int
    n_permutations: int
    center: str
    centers: list[str]
    n_layers: int
    depths: Annotated[Rows, Columns("layer", "hook")]
    final_tokens: dict[str, Any]
    pca: Annotated[dict[str, Any], Columns("explained", "scatter_layers", "points")]
    separability: Rows
    value_cosine: Annotated[dict[str, Any], Columns("formats", "values", "counts", "summary", "pairs", "statistics")]
    step_direction: Annotated[dict[str, Any], Columns("selection_values", "pairs", "norms")]
    successor: Annotated[dict[str, Any], Columns("alpha", "depth", "rows", "summary")]
    split: Annotated[
        dict[str, Any], Columns("roles", "seed", "shares", "values", "n_sequences", "n_prompts", "overlap")
    ]
    selection_dataset: dict[str, Any]
    evaluation_dataset: dict[str, Any]
    nulls: dict[str, NullDistribution]
    random_control: Annotated[dict[str, Any], Columns("model", "init_seed", "separability", "value_summary")]
    random_nulls: dict[str, NullDistribution]
    headline: Annotated[
        dict[str, Any],
        Columns(
            "center",
            "n_depths",
            "alpha",
            "value_layer",
            "same_value_cosine",
            "diff_value_same_format_cosine",
            "diff_value_diff_format_cosine",
            "same_value_above_control_layers",
            "value_gap",
            "value_gap_max",
            "random_value_gap_max",
            "step_layer",
            "step_cosine",
            "step_cosine_max",
            "random_step_cosine_max",
            "successor",
            "direction_name",
            "order_first_layer",
            "order_accuracy_last",
            "order_chance",
            "order_max",
            "random_order_max",
        ),
    ]


@dataclass(frozen=True)
class DiscoveryMethods(ResultRecord):
    """13: which discovery method to trust: each node-ranking method's faithfulness curve per task (ranking on
    the discovery split, curve on the sequence-disjoint held-out split), each method's CPR / CMD against random
    rankings (``nulls``: task -> ``"cpr"`` / ``"cmd"`` -> method -> null; schema 2), and each method on a planted
    circuit with a backup, a negative head and a logit distractor."""

    kind: ClassVar[str] = "discovery_methods"
    schema_version: ClassVar[int] = 2
    file: ClassVar[str] = "discovery_methods.json"

    model: str
    smoke: bool
    parameters: dict[str, Any]
    tasks: list[str]
    skipped: dict[str, str]
    methods: list[str]
    table: Annotated[
        Rows, Columns("task", "method", "cpr", "cmd", "cpr_log", "cmd_log", "forward_passes", "curve_passes")
    ]
    curves: dict[str, dict[str, FaithfulnessCurve]]
    datasets: dict[str, dict[str, Any]]
    split: Annotated[Rows, Columns("task", "role", "n_prompts", "n_sequences", "overlap")]
    nulls: dict[str, dict[str, dict[str, NullDistribution]]]
    null_table: Annotated[
        Rows, Columns("task", "method", "cpr", "cpr_null_mean", "cpr_p", "cmd", "cmd_null_mean", "cmd_p", "n_draws")
    ]
    planted: Annotated[
        Rows,
        Columns(
            "method", "found", "precision", "recall", "backup_found", "negative_found", "roc_auc", "forward_passes"
        ),
    ]
    planted_model: Annotated[dict[str, Any], Columns("name", "roles", "planted", "full_logit_diff")]
    backup: Annotated[
        dict[str, Any],
        Columns("primary", "backup", "dla_clean", "dla_knockout", "change", "rank", "found", "joins"),
    ]
    seconds: float


#: Every result-record type of this module (the circuit file first, then by chapter).
RESULT_RECORDS: tuple[type[ResultRecord], ...] = (
    CircuitFile,
    Behaviour,
    SharedCircuits,
    SharedByThreshold,
    GreaterThanOverlap,
    GreaterThanThresholds,
    DecreasingCircuits,
    StepKCircuits,
    MlpAblation,
    InductionOffsets,
    SuccessorHeads,
    EdgeCircuits,
    Robustness,
    Knockout,
    ActivationEditing,
    Representations,
    DiscoveryMethods,
)


def record_type_of_file(name: str) -> type[ResultRecord] | None:
    """The record type written to a file called ``name`` (``circuit_digits.json`` -> :class:`CircuitFile`), or None."""
    from fnmatch import fnmatchcase

    return next((t for t in RESULT_RECORDS if fnmatchcase(name, t.file)), None)


# --------------------------------------------------------------------------- the readers


def read_record(path: str | Path, record_type: type[R]) -> R:
    """The ``record_type`` record stored at ``path`` (``record_type.from_json`` of the file).

    Raises :class:`~seqcirc_utils.core.errors.BadFileError` with one line naming the file for a missing or
    unreadable file, another kind or schema version, or missing / unknown keys.
    """
    path = Path(path)
    data = _read_json(path)
    try:
        return typing.cast(Any, record_type).from_json(data)
    except (ValueError, TypeError, KeyError, BadFileError) as err:
        raise BadFileError(f"{path}: {' '.join(str(err).split())}") from None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BadFileError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadFileError(f"{path}: not a readable JSON file ({' '.join(str(err).split())})") from None


def read_circuits(path: str | Path) -> list[CircuitRecord]:
    """Every circuit in a circuit file: a :class:`CircuitFile` (``{"kind": "circuit_file", "circuits": [...]}``),
    its older form without ``kind`` (``{"circuits": [...]}``) or one circuit record (kind ``"circuit"``).

    The one reader of circuit files (``seqcirc edges --circuit``, the published-results page, the grid summary,
    :func:`read_circuit`). Raises :class:`~seqcirc_utils.core.errors.BadFileError` with one line for a missing
    or unreadable file, another record kind, an empty list, or a record that is not a valid circuit record.
    """
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict) and data.get("kind") == CircuitRecord.kind:
        data = {"kind": CircuitFile.kind, "schema_version": CircuitFile.schema_version, "circuits": [data]}
    elif isinstance(data, dict) and "kind" not in data and "circuits" in data:
        data = {"kind": CircuitFile.kind, "schema_version": CircuitFile.schema_version, **data}
    if not isinstance(data, dict) or data.get("kind") != CircuitFile.kind:
        got = (
            repr(data["kind"])
            if isinstance(data, dict) and "kind" in data
            else "a JSON object without 'kind'"
            if isinstance(data, dict)
            else f"a JSON {type(data).__name__}"
        )
        raise BadFileError(
            f"{path} holds {got}; valid: a circuit file (kind 'circuit_file', as written by "
            "`seqcirc circuit`) or one circuit record (kind 'circuit')"
        )
    if not isinstance(data.get("circuits"), list) or not data["circuits"]:
        raise BadFileError(f"{path}: 'circuits' must be a non-empty list of circuit records")
    try:
        records = CircuitFile.from_json(data).circuits
    except (ValueError, TypeError, KeyError) as err:
        raise BadFileError(f"{path}: {' '.join(str(err).split())}") from None
    for record in records:
        _check_circuit(path, record)
    return records


def _check_circuit(path: Path, record: CircuitRecord) -> None:
    """A one-line BadFileError for component lists, model, ablation or metric a circuit record cannot have."""
    from seqcirc_utils.core.options import METRICS, AblationMode

    heads, mlps = record.heads, record.mlps
    pairs_ok = isinstance(heads, list) and all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(i, int) and i >= 0 for i in h) for h in heads
    )
    if not pairs_ok or not isinstance(mlps, list) or not all(isinstance(m, int) and m >= 0 for m in mlps):
        raise BadFileError(
            f"{path}: 'heads' must be [[layer, head], ...] and 'mlps' [layer, ...] (non-negative integers)"
        )
    if not isinstance(record.model, str) or not record.model.strip():
        raise BadFileError(f"{path}: 'model' must be a model spec string, e.g. smollm2-135m")
    for key, valid in (("ablation", [m.value for m in AblationMode]), ("metric", list(METRICS))):
        if record[key] is not None and record[key] not in valid:
            raise BadFileError(f"{path}: unknown {key} {record[key]!r}; valid: {', '.join(valid)}")


def read_circuit(path: str | Path, threshold: float | None = None) -> CircuitRecord:
    """The circuit at ``threshold`` in a circuit file (:func:`read_circuits`); ``None``: the lowest-threshold
    one. A BadFileError names the thresholds the file has when none matches."""
    records = read_circuits(path)
    if threshold is None:
        return min(records, key=lambda r: r.threshold)
    found = next(
        (r for r in records if isinstance(r.threshold, (int, float)) and abs(r.threshold - threshold) < 1e-9), None
    )
    if found is None:
        raise BadFileError(
            f"{path} has no circuit at threshold {threshold}; valid: {', '.join(str(r.threshold) for r in records)}"
        )
    return found


def read_result(path: str | Path, types: tuple[type, ...] = RESULT_RECORDS) -> Any:
    """A result file read through its record type: the type of ``types`` whose ``kind`` the file names (a
    :class:`~seqcirc_utils.core.errors.BadFileError` when the file does not fit it), else the JSON as stored
    (a file of no known kind). Higher layers add their types (the appendix: ``(*RESULT_RECORDS, EdgeCircuit)``)."""
    path = Path(path)
    data = _read_json(path)
    kind = data.get("kind") if isinstance(data, dict) else None
    record_type = next((t for t in types if getattr(t, "kind", None) == kind), None)
    if record_type is None:
        return data
    try:
        return typing.cast(Any, record_type).from_json(data)
    except (ValueError, TypeError, KeyError, BadFileError) as err:
        raise BadFileError(f"{path}: {' '.join(str(err).split())}") from None


def circuits_in(obj: Any) -> list[CircuitRecord]:
    """Every circuit record (kind ``"circuit"``) anywhere inside a result file's JSON, typed (e.g. the
    circuits of a circuit file, 03's ``greater_than_circuit``)."""
    return [CircuitRecord.from_json(r) for r in _dicts_in(obj) if r.get("kind") == CircuitRecord.kind]


def _dicts_in(obj: Any):
    """Every JSON object in ``obj`` (itself first, then depth first)."""
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _dicts_in(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _dicts_in(value)
