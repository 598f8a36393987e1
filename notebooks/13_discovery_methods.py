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
#     estimate_s: 227
# ---

# %% [markdown]
# # Which discovery method to trust
#
# The chapters find circuits with two node methods: the paper's pruning **sweep** (each head and MLP tried
# once, removed when the circuit still keeps the threshold) and the **fast** method (components ranked by
# integrated-gradient attribution towards the all-ablated model, then pruned); chapter 8 scores edges with
# **EAP-IG**. Each of them ranks the components, so each can be judged the way MIB (Mueller et al. 2025)
# judges circuit methods: keep the top-k components of the ranking for k from 1 % to 100 % of all heads and
# MLPs, ablate everything else, and measure the circuit's **normalised faithfulness**
# f = (m(C) - m(empty)) / (m(full) - m(empty)). Two areas summarise the curve (MIB's definitions):
#
# - **CPR** (higher is better): the area under f, components ranked by signed score;
# - **CMD** (lower is better, 0 ideal): the area under |1 - f|, components ranked by absolute score.
#
# The linear areas weigh the large circuits most (k from 20 to 100 % is 80 % of the axis), so each is also
# given over log k (`cpr_log`, `cmd_log`: the mean over orders of magnitude). A seeded **random** ranking is
# the floor. Every ranking is chosen on a task's **discovery** prompts and its curve measured on
# **held-out** prompts from a sequence-disjoint split (no held-out prompt continues a sequence the ranking
# saw). A method's cost is the forward passes its ranking took (a backward pass counts as one).
#
# A curve says how faithful a method's circuits are, not whether they are *the* circuit. For that the
# chapter ends on a hand-built model whose circuit is known and has what real circuits have and the simple
# planted model of chapter 9 lacks: a **backup** head that takes over when the primary head is ablated, a
# **negative** head that writes against the answer, and a distractor that **does reach the logits** (it
# moves every member's logit together). Which methods recover it — and does chapter 10's knockout
# machinery find the backup?

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: one task, few prompts and fractions; numbers are not results
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
tasks = ["numbers", "number_words", "months", "greater_than"]  # numbers falls back to digits where refused
template = "comma"  # prompt template of the sequence tasks (comma: the most distinct sequences per side, see below)
n_prompts = 12  # prompts per split role before filtering (discovery and held-out each)
seed = 0  # dataset seed (the split's partition), random ranking seed
methods = ["sweep", "fast", "eap-ig", "random"]  # node-ranking methods compared
sweep_tasks = ["months"]  # tasks that also get the sweep (each component tried once: the costly method)
threshold = 0.8  # the sweep's and the fast method's circuit threshold (fraction of the full metric)
ig_steps = 3  # integration steps of the fast method's attribution ranking
eap_ig_steps = 2  # integration steps of EAP-IG
fractions = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]  # circuit sizes (fraction of all heads and MLPs)
null_draws = 99  # random rankings each method's CPR and CMD is compared with (seeds 0 .. null_draws - 1)
null_tasks = ["months"]  # tasks that get the null (None: every task; measured: months 61 s, numbers 238 s on one core)
planted_prompts = 24  # prompts on the planted model
planted_ig_steps = 5  # integration steps of the fast method and EAP-IG on the planted model (tiny: steps are cheap)

# %%
import time

import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.options import SPLIT_ROLES
from seqcirc_utils.core.result_records import DiscoveryMethods
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import sort_components
from seqcirc_utils.discovery.pipeline import build_or_skip, split_discovery_datasets
from seqcirc_utils.evaluation.methods import (
    check_methods,
    curve_rows,
    method_curves,
    method_nulls,
    null_rows,
    planted_method_table,
    rank_components,
)
from seqcirc_utils.evaluation.planted import build_backup_planted_model, planted_dataset
from seqcirc_utils.mechanisms.knockout import KnockoutAblator, backup_table, circuit_of, compensation
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.headlines import BEATS, MIN_DRAWS, verdict
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import sequence_overlap

figures = plots.enable_offline()  # this chapter's figure numbers
methods = check_methods(methods)
if smoke:
    tasks, n_prompts, sweep_tasks = ["months"], min(n_prompts, 8), []
    fractions, ig_steps, eap_ig_steps, planted_prompts = [0.05, 0.2, 1.0], 2, 1, min(planted_prompts, 12)
    null_draws = min(null_draws, 19)
    display(
        smoke_note(
            f"tasks {tasks}, {n_prompts} prompts per role, fractions {fractions}, no sweep, {null_draws} random "
            "rankings (too few for a p-value)"
        )
    )
