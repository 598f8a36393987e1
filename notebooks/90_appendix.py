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
# ---

# %% [markdown]
# # Appendix: every per-head figure
#
# The chapters show the heads that matter; this appendix shows all of them. It reads every result
# file the notebooks wrote to `results/<model>/` and draws what it finds there:
#
# - **per-head scores** (any list of records with `layer` and `head`): one layer x head heatmap per
#   score;
# - **attention patterns** (any object with a 2-D `pattern`): query x key heatmaps;
# - **circuits** (`circuit_<task>.json`): the layer x head grid with the kept heads and MLPs
#   highlighted, and the edges when the file lists them.
#
# Nothing is recomputed here, so every figure matches the chapter that wrote its file.

# %% tags=["parameters"]
model = "smollm2-135m"  # model whose results/<model>/ files are drawn
device = None  # torch device for reading the model's shape; None picks one
smoke = False  # accepted for `seqcirc run --all -p smoke true`; the appendix has nothing to shrink

# %%
from IPython.display import Markdown, display

from seqcirc_utils import plots
from seqcirc_utils.results import attention_patterns, head_score_tables, read_json, results_dir

plots.enable_offline()
if smoke:
    print("SMOKE MODE: drawing whatever the smoke runs wrote; the figures are not results.")
folder = results_dir(model)
files = sorted(p for p in folder.glob("*.json"))
print(f"{len(files)} result files in {folder}: {', '.join(p.name for p in files) or 'none'}")
data = {p.name: read_json(p) for p in files}

# %% [markdown]
# ## Per-head scores

# %%
head_tables = [(name, path, table) for name, obj in data.items() for path, table in head_score_tables(obj)]
if not head_tables:
    display(Markdown(f"No per-head scores in `results/{folder.name}/` yet."))
for name, path, table in head_tables:
    for chart in plots.head_score_heatmaps(table, title=f"{name}: {path}"):
        display(chart)

# %% [markdown]
# ## Attention patterns

# %%
patterns = [(name, path, obj) for name, d in data.items() for path, obj in attention_patterns(d)]
if not patterns:
    display(Markdown(f"No attention patterns in `results/{folder.name}/` yet."))
for name, path, obj in patterns:
    frame = plots.matrix_frame(obj["pattern"], row="query", col="key")
    labels = obj.get("labels") or obj.get("tokens")
    queries, keys = obj.get("query_labels") or labels, obj.get("key_labels") or labels
    if queries:
        frame["query"] = frame["query"].map(lambda i: f"{i}: {queries[i]}")
    if keys:
        frame["key"] = frame["key"].map(lambda i: f"{i}: {keys[i]}")
    title = f"{name}: {obj.get('component', path)}"
    display(plots.matrix_heatmap(frame, row="query", col="key", title=title, value_title="attention"))

# %% [markdown]
# ## Circuits

# %%
circuit_files = {name: obj for name, obj in data.items() if name.startswith("circuit_")}
if not circuit_files:
    display(Markdown(f"No circuit files (`circuit_<task>.json`) in `results/{folder.name}/` yet."))
else:
    from seqcirc_utils.models import load_model

    _, info = load_model(model, device=device)
    for name, obj in circuit_files.items():
        for record in obj.get("circuits", [obj]):
            kept = [f"L{l}.H{h}" for l, h in record.get("heads", [])] + [f"MLP{m}" for m in record.get("mlps", [])]
            edges = [tuple(e) for e in record.get("edges", [])]
            title = (f"{name}: {record.get('task', '')} at threshold {record.get('threshold', '?')}, "
                     f"{len(record.get('heads', []))} heads, {len(record.get('mlps', []))} MLPs")
            display(plots.circuit_diagram(info.n_layers, info.n_heads, kept, edges=edges, title=title))
