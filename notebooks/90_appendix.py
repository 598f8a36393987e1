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
#     estimate_s: 8
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

from IPython.display import HTML, Markdown, display

from seqcirc_utils.core.records import as_json
from seqcirc_utils.core.result_records import RESULT_RECORDS, circuits_in, read_result
from seqcirc_utils.core.results import chapter_titles, records_of_kind, result_writers, results_dir
from seqcirc_utils.discovery.edges.search import EdgeCircuit
from seqcirc_utils.report import plots
from seqcirc_utils.report.appendix import (
    SCORE_TEXT,
    circuit_figure,
    distinct_circuits,
    edge_circuit_figure,
    edge_circuits_in,
    files_by_chapter,
    head_score_figures,
    pattern_figure,
)
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.workflow.runner import NOTEBOOKS_DIR

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    display(smoke_note("drawing whatever the smoke runs wrote"))
folder = results_dir(model)
files = sorted(p for p in folder.glob("*.json"))
display(
    Markdown(
        f"{len(files)} result files in `results/{folder.name}/`: "
        + (", ".join(f"`{p.name}`" for p in files) or "none")
        + "."
    )
)
data = {p.name: as_json(read_result(p, (*RESULT_RECORDS, EdgeCircuit))) for p in files}  # checked by their types
titles = chapter_titles(NOTEBOOKS_DIR)
chapters = files_by_chapter(data, result_writers(NOTEBOOKS_DIR))  # the sources, wherever the run's cwd is

# %% [markdown]
# What each score means (the captions use these descriptions; a score not listed is named by its key).

# %%
import pandas as pd

reader_table(
    pd.DataFrame([{"score": k, "meaning": v} for k, v in SCORE_TEXT.items()]),
    [Column("score", "score column"), Column("meaning", "what it measures")],
    full=False,
)

# %% [markdown]
# ## Figures by chapter

# %%
info = None
if any(circuits_in(o) or records_of_kind(o, EdgeCircuit.KIND) for files_ in chapters.values() for o in files_.values()):
    from seqcirc_utils.models.loading import load_model

    _, info = load_model(model, device=device)
if not chapters:
    display(Markdown(f"No result files in `results/{folder.name}/` yet."))
for chapter, chapter_files in chapters.items():
    title = titles.get(chapter, "Files no notebook claims")
    link = f' (<a href="{chapter}.html">chapter</a>)' if chapter in titles else ""
    display(HTML(f'<h3 class="seqcirc-appendix-chapter">{html.escape(chapter)}: {html.escape(title)}{link}</h3>'))
    drawn = []
    for name, obj in chapter_files.items():
        drawn += head_score_figures(name, obj)
        drawn += [f for f in [pattern_figure(name, obj)] if f is not None]
    circuits = distinct_circuits(chapter_files)
    edge_circuits = edge_circuits_in(chapter_files)
    if circuits and info is not None:
        drawn.append(circuit_figure(info.n_layers, info.n_heads, circuits))
    if edge_circuits and info is not None:
        drawn.append(edge_circuit_figure(info.n_layers, info.n_heads, edge_circuits))
    for chart, caption in drawn:
        display(figures.figure(chart, caption))
    if not drawn:
        display(Markdown(f"Nothing to draw in {', '.join(f'`{n}`' for n in chapter_files)}."))
