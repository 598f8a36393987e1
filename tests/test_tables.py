"""The chapter-table renderer: no index, headers in words, percentages and intervals formatted, the rest folded."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from seqcirc_utils.report.tables import MAX_COLUMNS, Column, format_interval, format_number, reader_table


def test_values_and_intervals_are_written_for_readers():
    assert format_interval(80.2, [69.4, 95.1]) == "80 % [69, 95]"
    assert format_interval(0.802, [0.694, 0.951], "fraction", 1) == "80.2 % [69.4, 95.1]"
    assert format_interval(81.234, "[78.1, 84.0]", "percent", 1) == "81.2 % [78.1, 84.0]"  # score_columns' text
    assert format_interval(81.2, "") == "81 %" and format_interval(float("nan"), [1, 2]) == "–"
    assert format_number(12.0, "int") == "12" and format_number(0.25, "number", 2) == "0.25"
    assert format_number(None, "percent") == "–" and format_number(math.nan, "number") == "–"
    assert format_number("L9.H1", "text") == "L9.H1"


def test_table_shows_chosen_columns_without_index_and_folds_the_rest():
    frame = pd.DataFrame(
        {
            "task": ["digits", "months"],
            "score_%": [81.2345, 64.0],
            "score_ci95": ["[78.1, 84.0]", ""],
            "heads": [3.0, 5.0],
            "seconds": [1.5, 2.5],
        }
    )
    table = reader_table(
        frame,
        [
            Column("task", "task"),
            Column("heads", "heads", "int"),
            Column("score_%", "score (% of full)", "percent", interval="score_ci95"),
        ],
    )
    assert table.markdown.splitlines() == [
        "| task | heads | score (% of full) |",
        "|---|---|---|",
        "| digits | 3 | 81 % [78, 84] |",
        "| months | 5 | 64 % |",
    ]
    html = table._repr_html_()
    assert "<th" in html and ">0<" not in html.split("<details")[0]  # no index column in the shown table
    assert "<details" in html and "seconds" in html.split("<details")[1]  # the full table, folded
    assert "<details" not in reader_table(frame[["task"]], [Column("task", "task")])._repr_html_()


def test_too_many_or_unknown_columns_are_refused():
    frame = pd.DataFrame({f"c{i}": [i] for i in range(MAX_COLUMNS + 1)})
    with pytest.raises(ValueError, match=f"at most {MAX_COLUMNS} columns"):
        reader_table(frame, [Column(c, c) for c in frame.columns])
    with pytest.raises(ValueError, match=r"lacks columns \['nope'\]"):
        reader_table(frame, [Column("nope", "nope")])
    with pytest.raises(ValueError, match="unknown column format"):
        Column("c0", "c0", "percentage")


def test_circuit_score_columns_read_the_pipeline_keys():
    from seqcirc_utils.report.tables import circuit_score_columns

    columns = circuit_score_columns("score")
    keys = [c.key for c in columns]
    assert keys == ["score", "faithfulness_%", "sequences", "heldout_%", "heldout_faithfulness_%", "heldout_sequences"]
    assert [c.interval for c in columns] == [
        "score_ci95",
        "faithfulness_ci95",
        None,
        "heldout_ci95",
        "heldout_faithfulness_ci95",
        None,
    ]
    assert circuit_score_columns()[0] == columns[0].__class__(
        "score_%", "paper's ratio, in-sample (% of full) [95 % CI]", "percent", interval="score_ci95"
    )
