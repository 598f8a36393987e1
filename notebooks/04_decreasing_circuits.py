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
#     estimate_s: 219
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
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 24  # prompts per configuration before filtering to correct answers
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
task = "digits"  # task family
template = "comma"  # prompt template
directions = ["increasing", "decreasing"]  # sequence directions
lengths = [3, 5]  # members shown
threshold = 0.8  # circuit threshold (fraction of the full logit difference)
method = "fast"  # "fast" (attribution-ranked, see the benchmark) or "sweep" (the paper's pruning)
exact_heads = 8  # heads per configuration whose estimated single-ablation drop is checked by exact ablation
steps = [1, 2, 3]  # step-k study: the steps whose behaviour is measured ("1, 3, 5," -> 7 is step 2) ...
step_families = ["digits", "number_words"]  # ... on these families (increasing, the template above) ...
step_k = 2  # ... and the step whose circuit is found (task, template, threshold, method as above) ...
step_length = 3  # ... with this many members shown (compared with the step-1 circuit of the same length)

# %%
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.report import plots
from seqcirc_utils.discovery.pipeline import discover, score_columns, write_circuits
from seqcirc_utils.evaluation.compare import cross_task_scores, overlap_table, shared_components
from seqcirc_utils.scoring.importance import estimated_drop_scores, head_importance
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.core.records import HeadScores
from seqcirc_utils.core.result_records import DecreasingCircuits, StepKCircuits
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import Circuit

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, lengths = min(n_prompts, 16), lengths[-1:]
    steps, step_families = [s for s in steps if s in (1, step_k)], [task]
    print(f"SMOKE MODE: {n_prompts} prompts, lengths {lengths}; numbers are not results.")

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
out_dir = results_dir(model)
records, datasets, circuits = {}, {}, {}
for direction in directions:
    for length in lengths:
        name = f"{direction[:3]}-{length}"
        recs, datasets[name], _ = discover(lm, info, model, task, [threshold], method=method, template=template,
                                           direction=direction, length=length, n=n_prompts, seed=seed,
                                           prefix=prefix)
        records[name] = recs[0]
        circuits[name] = Circuit.from_lists(recs[0]["heads"], recs[0]["mlps"]).components
        write_circuits(out_dir / f"circuit_{task}_{direction}_{length}.json", recs)
summary = pd.DataFrame([{"config": n, "prompts": r["n_prompts"], "full_logit_diff": r["full_metric"],
                         "heads": len(r["heads"]), "mlps": len(r["mlps"]), **score_columns(r)}
                        for n, r in records.items()])
summary

# %%
for name, comps in circuits.items():
    display(figures.figure(
        plots.circuit_diagram(info.n_layers, info.n_heads, comps, title=f"{task} {name}: {len(comps)} components"),
        f"The {task} circuit for {name} ({name.split('-')[0]}reasing, {name.split('-')[-1]} members shown): the "
        f"{len(comps)} kept heads (circles) and MLPs (squares, right column) in red, layer 0 at the bottom. Compare "
        "the increasing and decreasing circuits of the same length."))

# %% [markdown]
# ## Every head's estimated effect
#
# Attribution patching estimates, for every head at once, the drop in points of the logit difference
# if that head alone were mean-ablated (one forward and one backward pass per configuration; the
# `exact_heads` largest estimates are checked by exact ablation). Heads that matter for one direction
# and not the other carry the direction.

# %%
importance = pd.concat([head_importance(lm, info, datasets[n], exact_top=exact_heads, progress=False,
                                        ablators=ablators).assign(config=n)
                        for n in datasets])
head_scores = estimated_drop_scores(importance, panel="config")
display(figures.figure(
    plots.head_scores_panels(head_scores, title=f"{task}: estimated single-head ablation drop",
                             value_title="est. drop (points)"),
    "Estimated drop (points of the logit difference) when one head alone is mean-ablated, one panel per "
    "configuration (direction-length), layer 0 at the top, one colour scale. Heads dark in the increasing panels "
    "but not the decreasing ones (or the reverse) carry the direction."))
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
cross = 100 * cross_task_scores(lm, info, circuits, datasets, ablators=ablators)
shared = shared_components(circuits, kind="head")
write_json_atomic(out_dir / DecreasingCircuits.file, DecreasingCircuits(
    model=model, task=task, template=template, threshold=threshold, method=method, smoke=smoke,
    summary=summary.to_dict(orient="records"), head_overlap=overlap.to_dict(orient="records"),
    cross_task_percent=cross.to_dict(), shared_heads=[str(c) for c in shared],
    circuits={n: r.with_extra(dataset=None) for n, r in records.items()},
    head_importance=head_scores,
    single_head_ablation=frame_records(exact[exact_columns]),
))
display(overlap[["a", "b", "size_a", "size_b", "intersection", "jaccard"]])
display(figures.figure(plots.overlap_chart(circuits, title="circuit membership per configuration"),
                       f"Which configuration's circuit keeps each component (left: filled = kept) and how many of the "
                       f"{len(circuits)} share it (right); the longest bars are the {len(shared)} heads in every circuit."))
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

