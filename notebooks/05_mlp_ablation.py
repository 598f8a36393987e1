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
#     estimate_s: 144
# ---

# %% [markdown]
# # What the MLPs do
#
# In GPT-2 small the paper found a few MLPs that sequence continuation cannot do without (MLP0,
# MLP9). Here we ablate each MLP alone from the full model (mean ablation from the corrupted
# prompts, every position) and report the percentage of the full logit difference that remains,
# per task; then, for the MLP the first task needs most, we rank its neurons by attribution
# patching and ablate the top ones; finally we ask **which heads the important MLPs rely on**, by
# path patching head -> MLP edges (only that path patched).
#
# MLP0 is treated as part of the **extended embedding**: it sits right after the token embedding,
# reads (almost) only the token itself, and the successor-heads analysis folds it into the
# embedding too (see the successor-heads chapter). So the head -> MLP question is asked of the most
# important MLPs *after* it, the mid and late MLPs that have heads upstream. A `direction`
# parameter runs the tasks decreasing instead, and a length study ablates every MLP of decreasing
# digits at each sequence length shown.
#
# **Digits and numbers.** On SmolLM2 only `0`-`9` are single tokens, so `digits` rests on a handful of
# distinct sequences; the task `numbers` (two-digit numbers, `23 24 25 26 2` -> `7`: 86 sequences) is
# ablated beside it. A tokenizer whose two-digit numbers are single tokens (GPT-2) refuses `numbers`
# (there it is `digits`); the first cell below says which tasks were used.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per task before filtering (digits and months have 7-8 sequences: more prompts repeat them)
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
tasks = [
    "digits",
    "numbers",
    "number_words",
    "months",
]  # tasks whose MLPs are ablated (one the tokenizer refuses is left out)
template = "among_words"  # prompt template
top_neurons = 20  # neurons of the key MLP ablated together
threshold = 0.8  # threshold of the circuit inside which head -> MLP edges are path patched
circuit_method = "fast"  # how that circuit is found ("fast" or "sweep")
minimal = True  # refine fast-method circuits to 1-minimal (one pass per kept component; smoke runs skip it)
direction = "increasing"  # sequence direction of the tasks (increasing | decreasing)
key_mlps = 2  # per task, the most important MLPs after MLP0 (by single ablation) whose input is path patched
patch_top = 5  # per key MLP, the head -> MLP edges (ranked by edge attribution) path patched exactly
patch_within = "model"  # "model": patch in the full model; "circuit": inside each task's circuit at threshold (slower)
length_task = "digits"  # the length study: this task ...
length_directions = ["decreasing"]  # ... in these directions ([] skips the study) ...
length_values = [3, 5]  # ... with these numbers of members shown, every MLP ablated alone
length_prompts = 16  # prompts per (direction, length) before filtering to correct answers

# %%
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import ParameterError, SeqcircError
from seqcirc_utils.core.result_records import MlpAblation
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import Circuit, Component
from seqcirc_utils.discovery.edges.attribution import edge_attribution
from seqcirc_utils.discovery.edges.patching import edge, edge_effects
from seqcirc_utils.discovery.pipeline import discover, discovery_dataset, score_columns
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import MAX_COLUMNS, Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.scoring.ablation import AblatorCache, single_component_effects
from seqcirc_utils.scoring.attribution import attribution_scores

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, tasks, top_neurons, minimal = min(n_prompts, 12), tasks[:2], min(top_neurons, 5), False
    key_mlps, patch_top, length_values, length_prompts = (
        1,
        min(patch_top, 2),
        length_values[-1:],
        min(length_prompts, 12),
    )
    display(
        smoke_note(
            f"{n_prompts} prompts, tasks {tasks}, length study {length_values}, circuits not refined to 1-minimal"
        )
    )
if direction not in ("increasing", "decreasing") or patch_within not in ("model", "circuit"):
    raise ParameterError(
        f"direction must be increasing|decreasing (got {direction!r}), patch_within model|circuit "
        f"(got {patch_within!r})"
    )

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
datasets, refused = {}, {}
for t in tasks:
    try:
        datasets[t] = discovery_dataset(
            lm, model, t, template=template, direction=direction, n=n_prompts, seed=seed, prefix=prefix
        )
    except SeqcircError as err:  # e.g. numbers on a tokenizer whose two-digit numbers are single tokens
        refused[t] = str(err)
