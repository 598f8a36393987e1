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
#     estimate_s: 26
# ---

# %% [markdown]
# # Induction offsets: does a head follow members or positions?
#
# To continue `1 2 3 4` a model has to find the earlier members of the sequence. A head can do that
# in two ways: attend **to the previous member** wherever it is (a *same-type* head), or attend
# **a fixed number of tokens back** (a *positional* head). For every head and offset k we measure
# two mean attention weights (see `seqcirc_utils.mechanisms.induction`):
#
# - **member offset** `member_k`: from member i to member i-k;
# - **token offset** `token_k`: from a member at position p to position p-k, whatever token is there.
#
# On regular prompts (a fixed number of tokens between members) the two can read related positions,
# so a head that attends "to the previous member" cannot always be told from one that attends
# "n tokens back". Prompts with **irregular spacing** separate them: a random number of filler words
# precedes every member (`Hat 4 Sun Car 5 6 Pen 7`), and a random number of members is shown. A
# same-type head keeps its member-offset score while its token-offset scores spread out; a
# positional head does the opposite. The contrast `same_type_k1 = member_k1 - token_k1` is positive
# for heads that follow members and negative for heads that follow positions.
#
# The second half summarises attention between members (`seqcirc_utils.mechanisms.attention`): which heads
# attend from the final position to the last member, and from each member to the previous one.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 64  # prompts per family and prompt set
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: few prompts, one family, two offsets
families = ["digits", "months"]  # task families
template = "pure"  # template of the regular prompts (pure, comma, among_words)
attention_template = "comma"  # template for final-position attention (its final position is not a member)
max_offset = 4  # largest offset k scored (1 to max_offset)
n_members = [3, 6]  # members per irregular prompt (min, max)
gap = [0, 3]  # filler words before each member after the first in the irregular prompts (min, max)
contrast = 0.2  # |same_type_k1| above which a head counts as same-type (> 0) or positional (< 0)
top_n = 10  # rows of the top-heads tables

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.records import AttentionPattern
from seqcirc_utils.core.result_records import InductionOffsets
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import parse_component
from seqcirc_utils.mechanisms.attention import (
    attention_summary,
    dataset_member_attention,
    member_attention,
    member_to_member_matrix,
    top_attention_heads,
)
from seqcirc_utils.mechanisms.induction import dataset_offset_scores, prompts_offset_scores, spaced_prompts
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import induction_verdict_markdown, member_spacing, smoke_note
from seqcirc_utils.tasks.datasets import make_dataset

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, families, max_offset = min(n_prompts, 8), families[:1], min(max_offset, 2)
    display(smoke_note(f"{n_prompts} prompts, families {families}, offsets up to {max_offset}"))

# %% [markdown]
# ## The prompts
#
# The first prompts of each set, with their tokens and the member positions (BOS at position 0). The
# regular prompts show `max_offset + 1` members, so every offset has member pairs.

# %%
lm, info = load_model(model, device=device)
regular = {
    f: make_dataset(
        lm.tokenizer,
        f,
        model_name=model,
        template=template,
        length=max_offset + 1,
        n=n_prompts,
        seed=seed,
        prefix=prefix,
    )
    for f in families
}
spaced = {
    f: spaced_prompts(lm.tokenizer, f, n_prompts, n_members=tuple(n_members), gap=tuple(gap), seed=seed, prefix=prefix)
    for f in families
}
examples = pd.DataFrame(
    [
        {
            "family": f,
            "prompts": "regular",
            "text": p.text,
            "tokens": [lm.tokenizer.decode([t]) for t in p.tokens],
            "member positions": p.member_positions,
        }
        for f in families
        for p in regular[f].prompts[:2]
    ]
    + [
        {
            "family": f,
            "prompts": "spaced",
            "text": text,
            "tokens": [lm.tokenizer.decode([t]) for t in tokens],
            "member positions": pos,
        }
        for f in families
        for text, tokens, pos in list(zip(spaced[f].texts, spaced[f].tokens, spaced[f].member_positions))[:2]
    ]
)
reader_table(
    examples,
    [
        Column("family", "family"),
        Column("prompts", "prompt set"),
        Column("text", "prompt"),
        Column("tokens", "tokens"),
        Column("member positions", "member positions"),
    ],
    full=False,
)

# %% [markdown]
# ## Offset scores of every head

# %%
offsets = {}
for f in families:
    offsets[f, "regular"] = dataset_offset_scores(lm, regular[f], max_offset=max_offset, progress=False)
    offsets[f, "spaced"] = prompts_offset_scores(lm, spaced[f], max_offset=max_offset, progress=False)
