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


def discovery_methods(**values: Any) -> ResultRecord:
    """A ``discovery_methods`` record (chapter 13) with one task's table rows (fast, random), their curves,
    their CPR / CMD against 99 random rankings (fast beats every draw), the held-out split and a planted table
    and backup entry; ``values`` override any field."""
    from seqcirc_utils.core.records import FaithfulnessCurve, NullDistribution
    from seqcirc_utils.core.result_records import DiscoveryMethods
    from seqcirc_utils.evaluation.nulls import lower_tail_p, null_summary

    def curve(method: str, f: list[float]) -> FaithfulnessCurve:
        return FaithfulnessCurve(
            task="months", method=method, fractions=[0.1, 1.0], sizes=[30, 300], faithfulness_signed=f,
            faithfulness_abs=f, cpr=0.9 * (f[0] + f[1]) / 2, cmd=0.9 * abs(1 - f[0]) / 2, cpr_log=(f[0] + f[1]) / 2,
            cmd_log=abs(1 - f[0]) / 2, n_components=300, metric="logit_diff", ablation="mean", n_prompts=8,
            empty_metric=0.0, full_metric=2.0, seed=0, forward_passes=3, seconds=0.1, description="",
        )  # fmt: skip

    curves = {"fast": curve("fast", [0.8, 1.0]), "random": curve("random", [0.2, 1.0])}
    draws = {"cpr": [0.45 + 0.001 * i for i in range(99)], "cmd": [0.40 - 0.001 * i for i in range(99)]}

    def null(stat: str, method: str) -> NullDistribution:
        observed = getattr(curves[method], stat)
        return NullDistribution(
            statistic=stat, observed=observed, **null_summary(observed, draws[stat]),
            matched={"null": "random rankings", "seeds": [0, 98], "fractions": [0.1, 1.0],
                     "higher_is_better": stat == "cpr"},
            seed=0, null=draws[stat], circuit=[], task="months", metric="logit_diff", ablation="mean", n_prompts=8,
            n_clusters=3, forward_passes=99, seconds=1.0, description="",
        )  # fmt: skip

    nulls = {"months": {stat: {m: null(stat, m) for m in curves} for stat in ("cpr", "cmd")}}
    null_table = [
        row(DiscoveryMethods, "null_table", task="months", method=m, cpr=nulls["months"]["cpr"][m].observed,
            cpr_null_mean=nulls["months"]["cpr"][m].null_mean, cpr_p=nulls["months"]["cpr"][m].p_value,
            cmd=nulls["months"]["cmd"][m].observed, cmd_null_mean=nulls["months"]["cmd"][m].null_mean,
            cmd_p=lower_tail_p(nulls["months"]["cmd"][m]), n_draws=99)
        for m in curves
    ]  # fmt: skip
    table = [
        row(DiscoveryMethods, "table", task="months", method=m, cpr=c.cpr, cmd=c.cmd, cpr_log=c.cpr_log,
            cmd_log=c.cmd_log, forward_passes=6 if m == "fast" else 0, curve_passes=3, n_prompts=8)
        for m, c in curves.items()
    ]  # fmt: skip
    fields = dict(
        model="tiny-gpt2",
        tasks=["months"],
        methods=["fast", "random"],
        table=table,
        curves={"months": curves},
        split=[row(DiscoveryMethods, "split", task="months", role="heldout", n_prompts=8, n_sequences=3, overlap=0)],
        nulls=nulls,
        null_table=null_table,
        planted=[
            row(DiscoveryMethods, "planted", method="fast", found="L0.H0 L1.H0 MLP1", precision=1.0, recall=0.75,
                backup_found=False, negative_found=False, roc_auc=0.9, forward_passes=20),
            row(DiscoveryMethods, "planted", method="random", found="MLP0", precision=0.0, recall=0.0,
                backup_found=False, negative_found=False, roc_auc=0.4, forward_passes=0),
        ],
        planted_model={"name": "planted-backup-months", "roles": {}, "planted": [], "full_logit_diff": 13.5},
        backup={"primary": "L1.H0", "backup": "L2.H0", "dla_clean": 0.0, "dla_knockout": 6.3, "change": 6.3,
                "rank": 1, "found": True, "joins": ["L2.H0"]},
    )  # fmt: skip
    return example(DiscoveryMethods, **(fields | values))


def greater_than_overlap_digits() -> ResultRecord:
    """A 03 record against digits whose four analogous ablations (each circuit's heads and random heads, on
    both tasks) all cost 1 point."""
    from seqcirc_utils.core.result_records import GreaterThanOverlap

    return example(
        GreaterThanOverlap,
        sequence_task="digits",
        shared_heads=[],
        estimated_drop_rank_correlation=0.1,
        analogous_ablation=[
            row(
                GreaterThanOverlap,
                "analogous_ablation",
                ablated=a,
                inside="full model",
                drop_points=1.0,
                **{"task scored": s},
            )
            for a, s in (
                ("digits heads", "greater_than"),
                ("random heads", "greater_than"),
                ("greater_than heads", "digits"),
                ("random heads", "digits"),
            )
        ],
    )
