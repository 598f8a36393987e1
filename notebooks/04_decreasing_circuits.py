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
#     estimate_s: 270
# ---

# %% [markdown]
# # Decreasing sequences, and how circuits change with sequence length
#
# Continuing `9 8 7 6 ->5` needs "the member before", the mirror image of `1 2 3 4 ->5`. Does the
# model reuse the increasing circuit, or build a different one? And does the circuit for short
# sequences (3 members shown) differ from the circuit for longer ones (5 members)? For every
# (direction, length) we find a digits circuit at one threshold, then compare them: overlap, and
# each circuit scored on every other configuration's data.
#
# On a tokenizer that spells numbers digit by digit (SmolLM2) single digits give only a handful of
# distinct sequences (a decreasing digits set of 5 members has at most 5), so the chapter also finds a
# circuit for decreasing two-digit `numbers` (`26, 25, 24, 2` -> `3`, the prompt ending after the
# answer's tens digit; `numbers_directions` adds the increasing one): it has dozens of sequences, enough
# for held-out prompts drawn from sequences discovery never saw, and it is compared with the digits
# circuit of the same direction. On a tokenizer whose numbers up to 99 are single tokens (GPT-2)
# `numbers` is `digits` and is left out. Every circuit is scored on held-out prompts from a
# sequence-disjoint split; the sentence under the table states both sides' prompt and sequence counts.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = (
    16  # prompts per configuration before filtering (digits has 7 increasing sequences: more prompts repeat them)
)
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
task = "digits"  # task family
template = "comma"  # prompt template
directions = ["increasing", "decreasing"]  # sequence directions
lengths = [3, 5]  # members shown
numbers_task = "numbers"  # second task beside digits at one length ("" to leave it out) ...
numbers_directions = ["decreasing"]  # ... in these directions (each costs about two digits configurations) ...
numbers_length = 4  # ... with this many members shown
threshold = 0.8  # circuit threshold (fraction of the full logit difference)
method = "fast"  # "fast" (attribution-ranked, see the benchmark) or "sweep" (the paper's pruning)
minimal = True  # refine fast-method circuits to 1-minimal (one pass per kept component; smoke runs skip it)
exact_heads = 8  # heads per configuration whose estimated single-ablation drop is checked by exact ablation
steps = [1, 2, 3]  # step-k study: the steps whose behaviour is measured ("1, 3, 5," -> 7 is step 2) ...
step_families = ["digits", "number_words"]  # ... on these families (increasing, the template above) ...
step_k = 2  # ... and the step whose circuit is found (task, template, threshold, method as above) ...
step_length = 3  # ... with this many members shown (compared with the step-1 circuit of the same length)

# %%
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.records import HeadScores
from seqcirc_utils.core.result_records import DecreasingCircuits, StepKCircuits
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import Circuit
from seqcirc_utils.discovery.pipeline import discover, score_columns, write_circuits
from seqcirc_utils.evaluation.compare import cross_task_scores, overlap_table, shared_components
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import (
    decreasing_verdict,
    sample_sizes_sentence,
    skipped_sentence,
    smoke_note,
    step_k_verdict,
)
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.scoring.importance import estimated_drop_scores, head_importance

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, lengths, minimal = min(n_prompts, 16), lengths[-1:], False
    steps, step_families = [s for s in steps if s in (1, step_k)], [task]
    numbers_directions = []  # a numbers circuit costs ~3.5 digits circuits (228 passes against 54-70, measured)
    display(
        smoke_note(
            f"{n_prompts} prompts, digits lengths {lengths}, no numbers circuit, step families {step_families}, "
            "circuits not refined to 1-minimal"
        )
    )

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
out_dir = results_dir(model)
configs = [(task, d, n) for d in directions for n in lengths]
configs += [(numbers_task, d, numbers_length) for d in numbers_directions] if numbers_task else []
records, datasets, circuits, meta, skipped = {}, {}, {}, {}, {}
for config_task, direction, length in configs:
    name = f"{config_task} {direction[:3]}-{length}"
    try:
        recs, datasets[name], _ = discover(
            lm,
            info,
            model,
            config_task,
            DiscoveryConfig([threshold], method=method, fast={"minimal": minimal}),
            template=template,
            direction=direction,
            length=length,
            n=n_prompts,
            seed=seed,
            prefix=prefix,
        )
    except SeqcircError as err:  # numbers on a tokenizer with single-token numbers, or too few prompts
        skipped[name] = str(err)
        continue
    records[name], meta[name] = recs[0], {"task": config_task, "direction": direction, "length": length}
    circuits[name] = Circuit.from_lists(recs[0]["heads"], recs[0]["mlps"]).components
    write_circuits(out_dir / f"circuit_{config_task}_{direction}_{length}.json", recs)