if null_tasks is None:
    null_tasks = list(tasks)

# %% [markdown]
# ## The data: discovery and held-out prompts per task
#
# Each task's prompts come from the two sides of one seeded partition of its sequences (for `numbers`, the
# two-digit sequences; for greater-than, the start years), each filtered to prompts the model answers
# (greater-than: a year token). `numbers` is the digits task of a tokenizer that splits numbers into
# digits (SmolLM2); where a tokenizer spells two-digit numbers as one token (GPT-2) the task is refused and
# `digits` is used instead. The sequence tasks use the `comma` template (`January, February, March, April,`):
# of the templates it gives the most distinct sequences on both sides (`months` has 8 sequences of four
# members in all, so at most 4 per side; `pure` leaves 2 and 1 of them after the filter and no `number_words`
# prompt at all, `among_words` 2 and 3), and its prompts are short. Without fillers, prompts of one sequence
# are identical: `months` and `number_words` have 12 prompts per side but only as many *distinct* prompts as
# sequences (3 or 4), so everything said about them rests on 3 or 4 sequences.

# %%
t_start = time.perf_counter()
lm, info = load_model(model, device=device)


def build(task: str):
    return split_discovery_datasets(
        lm, model, task, roles=SPLIT_ROLES, seed=seed, template=template, n=n_prompts, prefix=prefix, min_prompts=4
    )


splits, skipped = build_or_skip(build, tasks)
if "numbers" in skipped and "digits" not in tasks:
    more, more_skipped = build_or_skip(build, ["digits"])
    splits |= more
    skipped |= more_skipped
split_rows = [
    {
        "task": task,
        "role": role,
        "n_prompts": len(ds),
        "n_sequences": ds.n_sequences,
        "overlap": sequence_overlap(ds, roles["discovery" if role == "heldout" else "heldout"]),
    }
    for task, roles in splits.items()
    for role, ds in roles.items()
]
reader_table(
    pd.DataFrame(split_rows),
    [
        Column("task", "task"),
        Column("role", "role"),
        Column("n_prompts", "prompts", "int"),
        Column("n_sequences", "distinct sequences", "int"),
        Column("overlap", "sequences shared with the other role", "int"),
    ],
)
if skipped:
    display(Markdown("Skipped: " + "; ".join(f"`{t}` ({why})" for t, why in skipped.items())))

# %% [markdown]
# ## Faithfulness curves
#
# The sweep is the expensive method (it tries every one of the model's heads and MLPs at least once, one
# forward pass each), so by default it runs on the `months` task only (short prompts; a large part of this
# chapter's time); the fast method, EAP-IG and the random ranking run on every task. `months` and
# `number_words` rest on 3 or 4 distinct held-out sequences (see the table above): read their curves as
# illustrations of these few sequences, not as measurements of the task; `numbers` and `greater_than` have
# 10 and 12.

# %%
rows, curves, rankings_of, heldout_of = [], {}, {}, {}
for task, roles in list(splits.items()):
    try:
        discovery = Ablator(lm, info, roles["discovery"])
        heldout = Ablator(lm, info, roles["heldout"])
        ranked = [
            rank_components(discovery, m, threshold=threshold, ig_steps=ig_steps, eap_ig_steps=eap_ig_steps, seed=seed)
            for m in methods
            if m != "sweep" or task in sweep_tasks
        ]
        curves[task] = method_curves(heldout, ranked, fractions=fractions, seed=seed)
    except SeqcircError as err:  # e.g. a faithfulness denominator whose interval includes 0
        skipped[task] = str(err)
        continue
    rankings_of[task], heldout_of[task] = ranked, heldout
    rows += curve_rows(task, curves[task], ranked)
table = pd.DataFrame(rows)
reader_table(
    table,
    [
        Column("task", "task"),
        Column("method", "method"),
        Column("cpr", "CPR (area under f; higher is better)", "number", 2),
        Column("cmd", "CMD (area under |1 - f|; lower is better)", "number", 2),
        Column("cpr_log", "CPR over log k", "number", 2),
        Column("cmd_log", "CMD over log k", "number", 2),
        Column("forward_passes", "ranking cost (forward passes)", "int"),
        Column("n_prompts", "held-out prompts", "int"),
    ],
)

