"""Altair charts for the notebooks, and offline rendering for the executed notebooks and the book.

Offline rendering: :func:`enable_offline` registers and enables the altair renderer ``seqcirc``. It
emits ``text/html`` (which myst-nb puts in the book as raw HTML): a ``<div class="seqcirc-chart">``
holding the Vega-Lite spec and a ``<script>`` that calls ``vegaEmbed`` on it. ``vegaEmbed`` (with
Vega and Vega-Lite) comes from a single JavaScript file built by ``vl_convert.javascript_bundle`` and
written by ``python -m seqcirc_utils.workflow.book`` to ``book/_static/vendor/vega/seqcirc-vega.js``;
the book loads it on every page (``html_js_files`` in ``_config.yml``). Opened outside the book (e.g.
Jupyter), the script loads the same file by a path relative to ``book/executed/``. No CDN is used.
After rendering, ``vegaEmbed`` adds the class ``vega-embed`` to each chart's container.

Figures: a chapter owns a :class:`Figures` numbering (``figures = plots.enable_offline()`` at its top);
``figures.figure(chart, caption)`` wraps a chart with a number and a caption (``Figure N.`` + what to
look at) in one ``<figure class="seqcirc-figure">`` output. The numbers count up from 1 in each chapter;
there is no module-level counter.

The chart helpers take tidy DataFrames (``layer, head, value`` for per-head scores) and return
altair charts; they compute nothing beyond reshaping for display.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.types import Component, parse_component, sort_components

RENDERER = "seqcirc"
CHART_CLASS = "seqcirc-chart"
FIGURE_CLASS = "seqcirc-figure"
BUNDLE_NAME = "seqcirc-vega.js"
STATIC_SUBDIR = "vendor/vega"
#: Where an executed notebook (``book/executed/NN.ipynb``) finds the bundle outside the built book.
NOTEBOOK_BUNDLE_URL = f"../_static/{STATIC_SUBDIR}/{BUNDLE_NAME}"
EMBED_OPTIONS: dict[str, Any] = {"actions": False, "renderer": "svg"}

_SCRIPT = """(function () {
  var el = document.getElementById(%(id)s);
  var spec = %(spec)s;
  function draw() {
    window.vegaEmbed(el, spec, %(options)s).catch(function (err) {
      el.innerHTML = '<pre class="seqcirc-chart-error">' + String(err) + '</pre>';
    });
  }
  function load() {
    if (window.vegaEmbed) { draw(); return; }
    var s = document.createElement('script');
    s.src = %(bundle)s;
    s.onload = draw;
    document.head.appendChild(s);
  }
  if (window.vegaEmbed) { draw(); }
  else if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', load); }
  else { load(); }
})();"""


def _script_json(obj: Any) -> str:
    """JSON safe to place inside ``<script>`` (no ``</script>`` or ``<!--`` can close it)."""
    return json.dumps(obj).replace("</", "<\\/").replace("<!--", "<\\!--")


def offline_html(
    spec: Mapping[str, Any], embed_options: Mapping[str, Any] | None = None, bundle_url: str = NOTEBOOK_BUNDLE_URL
) -> str:
    """The ``<div>`` + ``<script>`` that draws a Vega-Lite ``spec`` with the locally bundled ``vegaEmbed``."""
    div_id = f"seqcirc-chart-{uuid.uuid4().hex[:12]}"
    script = _SCRIPT % {
        "id": _script_json(div_id),
        "spec": _script_json(dict(spec)),
        "options": _script_json(dict(embed_options or EMBED_OPTIONS)),
        "bundle": _script_json(bundle_url),
    }
    return f'<div id="{html.escape(div_id)}" class="{CHART_CLASS}"></div>\n<script type="text/javascript">\n{script}\n</script>'


def _renderer(spec: dict, **metadata) -> dict[str, str]:
    """altair renderer: a ``text/html`` mimebundle (rendered by myst-nb and Jupyter alike)."""
    options = {**EMBED_OPTIONS, **metadata.get("embed_options", {})}
    return {"text/html": offline_html(spec, options)}


def enable_offline() -> Figures:
    """Make altair charts render offline: register and enable the ``seqcirc`` renderer, and return the
    chapter's figure numbering (a new :class:`Figures`, starting at 1).

    Call once at the top of a notebook: ``figures = plots.enable_offline()``. Nothing is fetched from a
    CDN; see the module docstring.
    """
    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, _renderer)
    alt.renderers.enable(RENDERER)
    return Figures()


# --------------------------------------------------------------------------- numbered figures


def caption_html(caption: str) -> str:
    """A caption written in (inline) Markdown -> HTML (backticks, ``**bold**``, ``*italics*``, links)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").renderInline(caption)