tasks = list(datasets)
display(
    Markdown(
        "Tasks: "
        + ", ".join(f"**{t}** ({len(ds)} prompts from {ds.n_sequences} sequences)" for t, ds in datasets.items())
        + "."
        + "".join(f" **{t}** is left out: {why}" for t, why in refused.items())
    )
)
effects = pd.concat(
    [
        single_component_effects(lm, info, ds, info.mlps, progress=False, ablators=ablators).assign(task=t)
        for t, ds in datasets.items()
    ]
)
effects["kept_%"] = 100 * effects["fraction"]
reader_table(
    effects.pivot(index="component", columns="task", values="kept_%").loc[[str(m) for m in info.mlps]].reset_index(),
    [Column("component", "MLP ablated")]
    + [Column(t, f"{t}: logit difference kept (% of full)", "percent") for t in tasks[: MAX_COLUMNS - 1]],
    caption="Share of the full logit difference left when one MLP alone is mean-ablated, per task (layer order). "
    "Look for values far below 100 % (or below zero): the MLPs a task cannot do without.",
)

# %%
figures.figure(
    plots.bar_chart(
        effects,
        x="component",
        y="kept_%",
        color="task",
        sort=[str(m) for m in info.mlps],
        y_title="% of full logit difference kept",
        title=f"{model}: ablating one MLP at a time",
    ),
    "Share of the full logit difference left when one MLP alone is mean-ablated, per MLP (layer order) and "
    "task. Bars far below 100 % (or below zero) mark the MLPs a task cannot do without.",
)

# %% [markdown]
# ## Neurons of the key MLP
#
# The key MLP is the one whose ablation costs the first task most. Its neurons are ranked by
# attribution patching (activation difference x gradient, in logit-difference units; negative =
# ablating the neuron hurts); then the top neurons are mean-ablated together and, for comparison,
# the same number of the least important neurons.

# %%
first = tasks[0]
key = effects[effects["task"] == first].sort_values("fraction").iloc[0]
key_mlp = Component(int(key["layer"]), "mlp")
ab = ablators.get(lm, info, datasets[first])
neurons = [Component(key_mlp.layer, "neuron", i) for i in range(info.d_mlp)]
neuron_attr = attribution_scores(ab, neurons).sort_values()
worst = [Component(key_mlp.layer, "neuron", int(n.split(".N")[1])) for n in neuron_attr.index[:top_neurons]]
least = [
    Component(key_mlp.layer, "neuron", int(n.split(".N")[1]))
    for n in neuron_attr.abs().sort_values().index[:top_neurons]
]
neuron_rows = pd.DataFrame(
    [
        {"ablated": f"top {top_neurons} neurons of {key_mlp}", "kept_%": 100 * ab.score_ablated(worst)},
        {"ablated": f"{top_neurons} least important neurons", "kept_%": 100 * ab.score_ablated(least)},
        {"ablated": f"all of {key_mlp}", "kept_%": 100 * float(key["fraction"])},
    ]
)
display(
    reader_table(
        neuron_attr.head(10).rename("attribution").rename_axis("neuron").reset_index(),
        [Column("neuron", "neuron"), Column("attribution", "attribution (logit difference)", "number", 3)],
        caption=f"The 10 neurons of {key_mlp} with the most negative attribution on {first}: ablating them is "
        "estimated to hurt the logit difference most.",
    )
)
reader_table(
    neuron_rows,
    [Column("ablated", "ablated"), Column("kept_%", "logit difference kept (% of full)", "percent")],
    caption=f"Ablating the top neurons of {key_mlp} together, against as many of its least important neurons and "
    "the whole MLP: how much of the whole MLP's cost do the top neurons carry?",
)

# %% [markdown]
# ## Which heads do the important MLPs rely on?
#
# Per task, the `key_mlps` MLPs after MLP0 whose single ablation costs the most. Every head ->
# MLP edge into them (heads of the same or earlier layers) is first ranked by edge attribution
# (one forward and one backward pass), then the `patch_top` edges it ranks as most needed are path
# patched exactly, one at a time: the head's mean-ablated output replaces its clean output *only in
# that MLP's input*. With `patch_within="model"` everything else stays intact (the full model);
# with `"circuit"` it happens inside the task's circuit found at `threshold`. The effect is the
# change in score (points of the full logit difference; negative = the MLP needs that head).

