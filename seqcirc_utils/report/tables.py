"""Tables for readers: the one renderer of the chapters' tables.

A chapter table shows at most :data:`MAX_COLUMNS` columns chosen by the chapter, each with a header in words
and its unit (:class:`Column`), no index, numbers formatted for reading: percentages as ``80 %``, a value with
its 95 % interval as ``80 % [69, 95]``, fractions shown as percentages, counts as integers, missing values as
``–``. The full table (every column of the frame, unformatted) is folded below it in a ``<details>`` element,
so nothing is lost and the page stays within the text width.

``display(reader_table(frame, [Column("task", "task"), Column("score_%", "score (% of full)", "percent",
interval="score_ci95")]))``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The most columns a chapter table shows (the rest are in the folded full table).
MAX_COLUMNS = 8
#: How a column's values are written.
FORMATS = ("text", "int", "number", "percent", "fraction")
MISSING = "–"


@dataclass(frozen=True)
class Column:
    """One shown column: ``key`` in the frame, ``header`` in words with the unit, ``format`` (one of
    :data:`FORMATS`: ``percent`` for values already in percent, ``fraction`` for 0..1 values shown as percent),
    ``digits`` after the point, and ``interval``: the frame column holding the value's 95 % interval (``[lo,
    hi]`` in the value's unit, or text ``"[lo, hi]"`` in percent), written after the value."""

    key: str
    header: str
    format: str = "text"
    digits: int = 0
    interval: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown column format {self.format!r}; valid: {', '.join(FORMATS)}")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def format_number(value: Any, fmt: str = "number", digits: int = 0) -> str:
    """One value as the table writes it: ``percent`` -> ``"80 %"``, ``fraction`` 0.8 -> ``"80 %"``, ``int`` ->
    ``"12"``, ``number`` -> ``"0.25"`` (``digits`` after the point), ``text`` as is (booleans as yes / no); missing -> ``"–"``."""
    if _missing(value):
        return MISSING
    if fmt == "text":
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)
    if fmt == "int":
        return f"{int(round(float(value)))}"
    number = 100 * float(value) if fmt == "fraction" else float(value)
    text = f"{number:.{digits}f}"
    return f"{text} %" if fmt in ("percent", "fraction") else text


def _bounds(ci: Any, fmt: str) -> tuple[float, float] | None:
    """``(lo, hi)`` in the shown unit from ``[lo, hi]`` (the value's unit) or the text ``"[lo, hi]"`` (percent)."""
    if _missing(ci):
        return None
    if isinstance(ci, str):
        found = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", ci)
        return (float(found[0]), float(found[1])) if len(found) == 2 else None
    lo, hi = (float(x) for x in ci)
    return (100 * lo, 100 * hi) if fmt == "fraction" else (lo, hi)


def format_interval(value: Any, ci: Any, fmt: str = "percent", digits: int = 0) -> str:
    """A value with its interval: ``format_interval(80.2, [69.4, 95.1])`` -> ``"80 % [69, 95]"``."""
    text = format_number(value, fmt, digits)
    bounds = _bounds(ci, fmt)
    if text == MISSING or bounds is None:
        return text
    return f"{text} [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


class ReaderTable:
    """A rendered table (``_repr_html_`` for notebooks): the shown columns, then the full table folded;
    ``markdown`` is the shown table as Markdown text."""

    def __init__(self, shown: str, full: str | None, markdown: str, caption: str = "") -> None:
        self.shown, self.full, self.markdown, self.caption = shown, full, markdown, caption

    def _repr_html_(self) -> str:
        out = self.shown
        if self.full is not None:
            out += (
                '<details class="seqcirc-full-table"><summary>The full table (every column)</summary>'
                f"{self.full}</details>"
            )
        return f'<div class="seqcirc-table">{out}</div>'


def circuit_score_columns(score: str = "score_%") -> list[Column]:
    """The score columns every circuit table shows, over the keys of
    :func:`seqcirc_utils.discovery.pipeline.score_columns`: the paper's ratio and the normalised faithfulness,
    in-sample (``score`` names the ratio's column) and held out, each with its interval, and the number of
    distinct sequences on each side of the split."""
    return [
        Column(score, "paper's ratio, in-sample (% of full) [95 % CI]", "percent", interval="score_ci95"),
        Column(
            "faithfulness_%", "normalised faithfulness, in-sample [95 % CI]", "percent", interval="faithfulness_ci95"
        ),
        Column("sequences", "discovery sequences", "int"),
        Column("heldout_%", "paper's ratio, held-out [95 % CI]", "percent", interval="heldout_ci95"),
        Column(
            "heldout_faithfulness_%",
            "normalised faithfulness, held-out [95 % CI]",
            "percent",
            interval="heldout_faithfulness_ci95",
        ),
        Column("heldout_sequences", "held-out sequences", "int"),
    ]


def reader_table(frame, columns: Sequence[Column], *, caption: str = "", full: bool = True) -> ReaderTable:
    """The chapter table of ``frame``: ``columns`` (at most :data:`MAX_COLUMNS`) formatted for readers, no index;
    with ``full``, every column of ``frame`` folded below when some are not shown.

    Raises ``ValueError`` naming the missing column when ``frame`` lacks one, or when more than
    :data:`MAX_COLUMNS` columns are asked for.
    """
    if len(columns) > MAX_COLUMNS:
        raise ValueError(
            f"a chapter table shows at most {MAX_COLUMNS} columns, got {len(columns)}; "
            "leave the rest to the folded full table"
        )
    needed = [c.key for c in columns] + [c.interval for c in columns if c.interval]
    missing = [k for k in needed if k not in frame.columns]
    if missing:
        raise ValueError(f"the table lacks columns {missing}; it has {list(frame.columns)}")
    records = frame.to_dict(orient="records")
    cells = [
        [
            format_interval(r[c.key], r[c.interval], c.format, c.digits)
            if c.interval
            else format_number(r[c.key], c.format, c.digits)
            for c in columns
        ]
        for r in records
    ]
    numeric = [c.format != "text" for c in columns]
    head = "".join(
        f'<th style="text-align:{"right" if n else "left"}">{html.escape(c.header)}</th>'
        for c, n in zip(columns, numeric)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="text-align:{"right" if n else "left"}">{html.escape(v)}</td>' for v, n in zip(row, numeric)
        )
        + "</tr>"
        for row in cells
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    shown = f'<table class="seqcirc-reader-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    hidden = [c for c in frame.columns if c not in needed]
    folded = frame.to_html(index=False, na_rep=MISSING, float_format=lambda x: f"{x:.4g}") if full and hidden else None
    markdown = "\n".join(
        ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
        + ["| " + " | ".join(row) + " |" for row in cells]
    )
    return ReaderTable(shown, folded, markdown, caption)