@dataclass(frozen=True)
class Figure:
    """A chart with its number and caption; displayed as one ``text/html`` output (see :func:`figure`)."""

    chart: Any
    caption: str
    number: int

    @property
    def label(self) -> str:
        return f"Figure {self.number}."

    def to_html(self, bundle_url: str = NOTEBOOK_BUNDLE_URL) -> str:
        """``<figure>``: the chart's offline ``<div>`` + ``<script>`` and a ``<figcaption>``."""
        chart_html = offline_html(self.chart.to_dict(), EMBED_OPTIONS, bundle_url=bundle_url)
        return (
            f'<figure class="{FIGURE_CLASS}" id="figure-{self.number}">\n{chart_html}\n'
            f"<figcaption><strong>{self.label}</strong> {caption_html(self.caption)}</figcaption>\n</figure>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/html": self.to_html(), "text/plain": f"{self.label} {self.caption}"}


class Figures:
    """One chapter's figure numbering: :meth:`figure` numbers its charts 1, 2, ... in call order.

    Created by the chapter (:func:`enable_offline` returns one); two chapters, or two ``Figures`` in one
    process, never share a count.
    """

    def __init__(self, start: int = 0):
        self.count = start  # the number of the last figure made (the next is count + 1)

    def figure(self, chart: Any, caption: str) -> Figure:
        """Number ``chart`` and give it ``caption``: say what to look at, in Markdown.

        ``chart`` is any altair chart (layered, concatenated or faceted). Display the result (last
        expression of a cell, or ``display(...)``); it renders offline like every chart here.
        """
        if not caption or not caption.strip():
            raise ParameterError("a figure needs a caption that says what to look at")
        self.count += 1
        return Figure(chart, caption.strip(), self.count)


def javascript_bundle() -> str:
    """vegaEmbed + Vega + Vega-Lite (the version altair targets) as one script defining ``window.vegaEmbed``.

    The bundle is wrapped in a function so that its top-level names (``_``, ...) do not clash with
    the globals of the page's other scripts; it publishes ``vegaEmbed``, ``vega`` and ``vegaLite``
    on ``window`` itself.
    """
    import vl_convert as vlc

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    versions = vlc.get_vegalite_versions()
    bundle = vlc.javascript_bundle(vl_version=major_minor if major_minor in versions else None)
    return f"/* vega-embed {vlc.get_vega_embed_version()}, vega {vlc.get_vega_version()}, vega-lite {major_minor}: vl-convert bundle */\n(function () {{\n{bundle}\n}})();\n"


# --------------------------------------------------------------------------- frames


def head_frame(records: Iterable[Mapping[str, Any]] | pd.DataFrame, value: str) -> pd.DataFrame:
    """Per-head records with ``layer``, ``head`` and a ``value`` column -> ``DataFrame[layer, head, value]``."""
    df = pd.DataFrame(records)
    missing = {"layer", "head", value} - set(df.columns)
    if missing:
        raise ParameterError(f"per-head records need columns layer, head and {value!r}; missing {sorted(missing)}")
    out = df[["layer", "head", value]].rename(columns={value: "value"})
    return out.astype({"layer": int, "head": int, "value": float})


def matrix_frame(
    matrix: Sequence[Sequence[float]] | pd.DataFrame, row: str = "layer", col: str = "head"
) -> pd.DataFrame:
    """A 2-D array (or a DataFrame with labelled index/columns) -> long ``DataFrame[row, col, value]``."""
    df = matrix if isinstance(matrix, pd.DataFrame) else pd.DataFrame(matrix)
    long = df.rename_axis(index=row, columns=col).stack().rename("value").reset_index()
    return long.astype({"value": float})