summary = pd.DataFrame(
    [
        {
            "config": n,
            **meta[n],
            "prompts": r["n_prompts"],
            "full_logit_diff": r["full_metric"],
            "heads": len(r["heads"]),
            "mlps": len(r["mlps"]),
            **score_columns(r),
        }
        for n, r in records.items()
    ]
)
display(
    Markdown(
        sample_sizes_sentence(summary.to_dict(orient="records")) + (" " + skipped_sentence(skipped) if skipped else "")
    )
)
reader_table(
    summary,
    [
        Column("config", "configuration"),
        Column("prompts", "discovery prompts", "int"),
        Column("sequences", "discovery sequences", "int"),
        Column("heads", "heads", "int"),
        Column("mlps", "MLPs", "int"),
        Column("score_%", "in-sample score (% of full) [95 % CI]", "percent", interval="score_ci95"),
        Column("heldout_%", "held-out score (% of full) [95 % CI]", "percent", interval="heldout_ci95"),
        Column("heldout_sequences", "held-out sequences (disjoint)", "int"),
    ],
    caption=f"Circuits at {100 * threshold:.0f} % of the full logit difference ({method} method, {template} template).",
)

# %%
for name, comps in circuits.items():
    display(
        figures.figure(
            plots.circuit_diagram(info.n_layers, info.n_heads, comps, title=f"{name}: {len(comps)} components"),
            f"The {meta[name]['task']} circuit for {meta[name]['direction']} sequences, {meta[name]['length']} members "
            f"shown: the "
            f"{len(comps)} kept heads (circles) and MLPs (squares, right column) in red, layer 0 at the bottom. Compare "
            "the increasing and decreasing circuits of the same length.",
        )
    )

# %% [markdown]
# ## Every head's estimated effect
#
# Attribution patching estimates, for every head at once, the drop in points of the logit difference
# if that head alone were mean-ablated (one forward and one backward pass per configuration; the
# `exact_heads` largest estimates are checked by exact ablation). Heads that matter for one direction
# and not the other carry the direction.

# %%
importance = pd.concat(
    [
        head_importance(lm, info, datasets[n], exact_top=exact_heads, progress=False, ablators=ablators).assign(
            config=n
        )
        for n in datasets
    ]
)
head_scores = estimated_drop_scores(importance, panel="config")
display(
    figures.figure(
        plots.head_scores_panels(
            head_scores, title=f"{task}: estimated single-head ablation drop", value_title="est. drop (points)"
        ),
        "Estimated drop (points of the logit difference) when one head alone is mean-ablated, one panel per "
        "configuration (direction-length), layer 0 at the top, one colour scale. Heads dark in the increasing panels "
        "but not the decreasing ones (or the reverse) carry the direction.",
    )
)
exact = importance[importance["exact"]].sort_values("drop_points", ascending=False)
exact_columns = ["config", "component", "drop_points", "estimated_drop"]
reader_table(
    exact.groupby("config", sort=False).head(4).sort_values("config", kind="stable")[exact_columns],
    [
        Column("config", "configuration"),
        Column("component", "head"),
        Column("drop_points", "exact drop (points)", "number", 2),
        Column("estimated_drop", "estimated drop (points)", "number", 2),
    ],
    caption="The four heads per configuration with the largest exact single-head ablation drop.",
)

