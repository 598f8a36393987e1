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
#     after:
#     - 02_shared_circuits
#     estimate_s: 674
# ---

# %% [markdown]
# # Greater-than and sequence continuation: one mechanism or two?
#
# Greater-than (Hanna et al.: `The war lasted from the year 1732 to the year 17` -> a year after
# 1732) and sequence continuation both need "the next number after this one". Do they use the same
# components? We find a greater-than circuit (metric: the probability difference PD, see
# [Methods](../methods.md); years split by the tokenizer), a sequence-continuation circuit, and then
# perform the paper's **analogous ablation**: remove one task's circuit inside the other task and
# measure how much of the other task's behaviour is lost — against a null distribution of random head
# sets matched per layer.
#
# **Which sequence task.** On SmolLM2 only `0`-`9` are single tokens, so `digits` has a handful of distinct
# increasing sequences, split 2-3 a side between discovery and held-out prompts. The chapter therefore uses
# `numbers` (two-digit numbers, `23 24 25 26 2` -> `7`: 86 sequences) where the tokenizer allows, and falls
# back to `digits` where it refuses `numbers` (GPT-2, whose numbers up to 99 are single tokens); the cell
# below says which was used.
#
# **Sample sizes.** Both tasks are sized by sequence (`task_sequences`): the numbers circuit rests on 52 distinct
# sequences (at least 48 after the correct-answer filter) and the greater-than circuit on 48 (start years with
# their century), each held out on 24 others. The numbers circuit is **chapter 02's**: this chapter runs after
# it and takes its 80 % circuit when that was found the same way (model, method, template, seed, prefix and
# sizes; `reuse_sequence_circuit`), otherwise it finds the circuit here and says why. The sharing-by-threshold
# study at the end runs on `ladder_prompts` prompts per task, a smaller sample, and says so.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per task without a task_sequences entry (sequence prompts before filtering to correct answers)
reuse_sequence_circuit = (
    True  # take the sequence task's circuit from chapter 02 when it was found the same way (else find it here)
)
task_sequences = {
    "numbers": [52, 24],
    "greater_than": [48, 24],
}  # (discovery, held-out) distinct sequences, one prompt each, for the tasks that have them (as chapter 02 sizes numbers)
seed = 0  # dataset and random-baseline seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
n_random = 5  # random head sets averaged for the baseline of the analogous ablation inside the other circuit
n_draws = 99  # matched random head sets in the null of the analogous ablation from the full model (~2 s a draw)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
threshold = 0.8  # circuit threshold (fraction of the full metric)
method = "fast"  # "fast" (attribution-ranked, see the benchmark) or "sweep" (the paper's pruning)
minimal = True  # refine fast-method circuits to 1-minimal (one pass per kept component; smoke runs skip it)
sequence_tasks = ["numbers", "digits"]  # the sequence task compared with greater-than: the first the tokenizer accepts
template = "among_words"  # the sequence task's template
exact_heads = 12  # heads per task whose estimated single-ablation drop is checked by exact ablation
ladder_thresholds = [0.9, 0.8, 0.7, 0.5]  # nested thresholds of the sharing-by-threshold study
ladder_tasks = [
    "numbers",
    "digits",
]  # candidate sequence tasks (the first the tokenizer accepts is used) compared with greater-than at every threshold (each adds ~2 min on 2 cores)
ladder_prompts = 10  # prompts per task in that study (greater-than unfiltered; sequence tasks before filtering)
ladder_random = 2  # random head sets per level and direction for its analogous-ablation baseline
ladder_minimal = False  # refine the study's fast circuits to 1-minimal (slower: one pass per component per level)
n_permutations = 99  # layer-stratified permutations of the shared-heads null at every level (no forward pass)

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.options import FEW_SEQUENCES
from seqcirc_utils.core.result_records import GreaterThanOverlap, GreaterThanThresholds
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.stats import spearman
from seqcirc_utils.core.types import Circuit
from seqcirc_utils.discovery.pipeline import (
    discover,
    reusable_circuit,
    score_columns,
    task_sizing,
    write_circuits,
)
from seqcirc_utils.evaluation.compare import (
    analogous_ablation,
    cross_task_scores,
    lost_at,
    matched_random_heads,
    overlap_table,
    shared_components,
    sharing_by_threshold,
)
from seqcirc_utils.evaluation.nulls import circuit_null, lower_tail_p
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, circuit_score_columns, reader_table
from seqcirc_utils.report.verdicts import chance_phrase, smoke_note
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.scoring.importance import estimated_drop_scores, head_importance
from seqcirc_utils.tasks.datasets import TaskDataset

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, n_random, n_draws = min(n_prompts, 12), min(n_random, 2), min(n_draws, 9)
    task_sequences = {t: [min(d, 12), min(h, 6)] for t, (d, h) in task_sequences.items()}
    ladder_thresholds, ladder_tasks = [0.8, 0.5], ladder_tasks[:1]
    ladder_prompts, ladder_random, minimal = min(ladder_prompts, 8), min(ladder_random, 1), False
    display(
        smoke_note(
            f"{n_prompts} prompts (sequence-sized tasks: {task_sequences}), {n_random} random baselines, {n_draws} null draws, thresholds study at "
            f"{ladder_thresholds} on {ladder_tasks}, circuits not refined to 1-minimal"
        )
    )

