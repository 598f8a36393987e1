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
#     estimate_s: 135
# ---

# %% [markdown]
# # Behaviour: does the model continue sequences?
#
# Before looking for circuits we check that the model performs the tasks at all: a circuit can only
# explain a behaviour the model has. For every task family (digits, number words, months, days,
# letters), template (bare sequence `1 2 3 4`, comma-separated `1, 2, 3, 4,`, the paper's
# among-words template `Van done in 1. Hat done in 2. ...`, and mixed families) and direction
# (increasing, decreasing), we build prompts whose answer is one token and measure at the final
# position:
#
# - **top-1 accuracy**: how often the answer is the model's most likely next token;
# - **p(correct)**: the mean probability of the answer;
# - **logit difference**: mean `logit(correct) - logit(incorrect)`, the incorrect token being the
#   last member shown (the paper's circuit metric, in nats);
# - for greater-than, the **probability difference** (see [Methods](../methods.md)).
#
# The task `numbers` continues two-digit numbers on tokenizers that spell them as digit tokens
# (SmolLM2): the prompt ends after the answer's tens digit, `23 24 25 26 2`, and the answer is the units
# digit `7` (the incorrect token: the last member's units digit, `6`). Prompts whose answer starts a new
# decade (`17 18 19 2` -> `0`) are also scored on their own (columns `n_crossing`, `crossing_*`). On a
# tokenizer whose numbers up to 99 are single tokens (GPT-2) the task is refused: there it is `digits`.
#
# Combinations the tokenizer cannot express (a family whose members are not single tokens) are
# reported with an error rather than silently dropped.
#
# Every prompt starts with one **prefix** token (see [Methods](../methods.md)): by default the
# pretraining document separator (`<|endoftext|>` for SmolLM2 and GPT-2), so a prompt reads as the
# start of a document. The last section compares it with the tokenizer's `bos_token` (for
# SmolLM2-Instruct the chat-turn marker `<|im_start|>`) and with no prefix at all.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 32  # prompts per (task, template, direction)
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the prefix of the main table (all three are compared below)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: few prompts, the pure template only

# %%
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.errors import ParameterError, SeqcircError
from seqcirc_utils.core.result_records import Behaviour
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import behaviour_verdict, prefix_verdict, smoke_note
from seqcirc_utils.tasks.behaviour import DEFAULT_TEMPLATES, prefix_summary, prefix_table
from seqcirc_utils.tasks.datasets import PREFIX_MODES, resolve_prefix

if prefix not in PREFIX_MODES:
    raise ParameterError(f"unknown prefix {prefix!r}; valid: {', '.join(PREFIX_MODES)}")
figures = plots.enable_offline()  # this chapter's figure numbers
templates = ("pure",) if smoke else DEFAULT_TEMPLATES
if smoke:
    n_prompts = min(n_prompts, 8)
    display(smoke_note(f"{n_prompts} prompts per combination, templates {templates}"))

# %%
lm, info = load_model(model, device=device)
prefixes = [prefix] + [p for p in PREFIX_MODES if p != prefix]  # the main prefix first
resolved, unavailable = {}, {}
for p in prefixes:
    try:
        resolved[p] = resolve_prefix(lm.tokenizer, p)
    except SeqcircError as err:  # e.g. "bos" for a tokenizer without one: reported in the comparison
        unavailable[p] = str(err)
resolved_prefix = resolve_prefix(lm.tokenizer, prefix)  # the main prefix must exist (raises naming the valid ones)
all_prefixes = prefix_table(lm, model, prefixes=prefixes, templates=templates, n=n_prompts, seed=seed)
table = all_prefixes[all_prefixes["prefix"] == prefix].drop(columns=["prefix_token"]).reset_index(drop=True)
_ = write_json_atomic(
    results_dir(model) / Behaviour.file,
    Behaviour(
        model=model,
        n_prompts=n_prompts,
        seed=seed,
        smoke=smoke,
        templates=list(templates),
        prefix=resolved_prefix.to_json(),
        rows=frame_records(table),
        prefixes={p: r.to_json() for p, r in resolved.items()},
        prefix_rows=frame_records(all_prefixes),
    ),
)
display(
    Markdown(
        (
            f"Prompts start with the **{prefix}** prefix: `{resolved_prefix.token}` "
            f"(token id {resolved_prefix.token_id})."
            if resolved_prefix.token_id is not None
            else "Prompts start with **no** prefix token."
        )
        + "".join(f" Prefix {p} is not available for this tokenizer: {err}" for p, err in unavailable.items())
    )
)
reader_table(
    table,
    [
        Column("task", "task"),
        Column("template", "template"),
        Column("direction", "direction"),
        Column("n", "prompts", "int"),
        Column("top1_accuracy", "top-1 accuracy", "fraction"),
        Column("p_correct", "mean p(correct)", "number", 2),
        Column("logit_diff", "logit difference (nats)", "number", 2),
        Column("prob_diff", "probability difference", "fraction", 1),
    ],
)