# %% [markdown]
# ## Overlap and cross-scoring
#
# Rows of the cross table are circuits, columns the data they are scored on (% of the full model's
# logit difference on that data).

# %%
overlap = overlap_table(circuits, kind="head")
cross = 100 * cross_task_scores(lm, info, circuits, datasets, ablators=ablators)
shared = shared_components(circuits, kind="head")
decreasing = DecreasingCircuits(
    model=model,
    task=task,
    template=template,
    threshold=threshold,
    method=method,
    smoke=smoke,
    summary=summary.to_dict(orient="records"),
    head_overlap=overlap.to_dict(orient="records"),
    cross_task_percent=cross.to_dict(),
    shared_heads=[str(c) for c in shared],
    circuits={n: r.with_extra(dataset=None) for n, r in records.items()},
    head_importance=head_scores,
    single_head_ablation=frame_records(exact[exact_columns]),
)
write_json_atomic(out_dir / DecreasingCircuits.file, decreasing)
display(
    reader_table(
        overlap,
        [
            Column("a", "circuit A"),
            Column("b", "circuit B"),
            Column("size_a", "heads in A", "int"),
            Column("size_b", "heads in B", "int"),
            Column("intersection", "shared heads", "int"),
            Column("jaccard", "head Jaccard", "number", 2),
        ],
    )
)
display(
    figures.figure(
        plots.overlap_chart(circuits, title="circuit membership per configuration"),
        f"Which configuration's circuit keeps each component (left: filled = kept) and how many of the "
        f"{len(circuits)} share it (right); the longest bars are the {len(shared)} heads in every circuit.",
    )
)
reader_table(
    cross.rename_axis("circuit").reset_index(),
    [Column("circuit", "circuit \\ scored on")] + [Column(c, f"{c} data (%)", "percent") for c in cross.columns],
    caption="Each circuit (rows) scored on each configuration's data (columns), % of the full model's logit "
    "difference there.",
)

# %% [markdown]
# Reading the two tables: a pair counts as one reused circuit when each direction's circuit keeps at
# least the discovery threshold on the other direction's data (`seqcirc_utils.report.verdicts`, the
# rule the Findings page uses too).

# %%
Markdown(decreasing_verdict(decreasing))

# %% [markdown]
# ## Step-k sequences
#
# Sequences with a larger step (`1, 3, 5, ->7`, `two, four, six, ->eight`) need "add k" rather than
# "add one". First, where the model does them: its top-1 accuracy and mean logit difference
# (answer against the last member shown) on increasing prompts for every step in `steps`; a
# family's longer steps run out of single-token members sooner, so some cells are missing (the
# reason is listed). Then a circuit for step `step_k` (same task, template, threshold and method as
# above, `step_length` members shown), its overlap with the step-1 circuit of the same length, each
# scored on the other's data, and the **add-k OV score** of its heads: the fraction of members whose
# OV output (effective embedding through the head's OV circuit, top-1 over the family, see the
# successor-heads chapter) is the member k ahead.

# %%
from seqcirc_utils.mechanisms.ov_scores import ov_scores
from seqcirc_utils.tasks.behaviour import evaluate
from seqcirc_utils.tasks.datasets import make_dataset

step_rows = []
for fam in step_families:
    for k in steps:
        base = {"family": fam, "step": k}
        try:
            ds_k = make_dataset(
                lm.tokenizer,
                fam,
                model_name=model,
                template=template,
                step=k,
                length=step_length,
                n=n_prompts,
                seed=seed,
                prefix=prefix,
            )
        except SeqcircError as err:  # this step does not fit the tokenizer or the family
            step_rows.append({**base, "n": 0, "distinct_prompts": 0, "error": str(err)})
            continue
        step_rows.append(
            {**base, "distinct_prompts": len({p.text for p in ds_k.prompts}), **evaluate(lm, ds_k), "error": None}
        )
