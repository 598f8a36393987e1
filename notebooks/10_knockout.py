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
#     estimate_s: 82
# ---

# %% [markdown]
# # Knocking out the successor heads
#
# "Can we knock out the ability to predict *next* if we knock out the successor head? Are there
# backups?" This chapter takes the model's successor heads — computed, not named: the heads whose OV
# circuit most often maps a member to its successor (the OV "next" score of chapter 7, averaged over
# the tasks' families), ranked by how much ablating each one alone costs the tasks — and knocks them
# out (mean ablation from the corrupted prompts, every position; see `seqcirc_utils.mechanisms.knockout`):
#
# 1. **Knockout**: each head alone and all together, per task, against random heads of the same
#    layers; how much of the logit difference and of the top-1 accuracy is left.
# 2. **What the model predicts instead**: the top-1 token of each prompt, sorted into the answer,
#    a copy of the last member shown (`n`), `n-1`, `n+2`, another member, or a token outside the family;
#    and the decoded top-5 of a few prompts.
# 3. **Backups**: the circuit found again with the successor heads ablated throughout — which
#    components join; how each head's direct logit attribution changes once they are gone
#    (compensation, as in the IOI backup name movers); and the *negative* heads, whose ablation raises
#    the logit difference.
# 4. **Where each head works**: the circuit's most important heads ablated at one query position at
#    a time.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per task before filtering to correct answers
seed = 0  # dataset seed (and the random heads)
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: one task, few prompts and cells; numbers are not results
tasks = ["digits", "number_words", "months"]  # tasks knocked out (their families give the OV next score)
template = "among_words"  # prompt template
focus = "digits"  # task of the backups, compensation, negative heads and per-position sections
n_candidates = 4  # heads with the highest mean OV next score, each ablated alone
n_heads = 2  # of those, the heads with the largest mean single-ablation drop are knocked out
n_random = 3  # random head sets (same layers as the knocked-out heads) per task
threshold = 0.8  # circuit threshold of the backups section (fraction of the reference logit difference)
n_negative = 6  # heads with the most negative estimated single-ablation drop, checked exactly (negative heads)
position_heads = 2  # circuit heads ablated one position at a time
position_prompts = 6  # prompts of the per-position section (one partial pass per head and position)
show_prompts = 4  # prompts whose decoded top-5 are shown

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.scoring.ablation import AblatorCache, check_baseline
from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.mechanisms.editing import random_heads_same_layers
from seqcirc_utils.scoring.importance import estimated_drops
from seqcirc_utils.mechanisms.knockout import (CATEGORIES, KnockoutAblator, backup_table, circuit_of, compensation, knockout,
                                    knockout_rows, negative_heads, position_drops, position_labels,
                                    prediction_records, select_successor_heads)
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.core.records import HeadScores
from seqcirc_utils.core.result_records import Knockout
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.tasks.datasets import FAMILIES
from seqcirc_utils.core.errors import BaselineError, SeqcircError

figures = plots.enable_offline()  # this chapter's figure numbers
unknown = [t for t in tasks if t not in FAMILIES]
if unknown or not tasks:
    raise ValueError(f"tasks must be sequence families ({', '.join(FAMILIES)}), got {tasks}")
if focus not in tasks:
    raise ValueError(f"focus {focus!r} must be one of tasks {tasks}")
if smoke:
    tasks, n_prompts, n_random, n_negative = [focus], min(n_prompts, 8), min(n_random, 1), min(n_negative, 2)
    n_candidates, n_heads, position_heads, position_prompts = min(n_candidates, 2), 1, 1, min(position_prompts, 4)
    print(f"SMOKE MODE: tasks {tasks}, {n_prompts} prompts; numbers are not results.")

# %% [markdown]
# ## Which heads are the successor heads?
#
# The candidates are the heads with the highest OV next score averaged over the tasks' families;
# each is ablated alone on every task (points of the logit difference lost; negative = ablation
# helps). The heads with the largest mean drop are knocked out below.

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
datasets, skipped = {}, {}
for t in tasks:
    try:
        datasets[t] = discovery_dataset(lm, model, t, template=template, n=n_prompts, seed=seed, prefix=prefix,
                                        min_prompts=4 if smoke else 6)
    except SeqcircError as err:  # too few prompts the model answers correctly
        skipped[t] = str(err)
for t, err in skipped.items():
    display(Markdown(f"**{t} skipped:** {err}"))
if focus not in datasets:
    raise ValueError(f"the focus task {focus!r} has too few correctly answered prompts: {skipped[focus]}")
tasks = list(datasets)
candidates, heads = select_successor_heads(lm, info, datasets, n_heads=n_heads, n_candidates=n_candidates,
                                           progress=False)