# %%
lm, info = load_model(model, device=device)
ablators = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
out_dir = results_dir(model)
# Greater-than is scored by PD on all prompts (Hanna et al. do not filter to correct answers).
gt_sizing, gt_prompts = task_sizing("greater_than", task_sequences, n_prompts)
gt_records, _, _ = discover(
    lm,
    info,
    model,
    "greater_than",
    DiscoveryConfig([threshold], method=method, fast={"minimal": minimal}, filter_correct=False, **gt_sizing),
    seed=seed,
    prefix=prefix,
    **gt_prompts,
)
refused, reused, reuse_note = {}, None, ""
for sequence_task in sequence_tasks:  # the first sequence task the tokenizer accepts
    seq_sizing, seq_prompts = task_sizing(sequence_task, task_sequences, n_prompts)
    if reuse_sequence_circuit and seq_sizing:  # chapter 02's circuit, when it was found the same way
        found_as = dict(model=model, task=sequence_task, template=template, direction="increasing", seed=seed)
        checked = (True if minimal else None) if method == "fast" else None  # the record's `minimal`
        found_as |= dict(method=method, ablation="mean", metric="logit_diff", prefix=prefix, minimal=checked)
        reused, reuse_note = reusable_circuit(
            out_dir / f"circuit_{sequence_task}.json", threshold, found_as, seq_sizing["sequences"]
        )
        if reused is not None:
            seq_records = [reused]
            break
    try:
        seq_records, _, _ = discover(
            lm,
            info,
            model,
            sequence_task,
            DiscoveryConfig([threshold], method=method, fast={"minimal": minimal}, **seq_sizing),
            template=template,
            seed=seed,
            prefix=prefix,
            **seq_prompts,
        )
        break
    except SeqcircError as err:  # e.g. numbers on GPT-2: its two-digit numbers are single tokens
        refused[sequence_task] = str(err)
else:
    raise SeqcircError(f"no sequence task among {sequence_tasks} works on {model}: {refused}")