step_behaviour = pd.DataFrame(step_rows)
step_ok = step_behaviour[step_behaviour["n"] > 0]
if len(step_ok):
    display(
        figures.figure(
            plots.bar_chart(
                step_ok.assign(accuracy_pct=100 * step_ok["top1_accuracy"]),
                x="step",
                y="accuracy_pct",
                color="family",
                y_title="top-1 accuracy (%)",
                title=f"{model}: step-k sequences",
            ),
            f"Top-1 accuracy on increasing sequences of step k ({step_length} members shown, {template} template), per "
            "family. Where a family's bar stays high as k grows, the model adds k, not just one.",
        )
    )
reader_table(
    step_behaviour,
    [
        Column("family", "family"),
        Column("step", "step", "int"),
        Column("n", "prompts", "int"),
        Column("distinct_prompts", "distinct prompts", "int"),
        Column("top1_accuracy", "top-1 accuracy", "fraction"),
        Column("error", "why not measured"),
    ],
)

# %%
step_name, base_name = f"{task} step{step_k}-{step_length}", f"{task} inc-{step_length}"
step_error = None
try:
    recs, datasets[step_name], _ = discover(
        lm,
        info,
        model,
        task,
        DiscoveryConfig([threshold], method=method, fast={"minimal": minimal}),
        template=template,
        step=step_k,
        length=step_length,
        n=n_prompts,
        seed=seed,
        prefix=prefix,
        progress=False,
    )
    step_record = recs[0]
    write_circuits(out_dir / f"circuit_{task}_step{step_k}_{step_length}.json", recs)
    if base_name not in records:  # the step-1 circuit of the same length was not found above
        recs1, datasets[base_name], _ = discover(
            lm,
            info,
            model,
            task,
            DiscoveryConfig([threshold], method=method, fast={"minimal": minimal}),
            template=template,
            length=step_length,
            n=n_prompts,
            seed=seed,
            prefix=prefix,
            progress=False,
        )
        records[base_name] = recs1[0]
        circuits[base_name] = Circuit.from_lists(recs1[0]["heads"], recs1[0]["mlps"]).components
except SeqcircError as err:  # too few correct prompts, or no step-k sequence fits the tokenizer
    step_error = str(err)
if step_error is None:
    step_circuits = {
        base_name: circuits[base_name],
        step_name: Circuit.from_lists(step_record["heads"], step_record["mlps"]).components,
    }
    step_summary = pd.DataFrame(
        [
            {
                "config": n,
                "step": 1 if n == base_name else step_k,
                "prompts": r["n_prompts"],
                "distinct_prompts": len({p["text"] for p in (r["dataset"] or {}).get("prompts", [])}),
                "heads": len(r["heads"]),
                "mlps": len(r["mlps"]),
                **score_columns(r),
            }
            for n, r in ((base_name, records[base_name]), (step_name, step_record))
        ]
    )
    step_overlap = pd.concat(
        [
            overlap_table(step_circuits).assign(kind="all"),
            overlap_table(step_circuits, kind="head").assign(kind="heads"),
        ],
        ignore_index=True,
    )
    step_cross = 100 * cross_task_scores(
        lm, info, step_circuits, {n: datasets[n] for n in step_circuits}, ablators=ablators
    )
    display(
        reader_table(
            step_summary,
            [
                Column("config", "configuration"),
                Column("step", "step", "int"),
                Column("prompts", "prompts", "int"),
                Column("distinct_prompts", "distinct prompts", "int"),
                Column("heads", "heads", "int"),
                Column("mlps", "MLPs", "int"),
                Column("score_%", "in-sample score (% of full) [95 % CI]", "percent", interval="score_ci95"),
                Column("heldout_%", "held-out score (% of full) [95 % CI]", "percent", interval="heldout_ci95"),
            ],
        )
    )
    display(
        reader_table(
            step_overlap,
            [
                Column("kind", "components"),
                Column("a", "circuit A"),
                Column("b", "circuit B"),
                Column("size_a", "size of A", "int"),
                Column("size_b", "size of B", "int"),
                Column("intersection", "shared", "int"),
                Column("jaccard", "Jaccard", "number", 2),
            ],
        )
    )
    display(
        figures.figure(
            plots.overlap_chart(step_circuits, title=f"step 1 vs step {step_k}"),
            f"Components of the step-1 and step-{step_k} {task} circuits ({step_length} members shown; filled = kept) and "
            "how many of the two keep each (bars).",
        )
    )
    display(
        reader_table(
            step_cross.rename_axis("circuit").reset_index(),
            [Column("circuit", "circuit \\ scored on")]
            + [Column(c, f"{c} data (%)", "percent") for c in step_cross.columns],
        )
    )
