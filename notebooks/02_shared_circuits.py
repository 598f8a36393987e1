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
#     estimate_s: 1014
# ---

# %% [markdown]
# # Shared circuits for digits, number words and months
#
# The paper's central question: do the circuits a model uses to continue `1 2 3 4`,
# `one two three four` and `January February March April` share components? For each task we
# find circuits by **node pruning** (see [Methods](../methods.md)): a component is removed when the circuit
# still keeps at least a threshold fraction of the full model's logit difference, everything outside the
# circuit mean-ablated at every position. By default every task's circuit is found by the **fast method**
# (components ranked by integrated-gradient attribution, the least important pruned while the circuit keeps
# the threshold, then refined until it is **1-minimal**: removing any one of its components drops it below the
# threshold). The paper's iterative sweep (`method = "sweep"`) tries every head and MLP in a fixed order and
# costs several times as much (measured on one CPU thread: a months sweep at these sizes ran past 7 minutes
# before it was stopped; the fast method found the months circuits in 2), and chapter 13 (which discovery
# method to trust) compares the two methods on the same prompts. All circuits here, the control's included,
# are found the same way, so they can be compared. Lower thresholds start from the higher threshold's circuit,
# so the circuits are nested (the 80 % circuit is a sub-circuit of the 90 % one).
#
# Prompts use the paper's among-words template (`Van done in 1. Hat done in 2. ... Sun done in`),
# kept only where the model's top-1 answer is right and p(correct) > 2 p(incorrect). Discovery and
# held-out prompts come from **disjoint** sets of sequences (a seeded partition of the task's member
# sequences; see [Methods](../methods.md)).
#
# **Which digits task.** On SmolLM2 only `0`-`9` are single tokens, so `digits` has 7 distinct increasing
# sequences of length 4 (split between discovery and held-out, each side gets 2-3): a circuit found on them rests
# on a handful of sequences. The chapter therefore uses `numbers` (two-digit numbers, `23 24 25 26 2` -> `7`),
# which has 86, **instead of** `digits` where the tokenizer allows; on GPT-2, whose numbers up to 99 are single
# tokens, `numbers` is refused and `digits` is found in its place (`task_fallbacks`).
#
# **Sample sizes.** A task with the sequences for it is sized by sequence (`task_sequences`): the numbers circuit
# is found on 52 distinct sequences (one prompt each; at least 48 after the correct-answer filter) and held out on
# 24 others, the partition's shares in that proportion. Number words (17 sequences) and months (8) have too few:
# their prompts repeat sequences, and their circuits are small-sample estimates, said so beside every score.
#
# **How much overlap is sharing?** Two circuits that each keep half of a layer's heads share some of them by
# chance. Every overlap below is therefore read beside the **overlap expected by chance**: each task's circuit is
# replaced by a random circuit with the same number of heads in every layer and as many MLPs from the same layers
# +-1 (a layer-stratified permutation of membership, `n_permutations` times; no forward pass), and the shared
# components are counted. We give the expected count, its 95 % range and the p of the observed overlap.
#
# **A control task.** Sharing between the sequence tasks could also mean "the components any task needs". The
# control is a task without a sequence, found the same way (same method, template, prompt counts and thresholds):
# random-token induction copying, `K L M K L` -> `M`, where K, L, M are distinct random single-token words from the
# tokenizer, each repeated with its filler (e.g. `Rock done in product. Lake done in where. Pot done in tracks. Rock
# done in product. Lake done in where. Pot done in` -> ` tracks`; see [Methods](../methods.md)). What a sequence
# task shares with the control (beyond chance), and how well the circuits transfer to and from the control's data,
# is the reference for "the sequence tasks share more than any two tasks do". The control is compared only with
# the tasks found by its own method (by default all of them: every circuit here is found by the fast method). It
# is the costliest task (its circuits are larger and its prompts longer: about twice a sequence task's time).

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = (
    16  # prompts per task before filtering to correct answers (the cost grows with it: ~2 min a task on one core)
)
seed = 0  # dataset seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
tasks = [
    "numbers",
    "number_words",
    "months",
]  # task families to compare (a task the tokenizer refuses is replaced by its fallback, or left out with its reason)
task_fallbacks = {"numbers": "digits"}  # the task found instead of one the tokenizer refuses (GPT-2 refuses numbers)
task_sequences = {
    "numbers": [52, 24]
}  # (discovery, held-out) distinct sequences for tasks that have them, one prompt each, instead of n_prompts (~7 min for numbers on one core)
task_methods = {}  # per-task method overriding `method`, e.g. {"months": "sweep"} (compared only with tasks found the same way)
template = "among_words"  # prompt template (pure, comma, among_words, mixed)
thresholds = [
    0.9,
    0.8,
]  # nested circuit thresholds (fractions of the full metric; each lower one adds ~2 min for numbers)
method = "fast"  # "fast" (attribution-ranked, refined to 1-minimal) or "sweep" (the paper's iterative pruning, several times slower)
main_threshold = 0.8  # the threshold compared across tasks
exact_heads = 12  # heads per task whose estimated single-ablation drop is checked by exact ablation
n_draws = 99  # matched random circuits in the null of the shared-by-all circuit at main_threshold (per task, held-out data; ~2 s a draw)
null_tasks = [
    "numbers"
]  # tasks on whose held-out data the null is drawn (None: every task; each costs ~n_draws x 2 s): by default the one with enough distinct sequences to hold out
random_match = "layer"  # the null's matching: same number of heads in every layer, MLPs from the same layers +-1
control = "induction_copy"  # the control task (random-token induction copying, K L M K L -> M); None leaves it out
control_options = {"length": 5}  # the control's dataset options (5 words shown: K L M K L)
control_method = None  # the control's method (None: `method`, so it is found the same way as the sequence tasks)
cross_draws = 9  # matched random circuits per cell of the cross-task table (its baseline; ~1 s a draw on numbers data)
n_permutations = 99  # layer-stratified permutations of the sharing null (set arithmetic, no forward pass)
minimal = True  # refine fast-method circuits to 1-minimal (one pass per component; smoke: off for every task)

