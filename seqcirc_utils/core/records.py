"""Typed result records: what the notebooks and ``seqcirc circuit`` write, with exact JSON round trips.

:class:`CircuitRecord` is one circuit found at one threshold (the circuit-JSON schema of
:mod:`seqcirc_utils.discovery.pipeline`, version :data:`CIRCUIT_SCHEMA_VERSION`). Its JSON form (``to_json()``) is
the dict written to ``results/<model>/circuit_*.json`` -- the same keys, values and key order as before
the record was typed -- and ``CircuitRecord.from_json(d).to_json() == d`` for every such dict.
The record is also a read-only :class:`~collections.abc.Mapping` over that JSON form, so code written
for the dict (``r["heads"]``, ``r.get("heldout")``, ``dict(r)``, ``{**r}``, ``r | {"dataset": None}``)
keeps working; to change a field build a new record (:func:`dataclasses.replace`, or ``with_extra``).



:class:`HeadScores` is a per-head score table (every attention head's OV score, estimated ablation drop,
direct logit attribution, ...): kind ``"head_scores"``, the rows with integer ``layer`` and ``head``,
the names of its score columns and of its panel columns (``task``, ``family``, ...). The appendix draws
every such record it finds in ``results/<model>/`` -- by kind, not by guessing from a list's shape.
:class:`AttentionPattern` (kind ``"attention_pattern"``) is one head's query x key attention matrix with
its row and column labels, which the appendix draws as heatmaps.
:class:`NullDistribution` (kind ``"null_distribution"``) is an observed circuit statistic against matched
random circuits (:mod:`seqcirc_utils.evaluation.nulls`); :class:`FaithfulnessCurve` (kind
``"faithfulness_curve"``) is one ranking method's faithfulness over circuit sizes with MIB's CPR / CMD areas
(:mod:`seqcirc_utils.evaluation.curves`).

This module imports only the standard library and :mod:`seqcirc_utils.core.types` (pandas lazily, for
:meth:`HeadScores.from_table` and :meth:`HeadScores.frame`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from seqcirc_utils.core.errors import BadFileError
from seqcirc_utils.core.types import Circuit, Component

CIRCUIT_KIND = "circuit"
CIRCUIT_SCHEMA_VERSION = 3
#: Keys schema version 3 added (cluster-bootstrap unit and normalised faithfulness, issue 17).
CIRCUIT_V3_KEYS = ("ci_unit", "n_clusters", "empty_metric", "faithfulness", "faithfulness_ci95")
#: Versions :meth:`CircuitRecord.from_json` reads: a version-2 dict loads with the version-3 keys ``None``
#: (its intervals were over prompts: ``ci_unit`` stays ``None``, unknown) and is written back as version 3.
CIRCUIT_READABLE_VERSIONS = (2, 3)

#: The JSON keys of a circuit record in the order ``to_json`` writes them; every typed field plus
#: ``kind`` and ``schema_version`` (class constants). Optional / task-specific keys (``extra``) follow.
CIRCUIT_KEYS = (
    "model",
    "task",
    "template",
    "direction",
    "seed",
    "threshold",
    "method",
    "ablation",
    "metric",
    "heads",
    "mlps",
    "n_components",
    "score",
    "full_metric",
    "circuit_metric",
    "forward_passes",
    "seconds",
    "n_prompts",
    "dataset",
    "kind",
    "schema_version",
    "prefix",
    "filter",
    "order",
    "minimal",
    "removable_left",
    "score_ci95",
    "bootstrap",
    "heldout",
    "heldout_dataset",
    *CIRCUIT_V3_KEYS,
)
_CONSTANT_KEYS = ("kind", "schema_version")


def checked_json(data: Any, kind: str, schema_version: int, keys: tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of ``data`` after checking it is a JSON object of ``kind`` and ``schema_version`` with every
    key of ``keys``; a one-line :class:`BadFileError` naming what differs otherwise (what every ``from_json`` uses)."""
    if not isinstance(data, Mapping):
        raise BadFileError(f"a {kind!r} record must be a JSON object, got {type(data).__name__}")
    if data.get("kind") != kind:
        raise BadFileError(f"expected a record of kind {kind!r}, got kind {data.get('kind')!r}")
    if data.get("schema_version") != schema_version:
        raise BadFileError(
            f"expected a {kind!r} record of schema_version {schema_version}, got {data.get('schema_version')!r}"
        )
    missing = [key for key in keys if key not in data]
    if missing:
        raise BadFileError(f"{kind} record lacks keys {missing} (a {kind!r} record has {list(keys)})")
    return copy.deepcopy(dict(data))


