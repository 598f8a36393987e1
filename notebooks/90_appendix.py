# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   seqcirc_run:
#     estimate_s: 11
# ---

# %% [markdown]
# # Appendix: every per-head figure, by chapter
#
# The chapters show the heads that matter; this appendix shows all of them. It reads every result
# file the notebooks wrote to `results/<model>/` and draws, chapter by chapter (the chapter is the
# notebook whose source writes the file):
#
# - **per-head scores** (records of kind `head_scores`): small multiples of layer x head grids, one
#   figure per score and one panel per task, family or configuration, on a shared colour scale;
# - **attention patterns** (records of kind `attention_pattern`): query x key heatmaps side by side;
# - **circuits** (records of kind `circuit`): layer x head grids with the kept heads and MLPs
#   highlighted;
# - **edge circuits** (records of kind `edge_circuit`, `edges_<task>.json`): the nodes on a kept path
#   from the input to the logits, and the kept edges between them as lines.
#
# Nothing is recomputed here, so every figure matches the chapter that wrote its file.

# %% tags=["parameters"]
model = "smollm2-135m"  # model whose results/<model>/ files are drawn
device = None  # torch device for reading the model's shape; None picks one
smoke = False  # accepted for `seqcirc run --all -p smoke true`; the appendix has nothing to shrink

# %%
import html
import re

import altair as alt
from IPython.display import HTML, Markdown, display

from seqcirc_utils.report import plots
from seqcirc_utils.discovery.edges.search import EdgeCircuit
from seqcirc_utils.core.records import AttentionPattern, CircuitRecord, HeadScores, as_json
from seqcirc_utils.core.result_records import RESULT_RECORDS, circuits_in, read_result
from seqcirc_utils.core.results import (chapter_of, chapter_titles, find_records, records_of_kind,
                                        result_writers, results_dir)
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.workflow.runner import NOTEBOOKS_DIR

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    display(smoke_note("drawing whatever the smoke runs wrote"))
folder = results_dir(model)
files = sorted(p for p in folder.glob("*.json"))
display(Markdown(f"{len(files)} result files in `results/{folder.name}/`: "
                 + (", ".join(f"`{p.name}`" for p in files) or "none") + "."))
data = {p.name: as_json(read_result(p, (*RESULT_RECORDS, EdgeCircuit))) for p in files}  # checked by their types
writers, titles = result_writers(NOTEBOOKS_DIR), chapter_titles(NOTEBOOKS_DIR)  # the sources, wherever the run's cwd is
chapters: dict[str, dict] = {}
for name, obj in data.items():
    chapters.setdefault(chapter_of(name, writers) or "other", {})[name] = obj

# %% [markdown]
# What each score means (the captions use these descriptions; a score not listed is named by its key).

# %%
SCORE_TEXT = {
    "estimated_drop": "the estimated drop, in points of the full model's metric, when the head alone is "
                      "mean-ablated (attribution patching)",
    "drop_points": "the exact drop, in points of the full metric, when the head alone is ablated",
    "member": "mean attention from a sequence member to the member k places before it",
    "token": "mean attention from a sequence member to the token k positions before it",
    "same_type": "member_k1 - token_k1: red heads follow the previous member, blue heads the previous token",
    "final_to_last_member": "attention from the final position to the last member shown",
    "final_to_members": "attention from the final position to all members",
    "final_to_bos": "attention from the final position to the BOS token",
    "member_to_prev_member": "attention from each member to the previous member",
    "member_to_same_type": "attention from each member to earlier members",
    "member_to_first_member": "attention from each member to the first member",
    "copy": "OV copy score: fraction of members the head's OV circuit maps to themselves",
    "next": "OV successor score: fraction of members the head's OV circuit maps to the next member",
    "prev": "OV predecessor score: fraction of members mapped to the previous member",
    "mean": "mean direct logit attribution to logit(correct) - logit(last member), in nats",
    "std": "standard deviation over prompts of the direct logit attribution, in nats",
}


def describe(score: str) -> str:
    """The caption text of a score column (``member_k2`` -> the ``member`` text)."""
    stem = re.sub(r"_k\d+$", "", score)
    if score in SCORE_TEXT or stem in SCORE_TEXT:
        return SCORE_TEXT.get(score, SCORE_TEXT.get(stem))
    if m := re.fullmatch(r"(add|sub)(\d+)", score):
        return f"OV score: fraction of members mapped to the member {m.group(2)} places {'after' if m.group(1) == 'add' else 'before'}"
    return f"`{score}`"


def chapter_heading(chapter: str) -> None:
    title = titles.get(chapter, "Files no notebook claims")
    link = f' (<a href="{chapter}.html">chapter</a>)' if chapter in titles else ""
    display(HTML(f'<h3 class="seqcirc-appendix-chapter">{html.escape(chapter)}: {html.escape(title)}{link}</h3>'))