# %%
later = effects[effects["layer"] > 0].sort_values("fraction")
key_by_task = {t: [Component(int(l), "mlp") for l in later[later["task"] == t]["layer"].head(key_mlps)] for t in tasks}
patch_rows, circuit_rows = [], []
for t in tasks:
    ab = ablators.get(lm, info, datasets[t])
    comps = set(info.components)
    if patch_within == "circuit":
        records, _, ab = discover(
            lm,
            info,
            model,
            t,
            DiscoveryConfig([threshold], method=circuit_method, fast={"minimal": minimal}),
            template=template,
            direction=direction,
            n=n_prompts,
            seed=seed,
            prefix=prefix,
            progress=False,
        )
        comps = set(Circuit.from_lists(records[0]["heads"], records[0]["mlps"]).components) | set(key_by_task[t])
        circuit_rows.append(
            {
                "task": t,
                "threshold": threshold,
                "heads": len(records[0]["heads"]),
                "mlps": len(records[0]["mlps"]),
                **score_columns(records[0]),
            }
        )
    candidates = [edge(h, m, "mlp") for m in key_by_task[t] for h in info.heads if h in comps and h.layer <= m.layer]
    attr = edge_attribution(ab, comps, candidates, progress=False)
    chosen = [
        e for m in key_by_task[t] for e in sorted((e for e in candidates if e.receiver == m), key=attr.get)[:patch_top]
    ]
    exact = edge_effects(ab, comps, chosen, progress=False)
    exact["attribution"] = [attr[e] / ab.full_metric for e in chosen]
    patch_rows.append(exact.assign(task=t, candidates=sum(e.receiver in set(key_by_task[t]) for e in candidates)))
head_to_mlp = pd.concat(patch_rows, ignore_index=True) if patch_rows else pd.DataFrame()
head_to_mlp["effect_points"] = 100 * head_to_mlp["effect"]
head_to_mlp["attribution_points"] = 100 * head_to_mlp["attribution"]
head_to_mlp = head_to_mlp.sort_values(["task", "receiver", "effect"], kind="stable").reset_index(drop=True)
if circuit_rows:
    display(
        reader_table(
            pd.DataFrame(circuit_rows),
            [
                Column("task", "task"),
                Column("threshold", "threshold (% of full)", "fraction"),
                Column("score_%", "paper's ratio, in-sample [95 % CI]", "percent", interval="score_ci95"),
                Column(
                    "faithfulness_%",
                    "normalised faithfulness, in-sample [95 % CI]",
                    "percent",
                    interval="faithfulness_ci95",
                ),
                Column("sequences", "discovery sequences", "int"),
                Column("heldout_%", "paper's ratio, held-out [95 % CI]", "percent", interval="heldout_ci95"),
                Column(
                    "heldout_faithfulness_%",
                    "normalised faithfulness, held-out [95 % CI]",
                    "percent",
                    interval="heldout_faithfulness_ci95",
                ),
                Column("heldout_sequences", "held-out sequences (disjoint)", "int"),
            ],
            caption="The circuits the head -> MLP edges are patched inside; few sequences give small-sample estimates.",
        )
    )
reader_table(
    head_to_mlp,
    [
        Column("task", "task"),
        Column("receiver", "MLP"),
        Column("sender", "head"),
        Column("effect_points", "effect of patching this path only (points of the full logit difference)", "number", 1),
        Column("attribution_points", "edge attribution estimate (points)", "number", 1),
        Column("candidates", "head -> MLP edges ranked", "int"),
    ],
    caption="The head -> MLP edges path patched exactly, per task and key MLP. Look for large negative effects: "
    "the heads an MLP needs; compare with the attribution estimate that chose them.",
)

# %% [markdown]
# ## Decreasing digits, by sequence length
#
# Does the model compute a decreasing continuation differently depending on how many members it
# sees? For `length_task` in each of `length_directions` and each length in `length_values`, every
# MLP is ablated alone (as above) on prompts filtered to correct answers.

# %%
length_rows, length_skipped = [], {}
for d in length_directions:
    for n_members in length_values:
        try:
            ds_len = discovery_dataset(
                lm,
                model,
                length_task,
                template=template,
                direction=d,
                length=n_members,
                n=length_prompts,
                seed=seed,
                prefix=prefix,
                min_prompts=4 if smoke else 8,
            )
        except SeqcircError as err:  # too few correct prompts, or no sequence fits the tokenizer
            length_skipped[f"{d}-{n_members}"] = str(err)
            continue
        length_rows.append(
            single_component_effects(lm, info, ds_len, info.mlps, progress=False).assign(
                direction=d, length=n_members, prompts=len(ds_len)
            )
        )
for name, err in length_skipped.items():
    display(Markdown(f"**{length_task} {name} skipped:** {err}"))
