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
#     estimate_s: 162
# ---

# %% [markdown]
# # Editing a circuit's function with activations
#
# The research plan asks whether the circuit's function can be *edited*: "edit next to prev by
# replacing activations", and "replace digit activations with number-word activations … can this
# difference be added to edit any digit into months?" Two edits (see `seqcirc_utils.mechanisms.editing`):
#
# 1. **next -> prev.** On increasing prompts (`3 4 5 6 ->`), the successor heads' outputs (the same
#    heads as the knockout chapter: highest OV next score, largest single-ablation drop) are replaced,
#    at every position, by their mean over *decreasing* prompts of the same members
#    (`6 5 4 3 ->`). Does the top-1 become the member before the last one shown (`n-1`, here `5`)?
#    Two baselines. The **ablation-only control** replaces the same heads by their mean over
#    *increasing* prompts of the same members: it removes what the heads say about this prompt without
#    adding anything about the other direction, so the edit's effect is its hit rate **above** the
#    control's. And `n_draws` random head sets with as many heads in the same layers, edited the same
#    way (the null: percentile and one-sided p). Since `n-1` is always one of the members shown, a hit
#    may be a plain copy of a prompt token; the tables say how often the top-1 is a token of the prompt.
# 2. **Format steering.** At the residual stream after the top successor head's layer, final
#    position, we add `steer_alpha` times the mean difference between number-word and digit prompts of
#    the same members (`three four five six` minus `3 4 5 6`, averaged over member sets). Does the digit
#    prompt's answer turn into its number word (`7` -> ` seven`)? Likewise digits -> months
#    (`7` -> ` July`). Baselines of the same norm: differences of means of two random halves of the same
#    prompts (each format split evenly between the halves, so no format difference is left), an
#    unrelated difference of means (decreasing minus increasing prompts of the from-format), and
#    isotropic Gaussian directions. A curve over alphas is shown for
#    description only; the claim uses `steer_alpha`, fixed before the run.
#
# **Selection apart from evaluation.** Each task's prompts come in two sequence-disjoint halves (as in
# the knockout chapter). The successor heads are chosen and the steering directions fitted on the
# *selection* half; every edit and steering number below is measured on the *evaluation* half.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per task and split role before filtering to correct answers
n_source = 24  # source and control prompts per task (other / same direction, not filtered), matched by member
seed = 0  # dataset seed (and the random heads and directions)
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: one task, few prompts, draws and alphas; numbers are not results
tasks = [
    "digits",
    "number_words",
    "months",
]  # tasks whose selection prompts choose the successor heads (as in the knockout chapter)
template = "among_words"  # prompt template (target, source and control prompts share it)
n_candidates = 4  # heads with the highest mean OV next score, each ablated alone
n_heads = 2  # of those, the heads with the largest mean single-ablation drop are edited
edit_tasks = ["digits", "number_words"]  # tasks of the next -> prev edit
n_draws = 99  # random head sets (same layers as the edited heads, excluding them) in each edit's null
n_random = 2  # of those, the first few shown beside the edit in the tables
steer_pairs = [["digits", "number_words"], ["digits", "months"]]  # [from format, to format] of the steering
steer_alpha = 1.0  # multiple of the format direction added for the claim (fixed in advance: the full mean difference)
n_steer_draws = 99  # random-halves and Gaussian directions per pair (each kind's null; resumed passes: ~0.1 s a draw)
alphas = [0.0, 0.5, 1.0, 2.0, 4.0]  # the descriptive dose-response curve (format direction only)
steer_layer = None  # residual stream after this block is steered; None: the top successor head's layer

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.options import SELECTION_ROLES
from seqcirc_utils.core.result_records import ActivationEditing
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.discovery.pipeline import build_or_skip, split_discovery_datasets
from seqcirc_utils.mechanisms.editing import (
    dose_response,
    final_residuals,
    format_direction,
    function_edit,
    keyed_mean_difference,
    member_key,
    random_directions,
    random_halves_directions,
    rescaled,
    steering_test,
)
from seqcirc_utils.mechanisms.knockout import CATEGORIES, select_successor_heads
from seqcirc_utils.mechanisms.representations import VALUE_OFFSETS
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.tasks.datasets import make_dataset, sequence_overlap

