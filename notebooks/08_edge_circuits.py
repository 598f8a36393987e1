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
#     estimate_s: 318
# ---

# %% [markdown]
# # Edge circuits: how the circuit's components talk to each other
#
# A node circuit says *which* heads and MLPs matter; an edge circuit says *which connections*
# between them carry the task. Inside each task's node circuit we prune edges (sender -> receiver
# input: a head's q, k or v, an MLP's input, or the logits; non-adjacent layers included, through
# the residual stream) from the logits backward, keeping an edge when removing it would drop the
# score below the threshold ([Methods](../methods.md)). Removing an edge patches *only that path*:
# the receiver's input sees the sender's mean-ablated output, nothing else changes.
#
# Exact path patching needs one forward pass per edge; edge attribution patching (EAP, and EAP-IG
# with integrated gradients) estimates every edge from a few passes. We check how well the
# estimate ranks edges against exact patching on a sample, and report each edge circuit's
# **faithfulness** as three numbers: the edge circuit's own score (every edge outside it removed by
# path patching), the score of the nodes that still lie on a kept path from the input to the logits
# re-scored by plain node ablation, and the score of the node circuit the edges were pruned in. A
# node counts as part of the edge circuit only if a kept path connects it to the logits; the others
# are *dangling*: edge pruning left them in the node circuit, but nothing they compute reaches the
# output.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per task before filtering to correct answers
seed = 0  # dataset and edge-sample seed
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
tasks = ["digits", "number_words", "months"]  # tasks whose edge circuits are found
template = "among_words"  # prompt template
node_threshold = 0.8  # node circuit threshold
node_method = "fast"  # how the node circuit is found ("fast" or "sweep")
minimal = True  # refine fast-method circuits to 1-minimal (one pass per kept component; smoke runs skip it)
edge_threshold = 0.8  # edge circuit threshold
edge_method = "eap-ig"  # "exact" (one pass per edge; slow on CPU), "eap" or "eap-ig"
ig_steps = 5  # integration steps of EAP-IG
exact_sample = 40  # edges sampled for the EAP-vs-exact agreement check

# %%
import random

import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.result_records import EdgeCircuits
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.core.types import Circuit
from seqcirc_utils.discovery.edges.attribution import eap_vs_exact
from seqcirc_utils.discovery.edges.patching import EdgePatcher, circuit_edges
from seqcirc_utils.discovery.edges.search import prune_edges
from seqcirc_utils.discovery.pipeline import discover, score_columns
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import smoke_note

figures = plots.enable_offline()  # this chapter's figure numbers
if smoke:
    n_prompts, tasks, exact_sample, ig_steps = min(n_prompts, 8), tasks[:1], min(exact_sample, 8), min(ig_steps, 2)
    minimal = False
    display(
        smoke_note(
            f"{n_prompts} prompts, tasks {tasks}, {exact_sample} sampled edges, node circuits not refined to 1-minimal"
        )
    )

# %%
lm, info = load_model(model, device=device)
out_dir = results_dir(model)
results, ablators, nodes, node_records = {}, {}, {}, {}
for task in tasks:
    records, _, ablators[task] = discover(
        lm,
        info,
        model,
        task,
        DiscoveryConfig([node_threshold], method=node_method, fast={"minimal": minimal}),
        template=template,
        n=n_prompts,
        seed=seed,
        prefix=prefix,
    )
    nodes[task] = Circuit.from_lists(records[0]["heads"], records[0]["mlps"]).components
    node_records[task] = records[0]
    results[task] = prune_edges(
        ablators[task],
        nodes[task],
        edge_threshold,
        method=edge_method,
        ig_steps=ig_steps,
        progress=False,
        node_threshold=node_threshold,
    )
    write_json_atomic(out_dir / f"edges_{task}.json", results[task].to_json())  # kind "edge_circuit"
rows = []
for task, r in results.items():
    rows.append(
        {
            "task": task,
            "nodes": len(r.components),
            "connected_nodes": len(r.connected),
            "candidate_edges": r.n_candidate_edges,
            "kept_edges": len(r.edges),
            "connected_edges": len(r.connected_edges),
            "edge_circuit_%": 100 * r.score,
            "connected_nodes_ablation_%": 100 * r.connected_score,
            "node_circuit_%": 100 * r.node_score,
            "node_circuit_ci95": (node := score_columns(node_records[task]))["score_ci95"],
            "node_heldout_%": node["heldout_%"],
            "node_heldout_ci95": node["heldout_ci95"],
            "dangling": " ".join(str(c) for c in r.dangling),
            "forward_passes": r.forward_passes,
            "seconds": r.seconds,
        }
    )
