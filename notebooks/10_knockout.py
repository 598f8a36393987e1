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
#     estimate_s: 207
# ---

# %% [markdown]
# # Knocking out the successor heads
#
# "Can we knock out the ability to predict *next* if we knock out the successor head? Are there
# backups?" This chapter takes the model's successor heads — computed, not named: the heads whose OV
# circuit most often maps a member to its successor (the OV "next" score of chapter 7, averaged over
# the tasks' families), ranked by how much ablating each one alone costs the tasks — and knocks them
# out (mean ablation from the corrupted prompts, every position; see `seqcirc_utils.mechanisms.knockout`).
#
# **Selection apart from evaluation.** Each task's prompts come in two sequence-disjoint halves (a seeded
# partition of the member sequences: no sequence of one half appears in the other). The successor heads
# (an argmax over candidates) and the negative-head candidates are chosen on the *selection* half; every
# number reported below — knockouts, predictions, compensation, backups — is measured on the
# *evaluation* half.
#
# 1. **Knockout**: each head alone and all together, per task, against `n_draws` random head sets with
#    as many heads in the same layers (the null: the drop's percentile among them and the one-sided
#    p = (1 + #{random drop >= observed}) / (n_draws + 1)).
# 2. **What the model predicts instead**: the top-1 token of each prompt, sorted into the answer,
#    a copy of the last member shown (`n`), `n-1`, `n+2`, another member, or a token outside the family —
#    under three replacements of the knocked-out heads' output (the corrupted-prompt mean, the clean-prompt
#    mean, and a resample from another clean prompt), so the shift is not an artefact of injected activations;
#    and the decoded top-5 of a few prompts.
# 3. **Backups**: the circuit found again with the successor heads ablated throughout — which
#    components join; how each head's direct logit attribution changes once they are gone
#    (compensation, as in the IOI backup name movers, read with the clean run's final-norm scale frozen
#    and against the same random knockouts); and the *negative* heads, whose ablation raises
#    the logit difference.
# 4. **Where each head works**: the circuit's most important heads ablated at one query position at
#    a time.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 12  # prompts per task before filtering (digits and months have 7-8 sequences: more prompts repeat them)
seed = 0  # dataset seed (and the random heads)
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: one task, few prompts and cells; numbers are not results
tasks = ["digits", "number_words", "months"]  # tasks knocked out (their families give the OV next score)
template = "among_words"  # prompt template
focus = "digits"  # task of the backups, compensation, negative heads and per-position sections
n_candidates = 4  # heads with the highest mean OV next score, each ablated alone
n_heads = 2  # of those, the heads with the largest mean single-ablation drop are knocked out
n_draws = 99  # random head sets (same layers as the knocked-out heads, excluding them) in each task's null
n_random = 3  # of those, the first few shown beside the knockout in the prediction tables
replacements = ["corrupted_mean", "clean_mean", "clean_resample"]  # what replaces the knocked-out heads' output
threshold = 0.8  # circuit threshold of the backups section (fraction of the reference logit difference)
n_negative = 6  # heads with the most negative estimated single-ablation drop, checked exactly (negative heads)
position_heads = 2  # circuit heads ablated one position at a time
position_prompts = 6  # prompts of the per-position section (one partial pass per head and position)
show_prompts = 4  # prompts whose decoded top-5 are shown

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import BaselineError, ParameterError
from seqcirc_utils.core.options import SELECTION_ROLES
from seqcirc_utils.core.records import HeadScores
from seqcirc_utils.core.result_records import Knockout
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.discovery.pipeline import build_or_skip, split_discovery_datasets
from seqcirc_utils.evaluation.nulls import matched_random_circuits
from seqcirc_utils.mechanisms.knockout import (
    CATEGORIES,
    KnockoutAblator,
    backup_table,
    check_replacements,
    circuit_of,
    knockout,
    knockout_null,
    knockout_rows,
    negative_heads,
    position_drops,
    position_labels,
    prediction_records,
    replacement_ablator,
    select_successor_heads,
)
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.scoring.ablation import AblatorCache, check_baseline
from seqcirc_utils.scoring.importance import estimated_drops
from seqcirc_utils.tasks.datasets import FAMILIES, sequence_overlap