figures = plots.enable_offline()  # this chapter's figure numbers
bad = [t for t in [*tasks, *edit_tasks, *(f for pair in steer_pairs for f in pair)] if t not in VALUE_OFFSETS]
if bad or any(len(p) != 2 for p in steer_pairs):
    raise ValueError(
        f"tasks, edit_tasks and steer_pairs ([from, to]) use families with member values "
        f"({', '.join(VALUE_OFFSETS)}); got {bad or steer_pairs}"
    )
if not isinstance(n_draws, int) or n_draws < 1 or not 0 <= n_random <= n_draws or n_steer_draws < 1:
    raise ValueError(
        f"need n_draws >= 1, 0 <= n_random <= n_draws and n_steer_draws >= 1; got {n_draws}, {n_random}, {n_steer_draws}"
    )
if steer_alpha <= 0:
    raise ValueError(f"steer_alpha must be a positive multiple of the format direction, got {steer_alpha}")
if smoke:
    tasks = edit_tasks = [tasks[0]]
    steer_pairs, alphas = steer_pairs[:1], [0.0, steer_alpha]
    n_prompts, n_random = min(n_prompts, 12), 1  # n_source kept: the matching needs every member set
    n_draws, n_steer_draws = min(n_draws, 4), min(n_steer_draws, 2)
    n_candidates, n_heads = min(n_candidates, 2), 1
    display(smoke_note(f"tasks {tasks}, {n_prompts} prompts, {n_draws} random head sets, {n_steer_draws} draws"))

# %% [markdown]
# ## The successor heads
#
# Chosen on the selection prompts: the candidates are the heads with the highest OV next score, each
# ablated alone (points of the logit difference lost); the heads with the largest mean drop are edited.

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
opts = dict(template=template, prefix=prefix)
splits, skipped = build_or_skip(  # per task {selection, evaluation}; a task the model cannot do is skipped
    lambda t: split_discovery_datasets(
        lm, model, t, roles=SELECTION_ROLES, seed=seed, n=n_prompts, min_prompts=4 if smoke else 6, **opts
    ),
    [*tasks, *edit_tasks, *(p[0] for p in steer_pairs)],
)
for t, err in skipped.items():
    display(Markdown(f"**{t} skipped:** {err}"))
