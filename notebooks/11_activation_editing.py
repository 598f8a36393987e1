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
#     estimate_s: 53
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
#    And the reverse on decreasing prompts (`n+1`). Baseline: the same edit on random heads of the
#    same layers.
# 2. **Format steering.** At the residual stream after the top successor head's layer, final
#    position, we add `alpha` times the mean difference between number-word and digit prompts of the
#    same members (`three four five six` minus `3 4 5 6`, averaged over member sets). Does the digit
#    prompt's answer turn into its number word (`7` -> ` seven`)? Likewise digits -> months
#    (`7` -> ` July`). Baseline: random directions of the same norm; a dose-response over `alpha`.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # target prompts per task before filtering to correct answers
n_source = 24  # source prompts per task (decreasing / other-format prompts, not filtered), matched by member
seed = 0  # dataset seed (and the random heads and directions)
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: one task, few prompts and alphas; numbers are not results
tasks = [
    "digits",
    "number_words",
    "months",
]  # tasks whose prompts select the successor heads (as in the knockout chapter)
template = "among_words"  # prompt template (target and source prompts share it)
n_candidates = 4  # heads with the highest mean OV next score, each ablated alone
n_heads = 2  # of those, the heads with the largest mean single-ablation drop are edited
edit_tasks = ["digits", "number_words"]  # tasks of the next -> prev edit (and its reverse)
n_random = 2  # random head sets (same layers) per edit
steer_pairs = [["digits", "number_words"], ["digits", "months"]]  # [from format, to format] of the steering
alphas = [0.0, 0.5, 1.0, 2.0, 4.0]  # multiples of the format direction added
n_random_directions = 2  # random directions of the same norm per pair
steer_layer = None  # residual stream after this block is steered; None: the top successor head's layer

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.result_records import ActivationEditing
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.discovery.pipeline import build_or_skip, discovery_dataset
from seqcirc_utils.mechanisms.editing import dose_response, format_direction, function_edit, random_heads_same_layers
from seqcirc_utils.mechanisms.knockout import CATEGORIES, select_successor_heads
from seqcirc_utils.mechanisms.representations import VALUE_OFFSETS
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.tasks.datasets import make_dataset

figures = plots.enable_offline()  # this chapter's figure numbers
bad = [t for t in [*tasks, *edit_tasks, *(f for pair in steer_pairs for f in pair)] if t not in VALUE_OFFSETS]
if bad or any(len(p) != 2 for p in steer_pairs):
    raise ValueError(
        f"tasks, edit_tasks and steer_pairs ([from, to]) use families with member values "
        f"({', '.join(VALUE_OFFSETS)}); got {bad or steer_pairs}"
    )
if smoke:
    tasks = edit_tasks = [tasks[0]]
    steer_pairs, alphas = steer_pairs[:1], [0.0, 1.0]
    n_prompts, n_source, n_random, n_random_directions = min(n_prompts, 8), min(n_source, 12), 1, 1
    n_candidates, n_heads = min(n_candidates, 2), 1
    print(f"SMOKE MODE: tasks {tasks}, {n_prompts} prompts, alphas {alphas}; numbers are not results.")

# %% [markdown]
# ## The successor heads

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
opts = dict(template=template, seed=seed, prefix=prefix)
datasets, skipped = build_or_skip(
    lambda t: discovery_dataset(lm, model, t, n=n_prompts, min_prompts=4 if smoke else 6, **opts),
    [*tasks, *edit_tasks, *(p[0] for p in steer_pairs)],
)
for t, err in skipped.items():
    display(Markdown(f"**{t} skipped:** {err}"))
candidates, heads = select_successor_heads(
    lm,
    info,
    {t: datasets[t] for t in tasks if t in datasets},
    n_heads=n_heads,
    n_candidates=n_candidates,
    progress=False,
)
layer = heads[0].layer if steer_layer is None else int(steer_layer)
print(f"edited heads: {' '.join(map(str, heads))}; steering after block {layer}")
candidates.round(3)

# %% [markdown]
# ## next -> prev
#
# `hit` is the share of target prompts (those with a member-matched source prompt) whose top-1 becomes
# `n-1` (increasing prompts, edited with decreasing means) or `n+1` (decreasing prompts, edited with
# increasing means); `correct` the share still answering correctly; `in_family` the share whose top-1
# is any member; the category columns (as in the knockout chapter, `n` = the last member shown) say
# what the edited model predicts instead.

# %%
randoms = random_heads_same_layers(info, heads, n_samples=n_random, seed=seed)
edits, edit_meta = [], []
for t in edit_tasks:
    for target_dir, source_dir, shift in (("increasing", "decreasing", -1), ("decreasing", "increasing", +1)):
        try:
            target = (
                datasets[t]
                if target_dir == "increasing"
                else discovery_dataset(
                    lm, model, t, n=n_prompts, direction=target_dir, min_prompts=4 if smoke else 6, **opts
                )
            )
        except (KeyError, SeqcircError) as err:
            skipped[f"{t} {target_dir}"] = str(err)
            display(Markdown(f"**{t}, {target_dir} prompts skipped:** {err}"))
            continue
        source = make_dataset(lm.tokenizer, t, model_name=model, n=n_source, direction=source_dir, **opts)
        table, meta = function_edit(ablators.get(lm, info, target), source, heads, shift, randoms, seed=seed)
        label = "next -> prev" if shift < 0 else "prev -> next"
        edits.append(table.assign(task=t, edit_kind=label, target=target_dir, n_matched=meta["n_matched"]))
        edit_meta.append({"task": t, "edit_kind": label, "n_matched": meta["n_matched"], "n_target": meta["n_target"]})
