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
#     estimate_s: 72
# ---

# %% [markdown]
# # Successor heads: which heads write "the next member"?
#
# A *successor head* (Gould et al. 2024) is a head whose OV circuit maps a member of an ordered
# family to the member after it: attending to `March` it writes `April`. We score every head's
# **effective OV circuit** without running any prompt (see `seqcirc_utils.mechanisms.ov_scores`): each family
# member's effective embedding (token embedding plus MLP0) goes through the head's value and output
# matrices, the final norm and the unembedding, and we ask which member comes out on top:
#
# - **next**: the successor (`i -> i+1`); **copy**: the member itself; **prev**: the predecessor;
#   **add2**: two members ahead;
# - each score is the fraction of the family's single-token members whose target is in the head's
#   top-k outputs, the top-k taken over the family's members (`over="family"`, the successor-heads
#   paper's succession score; with `top_k=1` copy and next are exclusive) or over the whole vocabulary
#   (`over="vocab"`, slow on CPU).
#
# Families: digits, number words, months, days, letters. For the top next head of the focus family
# we then look at what it does on real prompts: its OV member x member table, its QK table, and its
# attention from the final position to the members. Finally, two views of where the answer comes
# from on those prompts: **direct logit attribution** (each head's and MLP's direct contribution to
# `logit(correct) - logit(last member)` at the final position) and the **logit lens** (the first
# layer at which the answer is the top-1 token of the residual stream).

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 32  # focus-family prompts before filtering to correct answers (attention, DLA)
n_lens = 16  # of those, prompts read by the logit lens (slow: every layer, position and vocabulary entry)
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: the focus family only, few prompts
families = ["digits", "number_words", "months", "days", "letters"]  # families scored
focus = "digits"  # family whose top next head, attention, DLA and logit lens are examined
kinds = ["copy", "next", "prev", "add2"]  # OV score kinds (copy, next, prev, add<k>, sub<k>)
over = "family"  # top-k over the family's members ("family") or the whole vocabulary ("vocab", slow on CPU)
top_k = 1  # a target counts when it is in the head's top-k outputs
embedding = "mlp0"  # effective embedding: "mlp0" (W_E + MLP0), "mlp0_only" or "embed"
template = "among_words"  # template of the focus-family prompts
top_n = 5  # rows of the top-heads tables
direction = "increasing"  # direction of the focus-family prompts (increasing | decreasing)
lens_directions = ["decreasing"]  # the logit lens by sequence length: focus-family prompts in these directions ...
lens_lengths = [3, 4, 5, 6]  # ... with these numbers of members shown ([] skips it) ...
lens_template = "comma"  # ... in this template (short prompts: the lens reads every position) ...
n_lens_length = 8  # ... and this many correctly answered prompts per (direction, length)
numbers_task = (
    "numbers"  # two-digit prompts examined beside the focus family ("" skips; refused where numbers are single tokens)
)

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.records import AttentionPattern, HeadScores
from seqcirc_utils.core.result_records import SuccessorHeads
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import parse_component
from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.mechanisms.attention import attention_summary, dataset_member_attention, final_to_member_table
from seqcirc_utils.mechanisms.logit_lens import dataset_dla, dataset_logit_lens, first_top1_summary, top_dla
from seqcirc_utils.mechanisms.ov_scores import family_tokens, ov_member_table, ov_scores, qk_table, top_heads
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import MAX_COLUMNS, Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note

figures = plots.enable_offline()  # this chapter's figure numbers
if focus not in families:
    families = [focus, *families]
if smoke:
    families = [focus]
    n_prompts, n_lens = min(n_prompts, 12), min(n_lens, 4)
    lens_lengths, n_lens_length = lens_lengths[-1:], min(n_lens_length, 4)
    display(smoke_note(f"families {families}, {n_prompts} prompts, {n_lens} for the logit lens"))

# %% [markdown]
# ## OV scores per family
#
# One row per family: how many single-token members it has for this tokenizer, the score a head
# would get by chance (top-k of the candidates at random), and its best head for each kind.