figures = plots.enable_offline()  # this chapter's figure numbers
unknown = [t for t in tasks if t not in FAMILIES]
if unknown or not tasks:
    raise ParameterError(f"tasks must be sequence families ({', '.join(FAMILIES)}), got {tasks}")
if focus not in tasks:
    raise ParameterError(f"focus {focus!r} must be one of tasks {tasks}")
replacements = check_replacements(replacements)
if "corrupted_mean" not in replacements:
    raise ParameterError(f"replacements must include corrupted_mean (the chapter's knockout), got {replacements}")
if not isinstance(n_draws, int) or n_draws < 1 or not 0 <= n_random <= n_draws:
    raise ParameterError(f"need n_draws >= 1 and 0 <= n_random <= n_draws, got n_draws={n_draws}, n_random={n_random}")
if smoke:
    tasks, n_prompts, n_random, n_negative = [focus], min(n_prompts, 8), min(n_random, 1), min(n_negative, 2)
    n_draws = min(n_draws, 9)
    n_candidates, n_heads, position_heads, position_prompts = min(n_candidates, 2), 1, 1, min(position_prompts, 4)
    display(smoke_note(f"tasks {tasks}, {n_prompts} prompts, {n_draws} null draws"))

# %% [markdown]
# ## Which heads are the successor heads?
#
# The candidates are the heads with the highest OV next score averaged over the tasks' families;
# each is ablated alone on every task's **selection** prompts (points of the logit difference lost;
# negative = ablation helps). The heads with the largest mean drop are knocked out below, on the
# evaluation prompts.

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
splits, skipped = build_or_skip(  # per task {selection, evaluation}; a task the model cannot do is skipped
    lambda t: split_discovery_datasets(
        lm,
        model,
        t,
        roles=SELECTION_ROLES,
        seed=seed,
        template=template,
        n=n_prompts,
        prefix=prefix,
        min_prompts=4 if smoke else 6,
    ),
    tasks,
)
for t, err in skipped.items():
    display(Markdown(f"**{t} skipped:** {err}"))
if focus not in splits:
    raise ParameterError(
        f"the focus task {focus!r} cannot be split into selection and evaluation prompts: {skipped[focus]}"
    )
tasks = list(splits)
selection = {t: s["selection"] for t, s in splits.items()}
datasets = {t: s["evaluation"] for t, s in splits.items()}  # every reported number is measured on these
split_info = {
    "roles": list(SELECTION_ROLES),
    "seed": seed,
    "n_sequences": {t: {r: d.n_sequences for r, d in s.items()} for t, s in splits.items()},
    "n_prompts": {t: {r: len(d) for r, d in s.items()} for t, s in splits.items()},
    "overlap": {t: sequence_overlap(s["selection"], s["evaluation"]) for t, s in splits.items()},
}
candidates, heads = select_successor_heads(
    lm, info, selection, n_heads=n_heads, n_candidates=n_candidates, progress=False
)
display(
    Markdown(
        f"The successor heads knocked out below are **{' '.join(map(str, heads))}**, chosen on the selection "
        "prompts. Prompts the model answers correctly (selection / evaluation), distinct sequences and shared "
        "sequences, per task: "
        + ", ".join(
            f"{t} {len(s['selection'])} / {len(s['evaluation'])} prompts, "
            f"{s['selection'].n_sequences} / {s['evaluation'].n_sequences} sequences, overlap "
            f"{split_info['overlap'][t]}"
            for t, s in splits.items()
        )
        + "."
    )
)
reader_table(
    candidates,
    [
        Column("component", "head"),
        Column("next_mean", "OV next score (% of members, mean over families)", "fraction"),
        Column("drop_mean", "single-ablation drop (points, mean over tasks)", "number", 1),
        Column("selected", "knocked out"),
    ],
    caption="The candidate successor heads on the selection prompts: the heads with the largest mean drop are "
    "knocked out.",
)