display(Markdown(f"The successor heads knocked out below are **{' '.join(map(str, heads))}** (prompts the model "
                 "answers correctly, per task: " + ", ".join(f"{t} {len(ds)}" for t, ds in datasets.items()) + ")."))
reader_table(candidates, [
    Column("component", "head"), Column("next_mean", "OV next score (% of members, mean over families)", "fraction"),
    Column("drop_mean", "single-ablation drop (points, mean over tasks)", "number", 1),
    Column("selected", "knocked out")])

# %% [markdown]
# ## Knockout
#
# Each successor head alone, both together, and (baseline) random head sets with as many heads in
# the same layers. `kept_%` is the share of the full model's logit difference left; `accuracy` the
# share of prompts whose top-1 is still the answer; the category columns are shares of prompts.

# %%
randoms = random_heads_same_layers(info, heads, n_samples=n_random, seed=seed)
conditions = ([("none", [])] + [(f"{h} alone", [h]) for h in heads]
              + ([("successor heads", heads)] if len(heads) > 1 else [])
              + [(f"random {k}", r) for k, r in enumerate(randoms)])
results = {t: [knockout(ablators.get(lm, info, ds), name, comps) for name, comps in conditions]
           for t, ds in datasets.items()}
ko_table = pd.concat([knockout_rows(rs, task=t) for t, rs in results.items()], ignore_index=True)
display(ko_table[["task", "condition", "ablated", "kept_%", "accuracy", *CATEGORIES]].round(3))

# %%
together = "successor heads" if len(heads) > 1 else f"{heads[0]} alone"
shares = ko_table.melt(id_vars=["task", "condition"], value_vars=list(CATEGORIES), var_name="prediction",
                       value_name="share")
shares = shares[shares["share"] > 0]
figures.figure(
    alt.Chart(shares).mark_bar().encode(
        y=alt.Y("condition:N", sort=[c for c, _ in conditions], title=None),
        x=alt.X("share:Q", stack="normalize", title="share of prompts"),
        color=alt.Color("prediction:N", sort=list(CATEGORIES), scale=alt.Scale(domain=list(CATEGORIES))),
        tooltip=["task:N", "condition:N", "prediction:N", alt.Tooltip("share:Q", format=".2f")],
    ).properties(width=260, height=18 * len(conditions)).facet(row=alt.Row("task:N", title=None),
                                                                 title=f"{model}: top-1 prediction after each knockout"),
    f"What the model predicts at the final position with nothing, each successor head, both ({together}) and random "
    "heads of the same layers knocked out, per task. `copy` is the last member shown (n), `n-1` / `n+2` the members "
    "around the answer, `off-family` a token that is no member. Compare the successor-head rows with the random ones.")

# %% [markdown]
# The decoded top-5 of the first prompts of the focus task, intact and with the successor heads
# knocked out:

# %%
predictions = [r for t, rs in results.items() for r in prediction_records(datasets[t], rs, task=t)]
pred = pd.DataFrame(predictions)
shown = pred[(pred["task"] == focus) & pred["condition"].isin(["none", together])]
shown = shown[shown["prompt"].isin(list(dict.fromkeys(shown["prompt"]))[:show_prompts])]
shown.assign(prompt=shown["prompt"].str[-40:], top5=shown["top5"].map(lambda xs: " | ".join(map(repr, xs))))[
    ["prompt", "answer", "condition", "category", "top5"]]

# %% [markdown]
# ## Backups
#
# The focus task's circuit (fast pruning, one attribution round, at the threshold above) in the
# intact model, and again in the model with the successor heads ablated throughout (its reference
# is then the knocked-out model's own logit difference). Components in the second circuit only
# *join* after the knockout. Both circuits are fast ones, not refined to 1-minimal: their sizes are
# upper bounds and part of the membership difference is the pruning's own imprecision; read the
# joining heads together with the compensation below.

# %%
ds = datasets[focus]
ab = ablators.get(lm, info, ds)
main = circuit_of(ab, threshold)
ko_ab = KnockoutAblator(lm, info, ds, heads)
try:  # a circuit score divides by the knocked-out model's logit difference: it must be clearly positive
    check_baseline(ko_ab, model)
    backup, no_backup = circuit_of(ko_ab, threshold), None
except BaselineError as err:
    backup, no_backup = None, str(err)
    display(Markdown(f"**No circuit of the knocked-out model:** {err}"))