# %%
lm, info = load_model(model, device=device)
scores, skipped = {}, {}
for f in families:
    try:
        scores[f] = ov_scores(lm, f, kinds=kinds, top_k=top_k, over=over, embedding=embedding, progress=False)
    except SeqcircError as err:  # e.g. fewer than two single-token members for this tokenizer
        skipped[f] = str(err)
families = list(scores)
members = {f: len(family_tokens(lm.tokenizer, f)) for f in families}
overview = pd.DataFrame(
    [
        {
            "family": f,
            "members": members[f],
            "chance": min(top_k / (members[f] if over == "family" else lm.cfg.d_vocab), 1.0),
            **{f"best_{k}": top_heads(scores[f], k, 1)["component"][0] for k in kinds},
            **{f"best_{k}_score": float(top_heads(scores[f], k, 1)[k][0]) for k in kinds},
        }
        for f in families
    ]
)
for f, err in skipped.items():
    display(Markdown(f"**{f} skipped:** {err}"))
shown_kinds = kinds[: MAX_COLUMNS - 3]
reader_table(
    overview.assign(
        **{
            f"best_{k}_text": [
                f"{h} ({100 * v:.0f} %)" for h, v in zip(overview[f"best_{k}"], overview[f"best_{k}_score"])
            ]
            for k in shown_kinds
        }
    ),
    [
        Column("family", "family"),
        Column("members", "single-token members", "int"),
        Column("chance", "chance score (% of members)", "fraction"),
    ]
    + [Column(f"best_{k}_text", f"best {k} head (% of members)") for k in shown_kinds],
    caption="Per family, the best head for each score kind and its score (the share of members whose target is its "
    "top output). Look for a next score well above chance.",
)

# %% [markdown]
# ## Next score of every head
#
# One layer x head grid per family (layer 0 at the top), on a shared colour scale.

# %%
display(
    figures.figure(
        alt.hconcat(
            *[
                plots.head_heatmap(
                    plots.head_frame(scores[f], "next"), title=f, value_title="next score", diverging=False
                )
                for f in families
            ],
            title=f"{model}: OV next score (top-{top_k} over {over})",
        ).resolve_scale(color="shared"),
        "OV successor (next) score of every head, one panel per family, layer 0 at the top: the fraction of members whose "
        "successor is the head's top output. Bright cells are successor heads; one bright in every panel is a successor "
        "head for all families.",
    )
)
display(
    figures.figure(
        alt.hconcat(
            *[
                plots.head_heatmap(plots.head_frame(scores[focus], k), title=k, value_title="score", diverging=False)
                for k in kinds
            ],
            title=f"{focus}: every score kind",
        ).resolve_scale(color="shared"),
        f"Every OV score kind for {focus}, one panel per kind. Compare the next panel with copy and prev: a successor "
        "head is bright in next only.",
    )
)

# %% [markdown]
# ## Top next heads per family
#
# With `over="family"` and `top_k=1` a score is a fraction of a dozen or so members, so it moves in
# coarse steps and ties are common; ties are listed by layer, then head.

# %%
for f in families:
    display(
        reader_table(
            top_heads(scores[f], "next", top_n),
            [Column("component", "head")]
            + [Column(k, f"{k} score (% of members)", "fraction") for k in kinds[: MAX_COLUMNS - 2]]
            + [Column("n_next", "members scored for next", "int")],
            caption=f"{f}: the top {top_n} heads by next score. A successor head scores high on next and low on copy.",
        )
    )

# %% [markdown]
# Heads that are successor heads for several families at once: the heads with the highest mean next
# score over the families, and their score in each.