# %% [markdown]
# ## Knockout
#
# On each task's evaluation prompts: the successor heads knocked out together, against `n_draws`
# random head sets with as many heads in the same layers (the successor heads themselves excluded),
# every one scored with the same means and prompts. The drop is in points of the full model's logit
# difference; the percentile is the knockout's among the random drops, and p the one-sided
# (1 + #{random >= observed}) / (n_draws + 1).

# %%
nulls = {
    t: knockout_null(ablators.get(lm, info, ds), heads, n_draws=n_draws, seed=seed, progress=False)
    for t, ds in datasets.items()
}
null_table = pd.DataFrame(
    [
        {
            "task": t,
            "prompts": len(datasets[t]),
            "sequences": datasets[t].n_sequences,
            "drop_points": k.drop.observed,
            "ci95": list(k.drop_ci95),
            "random_p5": k.drop.null_p5,
            "random_median": k.drop.null_p50,
            "random_p95": k.drop.null_p95,
            "percentile": k.drop.observed_percentile,
            "p": k.drop.p_value,
            "n_draws": k.drop.n_draws,
            "seconds": k.drop.seconds,
        }
        for t, k in nulls.items()
    ]
)
reader_table(
    null_table,
    [
        Column("task", "task"),
        Column("prompts", "evaluation prompts", "int"),
        Column("sequences", "distinct sequences", "int"),
        Column("drop_points", "drop (points) [95 % interval, sequences resampled]", "number", 1, interval="ci95"),
        Column("random_median", "random median", "number", 1),
        Column("random_p95", "random 95th pct", "number", 1),
        Column("percentile", "percentile among random", "number", 1),
        Column("p", "p (one-sided, vs n_draws random sets)", "number", 3),
    ],
    caption=f"The successor heads knocked out together on each task's evaluation prompts, against {n_draws} random "
    "head sets of the same layers. A drop above the random 95th percentile (low p) is more than random heads cost.",
)

# %%
null_points = pd.DataFrame([{"task": t, "drop_points": v} for t, k in nulls.items() for v in k.drop.null])
observed_points = pd.DataFrame([{"task": t, "drop_points": k.drop.observed} for t, k in nulls.items()])
figures.figure(
    (
        alt.Chart(null_points)
        .mark_tick(opacity=0.5, color="gray")
        .encode(x=alt.X("drop_points:Q", title="drop (points of the logit difference)"), y=alt.Y("task:N", title=None))
        + alt.Chart(observed_points)
        .mark_point(shape="diamond", size=120, filled=True, color="firebrick")
        .encode(x="drop_points:Q", y="task:N", tooltip=["task:N", alt.Tooltip("drop_points:Q", format=".1f")])
    ).properties(width=420, title=f"{model}: successor-head knockout against random heads of the same layers"),
    f"Grey ticks: the drop when {n_draws} random head sets (as many heads in the same layers, the successor heads "
    "excluded) are knocked out on each task's evaluation prompts; red diamond: the successor heads' drop.",
)

# %% [markdown]
# Each successor head alone, both together, and the first random head sets of the null, under each
# replacement of the knocked-out output: `corrupted_mean` (the mean over the corrupted prompts, used
# everywhere else in this chapter), `clean_mean` (the mean over the clean prompts themselves) and
# `clean_resample` (each prompt gets the output on another clean prompt of a different sequence).
# `kept_%` is the share of the full model's logit difference left; `accuracy` the share of prompts
# whose top-1 is still the answer; the category columns are shares of prompts.