table = pd.concat([s.to_dataframe().assign(family=f, prompts=p) for (f, p), s in offsets.items()], ignore_index=True)
pairs = pd.DataFrame(
    [
        {
            "family": f,
            "prompts": p,
            **{f"member_pairs_k{k + 1}": int(s.n_member_pairs[k]) for k in range(max_offset)},
            **{f"token_pairs_k{k + 1}": int(s.n_token_pairs[k]) for k in range(max_offset)},
        }
        for (f, p), s in offsets.items()
    ]
)
reader_table(
    pairs,
    [Column("family", "family"), Column("prompts", "prompt set")]
    + [
        Column(f"{kind}_pairs_k{k}", f"{kind} pairs at k={k}", "int")
        for kind in ("member", "token")
        for k in sorted({1, min(2, max_offset), max_offset})
    ],
    caption="Member and token pairs scored per offset k (the full table has every k).",
)

# %% [markdown]
# Each row of panels is one score for k = 1 .. max_offset on a shared colour scale (mean attention
# weight; layer 0 at the top). Compare a family's regular and spaced prompts: a head that lights up
# in the member panels of both is a same-type head; one that lights up in the token panels of the
# spaced prompts is positional.


# %%
def offset_panels(part: pd.DataFrame, score: str, title: str) -> alt.HConcatChart:
    charts = [
        plots.head_heatmap(
            plots.head_frame(part, f"{score}_k{k}"), title=f"k={k}", value_title="attention", diverging=False
        )
        for k in range(1, max_offset + 1)
    ]
    return alt.hconcat(*charts, title=title).resolve_scale(color="shared")


for (f, p), part in table.groupby(["family", "prompts"], sort=False):
    display(
        figures.figure(
            offset_panels(part, "member", f"{f}, {p} prompts: member i -> member i-k"),
            f"Mean attention from each {f} member to the member k places before it, {p} prompts, one "
            "panel per k, layer 0 at the top. Bright cells at k=1 are previous-member heads; compare "
            "with the token-offset figure that follows.",
        )
    )
    display(
        figures.figure(
            offset_panels(part, "token", f"{f}, {p} prompts: member at p -> token at p-k"),
            f"Mean attention from each {f} member to the token k positions before it, {p} prompts. "
            "A head bright here but not in the member figure follows positions, not members.",
        )
    )

# %% [markdown]
# ## Same-type against positional heads
#
# `same_type_k1 = member_k1 - token_k1`: red heads follow the previous member, blue heads the
# previous token(s). Token offsets also count the first member (member offsets cannot: it has no
# earlier member), whose previous token on the regular prompts is BOS, so heads that park their
# attention on BOS get a slightly negative contrast there even where members are adjacent.

# %%
for f, part in table.groupby("family", sort=False):
    charts = [
        plots.head_heatmap(
            plots.head_frame(sub, "same_type_k1"),
            title=f"{p} prompts",
            value_title="member_k1 - token_k1",
            diverging=True,
        )
        for p, sub in part.groupby("prompts", sort=False)
    ]
    display(
        figures.figure(
            alt.hconcat(*charts, title=f"{f}: same-type contrast at k=1").resolve_scale(color="shared"),
            f"Same-type contrast member_k1 - token_k1 for {f}, one panel per prompt set. Red heads follow "
            "the previous member, blue heads the previous token; the spaced panel is the one that tells "
            "them apart.",
        )
    )

# %% [markdown]
# The strongest previous-member heads on the irregularly spaced prompts (the test that separates the
# two kinds), and the most positional heads there.

# %%
shown_k = range(1, min(max_offset, 3) + 1)
cols = [
    Column("component", "head"),
    *[Column(f"member_k{k}", f"member offset {k}", "number", 3) for k in shown_k],
    *[Column(f"token_k{k}", f"token offset {k}", "number", 3) for k in shown_k],
    Column("same_type_k1", "same-type contrast", "number", 3),
]
spaced_table = {f: table[(table["family"] == f) & (table["prompts"] == "spaced")] for f in families}
for f in families:
    display(Markdown(f"**{f}, spaced prompts: top {top_n} heads by member_k1**"))
    display(reader_table(spaced_table[f].nlargest(top_n, "member_k1"), cols))
    display(Markdown(f"**{f}, spaced prompts: top {top_n} positional heads (lowest same_type_k1)**"))
    display(reader_table(spaced_table[f].nsmallest(top_n, "same_type_k1"), cols))

# %% [markdown]
# ## Attention between members
#
# `attention_summary` per head: from the final position to the last member (on prompts in the
# `attention_template`, whose final position, where the next member is predicted, is not itself a
# member) and from each member to the previous member (on the spaced prompts, where "previous member"
# is not a fixed distance). Other columns:
# attention from the final position to all members and to BOS, from each member to all earlier
# members and to the first member.