write_circuits(out_dir / "circuit_greater_than.json", gt_records)
circuits = {
    "greater_than": Circuit.from_lists(gt_records[0]["heads"], gt_records[0]["mlps"]).components,
    sequence_task: Circuit.from_lists(seq_records[0]["heads"], seq_records[0]["mlps"]).components,
}
# Each task is scored by its own metric (greater-than: PD; digit tokenizers prune by the tens-digit
# approximation, and the exact two-digit PD is computed by the chain rule for the full model and the circuit).
circuit_table = pd.DataFrame(
    [
        {
            "task": t,
            "metric": r[0].get("pruning_metric", r[0]["metric"]),
            "full_metric": r[0]["full_metric"],
            "heads": len(r[0]["heads"]),
            "mlps": len(r[0]["mlps"]),
            **score_columns(r[0]),
            "prompts": r[0]["n_prompts"],
            "exact_pd_full": r[0].get("exact_prob_diff", {}).get("full"),
            "exact_pd_score_%": 100 * r[0]["exact_prob_diff"]["score"] if "exact_prob_diff" in r[0] else None,
            "exact_pd_heldout_%": (
                100 * r[0]["heldout"]["exact_prob_diff"]["score"]
                if "exact_prob_diff" in (r[0].get("heldout") or {})
                else None
            ),
        }
        for t, r in (("greater_than", gt_records), (sequence_task, seq_records))
    ]
)
display(
    Markdown(
        f"Sequence task: **{sequence_task}**"
        + (
            f" (its circuit is chapter 02's {100 * threshold:.0f} % circuit, found there the same way; chapter 02 prunes "
            "nested circuits from its highest threshold down)"
            if reused is not None
            else f" (its circuit is found here: {reuse_note})"
            if reuse_note
            else ""
        )
        + "".join(f" ({t} refused: {why})" for t, why in refused.items())
        + ". Discovery and held-out sets (sequence-disjoint): "
        + "; ".join(
            f"{t}: {r[0]['n_prompts']} prompts from {r[0]['n_sequences']} sequences for discovery, "
            f"{r[0]['heldout']['n_prompts']} prompts from {r[0]['heldout']['n_sequences']} other "
            "sequences held out"
            for t, r in (("greater_than", gt_records), (sequence_task, seq_records))
            if r[0].get("heldout")
        )
        + ". Intervals are cluster bootstraps over sequences"
        + "".join(
            f"; {t} rests on fewer than {FEW_SEQUENCES} sequences a side: its numbers are small-sample estimates"
            for t, r in (("greater_than", gt_records), (sequence_task, seq_records))
            if r[0].get("heldout") and min(r[0]["n_sequences"], r[0]["heldout"]["n_sequences"]) < FEW_SEQUENCES
        )
        + "."
    )
)
reader_table(
    circuit_table.assign(
        circuit=[
            f"{t}: {h} heads + {k} MLPs"
            for t, h, k in zip(circuit_table["task"], circuit_table["heads"], circuit_table["mlps"])
        ]
    ),
    [
        Column("circuit", "circuit: size"),
        Column("metric", "metric"),
        *circuit_score_columns(),
    ],
    caption="Paper's ratio m(C)/m(full) beside the normalised faithfulness (m(C) - m(empty)) / (m(full) - m(empty)); "
    "held-out sequences disjoint from discovery.",
)

# %%
for t, comps in circuits.items():
    display(
        figures.figure(
            plots.circuit_diagram(info.n_layers, info.n_heads, comps, title=f"{t} circuit ({len(comps)} components)"),
            f"The {t} circuit at {100 * threshold:.0f} % of its metric: every head (circle) and MLP (square, right column), "
            f"the {len(comps)} kept ones red, layer 0 at the bottom. Compare with the other task's circuit.",
        )
    )
overlap = overlap_table(circuits)
heads_overlap = overlap_table(circuits, kind="head")
display(
    reader_table(
        pd.concat([overlap.assign(kind="heads and MLPs"), heads_overlap.assign(kind="heads")]),
        [
            Column("kind", "components"),
            Column("a", "circuit A"),
            Column("b", "circuit B"),
            Column("intersection", "shared", "int"),
            Column("union", "in either", "int"),
            Column("jaccard", "Jaccard", "number", 2),
        ],
        caption="The greater-than and sequence circuits: components shared, in either, and their Jaccard index.",
    )
)
figures.figure(
    plots.overlap_chart(circuits, title="greater-than vs sequence continuation"),
    f"Components of the greater-than and {sequence_task} circuits (left: filled = kept); the bars on the right "
    "count the tasks keeping each. Components with a bar of 2 are shared.",
)

# %% [markdown]
# ## Analogous ablation
#
# For each direction we ablate the *heads* of one task's circuit (a) from the full model and
# (b) from inside the other task's own circuit, and report the other task's score (% of its full
# metric) before and after, on the other task's **held-out** prompts (sequences neither circuit was found on;
# the head-by-head scores and the cross-task table below use them too). The baseline of (a) is a **null distribution**: `n_draws` random head sets
# matched per layer (the same number of heads ablated in every layer), each ablated from the full model
# and scored exactly like the circuit's heads (same prompts, means and metric); its row gives the null's
# mean, and the table the observed percentile and the one-sided p = (1 + #{null score <= observed}) /
# (n_draws + 1) that the circuit's heads cost more than random ones. The baseline of (b) ablates, `n_random`
# times, as many heads drawn at random from the other task's circuit (excluding the sub-circuit's own
# heads); its row is the mean over those draws (a few draws: a descriptive comparison, not a test).