# %%
points = pd.DataFrame(
    [
        {"task": task, "method": m, "fraction": 100 * x, "components": k, "faithfulness": f, "curve": "signed (CPR)"}
        for task, by in curves.items()
        for m, c in by.items()
        for x, k, f in zip(c.fractions, c.sizes, c.faithfulness_signed)
    ]
    + [
        {"task": task, "method": m, "fraction": 100 * x, "components": k, "faithfulness": f, "curve": "absolute (CMD)"}
        for task, by in curves.items()
        for m, c in by.items()
        for x, k, f in zip(c.fractions, c.sizes, c.faithfulness_abs)
    ]
)
figures.figure(
    alt.Chart(points[points["curve"] == "signed (CPR)"])
    .mark_line(point=True)
    .encode(
        x=alt.X("fraction:Q", scale=alt.Scale(type="log"), title="circuit size (% of heads and MLPs, log scale)"),
        y=alt.Y("faithfulness:Q", title="normalised faithfulness f (held out)"),
        color=alt.Color("method:N"),
        tooltip=["task", "method", "components", alt.Tooltip("faithfulness:Q", format=".2f")],
    )
    .properties(width=220, height=160)
    .facet(facet=alt.Facet("task:N"), columns=2),
    "Faithfulness of each method's top-k circuit on held-out prompts, k from 1 % to 100 % of the model's heads "
    "and MLPs (signed ranking: the CPR curve). 1 is the full model, 0 everything ablated; a curve above 1 is "
    "a circuit that beats the full model (it dropped components that work against the answer).",
)

# %% [markdown]
# ## Against random rankings
#
# A curve's areas mean little without a floor: how high does a ranking's CPR go by chance? Each method's
# CPR and CMD on the held-out prompts is compared with those of `null_draws` seeded random rankings
# (`evaluation.methods.method_nulls`; seeds 0 to `null_draws - 1`, the same prompts, means and circuit
# sizes). The p-value is one-sided in the direction in which the method beats random: for CPR
# (1 + #{random CPR >= the method's}) / (n + 1), for CMD (1 + #{random CMD <= the method's}) / (n + 1); with 99
# draws the smallest p is 0.01. The `random` method's ranking (seed `seed`) is one of the draws, so its p is a
# check (it should look like any draw), not a claim. A random ranking's curve costs one forward pass per
# circuit size (six per draw), so the null is run on the tasks in `null_tasks` only: by default `months`, the
# task with the sweep (short prompts, few distinct ones, several rankings scored to a pass: 61 s for 99 draws,
# measured), not `numbers` (238 s, measured: 10 held-out sequences of 18 tokens), `greater_than` (about as
# much) and `number_words`: beyond this chapter's share of the book's budget; pass `null_tasks = None` for all.
# Its p-values say that a ranking beats random rankings *on these 3 or 4 held-out sequences*; the tasks left out
# are not tested.

# %%
nulls, null_table_rows = {}, []
for task in [t for t in curves if t in null_tasks]:
    nulls[task] = method_nulls(heldout_of[task], curves[task], n_draws=null_draws, seed=0)
    null_table_rows += null_rows(task, nulls[task])
null_table = pd.DataFrame(null_table_rows)
if len(null_table):
    reader_table(
        null_table,
        [
            Column("task", "task"),
            Column("method", "method"),
            Column("cpr", "CPR", "number", 2),
            Column("cpr_null_mean", "mean CPR of the random rankings", "number", 2),
            Column("cpr_p", "p (CPR above random)", "number", 3),
            Column("cmd", "CMD", "number", 2),
            Column("cmd_null_mean", "mean CMD of the random rankings", "number", 2),
            Column("cmd_p", "p (CMD below random)", "number", 3),
        ],
    )
    cpr_points = pd.DataFrame(
        [
            {"task": t, "kind": "random ranking", "method": "random rankings", "cpr": v}
            for t, by in nulls.items()
            for v in next(iter(by["cpr"].values())).null
        ]
        + [
            {"task": t, "kind": "method", "method": m, "cpr": nd.observed}
            for t, by in nulls.items()
            for m, nd in by["cpr"].items()
        ]
    )
    base = alt.Chart().encode(x=alt.X("cpr:Q", title="CPR (held out)"))
    figures.figure(
        alt.layer(
            base.mark_tick(opacity=0.4, color="grey").transform_filter(alt.datum.kind == "random ranking"),
            base.mark_point(size=90, filled=True)
            .encode(color=alt.Color("method:N"), tooltip=["method", alt.Tooltip("cpr:Q", format=".2f")])
            .transform_filter(alt.datum.kind == "method"),
            data=cpr_points,
        )
        .properties(width=420, height=40)
        .facet(row=alt.Row("task:N")),
        f"Each method's CPR (dots) among the CPRs of {null_draws} random rankings (grey ticks), on the held-out "
        "prompts of the tasks that got the null.",
    )

