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
# # Greater-than and sequence continuation: one mechanism or two?
#
# Greater-than (Hanna et al.: `The war lasted from the year 1732 to the year 17` -> a year after
# 1732) and sequence continuation both need "the next number after this one". Do they use the same
# components? We find a greater-than circuit (metric: the probability difference PD, see
# [Methods](../methods.md); years split by the tokenizer), a sequence-continuation circuit, and then
# perform the paper's **analogous ablation**: remove one task's circuit inside the other task and
# measure how much of the other task's behaviour is lost — against removing a random set of the
# same number of heads.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.load_model
n_prompts = 32  # prompts per task (sequence prompts before filtering to correct answers)
seed = 0  # dataset and random-baseline seed
n_random = 5  # random head sets averaged for the analogous-ablation baseline
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
threshold = 0.8  # circuit threshold (fraction of the full metric)
method = "fast"  # "fast" (attribution-ranked, see the benchmark) or "sweep" (the paper's pruning)
sequence_task = "digits"  # the sequence-continuation task compared with greater-than
template = "among_words"  # the sequence task's template
exact_heads = 12  # heads per task whose estimated single-ablation drop is checked by exact ablation

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils import plots
from seqcirc_utils.circuits import discover, write_circuits
from seqcirc_utils.compare import (analogous_ablation, cross_task_scores, matched_random_heads, overlap_table,
                                   shared_components)
from seqcirc_utils.importance import head_importance
from seqcirc_utils.models import load_model
from seqcirc_utils.results import frame_records, head_records, results_dir, write_json_atomic
from seqcirc_utils.types import Circuit

plots.enable_offline()
if smoke:
    n_prompts, n_random = min(n_prompts, 12), min(n_random, 2)
    print(f"SMOKE MODE: {n_prompts} prompts, {n_random} random baselines; numbers are not results.")
print(f"model={model} n_prompts={n_prompts} seed={seed} threshold={threshold} method={method}")

# %%
lm, info = load_model(model, device=device)
out_dir = results_dir(model)
# Greater-than is scored by PD on all prompts (Hanna et al. do not filter to correct answers).
gt_records, gt_data, _ = discover(lm, info, model, "greater_than", [threshold], method=method, metric="prob_diff",
                                  filter_correct=False, n=n_prompts, seed=seed)
seq_records, seq_data, _ = discover(lm, info, model, sequence_task, [threshold], method=method,
                                    template=template, n=n_prompts, seed=seed)
write_circuits(out_dir / "circuit_greater_than.json", gt_records)
circuits = {"greater_than": Circuit.from_lists(gt_records[0]["heads"], gt_records[0]["mlps"]).components,
            sequence_task: Circuit.from_lists(seq_records[0]["heads"], seq_records[0]["mlps"]).components}
pd.DataFrame([{"task": t, "metric": r[0]["metric"], "full_metric": r[0]["full_metric"], "heads": len(r[0]["heads"]),
               "mlps": len(r[0]["mlps"]), "score_%": 100 * r[0]["score"], "prompts": r[0]["n_prompts"]}
              for t, r in (("greater_than", gt_records), (sequence_task, seq_records))])

# %%
for t, comps in circuits.items():
    display(plots.circuit_diagram(info.n_layers, info.n_heads, comps, title=f"{t} circuit ({len(comps)} components)"))
overlap = overlap_table(circuits)
heads_overlap = overlap_table(circuits, kind="head")
display(pd.concat([overlap.assign(kind="all"), heads_overlap.assign(kind="heads")]))
plots.overlap_chart(circuits, title="greater-than vs sequence continuation")

# %% [markdown]
# ## Analogous ablation
#
# For each direction we ablate the *heads* of one task's circuit (a) from the full model and
# (b) from inside the other task's own circuit, and report the other task's score (% of its full
# metric) before and after. The baseline ablates, `n_random` times, as many heads drawn at random
# (seeded) from the same place, excluding the sub-circuit's own heads: from the whole model in (a),
# from the other task's circuit in (b). Its row is the mean over those draws.

# %%
data = {"greater_than": gt_data, sequence_task: seq_data}
rows = []
for source, target in (("greater_than", sequence_task), (sequence_task, "greater_than")):
    sub = [c for c in circuits[source] if c.is_head]
    for where, within in (("full model", None), (f"{target} circuit", circuits[target])):
        res = analogous_ablation(lm, info, data[target], sub, within=within)
        rows.append({"ablated": f"{source} heads", "task scored": target, "inside": where, "samples": 1,
                     "n_ablated": res["n_ablated"], "before_%": 100 * res["before"], "after_%": 100 * res["after"],
                     "drop_points": 100 * res["drop"]})
        draws = [analogous_ablation(lm, info, data[target], heads, within=within)
                 for heads in matched_random_heads(info, sub, within, n_samples=n_random, seed=seed)]
        mean = {k: 100 * sum(d[k] for d in draws) / len(draws) for k in ("before", "after", "drop")}
        rows.append({"ablated": "random heads", "task scored": target, "inside": where, "samples": len(draws),
                     "n_ablated": draws[0]["n_ablated"], "before_%": mean["before"], "after_%": mean["after"],
                     "drop_points": mean["drop"]})