# %% [markdown]
# ## Accuracy by task and template
#
# Each bar is one (task, template) combination; the two panels are the two directions.

# %%
ok = table[table["n"] > 0]
figures.figure(
    plots.bar_chart(
        ok,
        x="task",
        y="top1_accuracy",
        color="template",
        column="direction",
        y_title="top-1 accuracy",
        title=f"{model}: top-1 accuracy",
    ),
    f"Top-1 accuracy per task (bars: templates; panels: directions), prompts with the {prefix} prefix. "
    "Compare the two panels: decreasing sequences against increasing ones.",
)

# %% [markdown]
# ## Logit difference
#
# The logit difference is the quantity circuit discovery preserves: a circuit's score is its
# logit difference as a percentage of the full model's, which is only meaningful where the full
# model's logit difference is clearly positive.

# %%
figures.figure(
    plots.bar_chart(
        ok,
        x="task",
        y="logit_diff",
        color="template",
        column="direction",
        y_title="logit difference (nats)",
        title=f"{model}: logit(correct) - logit(last member)",
    ),
    "Mean logit difference (correct answer minus the last shown member) per task and template. "
    "Look for bars near or below zero: there the full model barely prefers the answer.",
)

# %% [markdown]
# ## What the numbers say
#
# The summary below is computed from the table above, so it stays true whichever model the
# notebook ran on.

# %%
Markdown(behaviour_verdict(frame_records(table)))

# %% [markdown]
# ## How much the prompt prefix matters
#
# The same prompts (same seed, members and fillers) with each prefix: the document separator, the
# tokenizer's `bos_token`, and none. The first token is also where many heads park attention they do
# not need (an "attention sink"), so removing it or replacing it with a chat marker can change the
# behaviour the circuits explain. Rows: task and direction; columns: prefix; values averaged over
# templates.

# %%
tokens_used = pd.DataFrame([{"prefix": p, "token": r.token, "token_id": r.token_id} for p, r in resolved.items()])
display(
    reader_table(
        tokens_used,
        [Column("prefix", "prefix"), Column("token", "token"), Column("token_id", "token id", "int")],
        full=False,
    )
)
acc = prefix_summary(all_prefixes, "top1_accuracy")
ld = prefix_summary(all_prefixes, "logit_diff")
prefix_cols = [p for p in prefixes if p in acc.columns]
display(
    reader_table(
        acc,
        [Column("task", "task"), Column("direction", "direction")]
        + [Column(p, f"{p}: top-1 accuracy", "fraction") for p in prefix_cols],
        caption="Top-1 accuracy per prefix (mean over templates).",
    )
)
display(
    reader_table(
        ld,
        [Column("task", "task"), Column("direction", "direction")]
        + [Column(p, f"{p}: logit difference (nats)", "number", 2) for p in prefix_cols],
        caption="Logit difference per prefix (nats, mean over templates).",
    )
)

# %%
ok_all = all_prefixes[all_prefixes["n"] > 0]
acc_long = acc.melt(id_vars=["task", "direction"], var_name="prefix", value_name="top1_accuracy")
figures.figure(
    plots.bar_chart(
        acc_long,
        x="task",
        y="top1_accuracy",
        color="prefix",
        column="direction",
        y_title="top-1 accuracy (mean over templates)",
        title=f"{model}: top-1 accuracy by prompt prefix",
    ),
    "Top-1 accuracy per task with each prompt prefix (bars), averaged over templates. "
    "Where the bars of one task differ, the choice of first token changes what the model does.",
)

# %%
Markdown(prefix_verdict(ok_all, acc, ld, prefix, {p: r.token for p, r in resolved.items()}))

# %% [markdown]
# Circuit discovery in the following chapters uses prompts the model answers correctly (top-1 and
# p(correct) > 2 p(incorrect), as in the paper), so a task with low accuracy here leaves fewer
# prompts there; a task the model cannot do at all has no circuit to find.