# %% [markdown]
# ## Ground truth: a planted circuit with a backup, a negative head and a logit distractor
#
# A 3-layer transformer with hand-set weights continues month sequences
# (`seqcirc_utils.evaluation.planted.build_backup_planted_model`): a previous-token head `L0.H0` feeds the
# *primary* add-two head `L1.H0`, and `MLP1` looks up the successor of the current token, each writing half of
# the answer. The *backup* head `L2.H0` reads whether the primary's answer is present in the residual stream:
# when it is, the backup attends to an empty first position and writes nothing; when the primary is
# mean-ablated, it attends to its own position, reads the previous-token signal and writes 80 % of the
# primary's share. The *negative* head `L1.H1` writes against the answer (30 % of a share). The *logit
# distractor* `L2.H1` moves every month's logit by the same token-dependent amount (and one non-month token's
# down): it changes the logits and the probabilities but not the logit difference. The planted circuit is the
# previous-token head, the primary, the MLP and the backup. Precision: the share of a method's found
# components that are planted; recall: the share of planted components found; ROC AUC: how well the method's
# scores separate planted from other components (1 perfect, 0.5 chance). The sweep and the fast method find
# their circuit at the threshold; EAP-IG and random keep their top four nodes. On this tiny model the
# attribution methods integrate over `planted_ig_steps` steps (EAP-IG's ranking here is sensitive to the
# number of steps: with 2 it puts a distractor among its top four).

# %%
pm = build_backup_planted_model()
planted = planted_method_table(
    pm,
    methods,
    threshold=threshold,
    n_prompts=planted_prompts,
    seed=seed,
    ig_steps=planted_ig_steps,
    eap_ig_steps=planted_ig_steps,
)
reader_table(
    planted,
    [
        Column("method", "method"),
        Column("found", "found components"),
        Column("precision", "precision", "number", 2),
        Column("recall", "recall", "number", 2),
        Column("backup_found", "backup found"),
        Column("negative_found", "negative head found"),
        Column("roc_auc", "ROC AUC", "number", 2),
        Column("forward_passes", "forward passes", "int"),
    ],
)

# %% [markdown]
# ### Does the knockout find the backup?
#
# Chapter 10's machinery on the planted model: the primary head is knocked out (mean-ablated throughout),
# each head's direct logit attribution is read before and after with the clean run's final-norm scale frozen
# (`mechanisms.knockout.compensation`), and the circuit of the knocked-out model is found again with the fast
# method (`KnockoutAblator`): a backup shows as a head whose direct effect rises and which joins the circuit.

# %%
primary, backup = pm.with_role("primary")[0], pm.with_role("backup")[0]
planted_ds = planted_dataset(pm, n=planted_prompts, seed=seed)
planted_ab = Ablator(pm.model, pm.info, planted_ds)
comp = compensation(pm.model, planted_ds, planted_ab, [primary])
others = comp[~comp["knocked_out"]].sort_values("change", ascending=False, kind="stable").reset_index(drop=True)
backup_row = others[others["component"] == str(backup)].iloc[0]
intact = circuit_of(planted_ab, threshold, minimal=True)
ko_ab = KnockoutAblator(pm.model, pm.info, planted_ds, [primary])
knocked = circuit_of(ko_ab, threshold, minimal=True)
membership = backup_table(intact.components, knocked.components, [primary])
joins = membership[membership["status"] == "joins"]["component"].tolist()
reader_table(
    others.head(4),
    [
        Column("component", "head"),
        Column("dla_clean", "direct effect, intact (nats)", "number", 2),
        Column("dla_knockout", "direct effect, primary knocked out (nats)", "number", 2),
        Column("change", "change (nats)", "number", 2),
    ],
)
backup_result = {
    "primary": str(primary),
    "backup": str(backup),
    "dla_clean": float(backup_row["dla_clean"]),
    "dla_knockout": float(backup_row["dla_knockout"]),
    "change": float(backup_row["change"]),
    "rank": int(others.index[others["component"] == str(backup)][0]) + 1,
    "found": str(backup) in joins,
    "joins": joins,
    "intact_circuit": [str(c) for c in sort_components(intact.components)],
    "knocked_out_circuit": [str(c) for c in sort_components(knocked.components)],
    "logit_diff_clean": comp.attrs["logit_diff_clean"],
    "logit_diff_knockout": comp.attrs["logit_diff_knockout"],
}