# %%
by_family = pd.concat([scores[f].assign(family=f) for f in families]).pivot_table(
    index="component", columns="family", values="next", sort=False
)[families]
shared = by_family.assign(mean=by_family.mean(axis=1)).sort_values("mean", ascending=False).head(2 * top_n)
display(
    reader_table(
        shared.reset_index(),
        [Column("component", "head"), Column("mean", "mean next score (% of members)", "fraction")]
        + [Column(f, f"{f}: next score (% of members)", "fraction") for f in families[: MAX_COLUMNS - 2]],
        caption="The heads with the highest next score averaged over the families, best first. A head high in every "
        "family computes the successor whatever the family.",
    )
)
figures.figure(
    plots.matrix_heatmap(
        plots.matrix_frame(shared[families], row="head", col="family"),
        row="head",
        col="family",
        value_title="next score",
        title="next score of the heads best on average",
    ),
    "Next score of the heads with the highest mean over families (rows, best first), per family (columns). "
    "A row dark across all columns is a head that computes the successor whatever the family.",
)

# %% [markdown]
# ## The top next head of the focus family
#
# Its OV table (rows: the member attended to; columns: the family members it writes, as logits) and
# its QK table (rows: query member; columns: key member; each row's softmax over the members, at
# relative distance 0 for rotary models).

# %%
best = parse_component(top_heads(scores[focus], "next", 1)["component"][0])
ov_table = ov_member_table(lm, best, focus, embedding=embedding)
qk = qk_table(lm, best, focus, embedding=embedding)
display(
    figures.figure(
        plots.matrix_heatmap(
            plots.matrix_frame(ov_table, row="attended member", col="output member"),
            row="attended member",
            col="output member",
            value_title="logit",
            title=f"{focus}: {best} OV circuit",
        ),
        f"What {best} writes (columns, as logits) when it attends to each {focus} member (rows). A successor "
        "head has its darkest cell of each row just right of the diagonal.",
    )
)
figures.figure(
    plots.matrix_heatmap(
        plots.matrix_frame(qk, row="query member", col="key member"),
        row="query member",
        col="key member",
        value_title="attention",
        title=f"{focus}: {best} QK circuit (softmax)",
    ),
    f"Where {best} would attend from each query member (rows) among the members (columns), softmax per row. "
    "Look at whether a row prefers one key member, or attends evenly.",
)

# %% [markdown]
# ### Attention on prompts
#
# Prompts of the focus family in the chosen template, kept only where the model answers correctly
# (top-1 and p(correct) > 2 p(incorrect), as for circuit discovery). The matrix shows the mean
# attention from the final position to each member (`m-1` the last member shown) for the top next
# heads; the table adds attention to BOS.

# %%
ds = discovery_dataset(
    lm,
    model,
    focus,
    template=template,
    direction=direction,
    n=n_prompts,
    seed=seed,
    min_prompts=4 if smoke else 8,
    prefix=prefix,
)
display(
    Markdown(f"{len(ds)} of {n_prompts} prompts kept, e.g. `{ds.prompts[0].text.strip()}` -> `{ds.prompts[0].answer}`.")
)
att = dataset_member_attention(lm, ds, progress=False)
f2m = final_to_member_table(att).set_index("component")
att_summary = attention_summary(att).set_index("component")
top_next = top_heads(scores[focus], "next", top_n)["component"].tolist()
attention_top = pd.concat([f2m.loc[top_next], att_summary.loc[top_next, ["final_to_bos"]]], axis=1).reset_index()
display(
    reader_table(
        attention_top,
        [Column("component", "head")]
        + [Column(c, f"to member {c}", "number", 2) for c in f2m.columns]
        + [Column("final_to_bos", "to the first token", "number", 2)],
        caption="Mean attention from the final position to each member (m-1: the last one shown) and to the first "
        "token, for the top next heads.",
    )
)
figures.figure(
    plots.matrix_heatmap(
        plots.matrix_frame(f2m.loc[top_next], row="head", col="member"),
        row="head",
        col="member",
        value_title="attention",
        title=f"{focus}: final position -> members, top next heads",
    ),
    f"Mean attention from the final position to each member (columns; m-1 is the last one shown) for the top "
    f"{len(top_next)} next heads (rows) on {len(ds)} correctly answered prompts. A successor head used by the "
    "model attends to the last member, where the answer's predecessor is.",
)

# %% [markdown]
# ## Direct logit attribution
#
# Mean direct contribution of every part of the final residual stream to
# `logit(correct) - logit(last member)` (nats), with the final norm's scale frozen; the parts sum to
# the model's logit difference. Left: the parts with the largest magnitude; right: every head.

