"""Result files: atomic writes and the conventions the appendix reads (per-head records, patterns)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from seqcirc_utils.results import attention_patterns, head_records, head_score_tables, results_dir, write_json_atomic


def test_head_records_keep_heads_and_parse_layer_and_head():
    table = pd.DataFrame({"component": ["L0.H1", "MLP0", "L2.H0", "L1.N7"], "layer": [0, 0, 2, 1],
                          "kind": ["head", "mlp", "head", "neuron"], "index": [1, None, 0, 7],
                          "drop_points": [3.5, 40.0, -1.25, 0.5]})
    records = head_records(table, task="digits")
    assert records == [
        {"component": "L0.H1", "layer": 0, "head": 1, "drop_points": 3.5, "task": "digits"},
        {"component": "L2.H0", "layer": 2, "head": 0, "drop_points": -1.25, "task": "digits"},
    ]
    # A Series indexed by component name (what attribution_scores returns) works the same way.
    series = pd.Series({"L3.H2": 0.25, "MLP3": 1.0}, name="attribution")
    assert head_records(series) == [{"component": "L3.H2", "layer": 3, "head": 2, "attribution": 0.25}]
    with pytest.raises(ValueError, match="'component' column"):
        head_records(pd.DataFrame({"x": [1]}))


def test_appendix_finds_head_records_at_any_depth_and_splits_by_label():
    records = head_records(pd.DataFrame({"component": ["L0.H0", "L0.H1", "L1.H0", "L1.H1"] * 2,
                                         "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                                         "task": ["a"] * 4 + ["b"] * 4}))
    found = head_score_tables({"model": "m", "deep": {"single_head_ablation": records}, "other": [1, 2]})
    assert [path for path, _ in found] == ["deep.single_head_ablation"]
    table = found[0][1]
    assert table.groupby("task")["score"].sum().to_dict() == {"a": 10.0, "b": 26.0}

    from seqcirc_utils.plots import head_score_heatmaps

    charts = head_score_heatmaps(table, title="t")
    assert [c.title for c in charts] == ["t · task=a · score", "t · task=b · score"]


def test_attention_patterns_found_by_shape():
    obj = {"x": {"component": "L1.H0", "pattern": [[1.0, 0.0], [0.5, 0.5]]}, "y": {"pattern": [1, 2]}}
    found = attention_patterns(obj)
    assert [(p, o["component"]) for p, o in found] == [("x", "L1.H0")]


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
