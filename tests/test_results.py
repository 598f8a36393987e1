"""Result files: atomic writes, per-head score records and what the appendix finds (records by kind, patterns)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from seqcirc_utils.core.errors import BadFileError
from seqcirc_utils.core.records import AttentionPattern, HeadScores
from seqcirc_utils.core.results import find_records, records_of_kind, results_dir, write_json_atomic


def test_head_scores_keep_heads_and_parse_layer_and_head():
    table = pd.DataFrame(
        {
            "component": ["L0.H1", "MLP0", "L2.H0", "L1.N7"],
            "layer": [0, 0, 2, 1],
            "kind": ["head", "mlp", "head", "neuron"],
            "index": [1, None, 0, 7],
            "drop_points": [3.5, 40.0, -1.25, 0.5],
            "n_prompts": [8, 8, 8, 8],
        }
    )
    record = HeadScores.from_table(table, panels=["task"], task="digits")
    assert record.scores == ["drop_points"]  # counts (n_*) are not scores
    assert record.rows == [
        {"component": "L0.H1", "layer": 0, "head": 1, "drop_points": 3.5, "n_prompts": 8, "task": "digits"},
        {"component": "L2.H0", "layer": 2, "head": 0, "drop_points": -1.25, "n_prompts": 8, "task": "digits"},
    ]
    # A Series indexed by component name (what attribution_scores returns) works the same way.
    series = pd.Series({"L3.H2": 0.25, "MLP3": 1.0}, name="attribution")
    assert HeadScores.from_table(series).rows == [{"component": "L3.H2", "layer": 3, "head": 2, "attribution": 0.25}]
    with pytest.raises(ValueError, match="'component' column"):
        HeadScores.from_table(pd.DataFrame({"x": [1]}))


def test_head_scores_round_trip_exactly_through_a_file(tmp_path):
    record = HeadScores.from_table(
        pd.DataFrame({"component": ["L0.H0", "L1.H1"], "next": [0.5, float("nan")], "family": ["digits", "months"]}),
        panels=["family"],
        description="OV next score",
    )
    path = write_json_atomic(tmp_path / "s.json", {"model": "m", "scores": record})
    loaded = json.loads(path.read_text())["scores"]
    assert loaded["kind"] == "head_scores" and loaded["schema_version"] == 1
    assert loaded["rows"][1]["next"] is None  # NaN becomes null
    again = HeadScores.from_json(loaded)
    assert again == record and again.to_json() == loaded
    with pytest.raises(BadFileError, match="kind 'head_scores'"):
        HeadScores.from_json({"kind": "circuit"})
    with pytest.raises(BadFileError, match="lacks keys"):
        HeadScores.from_json({"kind": "head_scores", "schema_version": 1, "scores": ["x"]})
    with pytest.raises(ValueError, match="integer 'layer' and 'head'"):
        HeadScores(scores=["x"], rows=[{"layer": "0", "head": 1, "x": 1.0}])


def test_records_found_by_kind_at_any_depth():
    record = HeadScores.from_table(
        pd.DataFrame(
            {
                "component": ["L0.H0", "L0.H1", "L1.H0", "L1.H1"] * 2,
                "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                "task": ["a"] * 4 + ["b"] * 4,
            }
        ),
        panels=["task"],
    )
    lookalike = [{"layer": 0, "head": 0, "score": 1.0}]  # a per-head shaped list without a kind: not a record
    obj = {
        "model": "m",
        "deep": {"single_head_ablation": record.to_json()},
        "other": [1, 2],
        "plain": lookalike,
        "listed": [{"x": record.to_json()}],
    }
    found = find_records(obj, HeadScores.kind)
    assert [path for path, _ in found] == ["deep.single_head_ablation", "listed[0].x"]
    table = HeadScores.from_json(found[0][1]).frame()
    assert table.groupby("task")["score"].sum().to_dict() == {"a": 10.0, "b": 26.0}
    assert records_of_kind(record.to_json(), HeadScores.kind) == [record.to_json()]


def test_attention_pattern_round_trips_and_is_found_by_kind():
    matrix = pd.DataFrame([[1.0, 0.0], [0.5, 0.5]], index=["a", "b"], columns=["x", "y"])
    record = AttentionPattern.from_frame("L1.H0", matrix, description="spaced prompts")
    data = json.loads(json.dumps({"deep": {"p": record.to_json()}, "untyped": {"pattern": [[1.0]]}}))
    found = find_records(data, AttentionPattern.kind)
    assert [path for path, _ in found] == ["deep.p"]  # a dict that merely has a "pattern" is not a record
    back = AttentionPattern.from_json(found[0][1])
    assert back == record and back.query_labels == ["a", "b"] and back.pattern[1] == [0.5, 0.5]
    with pytest.raises(ValueError, match="query labels"):
        AttentionPattern("L0.H0", [[1.0, 0.0]], ["q1", "q2"], ["k1", "k2"])
    with pytest.raises(ValueError, match="one per key label"):
        AttentionPattern("L0.H0", [[1.0]], ["q"], ["k1", "k2"])


def test_write_json_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"ok": [1] * 1000, "bad": {(1, 2): 3}})  # fails after writing part of it
    assert json.loads(path.read_text()) == {"a": 1}  # the old file survives a failed write
    assert sorted(os.listdir(tmp_path)) == ["r.json"]  # and no temporary file is left behind


def test_results_dir_is_filesystem_safe(tmp_path):
    assert results_dir("gpt2-small", root=tmp_path).name == "gpt2-small"
    assert results_dir("models/My Model", root=tmp_path).name == "My_Model"  # a local directory: its name


def test_estimated_drop_scores_panel_per_label_and_chart():
    from seqcirc_utils.report import plots
    from seqcirc_utils.scoring.importance import ESTIMATED_DROP_DESCRIPTION, estimated_drop_scores

    importance = pd.DataFrame(
        {
            "component": ["L0.H0", "MLP0", "L1.H1"] * 2,
            "estimated_drop": [1.0, 9.0, -2.0, 3.0, 9.0, 4.0],
            "exact": [True, False, False] * 2,
            "task": ["a"] * 3 + ["b"] * 3,
        }
    )
    record = estimated_drop_scores(importance, panel="task")
    assert record.scores == ["estimated_drop"] and record.panels == ["task"]
    assert record.description == ESTIMATED_DROP_DESCRIPTION
    assert [(r["task"], r["layer"], r["head"], r["estimated_drop"]) for r in record.rows] == [
        ("a", 0, 0, 1.0),
        ("a", 1, 1, -2.0),
        ("b", 0, 0, 3.0),
        ("b", 1, 1, 4.0),
    ]  # MLPs dropped
    spec = plots.head_scores_panels(record, value_title="drop").to_dict()
    values = spec["datasets"][spec["data"]["name"]]
    assert {(v["panel"], v["layer"], v["head"], v["value"]) for v in values} == {
        ("a", 0, 0, 1.0),
        ("a", 1, 1, -2.0),
        ("b", 0, 0, 3.0),
        ("b", 1, 1, 4.0),
    }


def test_write_atomic_text_and_bytes_and_a_failed_replace(tmp_path, monkeypatch):
    """The one atomic writer: text (UTF-8) and bytes land exactly; a failure before the rename keeps the
    old file and leaves no temporary file; missing parents are created."""
    from seqcirc_utils.core.results import write_atomic

    text_path = write_atomic(tmp_path / "a" / "b.txt", "naïve — text\n")
    assert text_path.read_bytes() == "naïve — text\n".encode()
    blob = bytes(range(256))
    assert write_atomic(tmp_path / "c.bin", blob).read_bytes() == blob

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(text_path, "new")
    assert text_path.read_text(encoding="utf-8") == "naïve — text\n"
    assert sorted(p.name for p in text_path.parent.iterdir()) == ["b.txt"]


def test_results_root_and_dir_follow_the_environment(tmp_path, monkeypatch):
    from seqcirc_utils.core.results import RESULTS_DIR_ENV, RESULTS_ROOT, RESULTS_ROOT_ENV, results_root

    monkeypatch.delenv(RESULTS_ROOT_ENV, raising=False)
    monkeypatch.delenv(RESULTS_DIR_ENV, raising=False)
    assert results_root() == RESULTS_ROOT
    assert results_root({RESULTS_ROOT_ENV: str(tmp_path / "r")}) == tmp_path / "r"
    monkeypatch.setenv(RESULTS_ROOT_ENV, str(tmp_path / "elsewhere"))
    assert results_dir("tiny-llama") == tmp_path / "elsewhere" / "tiny-llama"
    monkeypatch.setenv(RESULTS_DIR_ENV, str(tmp_path / "cell"))
    assert results_dir("tiny-llama") == tmp_path / "cell"
    assert results_dir("tiny-llama", root=tmp_path / "given") == tmp_path / "given" / "tiny-llama"


def test_results_variables_and_atomic_writes_live_in_core_results():
    """The results environment variables are spelled once (core/results.py) and every file the package
    writes atomically goes through ``write_atomic`` (``os.replace`` elsewhere only swaps whole folders:
    the converted GGUF model, the MathJax copy)."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "seqcirc_utils"
    folder_swaps = {"models/loading.py", "workflow/book.py"}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        src = path.read_text()
        if rel == "core/results.py":
            continue
        assert not re.search(r"""["']SEQCIRC_RESULTS(_DIR)?["']""", src), f"{rel} spells a results variable"
        if rel not in folder_swaps:
            assert "os.replace(" not in src, f"{rel} has its own atomic write; use core.results.write_atomic"