# %%
import altair as alt
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import SeqcircError
from seqcirc_utils.core.result_records import SharedByThreshold, SharedCircuits
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import Circuit, parse_component
from seqcirc_utils.discovery.pipeline import discover, score_columns, task_sizing, write_circuits
from seqcirc_utils.evaluation.compare import (
    control_comparison,
    cross_task_baselines,
    cross_task_scores,
    lost_at,
    membership_matrix,
    overlap_table,
    same_different,
    same_different_counts,
    score_against_random,
    shared_by_threshold,
    shared_components,
    sharing_null_by_threshold,
)
from seqcirc_utils.evaluation.nulls import PAIR, SHARED_BY_ALL, circuit_null, sharing_null
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, circuit_score_columns, reader_table
from seqcirc_utils.report.verdicts import chance_phrase, control_verdict, smoke_note
from seqcirc_utils.scoring.ablation import AblatorCache
from seqcirc_utils.scoring.importance import estimated_drop_scores, head_importance

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, thresholds, method, n_draws = min(n_prompts, 12), [main_threshold], "fast", min(n_draws, 9)
    cross_draws = min(cross_draws, 3)
    task_sequences = {t: [min(d, 12), min(h, 6)] for t, (d, h) in task_sequences.items()}
    minimal = False
    display(
        smoke_note(
            f"{n_prompts} prompts (sequence-sized tasks: {task_sequences}), thresholds {thresholds}, method {method} "
            f"without the 1-minimal refinement, {n_draws} null draws"
        )
    )

# %%
lm, info = load_model(model, device=device)
ablator_cache = AblatorCache()  # this chapter's Ablators: means and clean passes computed once per dataset
out_dir = results_dir(model)
records, datasets, ablators, methods, refused = {}, {}, {}, {}, {}
queue = [*tasks, *([control] if control else [])]
while queue:
    task = queue.pop(0)
    is_control = task == control
    methods[task] = (control_method or method) if is_control else task_methods.get(task, method)
    sizes, prompt_count = task_sizing(task, task_sequences, n_prompts)
    try:
        records[task], datasets[task], ablators[task] = discover(
            lm,
            info,
            model,
            task,
            DiscoveryConfig(thresholds, method=methods[task], fast={"minimal": minimal}, **sizes),
            template=template,
            seed=seed,
            prefix=prefix,
            **prompt_count,
            **(control_options if is_control else {}),
        )
    except SeqcircError as err:  # e.g. numbers on a tokenizer whose two-digit numbers are single tokens
        refused[task] = str(err)
        fallback = task_fallbacks.get(task)
        if fallback and fallback not in tasks:
            tasks = [fallback if t == task else t for t in tasks]
            queue.insert(0, fallback)
        continue
    write_circuits(out_dir / f"circuit_{task}.json", records[task])
tasks = [t for t in tasks if t in records]
if null_tasks is not None:  # a refused task's null is drawn on its fallback
    null_tasks = [task_fallbacks.get(t, t) if t in refused else t for t in null_tasks]