# %%
randoms = (
    [sorted(c) for c in matched_random_circuits(info, heads, n_random, seed=seed, exclude_own=True)] if n_random else []
)
conditions = (
    [("none", [])]
    + [(f"{h} alone", [h]) for h in heads]
    + ([("successor heads", heads)] if len(heads) > 1 else [])
    + [(f"random {k}", r) for k, r in enumerate(randoms)]
)
by_replacement = {
    rep: {
        t: [
            knockout(replacement_ablator(lm, info, ds, rep, seed=seed, ablators=ablators), name, comps)
            for name, comps in conditions
        ]
        for t, ds in datasets.items()
    }
    for rep in replacements
}
results = by_replacement["corrupted_mean"]
ko_table = pd.concat([knockout_rows(rs, task=t) for t, rs in results.items()], ignore_index=True)
rep_table = pd.concat(
    [
        knockout_rows(rs, task=t, replacement=rep)
        for rep, per_task in by_replacement.items()
        for t, rs in per_task.items()
    ],
    ignore_index=True,
)
display(
    reader_table(
        rep_table,
        [
            Column("task", "task"),
            Column("replacement", "replacement of the output"),
            Column("condition", "knocked out"),
            Column("kept_%", "logit difference kept (% of full)", "percent"),
            Column("accuracy", "top-1 still the answer (% of prompts)", "fraction"),
            Column("copy", "top-1 is n, a copy (% of prompts)", "fraction"),
            Column("n-1", "top-1 is n-1 (% of prompts)", "fraction"),
            Column("off-family", "top-1 off the family (% of prompts)", "fraction"),
        ],
        caption="Each knockout under each replacement, on the evaluation prompts (the other prediction categories "
        "are in the full table). Look for a shift that appears under every replacement.",
    )
)

# %%
together = "successor heads" if len(heads) > 1 else f"{heads[0]} alone"
shares = rep_table.melt(
    id_vars=["task", "replacement", "condition"], value_vars=list(CATEGORIES), var_name="prediction", value_name="share"
)
shares = shares[shares["share"] > 0]
figures.figure(
    alt.Chart(shares)
    .mark_bar()
    .encode(
        y=alt.Y("condition:N", sort=[c for c, _ in conditions], title=None),
        x=alt.X("share:Q", stack="normalize", title="share of prompts"),
        color=alt.Color("prediction:N", sort=list(CATEGORIES), scale=alt.Scale(domain=list(CATEGORIES))),
        tooltip=["task:N", "replacement:N", "condition:N", "prediction:N", alt.Tooltip("share:Q", format=".2f")],
    )
    .properties(width=200, height=18 * len(conditions))
    .facet(
        row=alt.Row("task:N", title=None),
        column=alt.Column("replacement:N", sort=replacements, title=None),
        title=f"{model}: top-1 prediction after each knockout",
    ),
    f"What the model predicts at the final position (evaluation prompts) with nothing, each successor head, both "
    f"({together}) and random heads of the same layers knocked out, per task (rows) and replacement of the knocked-out "
    "output (columns: corrupted-prompt mean, clean-prompt mean, another clean prompt's output). `copy` is the last "
    "member shown (n), `n-1` / `n+2` the members around the answer, `off-family` a token that is no member. A shift "
    "that appears under every replacement is the knockout's, not the injected activation's.",
)

# %% [markdown]
# The decoded top-5 of the first prompts of the focus task, intact and with the successor heads
# knocked out:

# %%
predictions = [r for t, rs in results.items() for r in prediction_records(datasets[t], rs, task=t)]
pred = pd.DataFrame(predictions)
shown = pred[(pred["task"] == focus) & pred["condition"].isin(["none", together])]
shown = shown[shown["prompt"].isin(list(dict.fromkeys(shown["prompt"]))[:show_prompts])]
reader_table(
    shown.assign(prompt=shown["prompt"].str[-40:], top5=shown["top5"].map(lambda xs: " | ".join(map(repr, xs)))),
    [
        Column("prompt", "prompt (last 40 characters)"),
        Column("answer", "answer"),
        Column("condition", "knocked out"),
        Column("category", "top-1 prediction"),
        Column("top5", "decoded top-5"),
    ],
    caption=f"{focus}: the first prompts' top-5 predictions, intact and with the successor heads knocked out.",
)

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
backup_summary = pd.DataFrame(
    [
        {
            "model": "intact",
            "reference_logit_diff": ab.full_metric,
            "components": len(main.components),
            "heads": len(main.heads),
            "score_%": 100 * main.score.score,
            "score_vs_intact_%": 100 * main.score.score,
        },
        {
            "model": "successor heads knocked out",
            "reference_logit_diff": ko_ab.full_metric,
            "components": len(backup.components) if backup else None,
            "heads": len(backup.heads) if backup else None,
            "score_%": 100 * backup.score.score if backup else None,
            "score_vs_intact_%": 100 * backup.score.circuit_metric / ab.full_metric if backup else None,
        },
    ]
)
display(
    reader_table(
        backup_summary,
        [
            Column("model", "model"),
            Column("reference_logit_diff", "reference logit difference (nats)", "number", 2),
            Column("components", "circuit components", "int"),
            Column("heads", "circuit heads", "int"),
            Column("score_%", "circuit score (% of its model's logit difference)", "percent"),
            Column("score_vs_intact_%", "circuit score (% of the intact model's)", "percent"),
        ],
        caption=f"{focus}: the circuit at {100 * threshold:.0f} % in the intact model and with the successor heads ablated "
        "throughout.",
    )
)
reader_table(
    membership[membership["status"] != "kept"],
    [
        Column("component", "component"),
        Column("kind", "kind"),
        Column("layer", "layer", "int"),
        Column("status", "after the knockout"),
    ],
    caption="The components whose membership changes: knocked out, joining the circuit or leaving it.",
)

# %% [markdown]
# ### Compensation and negative heads
#
# Each head's direct logit attribution (its direct effect on `logit(answer) - logit(last member)`
# at the final position, nats) before and after the knockout, both read through the final norm with
# the **clean run's scale frozen**: a knockout shrinks or grows the residual stream's norm, and with
# the run's own scale every head's attribution would be rescaled together. A head whose attribution
# rises once the successor heads are gone compensates for them. The same random knockouts as above
# are the null: the summed change of the other heads and the largest single rise, each against the
# random knockouts' (every draw's own non-knocked-out heads), and per head its change against its
# change under the random knockouts (`change_p`, one-sided). Negative heads are heads whose exact
# single ablation *raises* the logit difference: the heads with the most negative attribution
# estimate of their single-ablation drop on the **selection** prompts, checked by exact ablation on
# the evaluation prompts.

# %%
comp_null = nulls[focus]
comp = comp_null.table
est = estimated_drops(lm, info, selection[focus], ablators=ablators)
negatives = negative_heads(lm, info, ds, est, n_check=n_negative, dla=comp)
movers = (
    comp[~comp["knocked_out"]]
    .reindex(comp[~comp["knocked_out"]]["change"].abs().sort_values(ascending=False).index)
    .head(8)
)
comp_summary = pd.DataFrame(
    [
        {
            "statistic": label,
            "observed": n.observed,
            "random_median": n.null_p50,
            "random_p95": n.null_p95,
            "percentile": n.observed_percentile,
            "p": n.p_value,
            "n_draws": n.n_draws,
        }
        for label, n in (
            ("summed DLA change of the other heads (nats)", comp_null.compensation_total),
            ("largest rise of one head (nats)", comp_null.compensation_max),
        )
    ]
)
display(
    reader_table(
        comp_summary,
        [
            Column("statistic", "statistic"),
            Column("observed", "successor-head knockout (nats)", "number", 3),
            Column("random_median", "random knockouts: median (nats)", "number", 3),
            Column("random_p95", "random knockouts: 95th pct. (nats)", "number", 3),
            Column("percentile", "percentile among random", "number", 1),
            Column("p", "p (one-sided)", "number", 3),
            Column("n_draws", "random draws", "int"),
        ],
        caption=f"{focus}: how much the other heads' direct logit attribution changes after the knockout, against "
        "random knockouts of the same layers. A low p means more compensation than after a random knockout.",
    )
)
display(
    reader_table(
        movers,
        [
            Column("component", "head"),
            Column("dla_clean", "DLA, intact (nats)", "number", 3),
            Column("dla_knockout", "DLA, knocked out (nats)", "number", 3),
            Column("change", "change (nats)", "number", 3),
            Column("null_change_mean", "change under random knockouts: mean (nats)", "number", 3),
            Column("null_change_p95", "change under random knockouts: 95th pct. (nats)", "number", 3),
            Column("change_p", "p (one-sided)", "number", 3),
        ],
        caption="The heads whose direct logit attribution changes most after the knockout, each against its change "
        "under the random knockouts.",
    )
)
display(
    Markdown(
        f"**Negative heads** ({len(negatives)} of the {len(negatives.attrs['checked'])} checked: "
        f"{' '.join(negatives.attrs['checked'])}):"
    )
)
display(
    reader_table(
        negatives,
        [
            Column("component", "head"),
            Column("drop_points", "exact drop (points; negative = ablation helps)", "number", 1),
            Column("estimated_drop", "estimated drop on the selection prompts (points)", "number", 1),
            Column("dla_clean", "DLA, intact (nats)", "number", 3),
        ],
        caption="The checked heads whose exact single ablation raises the logit difference, most negative first.",
    )
)
figures.figure(
    plots.bar_chart(
        comp[comp["component"].isin(movers["component"]) | comp["knocked_out"]].melt(
            id_vars="component", value_vars=["dla_clean", "dla_knockout"], var_name="run", value_name="dla"
        ),
        x="component",
        y="dla",
        color="run",
        y_title="DLA (nats)",
        title=f"{focus}: direct logit attribution before and after the knockout",
    ),
    f"Mean direct logit attribution of the knocked-out heads ({' '.join(map(str, heads))}) and of the heads whose "
    "attribution changes most, intact (`dla_clean`) and with the successor heads knocked out (`dla_knockout`). A head "
    "whose bar grows after the knockout takes over part of their work.",
)