ablation = pd.DataFrame(rows)
ablation

# %% [markdown]
# ## Head by head
#
# For every head, the drop in points of each task's own metric (greater-than: PD; the sequence task:
# logit difference) when that head alone is ablated from the full model, estimated by attribution
# patching (the maps), and computed exactly for the `exact_heads` largest estimates per task. If the
# two tasks lean on the same heads, the heads that matter for one matter for the other: the Spearman
# rank correlation of the two estimated drops over all heads measures how far that holds.

# %%
importance = pd.concat([head_importance(lm, info, data[t], exact_top=exact_heads, progress=False).assign(task=t)
                        for t in circuits])
per_task = importance.pivot(index="component", columns="task", values="estimated_drop")[list(circuits)]
ranks = per_task.rank()  # Spearman's rho = Pearson's r of the ranks
rank_correlation = float(ranks["greater_than"].corr(ranks[sequence_task]))
display(alt.hconcat(*[plots.head_heatmap(plots.head_frame(importance[importance["task"] == t], "estimated_drop"),
                                         title=t, value_title="est. drop (points)") for t in circuits],
                    title=f"{model}: estimated single-head ablation drop, each task's own metric"))
print(f"Spearman rank correlation of the estimated per-head drops over {len(per_task)} heads: {rank_correlation:.2f}")
exact = importance[importance["exact"]].sort_values("drop_points", ascending=False)
exact_columns = ["task", "component", "drop_points", "estimated_drop"]
exact.groupby("task", sort=False).head(6).sort_values("task", kind="stable")[exact_columns].reset_index(drop=True)

# %%
cross = 100 * cross_task_scores(lm, info, circuits, data)
shared = shared_components(circuits, kind="head")
write_json_atomic(out_dir / "greater_than_overlap.json", {
    "model": model, "threshold": threshold, "method": method, "smoke": smoke, "sequence_task": sequence_task,
    "greater_than_circuit": gt_records[0] | {"dataset": None}, "sequence_circuit": seq_records[0] | {"dataset": None},
    "overlap": overlap.to_dict(orient="records"), "analogous_ablation": ablation.to_dict(orient="records"),
    "cross_task_percent": cross.to_dict(), "shared_heads": [str(c) for c in shared],
    "head_importance": head_records(importance[["component", "estimated_drop", "task"]]),
    "single_head_ablation": frame_records(exact[exact_columns]), "estimated_drop_rank_correlation": rank_correlation,
})
cross

# %%
def drop(src: str, tgt: str, label: str, where: str) -> float:
    row = ablation[(ablation["ablated"] == label) & (ablation["task scored"] == tgt) & (ablation["inside"] == where)]
    return float(row["drop_points"].iloc[0])

gt_in_seq = drop("greater_than", sequence_task, "greater_than heads", "full model")
rand_in_seq = drop("greater_than", sequence_task, "random heads", "full model")
seq_in_gt = drop(sequence_task, "greater_than", f"{sequence_task} heads", "full model")
rand_in_gt = drop(sequence_task, "greater_than", "random heads", "full model")
display(Markdown(
    f"The two circuits share {len(shared)} heads ({' '.join(map(str, shared)) or 'none'}; head Jaccard "
    f"{heads_overlap['jaccard'].iloc[0]:.2f}). Ablating the greater-than circuit's heads from the full model costs "
    f"the {sequence_task} task {gt_in_seq:.1f} points (random heads of the same number: {rand_in_seq:.1f}); ablating "
    f"the {sequence_task} circuit's heads costs greater-than {seq_in_gt:.1f} points of PD (random: {rand_in_gt:.1f}). "
    + ("The cross-task damage exceeds the random baseline in both directions, evidence of shared machinery."
       if gt_in_seq > rand_in_seq and seq_in_gt > rand_in_gt else
       "The cross-task damage does not exceed the random baseline in both directions, so this run gives no "
       "clear evidence that the two tasks share their heads.")
    + f" Head by head, the estimated single-ablation drops of the two tasks have a rank correlation of "
    f"{rank_correlation:.2f}."))