control = control if control in records else None
every_task = [*tasks, *([control] if control else [])]  # the sequence tasks, then the control
same_way = [t for t in tasks if control and methods[t] == methods[control]]  # compared with the control
rows = [
    {
        "task": t,
        "control": t == control,
        "method": methods[t],
        "threshold": r["threshold"],
        "heads": len(r["heads"]),
        "mlps": len(r["mlps"]),
        "n_components": r["n_components"],
        "score": 100 * r["score"],
        **{k: v for k, v in score_columns(r).items() if k != "score_%"},
        "prompts": r["n_prompts"],
        "forward_passes": r["forward_passes"],
        "seconds": r["seconds"],
    }
    for t in every_task
    for r in records[t]
]
summary = pd.DataFrame(rows)
display(
    Markdown(
        "Tasks used: "
        + ", ".join(f"**{t}** ({methods[t]})" for t in tasks)
        + (
            f"; control: **{control}** ({methods[control]}), compared with "
            + (", ".join(same_way) if same_way else f"no sequence task (none was found by {methods[control]})")
            if control
            else "; no control task"
        )
        + "."
        + "".join(f" **{t}** is left out: {why}" for t, why in refused.items())
    )
)
reader_table(
    summary.assign(
        circuit=[
            f"{t}{' (control)' if c else ''} ({m}): {h} heads + {k} MLPs"
            for t, c, m, h, k in zip(
                summary["task"], summary["control"], summary["method"], summary["heads"], summary["mlps"]
            )
        ]
    ),
    [
        Column("circuit", "circuit (method): size"),
        Column("threshold", "threshold (% of full)", "fraction"),
        *circuit_score_columns("score"),
    ],
    caption="Paper's ratio m(C)/m(full) beside the normalised faithfulness (m(C) - m(empty)) / (m(full) - m(empty)); "
    "held-out sequences are disjoint from discovery (split: "
    + ", ".join(sorted({str(x) for x in summary["heldout_split"].dropna()}))
    + "); intervals are cluster "
    "bootstraps over sequences.",
)

# %%
display(
    Markdown(
        "Discovery and held-out sets per task (distinct sequences, disjoint between the two): "
        + "; ".join(
            f"{t}: {r['n_prompts']} prompts from {r['n_sequences']} sequences for discovery, "
            f"{r['heldout']['n_prompts']} prompts from {r['heldout']['n_sequences']} other sequences held out"
            for t in every_task
            for r in records[t][:1]
            if r.get("heldout")
        )
        + ". Tasks with enough sequences (listed in `task_sequences`) are sized by sequence, one prompt each; the "
        "others draw their prompts from the few sequences a single-token family has, so their scores and intervals "
        "are small-sample estimates: the interval is over sequences, and a handful of sequences cannot pin it down."
    )
)

# %% [markdown]
# ## Circuit size against performance
#
# Each point is one threshold's circuit (plus the full model at 100 %). Nested pruning trades
# components for fidelity: the curve shows how steeply performance falls as the circuit shrinks.

# %%
full = pd.DataFrame([{"task": t, "n_components": len(info.components), "score": 100.0} for t in every_task])
figures.figure(
    plots.size_performance_curve(
        pd.concat([summary[["task", "n_components", "score"]], full]),
        title=f"{model}: circuit size vs % of full logit difference",
    ),
    "Circuit size (components kept) against the share of the full logit difference it keeps, one line per "
    "task; the rightmost point is the full model. Look for where each line bends: below that size the "
    "circuit loses the behaviour quickly.",
)

# %% [markdown]
# ## The circuits at the main threshold
#
# Heads are circles on a layer x head grid, MLPs squares; the circuit's components are red.

# %%
main = {t: next(r for r in records[t] if abs(r["threshold"] - main_threshold) < 1e-9) for t in every_task}
with_control = {t: Circuit.from_lists(r["heads"], r["mlps"]).components for t, r in main.items()}
circuits = {t: with_control[t] for t in tasks}  # the sequence tasks
for t in every_task:
    display(
        figures.figure(
            plots.circuit_diagram(
                info.n_layers,
                info.n_heads,
                with_control[t],
                title=f"{t}{' (control)' if t == control else ''}: {len(with_control[t])} components, "
                f"score {100 * main[t]['score']:.1f} %",
            ),
            f"The {t}{' (control)' if t == control else ''} circuit at {100 * main_threshold:.0f} %: every head "
            f"(circle) and MLP (square, right column) of the model, the {len(with_control[t])} kept ones red, layer 0 "
            "at the bottom. Note the layers where the kept heads cluster.",
        )
    )