# %%
dla = dataset_dla(lm, ds, batch_size=64, progress=False)
dla_table = dla.to_dataframe()
top_parts = top_dla(dla, 10)
head_dla = dla_table[dla_table["kind"] == "head"].assign(
    head=lambda d: d["component"].map(lambda c: parse_component(c).index)
)
display(
    reader_table(
        top_parts,
        [Column("component", "part"), Column("mean", "mean DLA (nats)", "number", 3)],
        caption=f"The parts sum to {float(dla.values.sum(0).mean()):.3f} nats; the model's mean logit difference is "
        f"{float(dla.logit_diff.mean()):.3f} nats.",
    )
)
figures.figure(
    alt.hconcat(
        plots.bar_chart(
            top_parts,
            x="component",
            y="mean",
            sort=list(top_parts["component"]),
            y_title="mean DLA (nats)",
            title="largest parts",
        ),
        plots.head_heatmap(plots.head_frame(head_dla, "mean"), title="every head", value_title="DLA (nats)"),
        title=f"{focus}: direct logit attribution",
    ),
    "Direct contribution to logit(correct) - logit(last member), in nats: the parts with the largest magnitude "
    f"(left) and every head (right, layer 0 at the top). Is {best} among the large ones?",
)

# %% [markdown]
# ## Logit lens: where the answer first becomes top-1
#
# For each prompt, the first layer whose residual stream (read through the final norm and
# unembedding) has the answer as its top-1 token (`first_top1`), and the first layer from which it
# stays top-1 to the output (`stable_top1`). Layer -1 is the embeddings; "never" means not top-1.

# %%
lens_ds = ds.subset(list(range(min(n_lens, len(ds)))))
lens = dataset_logit_lens(lm, lens_ds, progress=False)
first = first_top1_summary(lens)
first_long = first.assign(layer=first["layer"].map(lambda l: "never" if l == -2 else str(l))).melt(
    id_vars="layer", var_name="measure", value_name="prompts"
)
display(
    reader_table(
        first.assign(
            layer_name=first["layer"].map(lambda l: "never" if l == -2 else "embeddings" if l == -1 else str(l))
        ),
        [
            Column("layer_name", "layer"),
            Column("first_top1", "prompts whose answer first becomes top-1 here", "int"),
            Column("stable_top1", "prompts whose answer stays top-1 from here", "int"),
        ],
        caption=f"Logit lens on {len(lens_ds)} {focus} prompts: where the answer first becomes, and stays, the top-1 "
        "token of the residual stream at the final position.",
    )
)
figures.figure(
    plots.bar_chart(
        first_long,
        x="layer",
        y="prompts",
        color="measure",
        sort=list(first_long["layer"].drop_duplicates()),
        title=f"{focus}: first layer with the answer top-1 ({len(lens_ds)} prompts)",
    ),
    "Number of prompts whose answer first becomes (first_top1) and stays (stable_top1) the logit lens's top-1 "
    f"token at each layer. The layer where the bars peak is where the answer forms; compare with {best}'s "
    f"layer ({best.layer}).",
)

# %% [markdown]
# ## The same heads on two-digit numbers
#
# On SmolLM2 only `0`-`9` are single tokens, so the digits prompts above come from a handful of distinct
# sequences. The task `numbers` (`23 24 25 26 2` -> `7`, 86 increasing sequences) asks for the same
# successor step on the units digit: the prompt ends after the answer's tens digit, the answer is the digit
# after the last member's units digit, and the "members" are the units-digit tokens. If the top next heads
# of the digits family do the step, they attend from the final position to the last member's units digit
# here too, and they contribute to the logit difference directly. A tokenizer whose two-digit numbers are
# single tokens (GPT-2) refuses the task; the cell says so.

# %%
numbers_result = None
if numbers_task:
    try:
        ds_num = discovery_dataset(
            lm,
            model,
            numbers_task,
            template=template,
            direction=direction,
            n=n_prompts,
            seed=seed,
            min_prompts=4 if smoke else 8,
            prefix=prefix,
        )
    except SeqcircError as err:
        numbers_result = {"task": numbers_task, "refused": str(err)}
        display(Markdown(f"**{numbers_task}** is not examined: {err}"))