membership = backup_table(main.components, backup.components if backup else main.components, heads)
joins = membership[membership["status"] == "joins"]["component"].tolist()
leaves = membership[membership["status"] == "leaves"]["component"].tolist()
backup_summary = pd.DataFrame([
    {"model": "intact", "reference_logit_diff": ab.full_metric, "components": len(main.components),
     "heads": len(main.heads), "score_%": 100 * main.score.score, "score_vs_intact_%": 100 * main.score.score},
    {"model": "successor heads knocked out", "reference_logit_diff": ko_ab.full_metric,
     "components": len(backup.components) if backup else None, "heads": len(backup.heads) if backup else None,
     "score_%": 100 * backup.score.score if backup else None,
     "score_vs_intact_%": 100 * backup.score.circuit_metric / ab.full_metric if backup else None},
])
display(backup_summary.round(3))
membership[membership["status"] != "kept"]

# %% [markdown]
# ### Compensation and negative heads
#
# Each head's direct logit attribution (its direct effect on `logit(answer) - logit(last member)`
# at the final position, nats) before and after the knockout. A head whose attribution rises once
# the successor heads are gone compensates for them. Negative heads are heads whose exact single
# ablation *raises* the logit difference: the heads with the most negative attribution estimate of
# their single-ablation drop, checked by exact ablation.

# %%
comp = compensation(lm, ds, ab, heads)
est = estimated_drops(lm, info, ds, ablators=ablators)
negatives = negative_heads(lm, info, ds, est, n_check=n_negative, dla=comp)
movers = comp[~comp["knocked_out"]].reindex(comp[~comp["knocked_out"]]["change"].abs()
                                             .sort_values(ascending=False).index).head(8)
display(movers[["component", "dla_clean", "dla_knockout", "change"]].round(3))
display(Markdown(f"**Negative heads** ({len(negatives)} of the {len(negatives.attrs['checked'])} checked: "
                 f"{' '.join(negatives.attrs['checked'])}):"))
display(negatives.round(3))
figures.figure(
    plots.bar_chart(comp[comp["component"].isin(movers["component"]) | comp["knocked_out"]]
                    .melt(id_vars="component", value_vars=["dla_clean", "dla_knockout"], var_name="run",
                          value_name="dla"), x="component", y="dla", color="run", y_title="DLA (nats)",
                    title=f"{focus}: direct logit attribution before and after the knockout"),
    f"Mean direct logit attribution of the knocked-out heads ({' '.join(map(str, heads))}) and of the heads whose "
    "attribution changes most, intact (`dla_clean`) and with the successor heads knocked out (`dla_knockout`). A head "
    "whose bar grows after the knockout takes over part of their work.")

# %% [markdown]
# ## Where does each head work?
#
# The intact circuit's heads with the largest estimated single-ablation drop, each ablated at one
# query position at a time (drop in points of the logit difference). A head that matters only at
# the final position writes the answer there; one that matters at a member position moves
# information along the sequence.

