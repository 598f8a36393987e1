"""The appendix's figure helpers (report/appendix.py): grouping by chapter, one figure per score family, each
distinct circuit once, captions from the score descriptions."""

from record_fixtures import circuit

from seqcirc_utils.core.records import AttentionPattern, HeadScores
from seqcirc_utils.core.result_records import CircuitFile
from seqcirc_utils.report.appendix import (
    OTHER,
    describe_score,
    distinct_circuits,
    files_by_chapter,
    head_score_figures,
    pattern_figure,
)


def test_describe_score_reads_offsets_and_add_k():
    assert describe_score("member_k3") == describe_score("member") and "member k places" in describe_score("member_k3")
    assert "3 places after" in describe_score("add3") and "2 places before" in describe_score("sub2")
    assert describe_score("mystery") == "`mystery`"


def test_files_group_by_the_notebook_that_wrote_them_other_last():
    writers = {"circuit_*.json": "02_shared_circuits", "knockout.json": "10_knockout"}
    groups = files_by_chapter({"knockout.json": 1, "stray.json": 2, "circuit_digits.json": 3}, writers)
    assert list(groups) == ["02_shared_circuits", "10_knockout", OTHER]
    assert groups[OTHER] == {"stray.json": 2}


def test_one_figure_per_score_family_and_the_patterns_side_by_side():
    rows = [
        {"layer": layer, "head": h, "member_k1": 0.1, "member_k2": 0.2, "same_type_k1": 0.0, "family": f}
        for layer in range(2)
        for h in range(2)
        for f in ("digits", "months")
    ]
    scores = HeadScores(scores=["member_k1", "member_k2", "same_type_k1"], panels=["family"], rows=rows)
    figs = head_score_figures("induction_offsets.json", {"offsets": scores.to_json()})
    assert len(figs) == 2  # member_k1 + member_k2 share one figure; same_type_k1 has its own
    assert "for k = 1, 2 (columns), one panel per family" in figs[0][1] and "same_type" not in figs[0][1]
    assert pattern_figure("x.json", {"a": 1}) is None
    pattern = AttentionPattern(
        component="L1.H2", pattern=[[1.0, 0.0], [0.5, 0.5]], query_labels=["a", "b"], key_labels=["a", "b"]
    )
    fig = pattern_figure("x.json", {"digits": pattern.to_json(), "months": pattern.to_json()})
    assert fig is not None and "`x.json`" in fig[1]


def test_a_circuit_repeated_in_a_summary_file_is_drawn_once():
    c = circuit(task="digits", heads=[[0, 1]], mlps=[0])
    other = circuit(task="months", heads=[[1, 1]])
    files = {
        "circuit_digits.json": CircuitFile(circuits=[c]).to_json(),
        "shared_circuits.json": {"circuits": {"digits": c.to_json(), "months": other.to_json()}},
    }
    found = distinct_circuits(files)
    assert [(name, r.task) for name, r in found] == [
        ("circuit_digits.json", "digits"),
        ("shared_circuits.json", "months"),
    ]