summary = pd.DataFrame(rows)
reader_table(
    summary,
    [
        Column("task", "task"),
        Column("nodes", "node-circuit nodes", "int"),
        Column("kept_edges", "kept edges", "int"),
        Column("connected_edges", "connected edges", "int"),
        Column("edge_circuit_%", "edge circuit (% of full)", "percent"),
        Column("connected_nodes_ablation_%", "its connected nodes (% of full)", "percent"),
        Column("node_circuit_%", "node circuit (% of full)", "percent", interval="node_circuit_ci95"),
        Column("node_heldout_%", "node circuit held out (% of full)", "percent", interval="node_heldout_ci95"),
    ],
    caption="Edge circuits per task: edges kept out of the candidates, and the score of the edge circuit beside "
    "its nodes under node ablation and the node circuit it was pruned from (95 % intervals over sequences).",
)

# %% [markdown]
# ## The edge circuits
#
# Kept edges on a path from the input to the logits, drawn between node positions (edges into the
# logits go to the top of the grid); highlighted nodes are the edge circuit's connected nodes, grey
# ones are ablated or dangling.

# %%
for task, r in results.items():
    display(
        figures.figure(
            plots.circuit_diagram(
                info.n_layers,
                info.n_heads,
                r.connected,
                edges=r.edge_pairs(),
                title=f"{task}: {len(r.connected_edges)} edges among {len(r.connected)} connected "
                f"nodes ({len(r.dangling)} of {len(r.components)} node-circuit nodes dangle)",
            ),
            f"The {task} edge circuit: the {len(r.connected_edges)} kept edges (blue lines) between its {len(r.connected)} "
            "connected nodes (red; heads circles, MLPs squares in the right column, layer 0 at the bottom; the logits at "
            "the top). Follow the lines down from the logits to see which heads feed the answer directly.",
        )
    )

# %%
kinds = pd.concat([pd.DataFrame(r.edges).assign(task=t) for t, r in results.items() if r.edges])
by_input = kinds.groupby(["task", "input"]).size().unstack(fill_value=0).reset_index()
reader_table(
    by_input,
    [Column("task", "task")] + [Column(c, f"edges into {c}", "int") for c in by_input.columns if c != "task"],
    caption="Kept edges by the receiver's input: a head's query, key or value, an MLP's input, or the logits.",
)

# %% [markdown]
# ## Does edge attribution rank edges like exact path patching?
#
# On a random sample of the first task's candidate edges, each edge is removed alone with exact
# path patching (the change in score) and estimated by EAP (gradient at the circuit) — the rank
# correlation says how far the cheap estimate can be trusted.

# %%
first = tasks[0]
candidates = circuit_edges(info, EdgePatcher(ablators[first], nodes[first]).components)
sample = random.Random(seed).sample(candidates, min(exact_sample, len(candidates)))
agreement, agree = eap_vs_exact(ablators[first], nodes[first], sample, ig_steps=1, progress=False)
legacy = {"node_ablation_%": summary["node_circuit_%"]}  # older readers: the node circuit's score, same number
write_json_atomic(
    out_dir / EdgeCircuits.file,
    EdgeCircuits(
        model=model,
        smoke=smoke,
        edge_method=edge_method,
        summary=frame_records(summary.assign(**legacy)),
        eap_vs_exact=agree,
        eap_vs_exact_edges=frame_records(agreement),
    ),
)
display(
    reader_table(
        pd.DataFrame([agree]),
        [Column("n_edges", "sampled edges", "int"), Column("spearman", "Spearman rank correlation", "number", 2)],
        caption="Single-edge effects, EAP against exact path patching, on the sampled edges.",
        full=False,
    )
)
figures.figure(
    plots.bar_chart(
        agreement.assign(
            edge=agreement["sender"] + "->" + agreement["receiver"].fillna("logits") + "." + agreement["input"]
        ).nsmallest(15, "exact"),
        x="edge",
        y="exact",
        title="most important sampled edges (exact score change)",
    ),
    f"Change in the {first} circuit's score when one sampled edge alone is path patched (exact), the 15 most "
    "negative; the longest bars are the connections the circuit depends on most.",
)

# %%
best = summary.sort_values("kept_edges").iloc[0]
per_task = "; ".join(
    f"{r['task']}: edge circuit {r['edge_circuit_%']:.0f} % ({r['connected_edges']} connected edges), its "
    f"{r['connected_nodes']} connected nodes under node ablation {r['connected_nodes_ablation_%']:.0f} %, node "
    f"circuit {r['node_circuit_%']:.0f} % ({r['nodes'] - r['connected_nodes']} of {r['nodes']} nodes dangle)"
    for r in summary.to_dict("records")
)
display(
    Markdown(
        f"Edge pruning keeps between {summary['kept_edges'].min()} and {summary['kept_edges'].max()} of the candidate edges "
        f"(the {best['task']} circuit is sparsest: {best['kept_edges']} of {best['candidate_edges']}). As fractions of "
        f"the full logit difference — {per_task}. The first number removes every pruned edge; the second keeps every "
        f"edge among the connected nodes and ablates the rest; the third is the node circuit before edge pruning. "
        f"On {agree['n_edges']} sampled {first} edges, EAP ranks single-edge effects with Spearman "
        f"{agree['spearman']:.2f} against exact path patching."
    )
)