# %%
write_json_atomic(
    results_dir(model) / DiscoveryMethods.file,
    DiscoveryMethods(
        model=model,
        smoke=smoke,
        parameters={
            "template": template,
            "n_prompts": n_prompts,
            "seed": seed,
            "prefix": prefix,
            "sweep_tasks": sweep_tasks,
            "threshold": threshold,
            "ig_steps": ig_steps,
            "eap_ig_steps": eap_ig_steps,
            "fractions": fractions,
            "planted_prompts": planted_prompts,
            "null_draws": null_draws,
            "null_tasks": null_tasks,
            "planted_ig_steps": planted_ig_steps,
        },
        tasks=list(curves),
        skipped=skipped,
        methods=methods,
        table=frame_records(table),
        curves=curves,
        datasets={t: {role: ds.to_json() for role, ds in roles.items()} for t, roles in splits.items() if t in curves},
        split=split_rows,
        nulls=nulls,
        null_table=frame_records(null_table),
        planted=frame_records(planted),
        planted_model={
            "name": pm.info.name,
            "roles": pm.roles,
            "planted": [str(c) for c in sort_components(pm.planted)],
            "full_logit_diff": float(planted_ab.full_metric),
        },
        backup=backup_result,
        seconds=time.perf_counter() - t_start,
    ),
)

# %%
lines = []
for task in curves:
    mine = table[table["task"] == task].set_index("method")
    best = mine["cpr"].idxmax()
    lines.append(
        f"On {task}, {best} has the highest CPR ({mine.loc[best, 'cpr']:.2f}; "
        + ", ".join(f"{m} {r.cpr:.2f}" for m, r in mine.iterrows() if m != best)
        + f") and {mine['cmd'].idxmin()} the lowest CMD ({mine['cmd'].min():.2f})."
    )
for task, by in nulls.items():
    beats = [m for m, nd in by["cpr"].items() if m != "random" and verdict(nd.p_value, nd.n_draws) == BEATS]
    lines.append(
        f"Against {null_draws} random rankings on {task}'s held-out prompts, "
        + "; ".join(
            f"{m}'s CPR is at the {nd.observed_percentile:.0f}th percentile (p = {nd.p_value:.3f})"
            for m, nd in by["cpr"].items()
            if m != "random"
        )
        + (
            f": {', '.join(beats)} beat{'s' if len(beats) == 1 else ''} random rankings"
            if beats
            else f": no method beats random rankings ({null_draws} draws; a p-value needs at least {MIN_DRAWS})"
            if null_draws < MIN_DRAWS
            else ": no method is distinguishable from random rankings"
        )
        + f" (on {next(iter(by['cpr'].values())).n_clusters} held-out sequences)."
    )
exact = planted[(planted["precision"] == 1) & (planted["recall"] == 1)]["method"].tolist()
lines.append(
    f"On the planted model, {', '.join(exact) if exact else 'no method'} recover"
    f"{'s' if len(exact) == 1 else ''} the whole planted circuit, backup included ("
    + "; ".join(f"{r.method}: precision {r.precision:.2f}, recall {r.recall:.2f}" for r in planted.itertuples())
    + ")."
)
lines.append(
    f"Knocking out the primary head {primary} raises the backup {backup}'s direct effect by "
    f"{backup_result['change']:.2f} nats (rank {backup_result['rank']} among the other heads), and the backup "
    + ("joins" if backup_result["found"] else "does not join")
    + " the knocked-out model's circuit."
)
display(Markdown(" ".join(lines)))