edit_table = (
    pd.concat(edits, ignore_index=True)
    if edits
    else pd.DataFrame(columns=["task", "edit_kind", "edit", "heads", "hit", "correct", "in_family", "n_matched"])
)
display(
    edit_table[["task", "edit_kind", "n_matched", "edit", "heads", "hit", "correct", "in_family", *CATEGORIES]].round(3)
)

# %%
if len(edit_table):
    display(
        figures.figure(
            plots.bar_chart(
                edit_table.assign(group=edit_table["task"] + ": " + edit_table["edit_kind"]),
                x="edit",
                y="hit",
                column="group",
                sort=list(dict.fromkeys(edit_table["edit"])),
                y_title="share of prompts whose top-1 flips",
                title=f"{model}: editing next into prev",
            ),
            "Share of prompts whose top-1 becomes the member before the last one shown (next -> prev, increasing prompts) "
            "or after it (prev -> next, decreasing prompts) when the successor heads' outputs are replaced by their mean on "
            "prompts of the other direction with the same members, against no edit and the same edit on random heads of "
            "the same layers.",
        )
    )

# %% [markdown]
# ## Format steering
#
# `hit` is the share of the from-format prompts (whose answer exists in the to-format) whose top-1
# becomes the answer spelled in the to-format; `correct` the share still giving the original answer.
# Random directions have the format direction's norm.

# %%
steering, directions = [], []
for src, dst in steer_pairs:
    if src not in datasets:
        continue
    to_ds = make_dataset(lm.tokenizer, dst, model_name=model, n=n_source, **opts)
    direction, keys = format_direction(lm, layer, datasets[src], to_ds)
    directions.append(
        {"from": src, "to": dst, "layer": layer, "norm": float(direction.norm()), "matched_keys": len(keys)}
    )
    dr = dose_response(
        ablators.get(lm, info, datasets[src]),
        layer,
        direction,
        alphas,
        dst,
        n_random=n_random_directions,
        seed=seed,
        progress=False,
    )
    steering.append(dr.assign(pair=f"{src} -> {dst}"))
steer_table = pd.concat(steering, ignore_index=True)
display(pd.DataFrame(directions).round(3))
summary = steer_table.groupby(["pair", "direction", "alpha"], as_index=False, sort=False)[
    ["hit", "correct", "to_family_any"]
].mean()
display(summary.round(3))
figures.figure(
    alt.Chart(summary)
    .mark_line(point=True)
    .encode(
        x=alt.X("alpha:Q", title="alpha (multiples of the format direction)"),
        y=alt.Y(
            "hit:Q", title="share whose top-1 becomes the answer in the new format", scale=alt.Scale(domain=[0, 1])
        ),
        color=alt.Color("pair:N", title="steering"),
        strokeDash=alt.StrokeDash("direction:N", title="direction"),
        tooltip=[
            "pair:N",
            "direction:N",
            "alpha:Q",
            alt.Tooltip("hit:Q", format=".2f"),
            alt.Tooltip("correct:Q", format=".2f"),
        ],
    )
    .properties(width=320, height=220, title=f"{model}: format steering after block {layer}"),
    f"Dose-response of format steering: share of prompts whose top-1 becomes the answer in the target format when "
    f"alpha times the member-matched mean difference of the final residual stream after block {layer} is added "
    "(solid), against random directions of the same norm (dashed, mean over draws).",
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
        n_kept={t: len(d) for t, d in datasets.items()},
        successor_heads=[str(h) for h in heads],
        candidates=frame_records(candidates),
        random_heads=[[str(c) for c in r] for r in randoms],
        function_edits=frame_records(edit_table),
        function_edit_prompts=edit_meta,
        steer_layer=layer,
        alphas=[float(a) for a in alphas],
        directions=directions,
        steering=frame_records(steer_table),
        steering_summary=frame_records(summary),
    ),
)

# %% [markdown]
# ## What the numbers say

# %%
lines = []
for (t, kind), part in edit_table.groupby(["task", "edit_kind"], sort=False):
    p = part.set_index("edit")
    rand = part[part["edit"].str.startswith("random")]
    wrong = max((c for c in CATEGORIES if c != "correct"), key=lambda c: p.loc["successor heads", c])
    lines.append(
        f"- **{t}, {kind}** ({int(p['n_matched'].iloc[0])} member-matched prompts): the edit of "
        f"{p.loc['successor heads', 'heads']} flips the top-1 on {100 * p.loc['successor heads', 'hit']:.0f} % "
        f"(random heads of the same layers: {100 * rand['hit'].mean():.0f} %; no edit: "
        f"{100 * p.loc['none', 'hit']:.0f} %) and leaves {100 * p.loc['successor heads', 'correct']:.0f} % "
        "correct"
        + (
            f"; the commonest other prediction is {wrong} ({100 * p.loc['successor heads', wrong]:.0f} %)."
            if p.loc["successor heads", wrong] > 0
            else "."
        )
    )
for pair, part in summary.groupby("pair", sort=False):
    fmt, rnd = part[part["direction"] == "format"], part[part["direction"] == "random"].set_index("alpha")
    best = fmt.loc[fmt["hit"].idxmax()]
    lines.append(
        f"- **{pair}**: the format direction turns the answer into the new format on at most "
        f"{100 * best['hit']:.0f} % of prompts (alpha = {best['alpha']:g}; "
        f"{100 * best['correct']:.0f} % keep the original answer); random directions of the same norm: "
        f"{100 * rnd.loc[best['alpha'], 'hit']:.0f} % at that alpha."
    )
if smoke:
    lines.append("\n*Smoke run: the numbers above come from a handful of prompts and are not results.*")
display(Markdown("\n".join(lines) if lines else "No edit could be run (see the skipped tasks above)."))