# %% [markdown]
# ## Overlap between tasks
#
# Pairwise intersection, union and Jaccard index of the circuits (the control's included), for heads and MLPs
# together and for heads alone, and the components every sequence task's circuit keeps. Then every overlap beside
# the overlap expected by chance (`n_permutations` layer-stratified permutations of each circuit's membership).

# %%
overlap = overlap_table(with_control)
head_overlap = overlap_table(circuits, kind="head")
shared = shared_components(circuits)
display(
    reader_table(
        overlap,
        [
            Column("a", "circuit A"),
            Column("b", "circuit B"),
            Column("intersection", "shared", "int"),
            Column("union", "in either", "int"),
            Column("jaccard", "Jaccard", "number", 2),
        ],
        caption="Every pair of circuits at the main threshold, heads and MLPs: components shared, in either, and "
        "their Jaccard index (shared / in either).",
    )
)
display(
    reader_table(
        head_overlap,
        [
            Column("a", "circuit A"),
            Column("b", "circuit B"),
            Column("intersection", "shared", "int"),
            Column("union", "in either", "int"),
            Column("jaccard", "Jaccard", "number", 2),
        ],
        caption="The same for the sequence tasks' heads only.",
    )
)
display(
    Markdown(
        f"**Shared by all {len(tasks)} sequence circuits ({len(shared)}):** " + (" ".join(map(str, shared)) or "none")
    )
)
figures.figure(
    plots.overlap_chart(with_control, title="circuit membership per task"),
    f"Which circuit keeps each component (left: filled = kept) and how many of the {len(every_task)} tasks "
    + (f"(the control {control} included) " if control else "")
    + f"share it (right). The {len(shared)} components every sequence task keeps have bars of at least {len(tasks)}.",
)

# %%
overlap_null = pd.DataFrame(
    sharing_null(info, circuits, n_permutations, seed, pairs=False)
    + [r for r in sharing_null(info, with_control, n_permutations, seed) if r["group"] == PAIR]
)
reader_table(
    overlap_null.assign(
        chance_range=[[lo, hi] for lo, hi in zip(overlap_null["null_lo"], overlap_null["null_hi"])],
        which=[
            f"all {len(tasks)} sequence tasks" if g == SHARED_BY_ALL else t
            for g, t in zip(overlap_null["group"], overlap_null["tasks"])
        ],
    ),
    [
        Column("which", "circuits"),
        Column("observed", "components shared", "int"),
        Column("expected", "expected by chance [95 % range]", "number", digits=1, interval="chance_range"),
        Column("percentile", "observed percentile", "number"),
        Column("p", "p (observed >= chance)", "number", digits=3),
    ],
    caption=f"Components shared at {100 * main_threshold:.0f} %, beside the count expected by chance over "
    f"{n_permutations} layer-stratified permutations of every circuit's membership (same heads per layer, MLPs "
    "from the same layers +-1); p = (1 + #{permutations >= observed}) / (permutations + 1).",
)

# %% [markdown]
# ## Which single heads matter?
#
# Ablating one head alone from the full model and reading the drop in points of the full logit
# difference, `100 * (1 - LD(ablated) / LD(full))`, is the paper's single-head ablation (for GPT-2
# small numerals its largest drop was 47 points). Attribution patching estimates that drop for every
# head from one forward and one backward pass (the maps below); the `exact_heads` heads with the
# largest estimates are then ablated for real (the table). A head can matter alone without being in
# the circuit (another component compensates once it is pruned) and vice versa, so the table marks
# circuit membership.

# %%
importance = pd.concat(
    [
        head_importance(lm, info, datasets[t], exact_top=exact_heads, progress=False, ablators=ablator_cache).assign(
            task=t
        )
        for t in tasks
    ]
)
head_scores = estimated_drop_scores(importance, panel="task")
display(
    figures.figure(
        plots.head_scores_panels(
            head_scores, title=f"{model}: estimated single-head ablation drop", value_title="est. drop (points)"
        ),
        "Estimated drop (points of the full logit difference) when one head alone is mean-ablated, every head, one "
        "panel per task, layer 0 at the top, one colour scale. Look for heads that are dark in every panel: one head "
        "that every task needs.",
    )
)
exact = (
    importance[importance["exact"]]
    .sort_values("drop_points", ascending=False)
    .assign(in_circuit=lambda d: [parse_component(c) in circuits[t] for c, t in zip(d["component"], d["task"])])
)
exact_columns = ["task", "component", "drop_points", "estimated_drop", "in_circuit"]
exact.groupby("task", sort=False).head(6).sort_values("task", kind="stable")[exact_columns].reset_index(drop=True)