# %% [markdown]
# ## Where does each head work?
#
# The intact circuit's heads with the largest estimated single-ablation drop, each ablated at one
# query position at a time (drop in points of the logit difference). A head that matters only at
# the final position writes the answer there; one that matters at a member position moves
# information along the sequence.

# %%
pos_heads = sorted(main.heads, key=lambda h: -est[str(h)])[:position_heads]  # ranked on the selection prompts
pos_ds = ds.subset(list(range(min(position_prompts, len(ds)))))
pos_ab = ablators.get(lm, info, pos_ds)
labels = position_labels(lm.tokenizer, pos_ds)
per_pos = position_drops(pos_ab, pos_heads, progress=False)
per_pos["position_label"] = per_pos["position"].map(lambda p: labels[p])
where = per_pos.loc[per_pos.groupby("component")["drop_points"].idxmax()]
display(
    reader_table(
        where,
        [
            Column("component", "head"),
            Column("position_label", "position where it matters most"),
            Column("drop_points", "drop there (points of the logit difference)", "number", 2),
        ],
        caption=f"{focus}: per head, the query position whose ablation costs most.",
    )
)
figures.figure(
    alt.Chart(per_pos)
    .mark_rect()
    .encode(
        x=alt.X("position_label:N", sort=labels, title="query position (first prompt's token where all agree)"),
        y=alt.Y("component:N", sort=[str(h) for h in pos_heads], title="head"),
        color=alt.Color(
            "drop_points:Q", title="drop (points)", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)
        ),
        tooltip=["component:N", "position_label:N", alt.Tooltip("drop_points:Q", format=".2f")],
    )
    .properties(width=alt.Step(16), height=alt.Step(18), title=f"{focus}: each head ablated at one position"),
    f"Points of the logit difference lost when one head (rows) is mean-ablated at one query position only (columns; "
    f"`m0`.. are the members, `final` the prediction position) on {len(pos_ds)} prompts. Red cells are where a head "
    "does its work; blue cells, where its output there works against the answer.",
)