# --------------------------------------------------------------------------- charts


def head_heatmap(
    df: pd.DataFrame, title: str = "", value_title: str = "score", diverging: bool | None = None, cell: int = 16
) -> alt.Chart:
    """Layer x head grid of a per-head score (``df``: columns ``layer, head, value``).

    Layer 0 is at the top. ``diverging`` (default: when the scores have both signs) centres the
    colour scale on 0.
    """
    if diverging is None:
        diverging = bool((df["value"] < 0).any() and (df["value"] > 0).any())
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if diverging else alt.Scale(scheme="viridis")
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    return (
        alt.Chart(df, title=title or alt.Undefined)
        .mark_rect()
        .encode(
            x=alt.X("head:O", title="head"),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color("value:Q", title=value_title, scale=scale),
            tooltip=["layer:O", "head:O", alt.Tooltip("value:Q", format=".3f", title=value_title)],
        )
        .properties(width=cell * n_heads, height=cell * n_layers)
    )


def matrix_heatmap(
    df: pd.DataFrame, row: str, col: str, title: str = "", value_title: str = "value", cell: int = 22
) -> alt.Chart:
    """A labelled matrix (e.g. an attention pattern: ``row`` = query, ``col`` = key) in the given order."""
    rows, cols = list(dict.fromkeys(df[row].astype(str))), list(dict.fromkeys(df[col].astype(str)))
    data = df.assign(**{row: df[row].astype(str), col: df[col].astype(str)})
    return (
        alt.Chart(data, title=title or alt.Undefined)
        .mark_rect()
        .encode(
            x=alt.X(f"{col}:N", sort=cols, title=col),
            y=alt.Y(f"{row}:N", sort=rows, title=row),
            color=alt.Color("value:Q", title=value_title, scale=alt.Scale(scheme="blues")),
            tooltip=[f"{row}:N", f"{col}:N", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=cell * len(cols), height=cell * len(rows))
    )


def _as_components(items: Iterable[Component | str]) -> list[Component]:
    return [c if isinstance(c, Component) else parse_component(str(c)) for c in items]


def circuit_nodes(n_layers: int, n_heads: int, kept: Iterable[Component | str]) -> pd.DataFrame:
    """Node coordinates of the circuit diagram: heads at ``(head, layer)``, MLPs in a column of their own at ``x = n_heads``."""
    kept_set = set(_as_components(kept))
    rows = []
    for layer in range(n_layers):
        for h in range(n_heads):
            c = Component(layer, "head", h)
            rows.append({"component": str(c), "kind": "head", "x": float(h), "y": float(layer), "kept": c in kept_set})
        c = Component(layer, "mlp")
        rows.append({"component": str(c), "kind": "MLP", "x": float(n_heads), "y": float(layer), "kept": c in kept_set})
    return pd.DataFrame(rows)


def circuit_diagram(
    n_layers: int,
    n_heads: int,
    kept: Iterable[Component | str],
    edges: Iterable[tuple[Component | str, Component | str]] = (),
    title: str = "",
) -> alt.LayerChart:
    """Layer x head grid of all nodes (heads = circles, MLPs = squares), the kept ones highlighted.

    ``edges`` (sender, receiver) are drawn as rules between node coordinates; an endpoint that is
    not a head or MLP (e.g. ``"resid_post"``) is drawn above the last layer. The rightmost column
    holds the MLPs.
    """
    edges = [(str(s), str(r)) for s, r in edges]
    nodes = circuit_nodes(n_layers, n_heads, kept)
    pos = {row.component: (row.x, row.y) for row in nodes.itertuples()}
    top = (n_heads / 2, float(n_layers))

    def where(c: Component | str) -> tuple[float, float]:
        key = str(c)
        return pos.get(key, top)

    edge_rows = [
        {"sender": str(s), "receiver": str(r), "x": where(s)[0], "y": where(s)[1], "x2": where(r)[0], "y2": where(r)[1]}
        for s, r in edges
    ]
    x = alt.X(
        "x:Q",
        title="head",
        scale=alt.Scale(domain=[-0.5, n_heads + 0.5], nice=False),
        axis=alt.Axis(
            values=list(range(n_heads + 1)), labelExpr=f"datum.value == {n_heads} ? 'MLP' : datum.label", grid=False
        ),
    )
    y = alt.Y(
        "y:Q",
        title="layer",
        scale=alt.Scale(domain=[-0.5, n_layers + 0.5], nice=False),
        axis=alt.Axis(values=list(range(n_layers)), grid=False),
    )
    base = alt.Chart(nodes).encode(
        x=x,
        y=y,
        color=alt.Color(
            "kept:N", scale=alt.Scale(domain=[True, False], range=["#d62728", "#d9d9d9"]), title="in circuit"
        ),
        shape=alt.Shape("kind:N", scale=alt.Scale(domain=["head", "MLP"], range=["circle", "square"]), title="node"),
        tooltip=["component:N", "kept:N"],
    )
    points = base.mark_point(filled=True, size=90)
    labels = alt.Chart(nodes[nodes["kept"]]).mark_text(dy=-10, fontSize=9).encode(x=x, y=y, text="component:N")
    layers: list[alt.Chart] = []
    if edge_rows:
        layers.append(
            alt.Chart(pd.DataFrame(edge_rows))
            .mark_rule(opacity=0.5, color="#1f77b4")
            .encode(x=x, y=y, x2="x2:Q", y2="y2:Q", tooltip=["sender:N", "receiver:N"])
        )
    layers += [points, labels]
    others = sorted({e for edge in edges for e in edge} - set(pos))
    if others:
        layers.append(
            alt.Chart(pd.DataFrame({"x": [top[0]], "y": [top[1]], "name": [" / ".join(others)]}))
            .mark_text(dy=-8, fontSize=10, fontWeight="bold")
            .encode(x=x, y=y, text="name:N")
        )
    return alt.layer(*layers, title=title or alt.Undefined).properties(
        width=28 * (n_heads + 1), height=28 * (n_layers + 1)
    )


def size_performance_curve(
    df: pd.DataFrame,
    x: str = "n_components",
    y: str = "score",
    color: str | None = "task",
    title: str = "",
    y_title: str = "% of full model",
) -> alt.Chart:
    """Circuit size against performance (one line per ``color`` value, points at each measured size)."""
    enc: dict[str, Any] = {
        "x": alt.X(f"{x}:Q", title=x.replace("_", " ")),
        "y": alt.Y(f"{y}:Q", title=y_title),
        "tooltip": [c for c in (x, y, color) if c],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color)
    return (
        alt.Chart(df, title=title or alt.Undefined)
        .mark_line(point=True)
        .encode(**enc)
        .properties(width=360, height=240)
    )


def overlap_chart(membership: Mapping[str, Iterable[Component | str]], title: str = "") -> alt.HConcatChart:
    """Components x tasks membership matrix with, beside it, how many tasks share each component.

    ``membership`` maps a task name to its circuit's components.
    """
    tasks = list(membership)
    sets = {t: {str(c) for c in _as_components(cs)} for t, cs in membership.items()}
    comps = [str(c) for c in sort_components(_as_components(set().union(*sets.values())))] if sets else []
    rows = [{"component": c, "task": t, "member": c in sets[t]} for c in comps for t in tasks]
    df = pd.DataFrame(rows, columns=["component", "task", "member"])
    counts = pd.DataFrame({"component": comps, "n_tasks": [sum(c in sets[t] for t in tasks) for c in comps]})
    height = max(14 * len(comps), 20)
    matrix = (
        alt.Chart(df)
        .mark_square(size=120)
        .encode(
            x=alt.X("task:N", sort=tasks, title="task"),
            y=alt.Y("component:N", sort=comps, title="component"),
            color=alt.Color(
                "member:N", scale=alt.Scale(domain=[True, False], range=["#1f77b4", "#eeeeee"]), legend=None
            ),
            tooltip=["component:N", "task:N", "member:N"],
        )
        .properties(width=40 * max(len(tasks), 1), height=height)
    )
    bars = (
        alt.Chart(counts)
        .mark_bar()
        .encode(
            y=alt.Y("component:N", sort=comps, axis=None),
            x=alt.X("n_tasks:Q", title="tasks sharing it", axis=alt.Axis(tickMinStep=1, format="d")),
            tooltip=["component:N", "n_tasks:Q"],
        )
        .properties(width=120, height=height)
    )
    return alt.hconcat(matrix, bars, spacing=4, title=title or alt.Undefined)


def bar_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    column: str | None = None,
    title: str = "",
    y_title: str | None = None,
    sort: Sequence[str] | None = None,
) -> alt.Chart:
    """Bars of ``y`` per ``x`` (grouped by ``color`` with an x offset, faceted by ``column``)."""
    enc: dict[str, Any] = {
        "x": alt.X(f"{x}:N", title=x.replace("_", " "), sort=list(sort) if sort else "ascending"),
        "y": alt.Y(f"{y}:Q", title=y_title or y.replace("_", " ")),
        "tooltip": [c for c in (x, color, column) if c] + [alt.Tooltip(f"{y}:Q", format=".3f")],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color.replace("_", " "))
        enc["xOffset"] = alt.XOffset(f"{color}:N")
    chart = alt.Chart(df).mark_bar().encode(**enc).properties(width=alt.Step(12) if color else alt.Step(24), height=200)
    if column:
        chart = chart.facet(column=alt.Column(f"{column}:N", title=column.replace("_", " ")))
    return chart.properties(title=title) if title else chart