else:
    display(Markdown(f"**No step-{step_k} circuit:** {step_error}"))

# %%
add_kind = f"add{step_k}"
ov = ov_scores(lm, task, kinds=["copy", "next", add_kind], progress=False)
if step_error is None:
    step_heads = {str(c) for c in step_circuits[step_name] if c.is_head}
    base_heads = {str(c) for c in step_circuits[base_name] if c.is_head}
    ov = ov.assign(in_step_circuit=ov["component"].isin(step_heads), in_step1_circuit=ov["component"].isin(base_heads))
    ov_groups = pd.DataFrame(
        [
            {
                "heads": label,
                "n": int(mask.sum()),
                **{f"mean_{k}": float(ov.loc[mask, k].mean()) for k in ("next", add_kind)},
                f"best_{add_kind}": float(ov.loc[mask, add_kind].max()) if mask.any() else float("nan"),
            }
            for label, mask in (
                (f"step-{step_k} circuit", ov["in_step_circuit"]),
                ("step-1 circuit", ov["in_step1_circuit"]),
                ("all heads", ov["component"].notna()),
            )
        ]
    )
    display(
        reader_table(
            ov_groups,
            [
                Column("heads", "heads"),
                Column("n", "number", "int"),
                Column("mean_next", "mean next score", "number", 2),
                Column(f"mean_{add_kind}", f"mean {add_kind} score", "number", 2),
                Column(f"best_{add_kind}", f"best {add_kind} score", "number", 2),
            ],
        )
    )
    ov_top = ov[ov["in_step_circuit"]].sort_values(add_kind, ascending=False).head(10)
    display(
        reader_table(
            ov_top,
            [
                Column("component", "head"),
                Column("copy", "copy score", "number", 2),
                Column("next", "next score", "number", 2),
                Column(add_kind, f"{add_kind} score", "number", 2),
                Column("in_step1_circuit", "in the step-1 circuit"),
            ],
            full=False,
        )
    )
display(
    figures.figure(
        plots.head_heatmap(
            plots.head_frame(ov, add_kind), title=f"{task}: OV {add_kind} score", value_title="score", diverging=False
        ),
        f"Add-{step_k} OV score of every head ({task}, top-1 over the family's members): the fraction of members whose "
        f"OV output is the member {step_k} ahead, layer 0 at the top. Compare the bright cells with the step-{step_k} "
        "circuit's heads in the table above.",
    )
)

# %%
found = step_error is None
step_k_record = StepKCircuits(
    model=model,
    task=task,
    template=template,
    threshold=threshold,
    method=method,
    smoke=smoke,
    steps=steps,
    families=step_families,
    step_k=step_k,
    length=step_length,
    behaviour=frame_records(step_behaviour),
    error=step_error,
    ov_scores=HeadScores.from_table(ov.drop(columns=["kv_head"]), description=f"OV scores over the {task} family"),
    summary=frame_records(step_summary) if found else None,
    overlap=frame_records(step_overlap) if found else None,
    cross_task_percent=step_cross.to_dict() if found else None,
    ov_groups=frame_records(ov_groups) if found else None,
    circuit=step_record.with_extra(dataset=None) if found else None,
)
write_json_atomic(out_dir / StepKCircuits.file, step_k_record)
Markdown(step_k_verdict(step_k_record))