if numbers_task and numbers_result is None:
    att_num = dataset_member_attention(lm, ds_num, progress=False)
    f2m_num = final_to_member_table(att_num).set_index("component")
    dla_num = dataset_dla(lm, ds_num, batch_size=64, progress=False)
    dla_num_table = dla_num.to_dataframe()
    top_num = top_dla(dla_num, 10)
    lens_num = first_top1_summary(
        dataset_logit_lens(lm, ds_num.subset(list(range(min(n_lens, len(ds_num))))), progress=False)
    )
    rank = dla_num_table.sort_values("mean", ascending=False)["component"].tolist()
    numbers_result = {
        "task": numbers_task,
        "refused": None,
        "n_prompts": len(ds_num),
        "n_sequences": ds_num.n_sequences,
        "example": ds_num.prompts[0].text,
        "final_to_members": frame_records(f2m_num.loc[top_next].reset_index()),
        "dla_top": frame_records(top_num),
        "dla_logit_diff": float(dla_num.logit_diff.mean()),
        "best_dla_rank": rank.index(str(best)) + 1 if str(best) in rank else None,
        "logit_lens_first_top1": frame_records(lens_num),
    }
    display(
        reader_table(
            f2m_num.loc[top_next].reset_index(),
            [Column("component", "head")]
            + [Column(c, f"to member {c}", "number", 2) for c in list(f2m_num.columns)[-(MAX_COLUMNS - 1) :]],
            caption=f"{numbers_task}: mean attention from the final position to each member's units digit (m-1: the "
            f"last one shown), for the top next heads of {focus}.",
        )
    )
    display(
        reader_table(
            top_num,
            [Column("component", "part"), Column("mean", "mean DLA (nats)", "number", 3)],
            caption=f"{numbers_task}: the parts with the largest direct logit attribution; the model's mean logit "
            f"difference is {float(dla_num.logit_diff.mean()):.3f} nats.",
        )
    )
    last = f2m_num.columns[-1]
    display(
        Markdown(
            f"On {len(ds_num)} correctly answered {numbers_task} prompts from {ds_num.n_sequences} distinct sequences "
            f"(e.g. `{ds_num.prompts[0].text.strip()[-40:]}` -> `{ds_num.prompts[0].answer.strip()}`), the digits family's top "
            f"next head {best} puts {f2m_num.loc[str(best), last]:.2f} of the final position's attention on the last "
            f"member's units digit (on digits prompts: {f2m.loc[str(best)].iloc[-1]:.2f}); by direct logit attribution "
            f"it ranks {numbers_result['best_dla_rank']} of {len(rank)} parts (mean logit difference "
            f"{numbers_result['dla_logit_diff']:.2f} nats; on digits {float(dla.logit_diff.mean()):.2f})."
        )
    )

# %% [markdown]
# ### The logit lens by sequence length
#
# Does the model compute a continuation differently depending on how many members it has seen
# (the question was raised for decreasing sequences)? For each direction in `lens_directions` and
# each number of members shown in `lens_lengths`, `n_lens_length` correctly answered prompts
# (`lens_template` template) are read by the logit lens: per configuration, the median layer at
# which the answer first becomes top-1 and from which it stays top-1, and the share of prompts
# whose answer is never top-1 before the output.