by_length = (
    pd.concat(length_rows, ignore_index=True)
    if length_rows
    else pd.DataFrame(columns=["component", "layer", "fraction", "direction", "length", "prompts"])
)
by_length["kept_%"] = 100 * by_length["fraction"]
by_length["config"] = by_length["direction"].str[:3] + "-" + by_length["length"].astype(str)
if len(by_length):
    display(
        figures.figure(
            plots.bar_chart(
                by_length,
                x="component",
                y="kept_%",
                color="config",
                sort=[str(m) for m in info.mlps],
                y_title="% of full logit difference kept",
                title=f"{length_task}: one MLP ablated, by length",
            ),
            f"Share of the full logit difference left when one MLP alone is mean-ablated, {length_task} prompts per "
            "(direction, members shown) (colour). An MLP that matters at one length and not another marks a change in how "
            "the continuation is computed.",
        )
    )
if len(by_length):
    by_config = by_length.pivot_table(index="component", columns="config", values="kept_%", sort=False).reset_index()
    config_names = dict(
        zip(by_length["config"], by_length["direction"] + ", " + by_length["length"].astype(str) + " members")
    )
    display(
        reader_table(
            by_config,
            [Column("component", "MLP ablated")]
            + [
                Column(c, f"{config_names[c]}: logit difference kept (% of full)", "percent")
                for c in list(config_names)[: MAX_COLUMNS - 1]
            ],
            caption=f"{length_task}: share of the full logit difference left when one MLP alone is mean-ablated, per "
            "direction and number of members shown. An MLP that matters at one length and not another marks a change.",
        )
    )

# %%
_ = write_json_atomic(
    results_dir(model) / MlpAblation.file,
    MlpAblation(
        model=model,
        template=template,
        direction=direction,
        smoke=smoke,
        mlp_effects=frame_records(effects),
        key_mlp=str(key_mlp),
        neuron_attribution_top=neuron_attr.head(50).to_dict(),
        neuron_ablation=frame_records(neuron_rows),
        head_to_key_mlp=frame_records(
            head_to_mlp[(head_to_mlp["task"] == tasks[0]) & (head_to_mlp["receiver"] == str(key_by_task[tasks[0]][0]))]
            if key_by_task[tasks[0]]
            else head_to_mlp.iloc[:0]
        ),
        key_mlps={t: [str(m) for m in ms] for t, ms in key_by_task.items()},
        patch_within=patch_within,
        head_to_mlp=frame_records(head_to_mlp),
        length_study={
            "task": length_task,
            "directions": length_directions,
            "lengths": length_values,
            "n_prompts": length_prompts,
            "skipped": length_skipped,
            "mlp_effects": frame_records(by_length.drop(columns=["config"])),
        },
    ),
)

# %%
mlp_table = effects.pivot(index="component", columns="task", values="kept_%")
crucial = {t: mlp_table[t].nsmallest(3) for t in tasks}
lines = [f"{t}: " + ", ".join(f"{c} ({v:.0f} %)" for c, v in s.items()) for t, s in crucial.items()]
edge_lines = []
for (t, m), g in head_to_mlp.groupby(["task", "receiver"], sort=False):
    best = g.sort_values("effect").iloc[0]
    edge_lines.append(
        f"{m} in {t} ({float(mlp_table.loc[m, t]):.0f} % kept without it) relies most on "
        f"{best['sender']} ({best['effect_points']:.1f} points when only that path is patched, "
        f"of {len(g)} patched)"
    )
where = "in the full model" if patch_within == "model" else f"inside each task's {100 * threshold:.0f} % circuit"
length_text = ""
if len(by_length):
    worst = by_length[by_length["layer"] > 0].sort_values("kept_%").groupby("config", sort=False).head(1)
    length_text = (
        f" For {length_task} by length, the MLP after MLP0 each configuration can least do without is "
        + ", ".join(
            f"{c} at {cfg} ({v:.0f} % kept)" for c, cfg, v in zip(worst["component"], worst["config"], worst["kept_%"])
        )
        + "."
    )
display(
    Markdown(
        f"({direction} sequences.) The MLPs each task can least do without (% of the logit difference kept when ablated "
        "alone) are " + "; ".join(lines) + f". Ablating the top {top_neurons} neurons of {key_mlp} keeps "
        f"{neuron_rows['kept_%'].iloc[0]:.0f} % against {neuron_rows['kept_%'].iloc[1]:.0f} % for the least important ones "
        f"and {neuron_rows['kept_%'].iloc[2]:.0f} % for the whole MLP. Treating MLP0 as part of the extended embedding, "
        f"the head -> MLP edges of the most important later MLPs, path patched {where}: "
        + ("; ".join(edge_lines) if edge_lines else "none could be patched")
        + "."
        + length_text
    )
)
