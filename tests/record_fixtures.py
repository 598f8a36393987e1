"""Test fixtures built from the record types (never copied dicts): a record of any result type with every
field at a neutral default except the ones a test sets, and table rows with every declared column.

``example(Behaviour, rows=[row(Behaviour, "rows", task="digits", ...)])`` is a valid ``behaviour`` record
whatever fields the type gains later; ``circuit(threshold=0.8, heads=[[0, 1]])`` a valid circuit record.
"""

from __future__ import annotations

import typing
from typing import Any

from seqcirc_utils.core.records import CIRCUIT_KEYS, CircuitRecord, HeadScores
from seqcirc_utils.core.result_records import ResultRecord, _strip

_CIRCUIT_DEFAULTS: dict[str, Any] = {
    "model": "tiny-gpt2",
    "task": "digits",
    "seed": 0,
    "threshold": 0.8,
    "method": "sweep",
    "ablation": "mean",
    "metric": "logit_diff",
    "heads": [],
    "mlps": [],
    "n_components": 0,
    "score": 1.0,
    "full_metric": 1.0,
    "circuit_metric": 1.0,
    "forward_passes": 0,
    "seconds": 0.0,
    "n_prompts": 0,
    "removable_left": 0,
}


def circuit(**values: Any) -> CircuitRecord:
    """A circuit record of the current schema: ``values`` for the keys given (typed keys or extras), neutral
    defaults (or None) for the rest."""
    data = {"kind": CircuitRecord.kind, "schema_version": CircuitRecord.schema_version}
    data |= {key: _CIRCUIT_DEFAULTS.get(key) for key in CIRCUIT_KEYS if key not in data}
    data |= values
    if "n_components" not in values:
        data["n_components"] = len(data["heads"]) + len(data["mlps"])
    return CircuitRecord.from_json(data)


def _default(hint: Any) -> Any:
    hint, _ = _strip(hint)
    origin = typing.get_origin(hint)
    if hint is Any or type(None) in typing.get_args(hint):
        return None
    if hint is CircuitRecord:
        return circuit()
    if hint is HeadScores:
        return HeadScores(scores=["score"], rows=[])
    if origin is list or hint is list:
        return []
    if origin is dict or hint is dict:
        return {}
    return {str: "", int: 0, float: 0.0, bool: False}.get(hint)


def row(record_type: type[ResultRecord], field: str, **values: Any) -> dict[str, Any]:
    """One row of ``record_type.field``: every declared column (None unless given), then ``values``."""
    return {c: None for c in record_type.declared_columns()[field]} | values


def example(record_type: type[ResultRecord], **values: Any) -> ResultRecord:
    """A ``record_type`` record: ``values`` for the fields given; neutral defaults for the others (dict fields
    with declared keys get those keys, set to None)."""
    hints = record_type._hints()
    declared = record_type.declared_columns()
    filled = {}
    for name in record_type.field_names():
        if name in values:
            filled[name] = values[name]
            continue
        default = _default(hints[name])
        if isinstance(default, dict) and name in declared:
            default = {c: None for c in declared[name]}
        filled[name] = default
    return record_type(**filled)