# %%
# every number from here on is measured on each task's held-out prompts: sequences neither circuit was found on
data = {
    t: TaskDataset.from_json(r[0]["heldout_dataset"])
    for t, r in (("greater_than", gt_records), (sequence_task, seq_records))
}
rows, nulls = [], {}
for source, target in (("greater_than", sequence_task), (sequence_task, "greater_than")):
    sub = [c for c in circuits[source] if c.is_head]
    for where, within in (("full model", None), (f"{target} circuit", circuits[target])):
        res = analogous_ablation(lm, info, data[target], sub, within=within, ablators=ablators)
        rows.append(
            {
                "ablated": f"{source} heads",
                "task scored": target,
                "inside": where,
                "samples": 1,
                "n_ablated": res["n_ablated"],
                "before_%": 100 * res["before"],
                "after_%": 100 * res["after"],
                "drop_points": 100 * res["drop"],
            }
        )
        if within is None:  # from the full model: the kept set is every component but the heads, against matched sets
            nd = circuit_null(
                ablators.get(lm, info, data[target]),
                set(info.components) - set(sub),
                n_draws=n_draws,
                seed=seed,
                statistic="score",
                progress=False,
                description=f"{source} heads ablated from the full model, scored on {target}",
            )
            nulls[f"{source} heads on {target}"] = nd
            rows[-1] |= {"p": lower_tail_p(nd), "percentile": 100 - nd.observed_percentile, "n_draws": nd.n_draws}
            rows.append(
                {
                    "ablated": "random heads",
                    "task scored": target,
                    "inside": where,
                    "samples": nd.n_draws,
                    "n_ablated": res["n_ablated"],
                    "before_%": 100 * res["before"],
                    "after_%": 100 * nd.null_mean,
                    "drop_points": 100 * (res["before"] - nd.null_mean),
                    "drop_p5": 100 * (res["before"] - nd.null_p95),
                    "drop_p95": 100 * (res["before"] - nd.null_p5),
                }
            )
            continue
        draws = [
            analogous_ablation(lm, info, data[target], heads, within=within, ablators=ablators)
            for heads in matched_random_heads(info, sub, within, n_samples=n_random, seed=seed)
        ]
        mean = {k: 100 * sum(d[k] for d in draws) / len(draws) for k in ("before", "after", "drop")}
        rows.append(
            {
                "ablated": "random heads",
                "task scored": target,
                "inside": where,
                "samples": len(draws),
                "n_ablated": draws[0]["n_ablated"],
                "before_%": mean["before"],
                "after_%": mean["after"],
                "drop_points": mean["drop"],
            }
        )
ablation = pd.DataFrame(rows)
reader_table(
    ablation.assign(
        null_range=[
            [a, b] if pd.notna(a) else None
            for a, b in zip(
                ablation.get("drop_p5", pd.Series(dtype=float)), ablation.get("drop_p95", pd.Series(dtype=float))
            )
        ]
    ),
    [
        Column("ablated", "ablated"),
        Column("task scored", "task scored"),
        Column("inside", "inside"),
        Column("n_ablated", "heads ablated", "int"),
        Column("samples", "draws", "int"),
        Column("drop_points", "drop (points) [null 5th, 95th pct.]", "number", digits=1, interval="null_range"),
        Column("percentile", "drop's percentile in the null", "number"),
        Column("p", "p (one-sided)", "number", digits=3),
    ],
    caption=f"Analogous ablation; from the full model against {n_draws} random head sets matched per layer.",
)

# %% [markdown]
# ## Head by head
#
# For every head, the drop in points of each task's own metric (greater-than: PD; the sequence task:
# logit difference) when that head alone is ablated from the full model, estimated by attribution
# patching (the maps), and computed exactly for the `exact_heads` largest estimates per task. If the
# two tasks lean on the same heads, the heads that matter for one matter for the other: the Spearman
# rank correlation of the two estimated drops over all heads measures how far that holds.

# %%
importance = pd.concat(
    [
        head_importance(lm, info, data[t], exact_top=exact_heads, progress=False, ablators=ablators).assign(task=t)
        for t in circuits
    ]
)
per_task = importance.pivot(index="component", columns="task", values="estimated_drop")[list(circuits)]
rank_correlation = spearman(per_task["greater_than"], per_task[sequence_task])
display(
    figures.figure(
        alt.hconcat(
            *[
                plots.head_heatmap(
                    plots.head_frame(importance[importance["task"] == t], "estimated_drop"),
                    title=t,
                    value_title="est. drop (points)",
                )
                for t in circuits
            ],
            title=f"{model}: estimated single-head ablation drop, each task's own metric",
        ),
        f"Estimated drop (points of each task's own metric: PD for greater-than, logit difference for {sequence_task}) "
        f"when one head alone is ablated, layer 0 at the top; each panel has its own colour scale. If the tasks shared "
        f"heads, the same cells would stand out in both panels (rank correlation {rank_correlation:.2f}).",
    )
)
display(
    Markdown(
        f"Spearman rank correlation of the estimated per-head drops over {len(per_task)} heads: "
        f"**{rank_correlation:.2f}**."
    )
)
exact = importance[importance["exact"]].sort_values("drop_points", ascending=False)
exact_columns = ["task", "component", "drop_points", "estimated_drop"]
exact.groupby("task", sort=False).head(6).sort_values("task", kind="stable")[exact_columns].reset_index(drop=True)