# %%
records = ko_table.to_dict("records")
_ = write_json_atomic(
    results_dir(model) / Knockout.file,
    Knockout(
        model=model,
        smoke=smoke,
        tasks=tasks,
        skipped=skipped,
        template=template,
        prefix=prefix,
        seed=seed,
        n_prompts=n_prompts,
        focus=focus,
        n_kept={t: len(d) for t, d in datasets.items()},
        successor_heads=[str(h) for h in heads],
        candidates=frame_records(candidates),
        random_heads=[[str(c) for c in r] for r in randoms],
        knockouts=frame_records(ko_table),
        categories=list(CATEGORIES),
        predictions=predictions,
        backups={
            "task": focus,
            "threshold": threshold,
            "method": "fast",
            "rounds": 1,
            "intact": {
                "components": [str(c) for c in sorted(main.components)],
                "score": main.score.score,
                "reference_logit_diff": ab.full_metric,
            },
            "knocked_out": {
                "components": [str(c) for c in sorted(backup.components)] if backup else None,
                "score": backup.score.score if backup else None,
                "score_vs_intact": backup.score.circuit_metric / ab.full_metric if backup else None,
                "reference_logit_diff": ko_ab.full_metric,
                "not_found": no_backup,
            },
            "joins": joins,
            "leaves": leaves,
            "membership": frame_records(membership),
        },
        compensation=HeadScores.from_table(
            comp.drop(columns="knocked_out"),
            scores=["dla_clean", "dla_knockout", "change"],
            description=f"direct logit attribution on {focus} evaluation prompts before and "
            "after the knockout (nats, clean final-norm scale frozen)",
        ),
        compensation_logit_diff={
            "logit_diff_clean": comp_null.logit_diff_clean,
            "logit_diff_knockout": comp_null.logit_diff_knockout,
            "frozen_scale": True,
        },
        negative_heads=frame_records(negatives),
        negative_heads_checked=negatives.attrs["checked"],
        position_drops={"task": focus, "n_prompts": len(pos_ds), "labels": labels, "cells": frame_records(per_pos)},
        split=split_info,
        selection_dataset={t: d.to_json() for t, d in selection.items()},
        evaluation_dataset={t: d.to_json() for t, d in datasets.items()},
        n_draws=n_draws,
        knockout_null={t: k.drop for t, k in nulls.items()},
        knockout_intervals=[k.interval_row() for k in nulls.values()],
        compensation_null={"total": comp_null.compensation_total, "max": comp_null.compensation_max},
        replacements=replacements,
        replacement_knockouts=frame_records(rep_table),
    ),
)

# %% [markdown]
# ## What the numbers say


# %%
def verdict(null) -> str:
    """The knockout's drop against its null, in words."""
    if null.p_value <= 0.05:
        return f"larger than random (p = {null.p_value:.2f})"
    floor = " — the smallest p these draws allow" if null.p_value <= 1 / (null.n_draws + 1) + 1e-12 else ""
    return f"**not distinguishable from random heads of the same layers** (p = {null.p_value:.2f}{floor})"


lines = [
    f"Heads chosen on the selection prompts; every number below is on the sequence-disjoint evaluation prompts "
    f"(overlap {sum(split_info['overlap'].values())} sequences), against {n_draws} random head sets of the same layers."
]
for t in tasks:
    rows = ko_table[ko_table["task"] == t].set_index("condition")
    r, k = rows.loc[together], nulls[t]
    top_cat = max((c for c in CATEGORIES if c != "correct"), key=lambda c: r[c])
    others = rep_table[
        (rep_table["task"] == t) & (rep_table["condition"] == together) & (rep_table["replacement"] != "corrupted_mean")
    ]
    lines.append(
        f"- **{t}** ({len(datasets[t])} prompts, {datasets[t].n_sequences} sequences): knocking out {r['ablated']} costs "
        f"{k.drop.observed:.0f} points of the logit difference [{k.drop_ci95[0]:.0f}, {k.drop_ci95[1]:.0f}] "
        f"(random heads: median {k.drop.null_p50:.0f}, 95th percentile {k.drop.null_p95:.0f}; the knockout is at the "
        f"{k.drop.observed_percentile:.0f}th percentile of {k.drop.n_draws} draws) — {verdict(k.drop)}. Top-1 accuracy "
        f"left: {100 * r['accuracy']:.0f} %; the commonest wrong prediction is {top_cat} ({100 * r[top_cat]:.0f} % of "
        f"prompts), off-family {100 * r['off-family']:.0f} %"
        + (
            "; with the clean-prompt replacements: "
            + ", ".join(
                f"{o.replacement} keeps {o['kept_%']:.0f} %, copy {100 * o['copy']:.0f} %, off-family "
                f"{100 * o['off-family']:.0f} %"
                for _, o in others.iterrows()
            )
            if len(others)
            else ""
        )
        + "."
    )