# %%
lens_rows, lens_counts, lens_skipped = [], [], {}
for d in lens_directions:
    for n_members in lens_lengths:
        try:
            ds_len = discovery_dataset(
                lm,
                model,
                focus,
                template=lens_template,
                direction=d,
                length=n_members,
                n=max(n_prompts, 2 * n_lens_length),
                seed=seed,
                prefix=prefix,
                min_prompts=2,
            )
        except SeqcircError as err:  # no sequence fits, or no prompt answered correctly
            lens_skipped[f"{d}-{n_members}"] = str(err)
            continue
        res = dataset_logit_lens(lm, ds_len.subset(list(range(min(n_lens_length, len(ds_len))))), progress=False)
        per_prompt = pd.DataFrame(
            {"first": res.first_top1_layer().tolist(), "stable": res.stable_top1_layer().tolist()}
        )
        reached = per_prompt[per_prompt["first"] >= -1]
        lens_rows.append(
            {
                "direction": d,
                "length": n_members,
                "prompts": len(per_prompt),
                "median_first_top1": float(reached["first"].median()) if len(reached) else float("nan"),
                "median_stable_top1": float(per_prompt.loc[per_prompt["stable"] >= -1, "stable"].median())
                if (per_prompt["stable"] >= -1).any()
                else float("nan"),
                "never_top1": float((per_prompt["first"] == -2).mean()),
            }
        )
        lens_counts.append(first_top1_summary(res).assign(direction=d, length=n_members))
lens_by_length = pd.DataFrame(
    lens_rows, columns=["direction", "length", "prompts", "median_first_top1", "median_stable_top1", "never_top1"]
)
for name, err in lens_skipped.items():
    display(Markdown(f"**{focus} {name} skipped:** {err}"))
if len(lens_by_length):
    display(
        figures.figure(
            plots.size_performance_curve(
                lens_by_length.melt(
                    id_vars=["direction", "length"],
                    value_vars=["median_first_top1", "median_stable_top1"],
                    var_name="measure",
                    value_name="layer",
                ).assign(line=lambda d: d["direction"] + ", " + d["measure"]),
                x="length",
                y="layer",
                color="line",
                y_title="layer (median over prompts)",
                title=f"{focus}: where the answer forms, by members shown",
            ),
            "Median layer at which the logit lens first reads the answer as top-1 (first) and from which it stays top-1 "
            "(stable), against the number of members shown, per direction. A jump between two lengths marks a change in "
            "where (and perhaps how) the continuation is computed.",
        )
    )
reader_table(
    lens_by_length,
    [
        Column("direction", "direction"),
        Column("length", "members shown", "int"),
        Column("prompts", "prompts read", "int"),
        Column("median_first_top1", "median layer where the answer first becomes top-1", "number", 1),
        Column("median_stable_top1", "median layer from which it stays top-1", "number", 1),
        Column("never_top1", "never top-1 (% of prompts)", "fraction"),
    ],
    caption=f"The logit lens by number of members shown ({focus}, {lens_template} template). A jump between two "
    "lengths marks a change in where the continuation is computed.",
)

# %%
_ = write_json_atomic(
    results_dir(model) / SuccessorHeads.file,
    SuccessorHeads(
        model=model,
        smoke=smoke,
        families=families,
        skipped=skipped,
        kinds=kinds,
        over=over,
        top_k=top_k,
        embedding=embedding,
        focus=focus,
        template=template,
        seed=seed,
        n_prompts=n_prompts,
        n_kept=len(ds),
        n_lens=len(lens_ds),
        overview=frame_records(overview),
        scores=HeadScores.from_table(
            pd.concat([scores[f].drop(columns="kv_head").assign(family=f) for f in families], ignore_index=True),
            panels=["family"],
            description=f"OV scores (top-{top_k} over the {over}), one panel per family",
        ),
        top_next_head={
            "component": str(best),
            "ov_member_table": {
                "rows": list(ov_table.index),
                "columns": list(ov_table.columns),
                "logits": ov_table.values.tolist(),
            },
            "qk_table": {"rows": list(qk.index), "columns": list(qk.columns), "softmax": qk.values.tolist()},
            "final_to_members": AttentionPattern.from_frame(
                best, f2m.loc[[str(best)]].set_axis(["final"]), description=f"{focus}: final position -> each member"
            ),
        },
        dla=frame_records(dla_table),
        dla_heads=HeadScores.from_table(
            head_dla[["component", "mean", "std"]], description=f"direct logit attribution on {focus} prompts (nats)"
        ),
        dla_logit_diff=float(dla.logit_diff.mean()),
        logit_lens_first_top1=frame_records(first),
        direction=direction,
        lens_template=lens_template,
        logit_lens_by_length=frame_records(lens_by_length),
        logit_lens_by_length_counts=frame_records(pd.concat(lens_counts, ignore_index=True)) if lens_counts else [],
        logit_lens_by_length_skipped=lens_skipped,
        numbers_prompts=numbers_result,
    ),
)