# %%
cross = 100 * cross_task_scores(lm, info, circuits, data, ablators=ablators)
shared = shared_components(circuits, kind="head")
write_json_atomic(
    out_dir / GreaterThanOverlap.file,
    GreaterThanOverlap(
        model=model,
        threshold=threshold,
        method=method,
        smoke=smoke,
        sequence_task=sequence_task,
        greater_than_circuit=gt_records[0].with_extra(dataset=None),
        sequence_circuit=seq_records[0].with_extra(dataset=None),
        overlap=overlap.to_dict(orient="records"),
        analogous_ablation=frame_records(ablation),
        cross_task_percent=cross.to_dict(),
        shared_heads=[str(c) for c in shared],
        head_importance=estimated_drop_scores(importance, panel="task"),
        single_head_ablation=frame_records(exact[exact_columns]),
        estimated_drop_rank_correlation=rank_correlation,
        n_draws=n_draws,
        nulls=nulls,
    ),
)
reader_table(
    cross.reset_index(names="circuit"),
    [Column("circuit", "circuit (rows)")] + [Column(t, f"on {t} data (% of full)", "percent") for t in cross.columns],
    caption="Each circuit (rows) scored on each task's data (columns), in percent of the full model's metric on that "
    "data.",
)


# %%
def drop(src: str, tgt: str, label: str, where: str) -> float:
    row = ablation[(ablation["ablated"] == label) & (ablation["task scored"] == tgt) & (ablation["inside"] == where)]
    return float(row["drop_points"].iloc[0])


gt_in_seq = drop("greater_than", sequence_task, "greater_than heads", "full model")
rand_in_seq = drop("greater_than", sequence_task, "random heads", "full model")
seq_in_gt = drop(sequence_task, "greater_than", f"{sequence_task} heads", "full model")
rand_in_gt = drop(sequence_task, "greater_than", "random heads", "full model")
p_in_seq = lower_tail_p(nulls[f"greater_than heads on {sequence_task}"])
p_in_gt = lower_tail_p(nulls[f"{sequence_task} heads on greater_than"])
gt = gt_records[0]
gt_exact = gt.get("exact_prob_diff")
display(
    Markdown(
        f"The greater-than circuit keeps {100 * gt['score']:.0f} % of the full model's "
        f"{gt.get('pruning_metric', gt['metric'])} in-sample"
        + (f" and {100 * gt['heldout']['score']:.0f} % on held-out prompts" if gt.get("heldout") else "")
        + (
            f"; in the exact two-digit PD (full model {gt_exact['full']:.3f}) it keeps {100 * gt_exact['score']:.0f} %. "
            if gt_exact
            else ". "
        )
        + f"The two circuits share {len(shared)} heads ({' '.join(map(str, shared)) or 'none'}; head Jaccard "
        f"{heads_overlap['jaccard'].iloc[0]:.2f}). Ablating the greater-than circuit's heads from the full model costs "
        f"the {sequence_task} task {gt_in_seq:.1f} points (random heads matched per layer: {rand_in_seq:.1f} on average "
        f"over {n_draws} draws; p = {p_in_seq:.3f}); ablating the {sequence_task} circuit's heads costs greater-than "
        f"{seq_in_gt:.1f} points of PD (random: {rand_in_gt:.1f}; p = {p_in_gt:.3f}). "
        + (
            "The cross-task damage beats its null (p <= 0.05) in both directions, evidence of shared machinery."
            if max(p_in_seq, p_in_gt) <= 0.05
            else "The cross-task damage does **not** beat its null of matched random heads (p <= 0.05) in both directions"
            f" ({'neither' if min(p_in_seq, p_in_gt) > 0.05 else 'only one'}), so this run gives no clear evidence that "
            "the two tasks share their heads beyond what any heads in those layers would cost."
        )
        + (
            f" (With {n_draws} draws p cannot fall below {1 / (n_draws + 1):.2f}: too few draws for this test.)"
            if 1 / (n_draws + 1) > 0.05
            else ""
        )
        + f" Head by head, the estimated single-ablation drops of the two tasks have a rank correlation of "
        f"{rank_correlation:.2f}."
    )
)