left = ko_ab.full_metric / ab.full_metric
lines.append(
    f"- **Backups ({focus})**: with the successor heads ablated throughout, the model keeps {100 * left:.0f} % of the "
    "logit difference — "
    + (
        "no backup restores the behaviour, so the circuit found again is a circuit of what remains. "
        if left < 0.5
        else "most of it, so other components carry the task. "
    )
    + f"The intact circuit at {threshold:.0%} has {len(main.components)} components ({len(main.heads)} heads); "
    + (
        "the knocked-out model has too small a logit difference to divide by, so it has no circuit."
        if backup is None
        else f"the knocked-out model's has {len(backup.components)} ({len(backup.heads)} heads), "
        + (
            f"{len(joins)} of them new"
            + (f" ({' '.join(joins[:12])}{' ...' if len(joins) > 12 else ''})" if joins else "")
            if joins
            else "none of them new"
        )
        + (f"; {len(leaves)} components leave." if leaves else ".")
    )
)
best = movers.iloc[0] if len(movers) else None
total, rise = comp_null.compensation_total, comp_null.compensation_max
lines.append(
    f"- **Compensation ({focus}, clean final-norm scale frozen)**: the other heads' attribution changes by "
    f"{total.observed:+.2f} nats in all (random knockouts: median {total.null_p50:+.2f}, percentile "
    f"{total.observed_percentile:.0f}, p = {total.p_value:.2f}); the largest single rise is {rise.observed:+.2f} nats "
    f"(random: median {rise.null_p50:+.2f}, p = {rise.p_value:.2f}), "
    + (
        "so the other heads take over more than after a random knockout."
        if max(total.p_value, rise.p_value) <= 0.05
        else "so one head rises more than after a random knockout, but **the other heads together compensate no more than "
        "after a random knockout of the same layers**."
        if rise.p_value <= 0.05
        else "**not more than after a random knockout of the same layers**: no backup is distinguishable from random."
    )
    + (
        f" The head whose attribution changes most is {best['component']} ({best['dla_clean']:+.2f} -> "
        f"{best['dla_knockout']:+.2f} nats; per-head p = {best['change_p']:.2f})."
        if best is not None
        else ""
    )
    + f" The model's logit difference goes from {comp_null.logit_diff_clean:.2f} to "
    f"{comp_null.logit_diff_knockout:.2f} nats."
)
lines.append(
    f"- **Negative heads**: {len(negatives)} of the {len(negatives.attrs['checked'])} heads checked raise the logit difference when "
    "ablated"
    + (
        ": "
        + ", ".join(
            f"{r.component} ({-r.drop_points:.1f} points, DLA {r.dla_clean:+.2f})" for r in negatives.itertuples()
        )
        + "."
        if len(negatives)
        else "."
    )
)
rising = set(movers[movers["change"] > 0]["component"])
both = [r.component for r in negatives.itertuples() if r.component in rising]
if both:
    lines.append(
        f"- {', '.join(both)}: negative head{'s' if len(both) > 1 else ''} whose direct attribution rises "
        "after the knockout — with the successor heads gone, they work less against the answer."
    )
lines.append(
    "- **Per position**: "
    + "; ".join(
        f"{r.component} matters most at {r.position_label.split(' ', 1)[1]} ({r.drop_points:.1f} points)"
        for r in where.itertuples()
    )
    + "."
)
if smoke:
    lines.append("\n*Smoke run: the numbers above come from a handful of prompts and are not results.*")
display(Markdown("\n".join(lines)))
