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
# Combinations the tokenizer cannot express (a family whose members are not single tokens) are
# reported with an error rather than silently dropped.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.load_model
n_prompts = 32  # prompts per (task, template, direction)
seed = 0  # dataset seed
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI: few prompts, the pure template only

# %%
from IPython.display import Markdown, display

from seqcirc_utils import plots
from seqcirc_utils.behaviour import DEFAULT_TEMPLATES, behaviour_table
from seqcirc_utils.models import load_model
from seqcirc_utils.results import frame_records, results_dir, write_json_atomic

plots.enable_offline()
templates = ("pure",) if smoke else DEFAULT_TEMPLATES
if smoke:
    n_prompts = min(n_prompts, 8)
    print(f"SMOKE MODE: {n_prompts} prompts per combination, templates {templates}; numbers are not results.")
print(f"model={model} n_prompts={n_prompts} seed={seed}")

# %%
lm, info = load_model(model, device=device)
table = behaviour_table(lm, model, templates=templates, n=n_prompts, seed=seed)
out = write_json_atomic(results_dir(model) / "behaviour.json", {
    "model": model, "n_prompts": n_prompts, "seed": seed, "smoke": smoke, "templates": list(templates),
    "rows": frame_records(table),
})
print(f"wrote {out}")
table.round(3)

# %% [markdown]
# ## Accuracy by task and template
#
# Each bar is one (task, template) combination; the two panels are the two directions.

# %%
ok = table[table["n"] > 0]
plots.bar_chart(ok, x="task", y="top1_accuracy", color="template", column="direction",
                y_title="top-1 accuracy", title=f"{model}: top-1 accuracy")

# %% [markdown]
# ## Logit difference
#
# The logit difference is the quantity circuit discovery preserves: a circuit's score is its
# logit difference as a percentage of the full model's, which is only meaningful where the full
# model's logit difference is clearly positive.

# %%
plots.bar_chart(ok, x="task", y="logit_diff", color="template", column="direction",
                y_title="logit difference (nats)", title=f"{model}: logit(correct) - logit(last member)")

# %% [markdown]
# ## What the numbers say
#
# The summary below is computed from the table above, so it stays true whichever model the
# notebook ran on.

# %%
inc = ok[(ok["direction"] == "increasing") & (ok["task"] != "greater_than")]
dec = ok[(ok["direction"] == "decreasing")]
best = inc.sort_values("top1_accuracy", ascending=False).iloc[0] if len(inc) else None
worst = inc.sort_values("top1_accuracy").iloc[0] if len(inc) else None
lines = []
if best is not None:
    lines.append(f"- Best increasing combination: **{best.task} / {best.template}**, top-1 accuracy "
                 f"{best.top1_accuracy:.0%}, mean p(correct) {best.p_correct:.2f}.")
    lines.append(f"- Hardest increasing combination: **{worst.task} / {worst.template}**, top-1 accuracy "
                 f"{worst.top1_accuracy:.0%}.")
if len(inc) and len(dec):
    lines.append(f"- Mean top-1 accuracy, increasing {inc.top1_accuracy.mean():.0%} vs decreasing "
                 f"{dec.top1_accuracy.mean():.0%}: "
                 + ("decreasing sequences are harder for this model." if dec.top1_accuracy.mean() < inc.top1_accuracy.mean()
                    else "decreasing sequences are not harder for this model."))
gt = ok[ok["task"] == "greater_than"]
if len(gt) and "prob_diff" in gt:
    lines.append(f"- Greater-than probability difference: {gt.prob_diff.iloc[0]:.1%} "
                 "(GPT-2 small: 81.7 %, Hanna et al.).")
errors = table[table["n"] == 0]
if len(errors):
    lines.append(f"- {len(errors)} combinations could not be built for this tokenizer (see the `error` column).")
if smoke:
    lines.append("- **Smoke mode**: these numbers come from a handful of prompts and are not results.")
display(Markdown("\n".join(lines) if lines else "No combination could be evaluated."))

# %% [markdown]
# Circuit discovery in the following chapters uses prompts the model answers correctly (top-1 and
# p(correct) > 2 p(incorrect), as in the paper), so a task with low accuracy here leaves fewer
# prompts there; a task the model cannot do at all has no circuit to find.