# %% [markdown]
# ## Step-k sequences
#
# Sequences with a larger step (`1, 3, 5, ->7`, `two, four, six, ->eight`) need "add k" rather than
# "add one". First, where the model does them: its top-1 accuracy and mean logit difference
# (answer against the last member shown) on increasing prompts for every step in `steps`; a
# family's longer steps run out of single-token members sooner, so some cells are missing (the
# reason is listed). Then a circuit for step `step_k` (same task, template, threshold and method as
# above, `step_length` members shown), its overlap with the step-1 circuit of the same length, each
# scored on the other's data, and the **add-k OV score** of its heads: the fraction of members whose
# OV output (effective embedding through the head's OV circuit, top-1 over the family, see the
# successor-heads chapter) is the member k ahead.

# %%
from seqcirc_utils.tasks.behaviour import evaluate
from seqcirc_utils.mechanisms.ov_scores import ov_scores
from seqcirc_utils.tasks.datasets import make_dataset
from seqcirc_utils.core.errors import SeqcircError

step_rows = []
for fam in step_families:
    for k in steps:
        base = {"family": fam, "step": k}
        try:
            ds_k = make_dataset(lm.tokenizer, fam, model_name=model, template=template, step=k, length=step_length,
                                n=n_prompts, seed=seed, prefix=prefix)
        except SeqcircError as err:  # this step does not fit the tokenizer or the family
            step_rows.append({**base, "n": 0, "distinct_prompts": 0, "error": str(err)})
            continue
        step_rows.append({**base, "distinct_prompts": len({p.text for p in ds_k.prompts}), **evaluate(lm, ds_k)})
step_behaviour = pd.DataFrame(step_rows)
step_ok = step_behaviour[step_behaviour["n"] > 0]
if len(step_ok):
    display(figures.figure(
        plots.bar_chart(step_ok.assign(accuracy_pct=100 * step_ok["top1_accuracy"]), x="step", y="accuracy_pct",
                        color="family", y_title="top-1 accuracy (%)", title=f"{model}: step-k sequences"),
        f"Top-1 accuracy on increasing sequences of step k ({step_length} members shown, {template} template), per "
        "family. Where a family's bar stays high as k grows, the model adds k, not just one."))
step_behaviour

# %%
step_name, base_name = f"step{step_k}-{step_length}", f"inc-{step_length}"
step_error = None
try:
    recs, datasets[step_name], _ = discover(lm, info, model, task, [threshold], method=method, template=template,
                                            step=step_k, length=step_length, n=n_prompts, seed=seed, prefix=prefix,
                                            progress=False)
    step_record = recs[0]
    write_circuits(out_dir / f"circuit_{task}_step{step_k}_{step_length}.json", recs)
    if base_name not in records:  # the step-1 circuit of the same length was not found above
        recs1, datasets[base_name], _ = discover(lm, info, model, task, [threshold], method=method, template=template,
                                                 length=step_length, n=n_prompts, seed=seed, prefix=prefix,
                                                 progress=False)
        records[base_name] = recs1[0]
        circuits[base_name] = Circuit.from_lists(recs1[0]["heads"], recs1[0]["mlps"]).components
except SeqcircError as err:  # too few correct prompts, or no step-k sequence fits the tokenizer
    step_error = str(err)
if step_error is None:
    step_circuits = {base_name: circuits[base_name],
                     step_name: Circuit.from_lists(step_record["heads"], step_record["mlps"]).components}
    step_summary = pd.DataFrame([
        {"config": n, "step": 1 if n == base_name else step_k, "prompts": r["n_prompts"],
         "distinct_prompts": len({p["text"] for p in (r["dataset"] or {}).get("prompts", [])}),
         "heads": len(r["heads"]), "mlps": len(r["mlps"]), **score_columns(r)}
        for n, r in ((base_name, records[base_name]), (step_name, step_record))])
    step_overlap = pd.concat([overlap_table(step_circuits).assign(kind="all"),
                              overlap_table(step_circuits, kind="head").assign(kind="heads")], ignore_index=True)
    step_cross = 100 * cross_task_scores(lm, info, step_circuits, {n: datasets[n] for n in step_circuits},
                                         ablators=ablators)
    display(step_summary)
    display(step_overlap[["kind", "a", "b", "size_a", "size_b", "intersection", "jaccard", "shared"]])
    display(figures.figure(
        plots.overlap_chart(step_circuits, title=f"step 1 vs step {step_k}"),
        f"Components of the step-1 and step-{step_k} {task} circuits ({step_length} members shown; filled = kept) and "
        "how many of the two keep each (bars)."))
    display(step_cross)