def head_figures(name: str, obj) -> int:
    """Small multiples of every per-head score in one result file; returns the number of figures."""
    n = 0
    for path, raw in find_records(obj, HeadScores.kind):
        record = HeadScores.from_json(raw)
        table = record.frame()
        panels = [c for c in record.panels if table[c].nunique() > 1]
        # scores that differ only by an offset k (member_k1, member_k2, ...) share one figure
        families: dict[str, list[str]] = {}
        for col in record.scores:
            families.setdefault(re.sub(r"_k\d+$", "", str(col)), []).append(col)
        for stem, cols in families.items():
            split = f", one panel per {' and '.join(panels)}" if panels else ""
            ks = f" for k = {', '.join(c.rsplit('_k', 1)[1] for c in cols)} (columns)" if len(cols) > 1 else ""
            several = bool(panels) or len(cols) > 1
            caption = (f"Every head's {describe(cols[0])}{ks}{split}; layer 0 at the top"
                       + (", one colour scale for all panels. Look for the cells that stand out, and whether the same "
                          "heads stand out in every panel." if several else ". Look for the cells that stand out.")
                       + (f" ({record.description}.)" if record.description else "") + f" From `{name}`, `{path}`.")
            display(figures.figure(plots.head_heatmap_panels(table, cols, panels, value_title=stem), caption))
            n += 1
    return n


def pattern_figures(name: str, obj) -> int:
    """The attention patterns of one result file side by side; returns the number of figures (0 or 1)."""
    charts = []
    for path, raw in find_records(obj, AttentionPattern.kind):
        pat = AttentionPattern.from_json(raw)
        frame = plots.matrix_frame(pat.pattern, row="query", col="key")
        frame["query"] = frame["query"].map(lambda i: f"{i}: {pat.query_labels[i]}")
        frame["key"] = frame["key"].map(lambda i: f"{i}: {pat.key_labels[i]}")
        charts.append(plots.matrix_heatmap(frame, row="query", col="key", value_title="attention",
                                           title=f"{pat.component} ({pat.description or path})"))
    if charts:
        display(figures.figure(alt.hconcat(*charts).resolve_scale(color="shared"),
                               f"Attention patterns stored in `{name}` (rows: the attending position, columns: the "
                               "position attended to; darker = more attention). Look for the position each row "
                               "attends to most."))
    return len(charts) > 0


# %% [markdown]
# ## Figures by chapter

# %%
info = None
if any(circuits_in(o) or records_of_kind(o, EdgeCircuit.KIND) for files_ in chapters.values() for o in files_.values()):
    from seqcirc_utils.models.loading import load_model

    _, info = load_model(model, device=device)
if not chapters:
    display(Markdown(f"No result files in `results/{folder.name}/` yet."))
for chapter in sorted(chapters, key=lambda c: (c == "other", c)):
    chapter_heading(chapter)
    drawn = 0
    for name, obj in chapters[chapter].items():
        drawn += head_figures(name, obj)
        drawn += pattern_figures(name, obj)
    # one diagram per distinct circuit: a chapter's summary file may repeat the circuit of its circuit_*.json
    records: dict[tuple, tuple[str, CircuitRecord]] = {}
    for name, obj in chapters[chapter].items():
        for r in circuits_in(obj):
            key = (r.task, r.template, r.direction, r.threshold, r.method, str(r.heads), str(r.mlps))
            records.setdefault(key, (name, r))
    records = list(records.values())
    if records and info is not None:
        diagrams = [plots.circuit_diagram(info.n_layers, info.n_heads, sorted(r.components),
                                          title=f"{r.task} ({r.direction}) @ {r.threshold:g}: {len(r.heads)} heads, "
                                                f"{len(r.mlps)} MLPs")
                    for _, r in records]
        display(figures.figure(alt.hconcat(*diagrams),
                               f"The circuits of this chapter ({', '.join(sorted({n for n, _ in records}))}): every head "
                               "(circle) and MLP (square, right column) of the model, the kept ones red, layer 0 at the "
                               "bottom. Compare the panels for the components every circuit keeps."))
        drawn += 1
    edge_circuits = [EdgeCircuit.from_json(r) for obj in chapters[chapter].values()
                     for r in records_of_kind(obj, EdgeCircuit.KIND)]
    if edge_circuits and info is not None:
        display(figures.figure(alt.hconcat(*[plots.circuit_diagram(
            info.n_layers, info.n_heads, ec.connected, edges=ec.edge_pairs(),
            title=f"{ec.task} @ {ec.threshold:g}: {len(ec.connected_edges)} edges, {len(ec.connected)} nodes")
            for ec in edge_circuits]),
            "The edge circuits of this chapter: the nodes (red) that lie on a kept path from the input to the logits "
            "and the kept edges between them (lines; edges into the logits end above the top layer). Grey nodes are "
            "ablated or left dangling by edge pruning. Look for the few edges that carry the task."))
        drawn += 1
    if not drawn:
        display(Markdown(f"Nothing to draw in {', '.join(f'`{n}`' for n in chapters[chapter])}."))
