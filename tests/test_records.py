"""Typed circuit records: exact JSON round trips, wrong kinds refused, dict-style access unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import BadFileError
from seqcirc_utils.core.records import CIRCUIT_KEYS, CircuitRecord
from seqcirc_utils.core.result_records import CircuitFile, read_circuit, read_circuits
from seqcirc_utils.core.results import write_json_atomic
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.pipeline import discover, write_circuits
from seqcirc_utils.scoring.ablation import MIN_BASELINE


def _dataset_dict(seed: int) -> dict:
    return {
        "task": "greater_than",
        "template": "war",
        "direction": "increasing",
        "length": 2,
        "seed": seed,
        "prefix": {"mode": "bos", "token_id": 1, "token": "<s>"},
        "prompts": [{"text": "The war lasted from 1732 to 17", "answer": " 33"}],
    }


def _hand_made_v2() -> dict:
    """Every key a schema-2 greater-than record had, in the order circuit_record wrote them."""
    exact = {"mode": "digit", "full": 0.41, "circuit": 0.33, "score": 0.33 / 0.41, "ci95": [0.7, 0.9]}
    return {
        "model": "smollm2-135m",
        "task": "greater_than",
        "template": "war",
        "direction": "increasing",
        "seed": 0,
        "threshold": 0.8,
        "method": "fast",
        "ablation": "mean",
        "metric": "prob_diff",
        "heads": [[0, 1], [3, 2]],
        "mlps": [0, 5],
        "n_components": 4,
        "score": 0.8123,
        "full_metric": 0.41,
        "circuit_metric": 0.333,
        "forward_passes": 57,
        "seconds": 1.25,
        "n_prompts": 12,
        "dataset": _dataset_dict(0),
        "kind": "circuit",
        "schema_version": 2,
        "prefix": "bos",
        "filter": "year",
        "order": None,
        "minimal": True,
        "removable_left": 0,
        "score_ci95": [0.75, 0.86],
        "bootstrap": {"n_resamples": 1000, "seed": 0, "level": 0.95},
        "heldout": {
            "seed": 1000,
            "n_prompts": 11,
            "score": 0.79,
            "ci95": [0.7, 0.85],
            "full_metric": 0.4,
            "circuit_metric": 0.316,
            "exact_prob_diff": dict(exact, score=0.78),
        },
        "heldout_dataset": _dataset_dict(1000),
        "pruning_metric": "tens-digit prob_diff",
        "metric_note": "years split into digit tokens: ...",
        "exact_prob_diff": exact,
        "setup_seconds": 0.5,
    }


V3 = {
    "ci_unit": "sequence",
    "n_clusters": 5,
    "empty_metric": -0.02,
    "faithfulness": 0.82,
    "faithfulness_ci95": [0.74, 0.88],
}


def _hand_made() -> dict:
    """Every key a greater-than record written today (schema 3) can have, in the order circuit_record writes them."""
    old = _hand_made_v2()
    typed = [k for k in old if k in CIRCUIT_KEYS]
    out = {k: old[k] for k in typed} | {"schema_version": 3} | V3
    out["heldout"] = out["heldout"] | V3
    return out | {k: v for k, v in old.items() if k not in CIRCUIT_KEYS}


def test_schema_2_record_loads_with_new_keys_none():
    old = _hand_made_v2()
    r = CircuitRecord.from_json(old)
    assert r.schema_version == 3 and all(r[k] is None for k in V3)
    j = r.to_json()
    assert {k: v for k, v in j.items() if k not in V3 and k != "schema_version"} == {
        k: v for k, v in old.items() if k != "schema_version"
    }
    assert CircuitRecord.from_json(j).to_json() == j  # written back as schema 3, round trip exact


def test_hand_made_record_round_trips_exactly(tmp_path):
    d = _hand_made()
    r = CircuitRecord.from_json(d)
    assert r.to_json() == d and list(r.to_json()) == list(d)  # same keys, values and order
    assert CircuitRecord.from_json(r.to_json()).to_json() == r.to_json()
    assert r.extra == {k: d[k] for k in ("pruning_metric", "metric_note", "exact_prob_diff", "setup_seconds")}
    assert r.kind == "circuit" and r.schema_version == 3 and r.heldout["exact_prob_diff"]["score"] == 0.78
    assert r.components == frozenset({head(0, 1), head(3, 2), mlp(0), mlp(5)})
    # through a JSON file (write_json_atomic serialises the record itself) and back
    write_json_atomic(tmp_path / "c.json", {"circuits": [r]})
    back = json.loads((tmp_path / "c.json").read_text())["circuits"][0]
    assert back == d and CircuitRecord.from_json(back).to_json() == d
    # the record is a copy: changing the dict it came from, or its to_json, leaves it alone
    d["heads"].append([9, 9])
    r.to_json()["heldout"]["score"] = -1.0
    assert r["heads"] == [[0, 1], [3, 2]] and r["heldout"]["score"] == 0.79


def test_mapping_access_equals_json_form():
    r = CircuitRecord.from_json(_hand_made())
    j = r.to_json()
    assert list(r) == list(j) == list(r.keys()) and len(r) == len(j)
    assert {k: r[k] for k in r} == j and dict(r) == j and {**r} == j and dict(r.items()) == j
    assert r.get("exact_prob_diff") == j["exact_prob_diff"] and r.get("nosuch") is None and "nosuch" not in r
    assert "heads" in r and "kind" in r and r["kind"] == "circuit" and r["schema_version"] == 3
    with pytest.raises(KeyError):
        r["nosuch"]
    assert r == j and j == r  # compares like the dict it stands for
    assert (r | {"dataset": None}) == j | {"dataset": None} and type(r | {"dataset": None}) is dict
    with pytest.raises(TypeError):
        r["score"] = 1.0  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.score = 1.0
    r2 = r.with_extra(setup_seconds=2.0, score=0.5)
    assert r2["setup_seconds"] == 2.0 and r2.score == 0.5 and r["setup_seconds"] == 0.5 and r.score == 0.8123


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"kind": "edge_circuit", "schema_version": 2}, "expected a record of kind 'circuit'"),
        ({"kind": None}, "expected a record of kind 'circuit'"),
        ({"schema_version": 1}, "schema_version 3"),
    ],
)
def test_wrong_kind_or_version_rejected(bad, needle):
    d = _hand_made() | bad
    if bad.get("kind", "circuit") is None:
        del d["kind"]
    with pytest.raises(BadFileError, match=needle) as err:
        CircuitRecord.from_json(d)
    assert "\n" not in str(err.value)


def test_missing_key_rejected():
    d = _hand_made()
    del d["heldout"]
    with pytest.raises(BadFileError, match=r"lacks keys \['heldout'\]"):
        CircuitRecord.from_json(d)


def test_extra_may_not_shadow_typed_keys():
    r = CircuitRecord.from_json(_hand_made())
    with pytest.raises(ValueError, match="typed keys"):
        dataclasses.replace(r, extra={"score": 2.0})


def test_discovered_records_round_trip_through_files(tiny_llama, monkeypatch, tmp_path):
    model, info = tiny_llama
    # As in test_circuits.test_heldout_score_equals_independent_rescore: a random model's output barely
    # moves under ablation, so lift the KL baseline floor.
    monkeypatch.setitem(MIN_BASELINE, "kl", 0.0)
    records, ds, _ = discover(
        model,
        info,
        "tiny-llama",
        "digits",
        DiscoveryConfig([0.9, 0.7], method="sweep", metric="kl", filter_correct=False, n_resamples=50),
        progress=False,
        template="pure",
        n=10,
        seed=2,
    )
    assert all(isinstance(r, CircuitRecord) for r in records)
    assert list(records[0].to_json())[: len(CIRCUIT_KEYS)] == list(CIRCUIT_KEYS)
    assert "setup_seconds" in records[0] and "setup_seconds" not in records[1]
    for r in records:
        j = r.to_json()
        assert CircuitRecord.from_json(j).to_json() == j
        assert r.components == {c for c in info.components if c in r.components}  # components of this model
        assert len(r.components) == r["n_components"] == len(r["heads"]) + len(r["mlps"])
        assert r["heldout"]["seed"] == 1002 and r["dataset"] == ds.to_json()
    path = write_circuits(tmp_path / "circuit_digits.json", records)
    data = json.loads(path.read_text())
    assert (data["kind"], data["schema_version"]) == (CircuitFile.kind, CircuitFile.schema_version)
    stored = data["circuits"]
    assert stored == [r.to_json() for r in records]
    assert CircuitFile.from_json(data).to_json() == data
    loaded = read_circuit(path, 0.7)
    assert isinstance(loaded, CircuitRecord) and loaded == records[1] and loaded.to_json() == stored[1]
    assert read_circuit(path) == records[1]  # no threshold: the lowest one
    # a file of the older form ({"circuits": [...]}, no top-level kind) reads the same
    write_json_atomic(tmp_path / "old.json", {"circuits": stored})
    assert read_circuits(tmp_path / "old.json") == records
    # a record without kind / schema_version is not a circuit record of this schema: one line, BadFileError
    legacy = {k: v for k, v in stored[1].items() if k not in ("kind", "schema_version")}
    write_json_atomic(tmp_path / "legacy.json", {"circuits": [legacy]})
    with pytest.raises(BadFileError, match="expected a record of kind 'circuit'") as err:
        read_circuit(tmp_path / "legacy.json")
    assert "\n" not in str(err.value)
    with pytest.raises(BadFileError, match="no circuit at threshold 0.5; valid: 0.9, 0.7"):
        read_circuit(path, 0.5)