else:
    display(Markdown(f"**No step-{step_k} circuit:** {step_error}"))

# %%
add_kind = f"add{step_k}"
ov = ov_scores(lm, task, kinds=["copy", "next", add_kind], progress=False)
if step_error is None:
    step_heads = {str(c) for c in step_circuits[step_name] if c.is_head}
    base_heads = {str(c) for c in step_circuits[base_name] if c.is_head}
    ov = ov.assign(in_step_circuit=ov["component"].isin(step_heads), in_step1_circuit=ov["component"].isin(base_heads))
    ov_groups = pd.DataFrame([
        {"heads": label, "n": int(mask.sum()), **{f"mean_{k}": float(ov.loc[mask, k].mean()) for k in ("next", add_kind)},
         f"best_{add_kind}": float(ov.loc[mask, add_kind].max()) if mask.any() else float("nan")}
        for label, mask in ((f"step-{step_k} circuit", ov["in_step_circuit"]), ("step-1 circuit", ov["in_step1_circuit"]),
                            ("all heads", ov["component"].notna()))])
    display(ov_groups)
    ov_top = ov[ov["in_step_circuit"]].sort_values(add_kind, ascending=False).head(10)
    display(ov_top[["component", "copy", "next", add_kind, "in_step1_circuit"]].round(3))
display(figures.figure(
    plots.head_heatmap(plots.head_frame(ov, add_kind), title=f"{task}: OV {add_kind} score", value_title="score",
                       diverging=False),
    f"Add-{step_k} OV score of every head ({task}, top-1 over the family's members): the fraction of members whose "
    f"OV output is the member {step_k} ahead, layer 0 at the top. Compare the bright cells with the step-{step_k} "
    "circuit's heads in the table above."))

# %%
found = step_error is None
write_json_atomic(out_dir / StepKCircuits.file, StepKCircuits(
    model=model, task=task, template=template, threshold=threshold, method=method, smoke=smoke, steps=steps,
    families=step_families, step_k=step_k, length=step_length, behaviour=frame_records(step_behaviour),
    error=step_error,
    ov_scores=HeadScores.from_table(ov.drop(columns=["kv_head"]), description=f"OV scores over the {task} family"),
    summary=frame_records(step_summary) if found else None, overlap=frame_records(step_overlap) if found else None,
    cross_task_percent=step_cross.to_dict() if found else None, ov_groups=frame_records(ov_groups) if found else None,
    circuit=step_record.with_extra(dataset=None) if found else None,
))
acc = {(r["family"], r["step"]): r["top1_accuracy"] for r in step_rows if r.get("n")}
text = ("Top-1 accuracy by step: " + "; ".join(
    f"{fam} " + ", ".join(f"step {k} {100 * acc[(fam, k)]:.0f} %" for k in steps if (fam, k) in acc)
    for fam in step_families) + ".")
if step_error is None:
    heads_row = step_overlap[step_overlap["kind"] == "heads"].iloc[0]
    g = ov_groups.set_index("heads")
    text += (f" The step-{step_k} {task} circuit has {len(step_heads)} heads and {step_summary['mlps'].iloc[1]} MLPs "
             f"({step_summary['score_%'].iloc[1]:.0f} % in-sample, {step_summary['distinct_prompts'].iloc[1]} distinct "
             f"prompts); it shares {int(heads_row['intersection'])} heads with the step-1 circuit (head Jaccard "
             f"{heads_row['jaccard']:.2f}). The step-1 circuit keeps {step_cross.loc[base_name, step_name]:.0f} % on "
             f"step-{step_k} data and the step-{step_k} circuit {step_cross.loc[step_name, base_name]:.0f} % on step-1 "
             f"data. Its heads' mean {add_kind} OV score is {g.loc[f'step-{step_k} circuit', f'mean_{add_kind}']:.2f} "
             f"(best {g.loc[f'step-{step_k} circuit', f'best_{add_kind}']:.2f}) against "
             f"{g.loc['all heads', f'mean_{add_kind}']:.2f} over all heads, and mean next score "
             f"{g.loc[f'step-{step_k} circuit', 'mean_next']:.2f}: "
             + ("its heads write the member k ahead more often than heads at large."
                if g.loc[f"step-{step_k} circuit", f"mean_{add_kind}"] > g.loc["all heads", f"mean_{add_kind}"] else
                "its heads do not write the member k ahead more often than heads at large; adding k is not done by "
                "an add-k OV circuit in one head."))
else:
    text += f" No step-{step_k} circuit could be found ({step_error})."
display(Markdown(text))