# %%
final_sets = {
    f: make_dataset(
        lm.tokenizer, f, model_name=model, template=attention_template, n=n_prompts, seed=seed, prefix=prefix
    )
    for f in families
}
display(
    Markdown(
        "For example "
        + "; ".join(f"{f}: `{final_sets[f].prompts[0].text}` -> `{final_sets[f].prompts[0].answer}`" for f in families)
        + "."
    )
)
att = {}
for f in families:
    att[f, attention_template] = dataset_member_attention(lm, final_sets[f], progress=False)
    att[f, "spaced"] = member_attention(lm, spaced[f].tokens, spaced[f].member_positions, progress=False)
summary = pd.concat([attention_summary(a).assign(family=f, prompts=p) for (f, p), a in att.items()], ignore_index=True)
last_member = {
    f: top_attention_heads(
        summary[(summary["family"] == f) & (summary["prompts"] == attention_template)], "final_to_last_member", top_n
    )
    for f in families
}
prev_member = {
    f: top_attention_heads(
        summary[(summary["family"] == f) & (summary["prompts"] == "spaced")], "member_to_prev_member", top_n
    )
    for f in families
}
att_cols = [
    Column("component", "head"),
    Column("final_to_last_member", "final -> last member", "number", 3),
    Column("final_to_members", "final -> all members", "number", 3),
    Column("final_to_bos", "final -> BOS", "number", 3),
    Column("member_to_prev_member", "member -> previous member", "number", 3),
    Column("member_to_same_type", "member -> earlier members", "number", 3),
    Column("member_to_first_member", "member -> first member", "number", 3),
]
for f in families:
    display(
        Markdown(f"**{f}, {attention_template} prompts: heads attending from the final position to the last member**")
    )
    display(reader_table(last_member[f], att_cols))
    display(Markdown(f"**{f}, spaced prompts: heads attending from a member to the previous member**"))
    display(reader_table(prev_member[f], att_cols))

# %%
for f in families:
    part = summary[summary["family"] == f]
    display(
        figures.figure(
            alt.hconcat(
                plots.head_heatmap(
                    plots.head_frame(part[part["prompts"] == attention_template], "final_to_last_member"),
                    title=f"final -> last member ({attention_template})",
                    value_title="attention",
                ),
                plots.head_heatmap(
                    plots.head_frame(part[part["prompts"] == "spaced"], "member_to_prev_member"),
                    title="member -> previous member (spaced)",
                    value_title="attention",
                ),
                title=f"{f}: attention summary",
            ).resolve_scale(color="shared"),
            f"{f}: attention from the final position to the last member (left) and from each member to the previous "
            "member on spaced prompts (right), every head, layer 0 at the top. Heads bright in both panels find the last "
            "member and step back through the sequence.",
        )
    )

# %% [markdown]
# ## Member-to-member attention of the top previous-member head
#
# Mean attention from member i (rows, counted from the last member `m-1`) to earlier member j
# (columns) on the spaced prompts, for each family's top head by `member_k1`.

# %%
patterns = {}
for f in families:
    best = parse_component(spaced_table[f].nlargest(1, "member_k1")["component"].iloc[0])
    matrix = member_to_member_matrix(att[f, "spaced"], best)
    patterns[f] = AttentionPattern.from_frame(best, matrix, description=f"{f}: member -> member, spaced prompts")
    display(
        figures.figure(
            plots.matrix_heatmap(
                plots.matrix_frame(matrix, row="query member", col="key member"),
                row="query member",
                col="key member",
                value_title="attention",
                title=f"{f}: {best} member -> member attention (spaced prompts)",
            ),
            f"Mean attention of {best}, the top previous-member head for {f}, from each member (rows) to "
            "each earlier member (columns) on spaced prompts. A dark band just below the diagonal means it "
            "attends to the previous member wherever it is.",
        )
    )

offsets_record = InductionOffsets(
    model=model,
    n_prompts=n_prompts,
    seed=seed,
    smoke=smoke,
    families=families,
    template=template,
    attention_template=attention_template,
    max_offset=max_offset,
    n_members=n_members,
    gap=gap,
    offsets=frame_records(table),
    pairs=frame_records(pairs),
    attention=frame_records(summary),
    member_to_member=patterns,
    contrast=contrast,
    top_n=top_n,
    regular_spacing={f: member_spacing(regular[f].prompts[0].member_positions) for f in families},
)
_ = write_json_atomic(results_dir(model) / InductionOffsets.file, offsets_record)

# %% [markdown]
# ## What the numbers say
#
# Computed from the record this chapter wrote (`seqcirc_utils.report.verdicts`; the Findings page uses
# the same rule: a head is same-type when `same_type_k1 > contrast` and positional when it is below
# `-contrast`), so it stays true whichever model and families the notebook ran on.

# %%
Markdown(induction_verdict_markdown(offsets_record))
