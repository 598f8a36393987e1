"""Typed result records of the chapters' files: exact round trips, nested records typed, one-line refusals,
the one circuit-file reader, and README's "Result records" section checked against the types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from record_fixtures import circuit, example, row

from seqcirc_utils.core.errors import BadFileError
from seqcirc_utils.core.records import AttentionPattern, CircuitRecord, FaithfulnessCurve, HeadScores, NullDistribution
from seqcirc_utils.core.result_records import (
    RESULT_RECORDS,
    Behaviour,
    CircuitFile,
    GreaterThanOverlap,
    GreaterThanThresholds,
    InductionOffsets,
    MlpAblation,
    ResultRecord,
    StepKCircuits,
    circuits_in,
    read_circuit,
    read_circuits,
    read_record,
    read_result,
    record_type_of_file,
)
from seqcirc_utils.core.results import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("record_type", RESULT_RECORDS, ids=lambda t: t.kind)
def test_every_type_round_trips_exactly_through_a_file(record_type, tmp_path):
    record = example(record_type)
    data = record.to_json()
    assert list(data) == list(record_type.json_keys())
    assert (data["kind"], data["schema_version"]) == (record_type.kind, record_type.schema_version)
    assert record_type.from_json(data).to_json() == data
    path = write_json_atomic(tmp_path / record_type.file.replace("*", "x"), record)
    stored = json.loads(path.read_text())
    assert stored == data and read_record(path, record_type).to_json() == stored
    assert record_type_of_file(path.name) is record_type
    assert type(read_result(path)) is record_type


def test_kinds_and_files_are_distinct():
    kinds = [t.kind for t in RESULT_RECORDS]
    assert len(set(kinds)) == len(kinds)
    assert not set(kinds) & {
        CircuitRecord.kind,
        HeadScores.kind,
        AttentionPattern.kind,
        NullDistribution.kind,
        FaithfulnessCurve.kind,
        "edge_circuit",
    }
    assert len({t.file for t in RESULT_RECORDS}) == len(RESULT_RECORDS)


def test_nested_records_come_back_typed(tmp_path):
    scores = HeadScores(
        scores=["estimated_drop"],
        panels=["task"],
        rows=[{"layer": 0, "head": 1, "estimated_drop": 2.5, "task": "digits"}],
    )
    gt = example(
        GreaterThanOverlap,
        greater_than_circuit=circuit(task="greater_than", heads=[[5, 5]]),
        sequence_circuit=circuit(heads=[[0, 1]], mlps=[0]),
        head_importance=scores,
    )
    back = read_record(write_json_atomic(tmp_path / GreaterThanOverlap.file, gt), GreaterThanOverlap)
    assert isinstance(back.greater_than_circuit, CircuitRecord) and back.greater_than_circuit.heads == [[5, 5]]
    assert back.sequence_circuit.components == circuit(heads=[[0, 1]], mlps=[0]).components
    assert isinstance(back.head_importance, HeadScores) and back.head_importance.rows == scores.rows
    ladder = example(GreaterThanThresholds, records={"digits": [circuit(threshold=0.9), circuit(threshold=0.5)]})
    assert [r.threshold for r in GreaterThanThresholds.from_json(ladder.to_json()).records["digits"]] == [0.9, 0.5]
    pattern = AttentionPattern(
        component="L1.H2", pattern=[[1.0, 0.0], [0.25, 0.75]], query_labels=["a", "b"], key_labels=["a", "b"]
    )
    induction = InductionOffsets.from_json(example(InductionOffsets, member_to_member={"digits": pattern}).to_json())
    assert induction.member_to_member["digits"] == pattern
    # null nested records stay null (a step-k run that found no circuit)
    step = StepKCircuits.from_json(example(StepKCircuits, error="too few prompts").to_json())
    assert step.circuit is None and step.overlap is None and isinstance(step.ov_scores, HeadScores)
    # every circuit inside a file, found by kind and typed (what the grid summary and the appendix read)
    assert [r.task for r in circuits_in(gt.to_json())] == ["greater_than", "digits"]


def _write(tmp_path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_bad_files_are_one_line_bad_file_errors(tmp_path):
    good = example(MlpAblation, mlp_effects=[row(MlpAblation, "mlp_effects", task="digits")]).to_json()
    cases = [
        (None, "no such file"),
        ("{oops", "not a readable JSON file"),
        (good | {"kind": "knockout"}, "expected a record of kind 'mlp_ablation', got kind 'knockout'"),
        (good | {"schema_version": 0}, "schema_version 1, got 0"),
        ({k: v for k, v in good.items() if k != "key_mlp"}, "lacks keys ['key_mlp']"),
        (good | {"surprise": 1}, "unknown keys ['surprise']"),
        (good | {"mlp_effects": [{"task": "digits"}]}, "mlp_effects[0] lacks ['component', 'kept_%']"),
        (good | {"length_study": {"task": "digits"}}, "length_study lacks ['directions'"),
    ]
    for data, needle in cases:
        path = tmp_path / "missing.json" if data is None else _write(tmp_path, data)
        with pytest.raises(BadFileError) as err:
            read_record(path, MlpAblation)
        assert needle in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value), err.value


def test_declared_columns_are_checked_on_construction():
    with pytest.raises(ValueError, match=r"rows\[1\] lacks \['template', 'direction', 'n'"):
        example(Behaviour, rows=[row(Behaviour, "rows"), {"task": "digits"}])
    assert Behaviour.declared_columns()["rows"][:3] == ("task", "template", "direction")
    assert "ov_scores" not in StepKCircuits.declared_columns()  # a nested record, not a table


def test_one_circuit_reader_for_every_form(tmp_path):
    records = [circuit(threshold=0.9, heads=[[0, 1]]), circuit(threshold=0.8, heads=[[0, 1], [1, 0]])]
    new = write_json_atomic(tmp_path / "circuit_digits.json", CircuitFile(circuits=records))
    old = write_json_atomic(tmp_path / "old.json", {"circuits": [r.to_json() for r in records]})
    one = write_json_atomic(tmp_path / "one.json", records[0])
    assert read_circuits(new) == records and read_circuits(old) == records and read_circuits(one) == [records[0]]
    assert read_circuit(new, 0.8) == records[1] and read_circuit(new) == records[1]
    assert CircuitFile.from_json(json.loads(new.read_text())).at(0.9) == records[0]
    bad = [
        ([1, 2], "holds a JSON list; valid: a circuit file"),
        ({"circuits": []}, "'circuits' must be a non-empty list"),
        ({"kind": "edge_circuit"}, "holds 'edge_circuit'; valid"),
        (CircuitFile(circuits=[circuit(heads=[[0, "1"]])]).to_json(), "'heads' must be [[layer, head], ...]"),
        (CircuitFile(circuits=[circuit(metric="accuracy")]).to_json(), "unknown metric 'accuracy'; valid: logit_diff"),
        (CircuitFile(circuits=[circuit(model=" ")]).to_json(), "'model' must be a model spec string"),
    ]
    for data, needle in bad:
        with pytest.raises(BadFileError) as err:
            read_circuits(_write(tmp_path, data))
        assert needle in str(err.value) and "\n" not in str(err.value), err.value
    with pytest.raises(BadFileError, match=r"no circuit at threshold 0\.5; valid: 0\.9, 0\.8"):
        read_circuit(new, 0.5)


# --------------------------------------------------------------------------- README against the types


def _record_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Result records")
    return text[start : text.index("\n## ", start + 1)]


def _paragraph_of(section: str, record_type: type[ResultRecord]) -> str:
    """The README paragraph (blank-line block or bullet) that documents ``record_type``: it names the kind."""
    blocks = [b for part in section.split("\n\n") for b in re.split(r"\n(?=- )", part)]
    found = [b for b in blocks if f"kind `{record_type.kind}`" in b]
    assert len(found) == 1, f"README documents kind {record_type.kind!r} in {len(found)} paragraphs"
    return found[0]


def _backticked_words(text: str) -> set[str]:
    return {w for span in re.findall(r"`([^`]+)`", text.replace("\n", " ")) for w in re.findall(r"[\w%]+", span)}


@pytest.mark.parametrize("record_type", RESULT_RECORDS, ids=lambda t: t.kind)
def test_readme_documents_every_field_of_every_type(record_type):
    paragraph = _paragraph_of(_record_section(), record_type)
    assert f"`{record_type.file}`" in paragraph or record_type is CircuitFile
    assert f"`{record_type.__name__}`" in paragraph, f"README's {record_type.kind} paragraph does not name the type"
    words = _backticked_words(paragraph)
    missing = [f for f in record_type.field_names() if f not in words]
    assert not missing, f"README's {record_type.kind} paragraph does not name the fields {missing}"
    columns = {
        f"{field}.{c}"
        for field, cols in record_type.declared_columns().items()
        for c in cols
        if not set(re.findall(r"[\w%]+", c)) <= words
    }
    assert not columns, f"README's {record_type.kind} paragraph does not name the declared columns {sorted(columns)}"


def test_every_kind_in_readme_is_a_type():
    section = _record_section()
    documented = set(re.findall(r"kind `(\w+)`", section)) | set(re.findall(r'kind: "(\w+)"', section))
    known = {t.kind for t in RESULT_RECORDS} | {
        CircuitRecord.kind,
        HeadScores.kind,
        AttentionPattern.kind,
        NullDistribution.kind,
        FaithfulnessCurve.kind,
        "edge_circuit",
    }
    assert documented - known == set(), f"README documents kinds without a type: {documented - known}"
    assert {t.kind for t in RESULT_RECORDS} <= documented