def head_heatmap_panels(
    table: pd.DataFrame,
    values: Sequence[str],
    panels: Sequence[str] = (),
    title: str = "",
    value_title: str = "score",
    columns: int | None = None,
    cell: int = 12,
    diverging: bool | None = None,
) -> alt.FacetChart:
    """Small multiples: one layer x head grid per (panel label, score column), on one shared colour scale.

    ``table``: per-head rows (``layer``, ``head``, the ``values`` columns and the ``panels`` label
    columns, e.g. ``task``); rows repeated for a (label, layer, head) are averaged. The panels are
    titled ``label, label · score`` (the score only when there are several) and wrap after
    ``columns`` (default: the number of score columns when there are several, else up to 4).
    """
    panels, values = list(panels), list(values)
    long = (
        table.groupby([*panels, "layer", "head"], as_index=False, sort=False)[values]
        .mean()
        .melt(id_vars=[*panels, "layer", "head"], value_vars=values, var_name="score", value_name="value")
    )
    names = (
        [", ".join(str(v) for v in row) for row in long[panels].itertuples(index=False)] if panels else [""] * len(long)
    )
    long["panel"] = [
        " · ".join(x for x in (n, s if len(values) > 1 else "") if x) or s for n, s in zip(names, long["score"])
    ]
    long = long.dropna(subset=["value"]).astype({"layer": int, "head": int, "value": float})
    if diverging is None:
        diverging = bool((long["value"] < 0).any() and (long["value"] > 0).any())
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if diverging else alt.Scale(scheme="viridis")
    n_layers, n_heads = int(long["layer"].max()) + 1, int(long["head"].max()) + 1
    order = list(dict.fromkeys(long["panel"]))
    base = (
        alt.Chart(long)
        .mark_rect()
        .encode(
            x=alt.X("head:O", title="head"),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color("value:Q", title=value_title, scale=scale),
            tooltip=["panel:N", "layer:O", "head:O", alt.Tooltip("value:Q", format=".3f", title=value_title)],
        )
        .properties(width=cell * n_heads, height=cell * n_layers)
    )
    wrap = columns or (len(values) if len(values) > 1 else min(len(order), 4))
    return base.facet(
        facet=alt.Facet("panel:N", title=None, sort=order), columns=max(wrap, 1), title=title or alt.Undefined
    )


def head_scores_panels(record, title: str = "", value_title: str = "score") -> alt.FacetChart:
    """:func:`head_heatmap_panels` of a :class:`~seqcirc_utils.core.records.HeadScores` record: one panel per
    value of its panel columns (and per score when it has several)."""
    return head_heatmap_panels(record.frame(), record.scores, record.panels, title=title, value_title=value_title)