# %% [markdown]
# ## Cross-task scores
#
# Rows: whose circuit; columns: whose data. Each cell is the circuit's logit difference on that
# data, everything else mean-ablated, as a percentage of the full model on the same data. A
# circuit that does well on another task's data carries that task's mechanism too. Two references: the
# control's row and column (how well a circuit transfers to and from a task without a sequence), and for every
# off-diagonal cell between sequence tasks a **matched baseline**: `cross_draws` random circuits with as many heads in every layer as
# the row's circuit and as many MLPs from the same layers +-1, scored on the same data the same way (their mean
# and 5-95 % range, the cell's percentile among them and its one-sided p; with few draws p cannot go below
# 1 / (cross_draws + 1), so the baseline is descriptive, not a headline test).

# %%
cross = 100 * cross_task_scores(lm, info, with_control, datasets, ablators=ablator_cache)
cross_baselines = cross_task_baselines(  # the sequence tasks' cells (the control's row and column are a reference)
    lm, info, circuits, {t: datasets[t] for t in tasks}, n_draws=cross_draws, seed=seed, ablators=ablator_cache
)
control_reference = control_comparison(overlap_null, same_way, control, cross) if control else None
write_json_atomic(
    out_dir / SharedCircuits.file,
    SharedCircuits(
        model=model,
        template=template,
        threshold=main_threshold,
        method=method,
        smoke=smoke,
        summary=summary.to_dict(orient="records"),
        overlap=overlap.to_dict(orient="records"),
        shared=[str(c) for c in shared],
        cross_task_percent=cross.to_dict(),
        membership=membership_matrix(circuits).reset_index(names="component").to_dict(orient="records"),
        head_importance=head_scores,
        single_head_ablation=frame_records(exact[exact_columns]),
        control=control,
        methods=methods,
        overlap_null=frame_records(overlap_null),
        control_reference=control_reference,
        cross_task_baselines=frame_records(cross_baselines),
    ),
)
reader_table(
    cross.reset_index(names="circuit"),
    [Column("circuit", "circuit (rows)")] + [Column(t, f"on {t} data (% of full)", "percent") for t in cross.columns],
    caption="Each task's circuit (rows) scored on every task's data (columns), in percent of the full model's "
    "metric on that data: the diagonal is the circuit's own score, the rest how far it transfers.",
)
reader_table(
    cross_baselines.assign(
        null_range=[[a, b] for a, b in zip(cross_baselines["null_p5"], cross_baselines["null_p95"])]
    ),
    [
        Column("circuit", "circuit"),
        Column("data", "on data"),
        Column("score", "score (% of full)", "fraction"),
        Column(
            "null_mean", "matched random circuits: mean [5th, 95th pct.] (% of full)", "fraction", interval="null_range"
        ),
        Column("percentile", "score's percentile", "number"),
        Column("p", "p (one-sided)", "number", digits=2),
        Column("n_draws", "draws", "int"),
    ],
    caption=f"The off-diagonal cells of the cross-task table against {cross_draws} random circuits matched per layer "
    "to the row's circuit, scored on the same data (the paper's ratio).",
)

# %%
diag = {t: cross.loc[t, t] for t in every_task}
off = [(a, b, cross.loc[a, b]) for a in tasks for b in tasks if a != b]
best = max(off, key=lambda x: x[2])
worst = min(off, key=lambda x: x[2])
display(
    Markdown(
        f"On its own data each circuit keeps {', '.join(f'{t} {v:.0f} %' for t, v in diag.items())} of the full "
        f"logit difference (by construction at least {100 * main_threshold:.0f} %); on fresh prompts (held out) "
        + ", ".join(
            f"{t} {100 * main[t]['heldout']['score']:.0f} % (95 % interval "
            f"{100 * main[t]['heldout']['ci95'][0]:.0f}-{100 * main[t]['heldout']['ci95'][1]:.0f})"
            for t in tasks
            if main[t].get("heldout")
        )
        + f". Across tasks, the {best[0]} "
        f"circuit transfers best ({best[2]:.0f} % on {best[1]} data) and the {worst[0]} circuit worst "
        f"({worst[2]:.0f} % on {worst[1]} data). {len(shared)} components are shared by all {len(tasks)} circuits; "
        f"the pairwise head Jaccard indices range from {head_overlap['jaccard'].min():.2f} to "
        f"{head_overlap['jaccard'].max():.2f}. "
        + " ".join(
            f"Alone, the head whose ablation costs {t} most is {g['component'].iloc[0]} "
            f"({g['drop_points'].iloc[0]:.1f} points, estimated {g['estimated_drop'].iloc[0]:.1f}; "
            f"{'in' if g['in_circuit'].iloc[0] else 'not in'} its circuit)."
            for t in tasks
            if len(g := exact[exact["task"] == t])
        )
        + " Against chance, all sequence circuits share "
        + chance_phrase(overlap_null[overlap_null["group"] == SHARED_BY_ALL].iloc[0])
        + ". "
        + control_verdict(control_reference, main_threshold)
    )
)