# %% [markdown]
# ## Where is sharing lost? Circuits across thresholds
#
# One circuit at one threshold can hide how sharing depends on how much of the behaviour the circuit
# must keep. Here greater-than and each sequence task get a **nested ladder** of circuits, from 90 %
# of their metric down to 50 % (each lower circuit pruned from the one above), all found the same
# way: the fast attribution-ranked method (1-minimal only when `ladder_minimal` is set; see the table
# for which), on `ladder_prompts` prompts per task, without held-out scoring. At every level we count
# the heads each sequence circuit shares with the greater-than circuit (and their Jaccard index), and
# repeat the analogous ablation from the full model in both directions, each against `ladder_random`
# random head sets of the same size drawn from the heads outside the ablated circuit. Every count of shared heads
# stands beside the count two circuits of these sizes share **by chance** (`n_permutations` layer-stratified
# permutations of both circuits' heads: the same number of heads in every layer; no forward pass), with its 95 %
# range and the p of the observed count, so "sharing is lost at X %" is read against what chance would leave.

# %%
ladder_names = ["greater_than", *[t for t in ladder_tasks if t != "greater_than"]]
ladder_records, ladder_ablators, ladder_levels = {}, {}, {}
for t in ladder_names:
    if t != "greater_than" and len(ladder_records) > 1:
        continue  # the first sequence task the tokenizer accepts
    options = {} if t == "greater_than" else dict(template=template)
    try:
        recs, _, ladder_ablators[t] = discover(
            lm,
            info,
            model,
            t,
            DiscoveryConfig(
                ladder_thresholds,
                method="fast",
                fast={"minimal": ladder_minimal},
                heldout=False,
                filter_correct=t != "greater_than",  # greater-than is scored on all prompts, as above
            ),
            n=ladder_prompts,
            seed=seed,
            prefix=prefix,
            progress=False,
            **options,
        )
    except SeqcircError as err:
        if t == "greater_than":
            raise
        display(Markdown(f"**{t} left out of the ladder:** {err}"))
        continue
    ladder_records[t] = recs
    for r in recs:
        ladder_levels.setdefault(r["threshold"], {})[t] = Circuit.from_lists(r["heads"], r["mlps"]).components
ladder_circuits = pd.DataFrame(
    [
        {
            "task": t,
            "threshold": r["threshold"],
            "method": r["method"] + (" (1-minimal)" if r["minimal"] else ""),
            "heads": len(r["heads"]),
            "mlps": len(r["mlps"]),
            "score_%": 100 * r["score"],
            "prompts": r["n_prompts"],
            "forward_passes": r["forward_passes"],
        }
        for t in ladder_records
        for r in ladder_records[t]
    ]
)
sharing = sharing_by_threshold(
    ladder_levels, ladder_ablators, "greater_than", n_random=ladder_random, seed=seed, n_permutations=n_permutations
)
for col in ("ref_in_task_drop", "ref_in_task_random", "task_in_ref_drop", "task_in_ref_random"):
    sharing[col] = 100 * sharing[col]
lost = lost_at(sharing, "shared_heads")
lost_chance = lost_at(sharing, "shared_heads_above_chance")  # where the overlap is no longer above chance
display(
    reader_table(
        ladder_circuits,
        [
            Column("task", "task"),
            Column("threshold", "threshold", "fraction"),
            Column("method", "method"),
            Column("heads", "heads", "int"),
            Column("mlps", "MLPs", "int"),
            Column("score_%", "score (% of full)", "percent"),
            Column("prompts", "prompts", "int"),
            Column("forward_passes", "forward passes", "int"),
        ],
        caption="The nested circuits of the threshold ladder.",
    )
)
sharing.drop(columns=["shared"])