# %% [markdown]
# ## What the numbers say
#
# Computed from the tables above, so it stays true whichever model and families the notebook ran on.

# %%
lines = []
for row in overview.itertuples():
    t = top_heads(scores[row.family], "next", 1).iloc[0]
    lines.append(
        f"- **{row.family}** ({row.members} members): the best next head is "
        f"**{t['component']}** (next {t['next']:.2f} vs chance {row.chance:.2f}"
        + (f", copy {t['copy']:.2f}" if "copy" in kinds else "")
        + ")."
    )
if len(families) > 1:
    s = shared.iloc[0]
    above = [f for f in families if s[f] > 2 * overview.set_index("family").loc[f, "chance"]]
    lines.append(
        f"- Averaged over the {len(families)} families the strongest successor head is **{shared.index[0]}** "
        f"(mean next {s['mean']:.2f}; " + ", ".join(f"{f} {s[f]:.2f}" for f in families) + "); "
        f"it scores more than twice chance on {len(above)} of {len(families)} families"
        + (f" ({', '.join(above)})." if above else ".")
    )
last = f2m.loc[str(best)]
lines.append(
    f"- On {len(ds)} correctly answered {focus} prompts, {best} sends {last.iloc[-1]:.2f} of the final "
    f"position's attention to the last member and {last.sum():.2f} to all members "
    f"(BOS {att_summary.loc[str(best), 'final_to_bos']:.2f})."
)
head_rank = head_dla.sort_values("mean", ascending=False).reset_index(drop=True)
rank = int(head_rank.index[head_rank["component"] == str(best)][0]) + 1
lead = top_parts.iloc[0]
lines.append(
    f"- Direct logit attribution: the largest part is **{lead.component}** ({lead['mean']:+.2f} nats of a mean "
    f"logit difference of {float(dla.logit_diff.mean()):.2f}); the top head is **{head_rank.component[0]}** "
    f"({head_rank['mean'][0]:+.2f}); {best} ranks {rank} of {len(head_rank)} heads by direct effect "
    f"({float(head_dla.set_index('component').loc[str(best), 'mean']):+.2f} nats)."
)
reached = first[first["layer"] >= -1]
if len(reached):
    mode = reached.sort_values("first_top1", ascending=False).iloc[0]
    lines.append(
        f"- Logit lens: the answer first becomes top-1 at layer {int(reached['layer'].min())} at the earliest "
        f"and most often at layer {int(mode.layer)} ({int(mode.first_top1)} of {len(lens_ds)} prompts); "
        f"{best} sits in layer {best.layer}, "
        + ("before" if best.layer < mode.layer else "at" if best.layer == mode.layer else "after")
        + " that layer."
    )
else:
    lines.append(f"- Logit lens: the answer is never top-1 at the final position in the {len(lens_ds)} prompts read.")
for d, g in lens_by_length.groupby("direction", sort=False):
    g = g.sort_values("length")
    steps = g["median_first_top1"].diff().abs()
    jump = g.iloc[int(steps.fillna(-1).argmax())] if steps.notna().any() else None
    lines.append(
        f"- Logit lens by length ({d} {focus}, {lens_template} template): the answer first becomes top-1 at "
        "median layer "
        + ", ".join(
            f"{v:.0f} with {n} members" if v == v else f"never with {n} members"
            for n, v in zip(g["length"], g["median_first_top1"])
        )
        + (
            f"; the largest change ({steps.max():.0f} layers) comes at {int(jump['length'])} members."
            if jump is not None and steps.max() > 0
            else "; it does not move with length."
        )
    )
if smoke:
    lines.append("- **Smoke mode**: these numbers come from a handful of prompts and are not results.")
display(Markdown("\n".join(lines)))