# %% [markdown]
# ## Shared by all tasks, at every threshold
#
# The components that every task's circuit keeps form a candidate shared sub-circuit; here it is
# taken at each threshold of the nested circuits above (all found by the same method) and **scored
# as a circuit** on every task: everything outside it mean-ablated, as a percentage of the full
# model, on the discovery prompts (in-sample) and on each task's held-out prompts (sequences disjoint
# from discovery), with a 95 % cluster-bootstrap interval over sequences. At the main threshold the
# held-out score is compared with a **null distribution**: `n_draws` random circuits matched per layer
# (the same number of heads in every layer, as many MLPs from the same layers +-1), scored exactly like it
# (same prompts, means and metric), by normalised faithfulness. The table gives the null's median and
# 95th percentile, the observed percentile and the one-sided p = (1 + #{null >= observed}) / (n_draws + 1);
# `beats_random` is p <= 0.05.

# %%
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import TaskDataset

by_threshold = {r["threshold"]: {} for r in records[tasks[0]]}
for t in tasks:
    for r in records[t]:
        by_threshold[r["threshold"]][t] = Circuit.from_lists(r["heads"], r["mlps"]).components
shared_at = shared_by_threshold(by_threshold)
score_on = {}
for t in tasks:
    score_on[f"{t} in-sample"] = ablators[t]
    if records[t][0].get("heldout_dataset"):
        score_on[f"{t} held-out"] = Ablator(
            lm,
            info,
            TaskDataset.from_json(records[t][0]["heldout_dataset"]),
            mode=ablators[t].mode,
            metric=ablators[t].metric,
        )
held_labels = [d for d in score_on if d.endswith("held-out")] or list(score_on)
shared_scores = score_against_random(info, shared_at, score_on, n_random=0, seed=seed, random_on=[])
shared_scores = shared_scores.drop(columns=["random_mean", "random_min", "random_max", "random_sd", "n_random"])
shared_nulls = {
    label: circuit_null(
        score_on[label],
        shared_at[main_threshold],
        n_draws=n_draws,
        seed=seed,
        progress=False,
        description=f"shared-by-all circuit at {main_threshold}, {label}",
    )
    for label in held_labels
    if shared_at.get(main_threshold) and (null_tasks is None or label.split()[0] in null_tasks)
}
null_columns = pd.DataFrame(
    [
        {
            "threshold": main_threshold,
            "data": label,
            "faithfulness": 100 * nd.observed,
            "null_p50": 100 * nd.null_p50,
            "null_range": [100 * nd.null_p5, 100 * nd.null_p95],
            "null_p95": 100 * nd.null_p95,
            "n_draws": nd.n_draws,
            "percentile": nd.observed_percentile,
            "p": nd.p_value,
            "beats_random": nd.p_value <= 0.05,
        }
        for label, nd in shared_nulls.items()
    ],
    columns=[
        "threshold",
        "data",
        "faithfulness",
        "null_p50",
        "null_range",
        "null_p95",
        "n_draws",
        "percentile",
        "p",
        "beats_random",
    ],
)
shared_scores = (
    shared_scores.drop(columns=["beats_random"])
    .rename(columns={"circuit": "threshold"})
    .merge(null_columns, on=["threshold", "data"], how="left")
)
shared_scores["beats_random"] = shared_scores["beats_random"].astype(object).where(shared_scores["p"].notna(), None)
for col in ("score", "ci_lo", "ci_hi"):
    shared_scores[col] = 100 * shared_scores[col]
reader_table(
    shared_scores.assign(
        ci=[[lo, hi] for lo, hi in zip(shared_scores["ci_lo"], shared_scores["ci_hi"])],
        size=[f"{h} heads + {k} MLPs" for h, k in zip(shared_scores["heads"], shared_scores["mlps"])],
    ),
    [
        Column("threshold", "threshold", "fraction"),
        Column("data", "data"),
        Column("size", "size"),
        Column("score", "paper's ratio (% of full) [95 % CI]", "percent", interval="ci"),
        Column("faithfulness", "normalised faithfulness (%)", "percent"),
        Column("null_p50", "null median [5th, 95th pct.] (%)", "percent", interval="null_range"),
        Column("percentile", "observed percentile", "number"),
        Column("p", "p (one-sided)", "number", digits=3),
    ],
    caption=f"The shared-by-all circuit per threshold; its null ({n_draws} random circuits matched per layer) at "
    f"{100 * main_threshold:.0f} %, on held-out data only.",
)

