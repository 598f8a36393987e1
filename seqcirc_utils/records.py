"""Typed result records: what the notebooks and ``seqcirc circuit`` write, with exact JSON round trips.

:class:`CircuitRecord` is one circuit found at one threshold (the circuit-JSON schema of
:mod:`seqcirc_utils.circuits`, version :data:`CIRCUIT_SCHEMA_VERSION`). Its JSON form (``to_json()``) is
the dict written to ``results/<model>/circuit_*.json`` -- the same keys, values and key order as before
the record was typed -- and ``CircuitRecord.from_json(d).to_json() == d`` for every such dict.
The record is also a read-only :class:`~collections.abc.Mapping` over that JSON form, so code written
for the dict (``r["heads"]``, ``r.get("heldout")``, ``dict(r)``, ``{**r}``, ``r | {"dataset": None}``)
keeps working; to change a field build a new record (:func:`dataclasses.replace`, or ``with_extra``).

This module imports only the standard library and :mod:`seqcirc_utils.types`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .types import Circuit, Component

CIRCUIT_KIND = "circuit"
CIRCUIT_SCHEMA_VERSION = 2

#: The JSON keys of a circuit record in the order ``to_json`` writes them; every typed field plus
#: ``kind`` and ``schema_version`` (class constants). Optional / task-specific keys (``extra``) follow.
CIRCUIT_KEYS = (
    "model", "task", "template", "direction", "seed", "threshold", "method", "ablation", "metric", "heads", "mlps",
    "n_components", "score", "full_metric", "circuit_metric", "forward_passes", "seconds", "n_prompts", "dataset",
    "kind", "schema_version", "prefix", "filter", "order", "minimal", "removable_left", "score_ci95", "bootstrap",
    "heldout", "heldout_dataset",
)
_CONSTANT_KEYS = ("kind", "schema_version")


@dataclass(frozen=True, eq=False)
class CircuitRecord(Mapping):
    """One circuit at one threshold: provenance, components and scores.

    ``heads`` is ``[[layer, head], ...]`` and ``mlps`` ``[layer, ...]`` (the circuit-JSON form);
    ``score`` is circuit metric / full metric (a fraction, 1.0 = the full model), ``score_ci95`` its
    95 % bootstrap interval ``[lo, hi]`` over prompts; ``seconds`` is wall-clock pruning time;
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
    def from_json(cls, data: Mapping[str, Any]) -> "CircuitRecord":
        """The record of a circuit-JSON dict (``to_json``'s inverse; values are deep-copied).

        Raises a one-line ``ValueError`` when ``data`` is not a circuit record of this schema version
        or lacks one of :data:`CIRCUIT_KEYS`.
        """
        if isinstance(data, CircuitRecord):
            data = data.to_json()
        if not isinstance(data, Mapping):
            raise ValueError(f"a circuit record must be a JSON object, got {type(data).__name__}")
        if data.get("kind") != cls.kind:
            raise ValueError(f"expected a record of kind {cls.kind!r}, got kind {data.get('kind')!r}")
        if data.get("schema_version") != cls.schema_version:
            raise ValueError(f"expected a {cls.kind!r} record of schema_version {cls.schema_version}, "
                             f"got {data.get('schema_version')!r}")
        missing = [key for key in CIRCUIT_KEYS if key not in data]
        if missing:
            raise ValueError(f"circuit record lacks keys {missing} (a {cls.kind!r} record has {list(CIRCUIT_KEYS)})")
        data = copy.deepcopy(dict(data))
        typed = {key: data[key] for key in CIRCUIT_KEYS if key not in _CONSTANT_KEYS}
        extra = {key: value for key, value in data.items() if key not in CIRCUIT_KEYS}
        return cls(**typed, extra=extra)

    def with_extra(self, **values: Any) -> "CircuitRecord":
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
            return self.to_json() == dict(other.items()) if not isinstance(other, CircuitRecord) \
                else self.to_json() == other.to_json()
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
        return (f"CircuitRecord(model={self.model!r}, task={self.task!r}, threshold={self.threshold!r}, "
                f"method={self.method!r}, heads={len(self.heads)}, mlps={len(self.mlps)}, score={self.score!r})")


def as_json(record: Any) -> Any:
    """``record.to_json()`` for a typed record, else ``record`` unchanged (a plain dict)."""
    return record.to_json() if isinstance(record, CircuitRecord) else record
