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
# # Decreasing sequences, and how circuits change with sequence length
#
# Continuing `9 8 7 6 ->5` needs "the member before", the mirror image of `1 2 3 4 ->5`. Does the
# model reuse the increasing circuit, or build a different one? And does the circuit for short
# sequences (3 members shown) differ from the circuit for longer ones (5 members)? For every
# (direction, length) we find a digits circuit at one threshold, then compare them: overlap, and
# each circuit scored on every other configuration's data.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.load_model
n_prompts = 32  # prompts per configuration before filtering to correct answers
seed = 0  # dataset seed
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
task = "digits"  # task family
template = "comma"  # prompt template
directions = ["increasing", "decreasing"]  # sequence directions
lengths = [3, 5]  # members shown
threshold = 0.8  # circuit threshold (fraction of the full logit difference)
method = "fast"  # "fast" (attribution-ranked, see the benchmark) or "sweep" (the paper's pruning)
exact_heads = 8  # heads per configuration whose estimated single-ablation drop is checked by exact ablation

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils import plots
from seqcirc_utils.circuits import discover, write_circuits
from seqcirc_utils.compare import cross_task_scores, overlap_table, shared_components
from seqcirc_utils.importance import head_importance
from seqcirc_utils.models import load_model
from seqcirc_utils.results import frame_records, head_records, results_dir, write_json_atomic
from seqcirc_utils.types import Circuit

plots.enable_offline()
if smoke:
    n_prompts, lengths = min(n_prompts, 16), lengths[-1:]
    print(f"SMOKE MODE: {n_prompts} prompts, lengths {lengths}; numbers are not results.")
print(f"model={model} task={task} template={template} n_prompts={n_prompts} method={method} threshold={threshold}")

# %%
lm, info = load_model(model, device=device)
out_dir = results_dir(model)
records, datasets, circuits = {}, {}, {}
for direction in directions:
    for length in lengths:
        name = f"{direction[:3]}-{length}"
        recs, datasets[name], _ = discover(lm, info, model, task, [threshold], method=method, template=template,
                                           direction=direction, length=length, n=n_prompts, seed=seed)
        records[name] = recs[0]
        circuits[name] = Circuit.from_lists(recs[0]["heads"], recs[0]["mlps"]).components
        write_circuits(out_dir / f"circuit_{task}_{direction}_{length}.json", recs)
summary = pd.DataFrame([{"config": n, "prompts": r["n_prompts"], "full_logit_diff": r["full_metric"],
                         "heads": len(r["heads"]), "mlps": len(r["mlps"]), "score_%": 100 * r["score"]}
                        for n, r in records.items()])
summary

# %%
for name, comps in circuits.items():
    display(plots.circuit_diagram(info.n_layers, info.n_heads, comps, title=f"{task} {name}: {len(comps)} components"))

# %% [markdown]
# ## Every head's estimated effect
#
# Attribution patching estimates, for every head at once, the drop in points of the logit difference
# if that head alone were mean-ablated (one forward and one backward pass per configuration; the
# `exact_heads` largest estimates are checked by exact ablation). Heads that matter for one direction
# and not the other carry the direction.

# %%
importance = pd.concat([head_importance(lm, info, datasets[n], exact_top=exact_heads, progress=False).assign(config=n)
                        for n in datasets])
display(alt.hconcat(*[plots.head_heatmap(plots.head_frame(importance[importance["config"] == n], "estimated_drop"),
                                         title=n, value_title="est. drop (points)") for n in datasets],
                    title=f"{task}: estimated single-head ablation drop").resolve_scale(color="shared"))
exact = importance[importance["exact"]].sort_values("drop_points", ascending=False)
exact_columns = ["config", "component", "drop_points", "estimated_drop"]
exact.groupby("config", sort=False).head(4).sort_values("config", kind="stable")[exact_columns].reset_index(drop=True)

# %% [markdown]
# ## Overlap and cross-scoring
#
# Rows of the cross table are circuits, columns the data they are scored on (% of the full model's
# logit difference on that data).

# %%
overlap = overlap_table(circuits, kind="head")
cross = 100 * cross_task_scores(lm, info, circuits, datasets)
shared = shared_components(circuits, kind="head")
write_json_atomic(out_dir / "decreasing_circuits.json", {
    "model": model, "task": task, "template": template, "threshold": threshold, "method": method, "smoke": smoke,
    "summary": summary.to_dict(orient="records"), "head_overlap": overlap.to_dict(orient="records"),
    "cross_task_percent": cross.to_dict(), "shared_heads": [str(c) for c in shared],
    "circuits": {n: r | {"dataset": None} for n, r in records.items()},
    "head_importance": head_records(importance[["component", "estimated_drop", "config"]]),
    "single_head_ablation": frame_records(exact[exact_columns]),
})
display(overlap[["a", "b", "size_a", "size_b", "intersection", "jaccard"]])
display(plots.overlap_chart(circuits, title="circuit membership per configuration"))
cross

# %%
inc = [n for n in circuits if n.startswith("inc")]
dec = [n for n in circuits if n.startswith("dec")]
pairs = [(a, b) for a in inc for b in dec if a.split("-")[1] == b.split("-")[1]]
sentences = []
for a, b in pairs:
    j = overlap[((overlap["a"] == a) & (overlap["b"] == b)) | ((overlap["a"] == b) & (overlap["b"] == a))]["jaccard"]
    sentences.append(f"at length {a.split('-')[1]} the increasing and decreasing head sets have Jaccard "
                     f"{float(j.iloc[0]):.2f}; the increasing circuit keeps {cross.loc[a, b]:.0f} % on decreasing data "
                     f"and the decreasing circuit {cross.loc[b, a]:.0f} % on increasing data")
display(Markdown(
    "Across configurations, " + "; ".join(sentences) + f". {len(shared)} heads are in every configuration's circuit"
    + (f" ({' '.join(map(str, shared))})." if shared else ".")
    + " Where a circuit transfers poorly to the other direction, the direction is carried by components of its own."))