# %%
display(
    figures.figure(
        plots.bar_chart(
            shared_scores,
            x="data",
            y="score",
            color="threshold",
            y_title="% of full logit difference",
            title="the shared-by-all circuit scored on each task",
        ),
        f"The components shared by all {len(tasks)} circuits at each threshold (colour), scored as a circuit on each "
        f"task's discovery (in-sample) and held-out prompts. Compare the held-out bars with the null of matched random "
        f"circuits in the table above (null median and 95th percentile).",
    )
)
display(
    figures.figure(
        alt.hconcat(*[plots.overlap_chart(by_threshold[thr], title=f"{100 * thr:.0f} %") for thr in by_threshold]),
        "Membership of every task's circuit at each threshold (one panel per threshold, highest left; filled = kept) and "
        "how many tasks keep each component (bars). The components with full bars form the shared-by-all circuit.",
    )
)

# %% [markdown]
# ### Overlap against chance, at every threshold
#
# At each threshold, the components all sequence circuits keep and those each pair keeps (the control's pairs
# included), beside the count expected by chance: `n_permutations` layer-stratified permutations of every
# circuit's membership (same heads per layer, MLPs from the same layers +-1), no forward pass. "Lost" is read
# both ways: where nothing is shared any more, and where what is shared is no longer above chance (p > 0.05 at
# that and every lower threshold).

# %%
levels_with_control = {thr: dict(level) for thr, level in by_threshold.items()}
for r in records[control] if control else []:
    levels_with_control[r["threshold"]][control] = Circuit.from_lists(r["heads"], r["mlps"]).components
chance = pd.concat(
    [
        sharing_null_by_threshold(info, by_threshold, n_permutations, seed, pairs=False),
        sharing_null_by_threshold(info, levels_with_control, n_permutations, seed).query("group == @PAIR"),
    ],
    ignore_index=True,
)
chance["above_chance"] = chance["p"] <= 0.05
chance_all = chance[chance["group"] == SHARED_BY_ALL]
sharing_lost = {
    "shared": lost_at(chance_all, "observed", by="group").get(SHARED_BY_ALL),
    "beyond_chance": lost_at(chance_all, "above_chance", by="group").get(SHARED_BY_ALL),
}
reader_table(
    chance.assign(
        chance_range=[[lo, hi] for lo, hi in zip(chance["null_lo"], chance["null_hi"])],
        which=[
            f"all {len(tasks)} sequence tasks" if g == SHARED_BY_ALL else t
            for g, t in zip(chance["group"], chance["tasks"])
        ],
    ),
    [
        Column("threshold", "threshold", "fraction"),
        Column("which", "circuits"),
        Column("observed", "components shared", "int"),
        Column("expected", "expected by chance [95 % range]", "number", digits=1, interval="chance_range"),
        Column("p", "p (observed >= chance)", "number", digits=3),
    ],
    caption=f"Components shared at every threshold beside the count expected by chance ({n_permutations} "
    "layer-stratified permutations of every circuit's membership).",
)

# %% [markdown]
# ### Same or different from the 97 % circuit
#
# Each threshold's circuit against the highest threshold's circuit of the same task (and the
# shared-by-all circuit against the highest threshold's one): `same` = kept by both, `dropped` =
# only in the highest threshold's circuit, `added` = only in the lower one (zero for nested pruning).