# %%
pos_heads = sorted(main.heads, key=lambda h: -est[str(h)])[:position_heads]
pos_ds = ds.subset(list(range(min(position_prompts, len(ds)))))
pos_ab = ablators.get(lm, info, pos_ds)
labels = position_labels(lm.tokenizer, pos_ds)
per_pos = position_drops(pos_ab, pos_heads, progress=False)
per_pos["position_label"] = per_pos["position"].map(lambda p: labels[p])
where = per_pos.loc[per_pos.groupby("component")["drop_points"].idxmax()]
display(where[["component", "position_label", "drop_points"]].round(2))
figures.figure(
    alt.Chart(per_pos).mark_rect().encode(
        x=alt.X("position_label:N", sort=labels, title="query position (first prompt's token where all agree)"),
        y=alt.Y("component:N", sort=[str(h) for h in pos_heads], title="head"),
        color=alt.Color("drop_points:Q", title="drop (points)", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
        tooltip=["component:N", "position_label:N", alt.Tooltip("drop_points:Q", format=".2f")],
    ).properties(width=alt.Step(16), height=alt.Step(18), title=f"{focus}: each head ablated at one position"),
    f"Points of the logit difference lost when one head (rows) is mean-ablated at one query position only (columns; "
    f"`m0`.. are the members, `final` the prediction position) on {len(pos_ds)} prompts. Red cells are where a head "
    "does its work; blue cells, where its output there works against the answer.")

# %%
records = ko_table.to_dict("records")
_ = write_json_atomic(results_dir(model) / Knockout.file, Knockout(
    model=model, smoke=smoke, tasks=tasks, skipped=skipped,
    template=template, prefix=prefix, seed=seed, n_prompts=n_prompts, focus=focus,
    n_kept={t: len(d) for t, d in datasets.items()}, successor_heads=[str(h) for h in heads],
    candidates=frame_records(candidates), random_heads=[[str(c) for c in r] for r in randoms],
    knockouts=frame_records(ko_table), categories=list(CATEGORIES), predictions=predictions,
    backups={"task": focus, "threshold": threshold, "method": "fast", "rounds": 1,
                "intact": {"components": [str(c) for c in sorted(main.components)], "score": main.score.score,
                           "reference_logit_diff": ab.full_metric},
                "knocked_out": {"components": [str(c) for c in sorted(backup.components)] if backup else None,
                                "score": backup.score.score if backup else None,
                                "score_vs_intact": backup.score.circuit_metric / ab.full_metric if backup else None,
                                "reference_logit_diff": ko_ab.full_metric, "not_found": no_backup},
                "joins": joins, "leaves": leaves, "membership": frame_records(membership)},
    compensation=HeadScores.from_table(comp.drop(columns="knocked_out"), scores=["dla_clean", "dla_knockout", "change"],
                                       description=f"direct logit attribution on {focus} prompts before and after "
                                                   "the knockout (nats)"), compensation_logit_diff=comp.attrs,
    negative_heads=frame_records(negatives), negative_heads_checked=negatives.attrs["checked"],
    position_drops={"task": focus, "n_prompts": len(pos_ds), "labels": labels,
                    "cells": frame_records(per_pos)},
))

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for t in tasks:
    rows = ko_table[ko_table["task"] == t].set_index("condition")
    r, rand = rows.loc[together], rows.loc[[c for c in rows.index if c.startswith("random")]]
    top_cat = max((c for c in CATEGORIES if c != "correct"), key=lambda c: r[c])
    lines.append(
        f"- **{t}** ({len(datasets[t])} prompts): knocking out {r['ablated']} keeps {r['kept_%']:.0f} % of the logit "
        f"difference and {100 * r['accuracy']:.0f} % top-1 accuracy (random heads of the same layers: "
        f"{rand['kept_%'].mean():.0f} % and {100 * rand['accuracy'].mean():.0f} %); the commonest wrong prediction is "
        f"{top_cat} ({100 * r[top_cat]:.0f} % of prompts), off-family {100 * r['off-family']:.0f} %.")
left = ko_ab.full_metric / ab.full_metric
lines.append(
    f"- **Backups ({focus})**: with the successor heads ablated throughout, the model keeps {100 * left:.0f} % of the "
    "logit difference — " + ("no backup restores the behaviour, so the circuit found again is a circuit of what "
                             "remains. " if left < 0.5 else "most of it, so other components carry the task. ")
    + f"The intact circuit at {threshold:.0%} has {len(main.components)} components ({len(main.heads)} heads); "
    + ("the knocked-out model has too small a logit difference to divide by, so it has no circuit." if backup is None
       else f"the knocked-out model's has {len(backup.components)} ({len(backup.heads)} heads), "
       + (f"{len(joins)} of them new" + (f" ({' '.join(joins[:12])}{' ...' if len(joins) > 12 else ''})" if joins else "")
          if joins else "none of them new")
       + (f"; {len(leaves)} components leave." if leaves else ".")))
best = movers.iloc[0] if len(movers) else None
if best is not None:
    lines.append(f"- **Compensation**: the head whose direct attribution changes most is {best['component']} "
                 f"({best['dla_clean']:+.2f} -> {best['dla_knockout']:+.2f} nats); the model's logit difference goes "
                 f"from {comp.attrs['logit_diff_clean']:.2f} to {comp.attrs['logit_diff_knockout']:.2f} nats.")
lines.append(f"- **Negative heads**: {len(negatives)} of the {len(negatives.attrs['checked'])} heads checked raise the logit difference when "
             "ablated" + (": " + ", ".join(f"{r.component} ({-r.drop_points:.1f} points, DLA {r.dla_clean:+.2f})"
                                           for r in negatives.itertuples()) + "." if len(negatives) else "."))
rising = set(movers[movers["change"] > 0]["component"])
both = [r.component for r in negatives.itertuples() if r.component in rising]
if both:
    lines.append(f"- {', '.join(both)}: negative head{'s' if len(both) > 1 else ''} whose direct attribution rises "
                 "after the knockout — with the successor heads gone, they work less against the answer.")
lines.append("- **Per position**: " + "; ".join(f"{r.component} matters most at {r.position_label.split(' ', 1)[1]} "
                                                 f"({r.drop_points:.1f} points)" for r in where.itertuples()) + ".")
if smoke:
    lines.append("\n*Smoke run: the numbers above come from a handful of prompts and are not results.*")
display(Markdown("\n".join(lines)))