@dataclass(frozen=True, eq=False)
class CircuitRecord(Mapping):
    """One circuit at one threshold: provenance, components and scores.

    ``heads`` is ``[[layer, head], ...]`` and ``mlps`` ``[layer, ...]`` (the circuit-JSON form);
    ``score`` is circuit metric / full metric (a fraction, 1.0 = the full model), ``score_ci95`` its
    95 % bootstrap interval ``[lo, hi]`` (over ``ci_unit``: ``"sequence"`` = cluster bootstrap over
    ``n_clusters`` sequence identities; ``None`` in upgraded version-2 records, whose intervals were over
    prompts); ``empty_metric`` the metric with everything ablated, ``faithfulness`` = (m(C) - m(empty)) /
    (m(full) - m(empty)) and ``faithfulness_ci95`` its interval; ``seconds`` is wall-clock pruning time;
    ``dataset`` / ``heldout_dataset`` are :meth:`TaskDataset.to_json` dicts; ``heldout`` is
    ``{"seed", "n_prompts", "score", "ci95", ...}`` or None. ``extra`` holds the optional and
    task-specific keys (greater-than's ``pruning_metric``, ``metric_note``, ``exact_prob_diff``; the
    first record's ``setup_seconds``; any key a newer writer added), written after the typed keys in
    their own order.
    """

    kind: ClassVar[str] = CIRCUIT_KIND
    schema_version: ClassVar[int] = CIRCUIT_SCHEMA_VERSION

    model: str
    task: str
    template: str | None
    direction: str | None
    seed: int
    threshold: float
    method: str
    ablation: str
    metric: str
    heads: list[list[int]]
    mlps: list[int]
    n_components: int
    score: float
    full_metric: float
    circuit_metric: float
    forward_passes: int
    seconds: float
    n_prompts: int
    dataset: dict | None
    prefix: str | None
    filter: str | None
    order: str | None
    minimal: bool | None
    removable_left: int
    score_ci95: list[float] | None
    bootstrap: dict | None
    heldout: dict | None
    heldout_dataset: dict | None
    ci_unit: str | None = None
    n_clusters: int | None = None
    empty_metric: float | None = None
    faithfulness: float | None = None
    faithfulness_ci95: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(CIRCUIT_KEYS))
        if clash:
            raise ValueError(f"CircuitRecord.extra must not repeat typed keys {clash}; pass them as fields")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The circuit-JSON dict (a deep copy): the keys of :data:`CIRCUIT_KEYS` in order, then ``extra``."""
        out = {key: self[key] for key in CIRCUIT_KEYS}
        out |= self.extra
        return copy.deepcopy(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CircuitRecord:
        """The record of a circuit-JSON dict (``to_json``'s inverse; values are deep-copied).

        A version-2 dict is upgraded first (:func:`upgrade_circuit_json`). Raises a one-line
        :class:`BadFileError` when ``data`` is not a circuit record of a readable version or lacks one of
        :data:`CIRCUIT_KEYS`.
        """
        if isinstance(data, CircuitRecord):
            data = data.to_json()
        if isinstance(data, Mapping) and data.get("kind") == cls.kind and data.get("schema_version") == 2:
            data = upgrade_circuit_json(data)
        data = checked_json(data, cls.kind, cls.schema_version, CIRCUIT_KEYS)
        typed = {key: data[key] for key in CIRCUIT_KEYS if key not in _CONSTANT_KEYS}
        extra = {key: value for key, value in data.items() if key not in CIRCUIT_KEYS}
        return cls(**typed, extra=extra)

    def with_extra(self, **values: Any) -> CircuitRecord:
        """A copy with ``values`` added to (or replacing keys of) ``extra``; typed keys go through
        :func:`dataclasses.replace`."""
        typed = {k: v for k, v in values.items() if k in CIRCUIT_KEYS}
        if any(k in _CONSTANT_KEYS for k in typed):
            raise ValueError(f"{list(_CONSTANT_KEYS)} are fixed for a {self.kind!r} record")
        rest = {k: v for k, v in values.items() if k not in CIRCUIT_KEYS}
        return dataclasses.replace(self, **typed, extra=self.extra | rest)

    @property
    def components(self) -> frozenset[Component]:
        """The kept components (:meth:`Circuit.from_lists` of ``heads`` and ``mlps``)."""
        return Circuit.from_lists(self.heads, self.mlps).components

    # ------------------------------------------------------------------ read-only mapping over the JSON form
    def __getitem__(self, key: str) -> Any:
        if key in CIRCUIT_KEYS:
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from CIRCUIT_KEYS
        yield from self.extra

    def __len__(self) -> int:
        return len(CIRCUIT_KEYS) + len(self.extra)

    def __contains__(self, key: object) -> bool:
        return key in CIRCUIT_KEYS or key in self.extra

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return (
                self.to_json() == dict(other.items())
                if not isinstance(other, CircuitRecord)
                else self.to_json() == other.to_json()
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # holds lists, like the dict it stands for

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        """``record | {...}``: the JSON dict updated with ``other`` (a plain dict, as for the old dict records)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.to_json() | dict(other.items())

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(other.items()) | self.to_json()

    def __repr__(self) -> str:
        return (
            f"CircuitRecord(model={self.model!r}, task={self.task!r}, threshold={self.threshold!r}, "
            f"method={self.method!r}, heads={len(self.heads)}, mlps={len(self.mlps)}, score={self.score!r})"
        )


def upgrade_circuit_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-2 circuit dict as version 3: the keys of :data:`CIRCUIT_V3_KEYS` added as ``None`` (not
    measured then), ``schema_version`` 3; the other keys and their order unchanged, ``heldout`` untouched."""
    if data.get("schema_version") != 2:
        raise ValueError(f"upgrade_circuit_json reads schema_version 2, got {data.get('schema_version')!r}")
    out = {key: value for key, value in data.items()}
    out["schema_version"] = CIRCUIT_SCHEMA_VERSION
    for key in CIRCUIT_V3_KEYS:
        out.setdefault(key, None)
    return out


def as_json(record: Any) -> Any:
    """``record.to_json()`` for a typed record (any with ``to_json``), else ``record`` unchanged (a plain dict)."""
    return record.to_json() if callable(getattr(record, "to_json", None)) else record


# --------------------------------------------------------------------------- per-head score tables
HEAD_SCORES_KIND = "head_scores"
HEAD_SCORES_SCHEMA_VERSION = 1
HEAD_SCORES_KEYS = ("kind", "schema_version", "scores", "panels", "description", "rows")


@dataclass(frozen=True)
class HeadScores:
    """A per-head score table: one row per attention head and panel label.

    ``rows``: dicts with integer ``layer`` and ``head``, the ``scores`` columns (numbers, ``None`` when
    missing), the ``panels`` label columns (e.g. ``task``: one heatmap panel per value) and any other
    column the writer kept (``component``, counts such as ``n_next``). ``description`` says in words
    what the scores measure and in which unit (the appendix's captions use it).
    """

    kind: ClassVar[str] = HEAD_SCORES_KIND
    schema_version: ClassVar[int] = HEAD_SCORES_SCHEMA_VERSION

    scores: list[str]
    rows: list[dict[str, Any]]
    panels: list[str] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.scores:
            raise ValueError("a head_scores record needs at least one score column")
        for i, row in enumerate(self.rows):
            if not all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool) for k in ("layer", "head")):
                raise ValueError(f"head_scores row {i} needs integer 'layer' and 'head', got {row!r}")
            missing = [c for c in (*self.scores, *self.panels) if c not in row]
            if missing:
                raise ValueError(f"head_scores row {i} lacks columns {missing}")

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "schema_version", "scores", "panels", "description", "rows"}`` (a deep copy)."""
        return copy.deepcopy(
            {
                "kind": self.kind,
                "schema_version": self.schema_version,
                "scores": list(self.scores),
                "panels": list(self.panels),
                "description": self.description,
                "rows": self.rows,
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadScores:
        """``to_json``'s inverse; a one-line :class:`BadFileError` for another kind, version or missing keys."""
        data = checked_json(data, cls.kind, cls.schema_version, HEAD_SCORES_KEYS)
        return cls(scores=data["scores"], rows=data["rows"], panels=data["panels"], description=data["description"])

    @classmethod
    def from_table(
        cls,
        table,
        scores: list[str] | None = None,
        panels: list[str] | tuple[str, ...] = (),
        description: str = "",
        **labels: Any,
    ) -> HeadScores:
        """The head rows of a per-component table.

        ``table``: a DataFrame with a ``component`` column (``"L9.H1"``, ``"MLP9"``, ...) and score
        columns (e.g. :func:`~seqcirc_utils.scoring.importance.head_importance`), or a Series of scores indexed
        by component name. Rows that are not heads are dropped; ``layer`` and ``head`` are parsed from
        the name. ``scores`` default to the numeric columns that are not counts (``n_*``) or flags;
        ``labels`` (``task="digits"``) become constant columns. Missing values (NaN) become ``None``.
        """
        import pandas as pd

        from seqcirc_utils.core.types import parse_component

        df = table.rename_axis("component").reset_index() if isinstance(table, pd.Series) else table.copy()
        if "component" not in df.columns:
            raise ValueError(f"a per-head table needs a 'component' column; it has {list(df.columns)}")
        parsed = [parse_component(str(c)) for c in df["component"]]
        df = df.drop(columns=[c for c in ("layer", "head", "kind", "index") if c in df.columns])
        df = df.loc[[c.is_head for c in parsed]].reset_index(drop=True)
        heads = [c for c in parsed if c.is_head]
        df.insert(1, "layer", [c.layer for c in heads])
        df.insert(2, "head", [c.index for c in heads])
        for key, value in labels.items():
            df[key] = value
        if scores is None:
            scores = [
                c
                for c in df.columns
                if c not in ("layer", "head")
                and not str(c).startswith("n_")
                and pd.api.types.is_numeric_dtype(df[c])
                and not pd.api.types.is_bool_dtype(df[c])
            ]
        rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        rows = [{k: (int(v) if k in ("layer", "head") else v) for k, v in r.items()} for r in rows]
        return cls(scores=list(scores), rows=rows, panels=list(panels), description=description)

    def frame(self):
        """The rows as a DataFrame (``layer``, ``head``, the scores, the panels, the other columns)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


# --------------------------------------------------------------------------- attention patterns
ATTENTION_PATTERN_KIND = "attention_pattern"
ATTENTION_PATTERN_SCHEMA_VERSION = 1
ATTENTION_PATTERN_KEYS = ("kind", "schema_version", "component", "pattern", "query_labels", "key_labels", "description")


@dataclass(frozen=True)
class AttentionPattern:
    """One head's attention, ``pattern[q][k]`` from query row ``q`` to key column ``k`` (probabilities, mean
    over prompts), with ``query_labels`` / ``key_labels`` naming the rows and columns (one per row / column)
    and ``description`` saying which prompts and positions it averages."""

    kind: ClassVar[str] = ATTENTION_PATTERN_KIND
    schema_version: ClassVar[int] = ATTENTION_PATTERN_SCHEMA_VERSION

    component: str
    pattern: list[list[float]]
    query_labels: list[str]
    key_labels: list[str]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.pattern or not all(
            isinstance(row, list) and len(row) == len(self.key_labels) for row in self.pattern
        ):
            raise ValueError(
                f"attention pattern of {self.component}: every row needs {len(self.key_labels)} "
                "values, one per key label"
            )
        if len(self.pattern) != len(self.query_labels):
            raise ValueError(
                f"attention pattern of {self.component}: {len(self.pattern)} rows but "
                f"{len(self.query_labels)} query labels"
            )

    def to_json(self) -> dict[str, Any]:
        """The record's JSON dict (a deep copy), keys in :data:`ATTENTION_PATTERN_KEYS` order."""
        return copy.deepcopy(
            {
                "kind": self.kind,
                "schema_version": self.schema_version,
                "component": self.component,
                "pattern": self.pattern,
                "query_labels": self.query_labels,
                "key_labels": self.key_labels,
                "description": self.description,
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttentionPattern:
        """``to_json``'s inverse; a one-line :class:`BadFileError` for another kind, version or missing keys."""
        data = checked_json(data, cls.kind, cls.schema_version, ATTENTION_PATTERN_KEYS)
        return cls(**{k: data[k] for k in ATTENTION_PATTERN_KEYS if k not in ("kind", "schema_version")})

    @classmethod
    def from_frame(cls, component: str, matrix, description: str = "") -> AttentionPattern:
        """From a DataFrame whose index labels the queries and columns the keys."""
        return cls(
            component=str(component),
            pattern=[[float(v) for v in row] for row in matrix.values.tolist()],
            query_labels=[str(i) for i in matrix.index],
            key_labels=[str(c) for c in matrix.columns],
            description=description,
        )


# --------------------------------------------------------------------------- null distributions
NULL_DISTRIBUTION_KIND = "null_distribution"
NULL_DISTRIBUTION_SCHEMA_VERSION = 1
NULL_DISTRIBUTION_KEYS = (
    "kind",
    "schema_version",
    "statistic",
    "observed",
    "null_mean",
    "null_p5",
    "null_p50",
    "null_p95",
    "n_draws",
    "observed_percentile",
    "p_value",
    "matched",
    "seed",
    "null",
    "circuit",
    "task",
    "metric",
    "ablation",
    "n_prompts",
    "n_clusters",
    "forward_passes",
    "seconds",
    "description",
)


@dataclass(frozen=True)
class NullDistribution:
    """An observed circuit statistic against random circuits matched to it (one ``null_distribution`` record).

    ``statistic``: what was compared (``"faithfulness"`` = (m(C) - m(empty)) / (m(full) - m(empty)), or
    ``"score"`` = m(C) / m(full)); ``observed`` its value for ``circuit`` (component names); ``null`` the
    ``n_draws`` random circuits' values (draw order); ``null_mean`` / ``null_p5`` / ``null_p50`` / ``null_p95``
    their mean and percentiles (linear interpolation); ``observed_percentile`` the observed value's mid-rank
    percentile among the draws (100 * (#{null < observed} + #{null == observed} / 2) / n_draws);
    ``p_value`` the one-sided ``(1 + #{null >= observed}) / (n_draws + 1)``; ``matched`` what the draws keep
    (heads per layer, MLP count and layer window, whether the circuit's own components were excluded);
    ``seed`` the draws' seed; ``forward_passes`` prompt-batch passes spent (one per draw at most).
    """

    kind: ClassVar[str] = NULL_DISTRIBUTION_KIND
    schema_version: ClassVar[int] = NULL_DISTRIBUTION_SCHEMA_VERSION

    statistic: str
    observed: float
    null_mean: float
    null_p5: float
    null_p50: float
    null_p95: float
    n_draws: int
    observed_percentile: float
    p_value: float
    matched: dict[str, Any]
    seed: int
    null: list[float]
    circuit: list[str]
    task: str | None = None
    metric: str | None = None
    ablation: str | None = None
    n_prompts: int | None = None
    n_clusters: int | None = None
    forward_passes: int | None = None
    seconds: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.null) != self.n_draws:
            raise ValueError(f"null_distribution: {len(self.null)} null values but n_draws={self.n_draws}")

    def to_json(self) -> dict[str, Any]:
        """The record's JSON dict (a deep copy), keys in :data:`NULL_DISTRIBUTION_KEYS` order."""
        return copy.deepcopy({k: getattr(self, k) for k in NULL_DISTRIBUTION_KEYS})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NullDistribution:
        """``to_json``'s inverse; a one-line ``ValueError`` for another kind, version or missing keys."""
        data = checked_json(data, cls.kind, cls.schema_version, NULL_DISTRIBUTION_KEYS)
        return cls(**{k: data[k] for k in NULL_DISTRIBUTION_KEYS if k not in ("kind", "schema_version")})


# --------------------------------------------------------------------------- faithfulness curves
FAITHFULNESS_CURVE_KIND = "faithfulness_curve"
FAITHFULNESS_CURVE_SCHEMA_VERSION = 1
FAITHFULNESS_CURVE_KEYS = (
    "kind",
    "schema_version",
    "task",
    "method",
    "fractions",
    "sizes",
    "faithfulness_signed",
    "faithfulness_abs",
    "cpr",
    "cmd",
    "cpr_log",
    "cmd_log",
    "n_components",
    "metric",
    "ablation",
    "n_prompts",
    "empty_metric",
    "full_metric",
    "seed",
    "forward_passes",
    "seconds",
    "description",
)


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Faithfulness of the top-k components of one node ranking, for k over fractions of all components
    (MIB's CPR / CMD, Mueller et al. 2025), one ``faithfulness_curve`` record per task and method.

    ``fractions``: the k's as fractions of ``n_components``; ``sizes``: the component counts used
    (``max(1, round(fraction * n_components))``); ``faithfulness_signed`` / ``faithfulness_abs``: f(C_k) with
    components ranked by signed / absolute score (the same list for a ranking without signs).
    ``cpr`` = trapezoid area under ``faithfulness_signed`` over linear k (higher is better), ``cmd`` = area under
    ``|1 - faithfulness_abs|`` (lower is better); both over ``[fractions[0], fractions[-1]]`` without
    normalisation (MIB's convention). ``cpr_log`` / ``cmd_log``: the same integrands over ``log10 k``, divided by
    the log range (a mean over orders of magnitude; f = 1 everywhere gives 1). ``seed``: the random
    ranking's seed (None for other methods).
    """

    kind: ClassVar[str] = FAITHFULNESS_CURVE_KIND
    schema_version: ClassVar[int] = FAITHFULNESS_CURVE_SCHEMA_VERSION

    task: str | None
    method: str
    fractions: list[float]
    sizes: list[int]
    faithfulness_signed: list[float]
    faithfulness_abs: list[float]
    cpr: float
    cmd: float
    cpr_log: float
    cmd_log: float
    n_components: int
    metric: str | None = None
    ablation: str | None = None
    n_prompts: int | None = None
    empty_metric: float | None = None
    full_metric: float | None = None
    seed: int | None = None
    forward_passes: int | None = None
    seconds: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.fractions)
        if not (len(self.sizes) == len(self.faithfulness_signed) == len(self.faithfulness_abs) == n):
            raise ValueError(f"faithfulness_curve: fractions, sizes and both curves need {n} points each")

    def to_json(self) -> dict[str, Any]:
        """The record's JSON dict (a deep copy), keys in :data:`FAITHFULNESS_CURVE_KEYS` order."""
        return copy.deepcopy({k: getattr(self, k) for k in FAITHFULNESS_CURVE_KEYS})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaithfulnessCurve:
        """``to_json``'s inverse; a one-line ``ValueError`` for another kind, version or missing keys."""
        data = checked_json(data, cls.kind, cls.schema_version, FAITHFULNESS_CURVE_KEYS)
        return cls(**{k: data[k] for k in FAITHFULNESS_CURVE_KEYS if k not in ("kind", "schema_version")})
