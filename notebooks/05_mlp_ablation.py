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
# # What the MLPs do
#
# In GPT-2 small the paper found a few MLPs that sequence continuation cannot do without (MLP0,
# MLP9). Here we ablate each MLP alone from the full model (mean ablation from the corrupted
# prompts, every position) and report the percentage of the full logit difference that remains,
# per task; then, for the MLP the first task needs most, we rank its neurons by attribution
# patching and ablate the top ones; finally we ask **which heads that MLP relies on**, by path
# patching every head -> MLP edge inside the task's circuit (only that path patched).

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.load_model
n_prompts = 32  # prompts per task before filtering to correct answers
seed = 0  # dataset seed
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI
tasks = ["digits", "number_words", "months"]  # tasks whose MLPs are ablated
template = "among_words"  # prompt template
top_neurons = 20  # neurons of the key MLP ablated together
threshold = 0.8  # threshold of the circuit inside which head -> MLP edges are path patched
circuit_method = "fast"  # how that circuit is found ("fast" or "sweep")

# %%
import pandas as pd
from IPython.display import Markdown, display

from seqcirc_utils import plots
from seqcirc_utils.ablation import get_ablator, single_component_effects
from seqcirc_utils.circuits import discover, discovery_dataset
from seqcirc_utils.models import load_model
from seqcirc_utils.patching import edge, edge_effects
from seqcirc_utils.pruning import attribution_scores
from seqcirc_utils.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.types import Circuit, Component

plots.enable_offline()
if smoke:
    n_prompts, tasks, top_neurons = min(n_prompts, 12), tasks[:1], min(top_neurons, 5)
    print(f"SMOKE MODE: {n_prompts} prompts, tasks {tasks}; numbers are not results.")
print(f"model={model} tasks={tasks} template={template} n_prompts={n_prompts} seed={seed}")

# %%
lm, info = load_model(model, device=device)
datasets = {t: discovery_dataset(lm, model, t, template=template, n=n_prompts, seed=seed) for t in tasks}
effects = pd.concat([
    single_component_effects(lm, info, ds, info.mlps, progress=False).assign(task=t) for t, ds in datasets.items()])
effects["kept_%"] = 100 * effects["fraction"]
effects.pivot(index="component", columns="task", values="kept_%").loc[[str(m) for m in info.mlps]]

# %%
plots.bar_chart(effects, x="component", y="kept_%", color="task", sort=[str(m) for m in info.mlps],
                y_title="% of full logit difference kept", title=f"{model}: ablating one MLP at a time")

# %% [markdown]
# ## Neurons of the key MLP
#
# The key MLP is the one whose ablation costs the first task most. Its neurons are ranked by
# attribution patching (activation difference x gradient, in logit-difference units; negative =
# ablating the neuron hurts); then the top neurons are mean-ablated together and, for comparison,
# the same number of the least important neurons.

# %%
first = tasks[0]
key = effects[effects["task"] == first].sort_values("fraction").iloc[0]
key_mlp = Component(int(key["layer"]), "mlp")
ab = get_ablator(lm, info, datasets[first])
neurons = [Component(key_mlp.layer, "neuron", i) for i in range(info.d_mlp)]
neuron_attr = attribution_scores(ab, neurons).sort_values()
worst = [Component(key_mlp.layer, "neuron", int(n.split(".N")[1])) for n in neuron_attr.index[:top_neurons]]
least = [Component(key_mlp.layer, "neuron", int(n.split(".N")[1])) for n in neuron_attr.abs().sort_values().index[:top_neurons]]
neuron_rows = pd.DataFrame([
    {"ablated": f"top {top_neurons} neurons of {key_mlp}", "kept_%": 100 * ab.score_ablated(worst)},
    {"ablated": f"{top_neurons} least important neurons", "kept_%": 100 * ab.score_ablated(least)},
    {"ablated": f"all of {key_mlp}", "kept_%": 100 * float(key["fraction"])},
])
display(neuron_attr.head(10).rename("attribution (logit diff)").to_frame())
neuron_rows

# %% [markdown]
# ## Which heads does the key MLP rely on?
#
# Inside the first task's circuit (found at the threshold above), each head -> key-MLP edge is
# path patched alone: the head's mean-ablated output replaces its clean output *only in the key
# MLP's input*. The effect is the change in the circuit's score (negative = the MLP needs that head).

# %%
records, _, circuit_ab = discover(lm, info, model, first, [threshold], method=circuit_method, template=template,
                                  n=n_prompts, seed=seed)
circuit = set(Circuit.from_lists(records[0]["heads"], records[0]["mlps"]).components) | {key_mlp}
senders = [c for c in circuit if c.is_head and c.layer <= key_mlp.layer]
head_to_mlp = edge_effects(circuit_ab, circuit, [edge(h, key_mlp, "mlp") for h in senders], progress=False)
head_to_mlp = head_to_mlp.sort_values("effect")
write_json_atomic(results_dir(model) / "mlp_ablation.json", {
    "model": model, "template": template, "smoke": smoke, "mlp_effects": frame_records(effects),
    "key_mlp": str(key_mlp), "neuron_attribution_top": neuron_attr.head(50).to_dict(),
    "neuron_ablation": frame_records(neuron_rows), "head_to_key_mlp": frame_records(head_to_mlp),
})
head_to_mlp

# %%
mlp_table = effects.pivot(index="component", columns="task", values="kept_%")
crucial = {t: mlp_table[t].nsmallest(3) for t in tasks}
lines = [f"{t}: " + ", ".join(f"{c} ({v:.0f} %)" for c, v in s.items()) for t, s in crucial.items()]
top_edge = head_to_mlp.iloc[0] if len(head_to_mlp) else None
display(Markdown(
    "The MLPs each task can least do without (% of the logit difference kept when ablated alone) are "
    + "; ".join(lines) + f". Ablating the top {top_neurons} neurons of {key_mlp} keeps "
    f"{neuron_rows['kept_%'].iloc[0]:.0f} % against {neuron_rows['kept_%'].iloc[1]:.0f} % for the least important ones "
    f"and {neuron_rows['kept_%'].iloc[2]:.0f} % for the whole MLP."
    + (f" Inside the {first} circuit, the head {key_mlp} relies on most is {top_edge['sender']} "
       f"(score change {100 * top_edge['effect']:.1f} points when only its path into {key_mlp} is patched)."
       if top_edge is not None else f" The {first} circuit has no head upstream of {key_mlp}.")))