# %%
top = max(by_threshold)
same_diff = pd.concat(
    [
        same_different_counts(
            same_different(by_threshold[top][t], {thr: by_threshold[thr][t] for thr in by_threshold})
        ).assign(task=t)
        for t in tasks
    ]
    + [same_different_counts(same_different(shared_at[top], shared_at)).assign(task="shared by all")],
    ignore_index=True,
).rename(columns={"circuit": "threshold"})
shared_table = same_different(shared_at[top], {f"{100 * thr:.0f} %": comps for thr, comps in shared_at.items()})
write_json_atomic(
    out_dir / SharedByThreshold.file,
    SharedByThreshold(
        model=model,
        template=template,
        method=method,
        smoke=smoke,
        thresholds=list(by_threshold),
        reference_threshold=top,
        n_random=n_draws,
        random_match=random_match,
        seed=seed,
        shared={
            str(thr): [str(c) for c in sorted(shared_at[thr], key=lambda c: (c.layer, c.kind, c.index or 0))]
            for thr in shared_at
        },
        scores=frame_records(shared_scores),
        same_different=frame_records(same_diff),
        shared_same_different=shared_table.reset_index().to_dict(orient="records"),
        null_threshold=main_threshold,
        nulls=dict(shared_nulls),
        control=control,
        n_permutations=n_permutations,
        sharing_null=frame_records(chance.drop(columns=["above_chance"])),
        lost_at=sharing_lost,
    ),
)
display(
    reader_table(
        same_diff,
        [
            Column("task", "task"),
            Column("threshold", "threshold", "fraction"),
            Column("same", "kept from the top threshold's circuit", "int"),
            Column("dropped", "dropped", "int"),
            Column("added", "added", "int"),
            Column("kept_of_reference", "kept of the top circuit", "fraction"),
        ],
        caption="Each threshold's circuit against the highest threshold's circuit of the same task (and the "
        "shared-by-all circuit against its own top): components kept, dropped and added.",
    )
)
reader_table(
    shared_table.reset_index(),
    [Column("component", "component")] + [Column(c, f"at {c}") for c in shared_table.columns],
    caption="The shared-by-all circuit component by component down the thresholds: same (still shared), dropped "
    "(no longer shared by all), added.",
)


# %%
def _held(thr: float, t: str) -> pd.Series | None:
    rows = shared_scores[(shared_scores["threshold"] == thr) & (shared_scores["data"] == f"{t} held-out")]
    return rows.iloc[0] if len(rows) else None


lines = []
for thr in by_threshold:
    held = [(t, _held(thr, t)) for t in tasks]
    held = [(t, r) for t, r in held if r is not None]
    at_chance = chance_all[chance_all["threshold"] == thr]
    line = f"- **{100 * thr:.0f} %** ({method}): " + (
        chance_phrase(at_chance.iloc[0]) + f" shared by all {len(tasks)} tasks"
        if len(at_chance)
        else f"{len(shared_at[thr])} components shared by all {len(tasks)} tasks"
    )
    if held:
        line += (
            "; scored as a circuit on held-out prompts it keeps "
            + ", ".join(f"{t} {r['score']:.0f} %" for t, r in held)
            + " of the full logit difference"
        )
        tested = [(t, r) for t, r in held if pd.notna(r["p"])]
        if tested:
            beats = [t for t, r in tested if r["beats_random"]]
            line += (
                f". Against {int(tested[0][1]['n_draws'])} random circuits matched per layer (normalised "
                "faithfulness on held-out prompts): "
                + ", ".join(
                    f"{t} {r['faithfulness']:.0f} % vs null median {r['null_p50']:.0f} % "
                    f"(percentile {r['percentile']:.0f}, p = {r['p']:.3f})"
                    for t, r in tested
                )
                + (
                    f"; it beats its null (p <= 0.05) on {len(beats)} of {len(tested)} tasks"
                    + (
                        ""
                        if len(beats) == len(tested)
                        else " and is **not distinguishable from random circuits of its make-up** on "
                        + ", ".join(t for t, _ in tested if t not in beats)
                    )
                )
            )
            if 1 / (int(tested[0][1]["n_draws"]) + 1) > 0.05:
                line += (
                    f" (with {int(tested[0][1]['n_draws'])} draws p cannot fall below "
                    f"{1 / (int(tested[0][1]['n_draws']) + 1):.2f}: too few draws for this test)"
                )
    lines.append(line + ".")
shared_row = same_diff[same_diff["task"] == "shared by all"].set_index("threshold")
low = min(by_threshold)
if low != top:
    lines.append(
        f"- Against the {100 * top:.0f} % shared circuit, the {100 * low:.0f} % one keeps "
        f"{int(shared_row.loc[low, 'same'])} of its "
        f"{int(shared_row.loc[low, 'same'] + shared_row.loc[low, 'dropped'])} components and adds "
        f"{int(shared_row.loc[low, 'added'])}."
    )
if len(chance_all):
    lines.append(
        "- Where sharing is lost: "
        + (
            f"no component is shared by all tasks from {100 * sharing_lost['shared']:.0f} % down"
            if sharing_lost["shared"] is not None
            else f"components are shared by all tasks down to {100 * low:.0f} %"
        )
        + "; against chance, "
        + (
            f"what they share is no longer above chance (p > 0.05) from {100 * sharing_lost['beyond_chance']:.0f} % "
            "down"
            if sharing_lost["beyond_chance"] is not None
            else f"what they share is above chance (p <= 0.05) down to {100 * low:.0f} %"
        )
        + f" ({n_permutations} layer-stratified permutations)."
    )
display(Markdown("\n".join(lines)))