selection = {t: s["selection"] for t, s in splits.items()}
evaluation = {t: s["evaluation"] for t, s in splits.items()}  # every reported number is measured on these
split_info = {
    "roles": list(SELECTION_ROLES),
    "seed": seed,
    "n_sequences": {t: {r: d.n_sequences for r, d in s.items()} for t, s in splits.items()},
    "n_prompts": {t: {r: len(d) for r, d in s.items()} for t, s in splits.items()},
    "overlap": {t: sequence_overlap(s["selection"], s["evaluation"]) for t, s in splits.items()},
}
candidates, heads = select_successor_heads(
    lm,
    info,
    {t: selection[t] for t in tasks if t in selection},
    n_heads=n_heads,
    n_candidates=n_candidates,
    progress=False,
)
layer = heads[0].layer if steer_layer is None else int(steer_layer)
display(
    Markdown(
        f"Edited heads: **{' '.join(map(str, heads))}**, chosen on the selection prompts; steering after block "
        f"**{layer}**. Prompts answered correctly (selection / evaluation), distinct sequences and shared sequences: "
        + ", ".join(
            f"{t} {len(s['selection'])} / {len(s['evaluation'])} prompts, {s['selection'].n_sequences} / "
            f"{s['evaluation'].n_sequences} sequences, overlap {split_info['overlap'][t]}"
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
        Column("selected", "edited"),
    ],
    caption="The candidate successor heads on the selection prompts: the heads with the largest mean drop are edited.",
)

# %% [markdown]
# ## next -> prev
#
# On each task's evaluation prompts with a member-matched decreasing (source) and increasing (control)
# prompt: `hit` is the share whose top-1 becomes `n-1`, with a 95 % interval (sequences resampled);
# `correct` the share still answering correctly; `in_family` the share whose top-1 is any member;
# `in_prompt` the share whose top-1 is a token already in the prompt; the category columns (as in the
# knockout chapter, `n` = the last member shown) say what the edited model predicts instead.

# %%
edits, edit_meta, effects, edit_nulls = [], [], [], {}
for t in edit_tasks:
    if t not in evaluation:
        continue
    source = make_dataset(lm.tokenizer, t, model_name=model, n=n_source, seed=seed, direction="decreasing", **opts)
    control = make_dataset(lm.tokenizer, t, model_name=model, n=n_source, seed=seed, direction="increasing", **opts)
    try:
        res = function_edit(
            ablators.get(lm, info, evaluation[t]),
            source,
            control,
            heads,
            -1,
            n_draws=n_draws,
            n_show=n_random,
            seed=seed,
        )
    except SeqcircError as err:
        skipped[f"{t} edit"] = str(err)
        display(Markdown(f"**{t}, next -> prev skipped:** {err}"))
        continue
    label = "next -> prev"
    edits.append(res.table.assign(task=t, edit_kind=label, target="increasing", n_matched=res.n_matched))
    edit_meta.append({"task": t, "edit_kind": label, "n_matched": res.n_matched, "n_target": res.n_target})
    effects.append({"task": t, "edit_kind": label} | res.effect)
    edit_nulls[t] = res.null
edit_columns = ["task", "edit", "heads", "hit", "in_family", "in_prompt", "hit_in_prompt", *CATEGORIES]
edit_table = pd.concat(edits, ignore_index=True) if edits else pd.DataFrame(columns=[*edit_columns, "edit_kind"])
effect_table = pd.DataFrame(effects)
if len(effect_table):
    effect_table["random_median"] = [edit_nulls[t].null_p50 for t in effect_table["task"]]
    effect_table["random_p95"] = [edit_nulls[t].null_p95 for t in effect_table["task"]]
    effect_table["percentile"] = [edit_nulls[t].observed_percentile for t in effect_table["task"]]
    effect_table["p"] = [edit_nulls[t].p_value for t in effect_table["task"]]
    display(
        reader_table(
            effect_table,
            [
                Column("task", "task"),
                Column("n_matched", "evaluation prompts", "int"),
                Column("hit", "edit: hit rate", "fraction"),
                Column("control_hit", "ablation-only control: hit rate", "fraction"),
                Column(
                    "effect",
                    "hit rate above the control [95 % interval, sequences resampled]",
                    "fraction",
                    interval="effect_ci95",
                ),
                Column("random_median", f"random heads: median hit rate ({n_draws} draws)", "fraction"),
                Column("percentile", "percentile among random", "number", 1),
                Column("p", "p (one-sided, vs random head sets)", "number", 3),
            ],
            caption="The edit's hit rate against the ablation-only control and the random head sets.",
        )
    )
reader_table(
    edit_table,
    [
        Column("task", "task"),
        Column("edit", "edit"),
        Column("heads", "heads edited"),
        Column("hit", "top-1 becomes n-1 (% of prompts) [95 % CI]", "fraction", interval="hit_ci95"),
        Column("correct", "still correct (% of prompts)", "fraction"),
        Column("in_family", "top-1 is a member (% of prompts)", "fraction"),
        Column("in_prompt", "top-1 is a prompt token (% of prompts)", "fraction"),
        Column("hit_in_prompt", "hits that are a prompt token (% of hits)", "fraction"),
    ],
    caption="Every edit and baseline on the evaluation prompts (the prediction categories are in the full table). "
    "Compare the successor heads' hit rate with the ablation control's and the random heads'.",
)

# %%
if len(edit_table):
    display(
        figures.figure(
            plots.bar_chart(
                edit_table,
                x="edit",
                y="hit",
                column="task",
                sort=list(dict.fromkeys(edit_table["edit"])),
                y_title="share of prompts whose top-1 becomes n-1",
                title=f"{model}: editing next into prev",
            ),
            "Share of evaluation prompts whose top-1 becomes the member before the last one shown when the successor "
            "heads' outputs are replaced by their mean on decreasing prompts with the same members, against no edit, "
            "the ablation-only control (their mean on increasing prompts with the same members) and the first random "
            f"head sets of the same layers (of the {n_draws} in the null).",
        )
    )

# %% [markdown]
# ## Format steering
#
# The format direction is fitted on the from-format's selection prompts (and to-format prompts of the
# same members); `steer_alpha` times it is added on the evaluation prompts. `hit` is the share of those
# prompts (whose answer exists in the to-format) whose top-1 becomes the answer spelled in the
# to-format, with a 95 % interval (sequences resampled); every baseline direction has the format
# direction's norm; p is one-sided against each kind's draws.

# %%
steer_effects, baseline_rows, steer_nulls, directions, curves = [], [], {}, [], []
for src, dst in steer_pairs:
    if src not in selection:
        continue
    pair = f"{src} -> {dst}"
    to_ds = make_dataset(lm.tokenizer, dst, model_name=model, n=n_source, seed=seed, **opts)
    direction, keys = format_direction(lm, layer, selection[src], to_ds)
    norm = float(direction.norm())
    keyset = set(keys)
    to_rows = [i for i in range(len(to_ds)) if member_key(to_ds, i) in keyset]
    sel_resid = final_residuals(lm, selection[src], layer)
    dec = make_dataset(lm.tokenizer, src, model_name=model, n=n_source, seed=seed, direction="decreasing", **opts)
    unrelated, _ = keyed_mean_difference(
        final_residuals(lm, dec, layer),
        [member_key(dec, i) for i in range(len(dec))],
        sel_resid,
        [member_key(selection[src], i) for i in range(len(selection[src]))],
    )
    baselines = {
        "random halves": random_halves_directions(
            [final_residuals(lm, to_ds, layer)[to_rows], sel_resid], n_steer_draws, norm, seed
        ),
        "unrelated (decreasing - increasing)": [rescaled(unrelated, norm)],
        "gaussian": random_directions(direction, n_steer_draws, seed),
    }
    ab = ablators.get(lm, info, evaluation[src])
    res = steering_test(ab, layer, direction, steer_alpha, dst, baselines, seed=seed)
    directions.append({"from": src, "to": dst, "layer": layer, "norm": norm, "matched_keys": len(keys)})
    steer_effects.append({"pair": pair} | res.effect)
    baseline_rows.append(res.table.assign(pair=pair))
    steer_nulls[pair] = res.nulls
    curves.append(
        dose_response(ab, layer, direction, alphas, dst, n_random=0, seed=seed, progress=False).assign(pair=pair)
    )
steer_table = pd.concat(curves, ignore_index=True)
baseline_table = pd.concat(baseline_rows, ignore_index=True)
summary = steer_table.groupby(["pair", "direction", "alpha"], as_index=False, sort=False)[
    ["hit", "correct", "to_family_any"]
].mean()
steer_rows = []
for e in steer_effects:
    for kind, n in steer_nulls[e["pair"]].items():
        steer_rows.append(
            e
            | {
                "baseline": kind,
                "draws": n.n_draws,
                "baseline_mean": n.null_mean,
                "baseline_max": max(n.null),
                "percentile": n.observed_percentile,
                "p": n.p_value,
            }
        )
display(
    reader_table(
        pd.DataFrame(steer_rows),
        [
            Column("pair", "steering"),
            Column("n_prompts", "evaluation prompts", "int"),
            Column(
                "hit",
                f"format direction at alpha {steer_alpha:g}: hit rate [95 % interval]",
                "fraction",
                interval="hit_ci95",
            ),
            Column("baseline", "baseline (same norm)"),
            Column("draws", "draws", "int"),
            Column("baseline_mean", "baseline: mean hit rate", "fraction"),
            Column("baseline_max", "baseline: largest hit rate", "fraction"),
            Column("p", "p (one-sided, vs the baseline's draws)", "number", 3),
        ],
        caption=f"Format steering at alpha {steer_alpha:g} on the evaluation prompts, against each baseline direction of "
        "the same norm.",
    )
)
reader_table(
    pd.DataFrame(directions),
    [
        Column("from", "from format"),
        Column("to", "to format"),
        Column("layer", "steered after block", "int"),
        Column("norm", "direction norm (residual-stream units)", "number", 2),
        Column("matched_keys", "member sets matched", "int"),
    ],
    caption="The format directions, fitted on the selection prompts.",
)

# %%
figures.figure(
    alt.Chart(summary)
    .mark_line(point=True)
    .encode(
        x=alt.X("alpha:Q", title="alpha (multiples of the format direction)"),
        y=alt.Y(
            "hit:Q", title="share whose top-1 becomes the answer in the new format", scale=alt.Scale(domain=[0, 1])
        ),
        color=alt.Color("pair:N", title="steering"),
        tooltip=["pair:N", "alpha:Q", alt.Tooltip("hit:Q", format=".2f"), alt.Tooltip("correct:Q", format=".2f")],
    )
    .properties(width=320, height=220, title=f"{model}: format steering after block {layer} (descriptive)"),
    f"Dose-response of format steering on the evaluation prompts: share whose top-1 becomes the answer in the target "
    f"format when alpha times the member-matched mean difference of the final residual stream after block {layer} "
    f"(fitted on the selection prompts) is added. Descriptive: the claim uses alpha = {steer_alpha:g}, fixed in advance.",
)

# %%
_ = write_json_atomic(
    results_dir(model) / ActivationEditing.file,
    ActivationEditing(
        model=model,
        smoke=smoke,
        template=template,
        prefix=prefix,
        seed=seed,
        n_prompts=n_prompts,
        n_source=n_source,
        skipped=skipped,
        n_kept={t: len(d) for t, d in evaluation.items()},
        successor_heads=[str(h) for h in heads],
        candidates=frame_records(candidates),
        random_heads=[r.split() for r in edit_table[edit_table["edit"].str.startswith("random")]["heads"].unique()],
        function_edits=frame_records(edit_table),
        function_edit_prompts=edit_meta,
        steer_layer=layer,
        alphas=[float(a) for a in alphas],
        directions=directions,
        steering=frame_records(steer_table),
        steering_summary=frame_records(summary),
        split=split_info,
        selection_dataset={t: d.to_json() for t, d in selection.items()},
        evaluation_dataset={t: d.to_json() for t, d in evaluation.items()},
        n_draws=n_draws,
        edit_effects=frame_records(effect_table),
        edit_null=edit_nulls,
        steer_alpha=float(steer_alpha),
        n_steer_draws=n_steer_draws,
        steering_effects=steer_effects,
        steering_baselines=frame_records(baseline_table),
        steering_null=steer_nulls,
    ),
)

# %% [markdown]
# ## What the numbers say


# %%
def verdict(p: float, n: int, what: str) -> str:
    """A one-sided p against ``n`` draws, in words."""
    if p <= 0.05:
        return f"above {what} (p = {p:.2f}, {n} draws)"
    return f"**not distinguishable from {what}** (p = {p:.2f}, {n} draws)"


lines = [
    f"Heads chosen and directions fitted on the selection prompts; every number below is on the sequence-disjoint "
    f"evaluation prompts (overlap {sum(split_info['overlap'].values())} sequences)."
]
for e in effects:
    t, null = e["task"], edit_nulls[e["task"]]
    rows = edit_table[edit_table["task"] == t].set_index("edit")
    lo, hi = e["effect_ci95"]
    edited = rows.loc["successor heads"]
    wrong = max((c for c in CATEGORIES if c != "correct"), key=lambda c: edited[c])
    above = lo > 0
    lines.append(
        f"- **{t}, next -> prev** ({e['n_matched']} prompts, {e['n_clusters']} sequences): the edit of "
        f"{edited['heads']} makes the top-1 `n-1` on {100 * e['hit']:.0f} % of prompts; the ablation-only control on "
        f"{100 * e['control_hit']:.0f} %, so the edit adds {100 * e['effect']:+.0f} points [{100 * lo:+.0f}, "
        f"{100 * hi:+.0f}] — "
        + ("above the control" if above else "**not distinguishable from the control**")
        + f". Against {null.n_draws} random head sets of the same layers edited the same way (median "
        f"{100 * null.null_p50:.0f} %, percentile {null.observed_percentile:.0f}): "
        + verdict(null.p_value, null.n_draws, "random heads")
        + f". {100 * edited['correct']:.0f} % stay correct"
        + (f"; the commonest other prediction is {wrong} ({100 * edited[wrong]:.0f} %)" if edited[wrong] > 0 else "")
        + f"; the top-1 is a token already in the prompt on {100 * edited['in_prompt']:.0f} % "
        + (
            f"(and {100 * e['hit_in_prompt']:.0f} % of the hits are)."
            if e["hit_in_prompt"] is not None
            else "(there are no hits to check)."
        )
    )
for e in steer_effects:
    nulls = steer_nulls[e["pair"]]
    lo, hi = e["hit_ci95"]
    lines.append(
        f"- **{e['pair']}** ({e['n_prompts']} prompts, {e['n_clusters']} sequences): at alpha = {steer_alpha:g} the "
        f"format direction turns the answer into the new format on {100 * e['hit']:.0f} % [{100 * lo:.0f}, "
        f"{100 * hi:.0f}] ({100 * e['correct']:.0f} % keep the original answer); "
        + "; ".join(
            f"{kind}: mean {100 * n.null_mean:.0f} %, largest {100 * max(n.null):.0f} % — "
            + (verdict(n.p_value, n.n_draws, kind) if n.n_draws > 1 else "one direction: a reference, not a null")
            for kind, n in nulls.items()
        )
        + "."
    )
display(Markdown("\n".join(lines) if len(lines) > 1 else "No edit could be run (see the skipped tasks above)."))