# %%
drops = pd.concat(
    [
        sharing.assign(ablated="greater-than heads", drop=sharing["ref_in_task_drop"]),
        sharing.assign(ablated="random heads", drop=sharing["ref_in_task_random"]),
    ]
)
drops["line"] = drops["task"] + ", " + drops["ablated"]
figures.figure(
    alt.hconcat(
        plots.size_performance_curve(
            sharing,
            x="threshold",
            y="shared_heads",
            color="task",
            title="heads shared with greater-than",
            y_title="shared heads",
        ),
        plots.size_performance_curve(
            drops,
            x="threshold",
            y="drop",
            color="line",
            title="greater-than heads ablated in each task",
            y_title="drop (points)",
        ),
    ),
    "Left: heads each sequence task's circuit shares with the greater-than circuit, at each threshold of the nested "
    "ladders (right = the largest circuits). Right: the drop (points of the task's logit difference) when the "
    "greater-than circuit's heads at that threshold are ablated from the full model, beside as many random heads. "
    "Read where a line of the left panel reaches zero: below that threshold the task shares no head with greater-than.",
)


# %%
def _ladder_sentence(task: str) -> str:
    g = sharing[sharing["task"] == task].sort_values("threshold", ascending=False)
    top, bottom = g.iloc[0], g.iloc[-1]
    above = int((g["ref_in_task_drop"] > g["ref_in_task_random"]).sum())
    if lost[task] is not None:
        at_lost = g[g["threshold"] == lost[task]].iloc[0]
        where = (
            f"shares no head with greater-than from {100 * lost[task]:.0f} % down (where circuits of these sizes "
            f"would share {at_lost['shared_heads_expected']:.1f} [{at_lost['shared_heads_lo']:.0f}, "
            f"{at_lost['shared_heads_hi']:.0f}] by chance)"
        )
    else:
        where = f"still shares {int(bottom['shared_heads'])} heads at {100 * bottom['threshold']:.0f} % " + (
            f"({bottom['shared'] or 'none'}; chance {bottom['shared_heads_expected']:.1f})"
        )
    above_chance = int(g["shared_heads_above_chance"].sum())
    beyond = (
        f"its overlap is not above chance (p > 0.05) from {100 * lost_chance[task]:.0f} % down"
        if lost_chance[task] is not None
        else f"its overlap is above chance down to {100 * bottom['threshold']:.0f} %"
    )
    return (
        f"**{task}** shares {chance_phrase(top, 'head', column='shared_heads')} "
        f"with greater-than at {100 * top['threshold']:.0f} % (head Jaccard {top['head_jaccard']:.2f}) and {where}; "
        f"it is above chance (p <= 0.05) at {above_chance} of {len(g)} thresholds and {beyond}; ablating the greater-than heads costs it more "
        f"than random heads at {above} of {len(g)} thresholds (at {100 * top['threshold']:.0f} %: "
        f"{top['ref_in_task_drop']:.1f} vs {top['ref_in_task_random']:.1f} points)."
    )


write_json_atomic(
    out_dir / GreaterThanThresholds.file,
    GreaterThanThresholds(
        model=model,
        smoke=smoke,
        method="fast",
        minimal=ladder_minimal,
        thresholds=ladder_thresholds,
        tasks=list(ladder_records),
        n_prompts=ladder_prompts,
        n_random=ladder_random,
        seed=seed,
        circuits=frame_records(ladder_circuits),
        sharing=frame_records(sharing),
        lost_at={t: lost[t] for t in ladder_tasks if t in lost},
        records={t: [r.with_extra(dataset=None) for r in ladder_records[t]] for t in ladder_records},
        n_permutations=n_permutations,
        lost_beyond_chance={t: lost_chance[t] for t in ladder_tasks if t in lost_chance},
    ),
)
gt_sizes = ladder_circuits[ladder_circuits["task"] == "greater_than"].set_index("threshold")["heads"]
display(
    Markdown(
        "Going down the nested ladders (all circuits found by the fast method"
        + (", refined to 1-minimal" if ladder_minimal else ", not refined to 1-minimal")
        + f", {ladder_prompts} prompts "
        f"per task; the greater-than circuit keeps {int(gt_sizes.iloc[0])} of {len(info.heads)} heads at "
        f"{100 * gt_sizes.index[0]:.0f} % and {int(gt_sizes.iloc[-1])} at {100 * gt_sizes.index[-1]:.0f} %"
        + (
            ", so at the top it is close to the whole model and shares many heads for that reason alone"
            if gt_sizes.iloc[0] > len(info.heads) / 2
            else ""
        )
        + "): "
        + " ".join(_ladder_sentence(t) for t in sharing["task"].drop_duplicates())
    )
)
