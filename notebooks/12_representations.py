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
#     estimate_s: 32
# ---

# %% [markdown]
# # Representation geometry: sequences in the residual stream
#
# The earlier chapters ask which components continue a sequence; this one looks at *what the
# residual stream holds* on the way (see `seqcirc_utils.mechanisms.representations`). We read the residual
# stream at every depth — the input of each block (depth 0 is the embedding) and the output of the
# last block — and ask three questions:
#
# 1. **Ordered against shuffled.** At the final position (where the next member is predicted), do
#    prompts of different families, and ordered sequences against the same members shuffled, fall
#    apart? The shuffled twins keep the **last member in place**, so a probe cannot tell them apart by
#    the last token's value. We show a PCA per depth and a cross-validated nearest-centroid accuracy of
#    *ordered vs shuffled* per family.
# 2. **Values across formats.** Is `3` represented like `three` and `March`? At the position of a
#    member we average the representation of each value in each format and compare the cosine of
#    *the same value in different formats* with that of *different values in different formats*.
# 3. **The value-step direction.** The change of the mean representation per unit of value (a
#    difference of means between values, read at one position), per format and depth: does it point the
#    same way in every format, and does adding it move the model's readout from `n` to `n + 1` (the
#    successor test)? Only if it does do we call it a "next" direction.
#
# **How the claims are tested.** The values read are split between a *selection* and an *evaluation*
# side (sequence-disjoint prompts, the same values in every family on one side): depths and directions
# are chosen on the selection prompts, every reported number is measured on the evaluation prompts.
# Each statistic reported as a maximum over depths is tested against a permutation null of that
# maximum (`n_permutations` draws, each applied at every depth; p = (1 + #{null >= observed}) / (n + 1)),
# and the whole analysis is repeated on a **random-weight model of the same shape** with the same
# tokenizer and prompts: what the random model also shows is not evidence of what training built.

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 16  # prompts per family and side (selection, evaluation), each with a shuffled twin
seed = 0  # dataset seed (and the split, folds, permutations and random directions)
prefix = "document"  # document | bos | none: the token every prompt starts with (see Methods)
device = None  # torch device; None picks one
smoke = False  # tiny sizes for CI, few prompts and permutations; numbers are not results
families = [
    "digits",
    "number_words",
    "months",
]  # formats compared, two or more of digits, number_words, months, days, letters
template = "among_words"  # prompt template (pure, comma, among_words)
length = 4  # members shown per prompt, at least 3 (a shuffled pair would be a sequence)
corruption = "permutationKeepLast"  # shuffled twins: permutationKeepLast (last member in place) or permutation
member_index = -1  # the member read for questions 2 and 3 (-1 is the last, so each prompt ends in the value read)
split_shares = [2, 3]  # selection : evaluation shares of the values read
n_components = 10  # PCA components kept per depth
scatter_layers = None  # depths drawn in the PCA scatter; None picks four evenly spaced from 0 to the last
centers = ["none", "format"]  # centrings compared for the value cosines (none, global, format)
center = "format"  # the centring the nulls, the prose and the headline use
n_folds = 4  # folds of the cross-validated separability
n_permutations = 99  # permutations of every null, at least 99 for the Findings claims
successor_alpha = 1.0  # value steps added in the successor test (fixed in advance)
random_init_seed = 0  # seed of the random-weight control's initialisation
batch_size = 32  # prompts per forward pass

# %%
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display

from seqcirc_utils.core.options import SELECTION_ROLES
from seqcirc_utils.core.result_records import Representations
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.mechanisms import representations as R
from seqcirc_utils.models.loading import load_model, load_random_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import representation_headline, smoke_note
from seqcirc_utils.tasks.datasets import sequence_overlap

figures = plots.enable_offline()  # this chapter's figure numbers
unknown = [f for f in families if f not in R.VALUE_OFFSETS]
if unknown or len(families) < 2:
    raise ValueError(
        f"families must be >= 2 of {', '.join(R.VALUE_OFFSETS)} (families with member values), got {families}"
    )
if length < 3:
    raise ValueError(f"length must be >= 3 (a shuffled twin of two members would be a sequence), got {length}")
if not -length <= member_index < length:
    raise ValueError(
        f"member_index must be in {-length}..{length - 1} (prompts show {length} members), got {member_index}"
    )
if corruption not in R.SHUFFLES:
    raise ValueError(f"corruption must be one of {', '.join(R.SHUFFLES)}, got {corruption!r}")
for c in [*centers, center]:
    if c not in R.CENTERINGS:
        raise ValueError(f"unknown centering {c!r}; valid: {', '.join(R.CENTERINGS)}")
if center not in centers:
    centers = [*centers, center]
if smoke:
    n_prompts, n_permutations, n_components = min(n_prompts, 8), min(n_permutations, 9), min(n_components, 4)
    display(
        smoke_note(f"{n_prompts} prompts per family and side, {n_permutations} permutations, {n_components} components")
    )
SEL, EVAL = SELECTION_ROLES

# %% [markdown]
# ## The prompts
#
# Every member is a value that all families have as a single token (digits `3`, `three` and `March`
# are all 3), so the formats are matched by value throughout. The values the read member can take
# are split, seeded, between the selection and the evaluation side; each family draws its prompts of
# a side from that side's values, so the two sides share no sequence and every family reads the same
# values on one side. Each prompt's twin shows the same members in a non-monotone order with the
# last member in place, at the same positions. The first evaluation prompts, with the token at the
# final position (where the residual stream is read for question 1):

# %%
lm, info = load_model(model, device=device)
shared_values = R.common_values(lm.tokenizer, families)
splits, split_values = R.value_split_datasets(
    lm.tokenizer,
    families,
    shared_values,
    n=n_prompts,
    member_index=member_index,
    shares=split_shares,
    seed=seed,
    model_name=model,
    template=template,
    length=length,
    corruption=corruption,
    prefix=prefix,
)
selection = {f: s[SEL] for f, s in splits.items()}
datasets = {f: s[EVAL] for f, s in splits.items()}  # every reported number is measured on these
split_info = {
    "roles": list(SELECTION_ROLES),
    "seed": seed,
    "shares": list(split_shares),
    "values": split_values,
    "n_sequences": {f: {r: d.n_sequences for r, d in s.items()} for f, s in splits.items()},
    "n_prompts": {f: {r: len(d) for r, d in s.items()} for f, s in splits.items()},
    "overlap": {f: sequence_overlap(s[SEL], s[EVAL]) for f, s in splits.items()},
}
display(
    Markdown(
        f"Values every family has as a single token: {', '.join(map(str, shared_values))}. Values of the member "
        f"read: selection {split_values[SEL]}, evaluation {split_values[EVAL]}; per family "
        f"{n_prompts} prompts a side over "
        + ", ".join(f"{f} {s[SEL].n_sequences} / {s[EVAL].n_sequences}" for f, s in splits.items())
        + " sequences (selection / evaluation), none shared."
    )
)
final_tokens = {f: lm.tokenizer.decode([ds.prompts[0].tokens[-1]]) for f, ds in datasets.items()}
examples = pd.DataFrame(
    [
        {"family": f, "ordered": p.text, "shuffled": p.corrupted_text, "final token": final_tokens[f]}
        for f, ds in datasets.items()
        for p in ds.prompts[:2]
    ]
)
reader_table(
    examples,
    [
        Column("family", "family"),
        Column("ordered", "ordered prompt"),
        Column("shuffled", "shuffled twin"),
        Column("final token", "final token"),
    ],
    full=False,
)

# %% [markdown]
# The residual stream of the trained model on both sides (the selection side only at the members),
# and of the **random-weight control**: a model with the same config and tokenizer, its weights drawn by
# the architecture's own initialisation (`load_random_model`), read on the same evaluation prompts.

# %%
resid = {f: R.dataset_residuals(lm, ds, batch_size=batch_size, progress=False) for f, ds in datasets.items()}
resid_sel = {
    f: R.dataset_residuals(lm, ds, batch_size=batch_size, progress=False, shuffled=False) for f, ds in selection.items()
}
random_lm, random_info = load_random_model(model, seed=random_init_seed, device=device)
resid_random = {
    f: R.dataset_residuals(random_lm, ds, batch_size=batch_size, progress=False) for f, ds in datasets.items()
}
del random_lm
n_depths = info.n_layers + 1
depths = pd.DataFrame({"layer": range(n_depths), "hook": R.resid_hook_names(info.n_layers)})
WEIGHTS = {"trained": resid, "random": resid_random}
Markdown(
    f"The residual stream is read at {n_depths} depths, `{depths.hook.iloc[0]}` to `{depths.hook.iloc[-1]}`, "
    f"in {model} and in {random_info.name}."
)

# %% [markdown]
# ## 1. Ordered against shuffled, family against family
#
# The PCA of the final-position residual stream of every prompt (all families, ordered and
# shuffled), done separately at each depth. First the fraction of the variance the leading
# components explain.

# %%
points = torch.cat([torch.cat([resid[f].ordered, resid[f].shuffled]) for f in families])
labels = pd.DataFrame(
    [
        {"family": f, "order": order, "prompt": i}
        for f in families
        for order in ("ordered", "shuffled")
        for i in range(len(datasets[f]))
    ]
)
layer_pca = R.layer_pca(points, n_components=n_components)
explained = layer_pca.explained_frame()
top = explained[explained.component <= 3].assign(component=lambda d: "PC" + d.component.astype(str))
display(
    figures.figure(
        alt.Chart(top)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="depth (blocks applied)"),
            y=alt.Y("explained:Q", title="fraction of variance"),
            color=alt.Color("component:N", title="component"),
            tooltip=["layer", "component", alt.Tooltip("explained", format=".3f")],
        )
        .properties(width=420, height=220, title=f"{model}: variance explained by the leading components"),
        "Fraction of the variance of the final-position residual stream (all families, ordered and shuffled) along each "
        "of the first three principal components, at each depth. A high PC1 share means one direction (often the "
        "family) dominates; a flatter profile means the prompts spread over many directions.",
    )
)

# %%
if scatter_layers is None:
    scatter_layers = sorted({round(i * (n_depths - 1) / 3) for i in range(4)})
scatter = layer_pca.points_frame(scatter_layers, labels)
display(
    figures.figure(
        alt.Chart(scatter)
        .mark_point(filled=True, size=40, opacity=0.7)
        .encode(
            x=alt.X("pc1:Q", title="PC1"),
            y=alt.Y("pc2:Q", title="PC2"),
            color=alt.Color("family:N"),
            shape=alt.Shape("order:N"),
            tooltip=["family", "order", "prompt", alt.Tooltip("pc1", format=".2f"), alt.Tooltip("pc2", format=".2f")],
        )
        .properties(width=180, height=180)
        .facet(column=alt.Column("layer:O", title="depth"))
        .resolve_scale(x="independent", y="independent"),
        f"Every prompt's final-position residual stream on its depth's first two principal components, at depths "
        f"{', '.join(map(str, scatter_layers))} (each panel its own PCA). Colour: family; shape: ordered or shuffled. "
        "Look for where the families split and whether ordered and shuffled prompts of a family separate.",
    )
)

# %% [markdown]
# How well the labels separate in the full residual space (not only the first two components):
# the cross-validated nearest-centroid accuracy (`n_folds` folds; a prompt and its shuffled twin
# always in the same fold) of *ordered vs shuffled* within each family, and of *family* over all
# prompts, in the trained model and in the random-weight control. The dashed lines are the 95th
# percentile of the same accuracy with the labels permuted, depth by depth.

# %%
folds = min(n_folds, n_prompts)
sep_rows, nulls, random_nulls = [], {}, {}
for weights, res in WEIGHTS.items():
    for f in families:
        x = torch.cat([res[f].ordered, res[f].shuffled])
        n = len(datasets[f])
        table, draws = R.separability_with_null(
            x,
            ["ordered"] * n + ["shuffled"] * n,
            groups=list(range(n)) * 2,
            n_folds=folds,
            n_permutations=n_permutations,
            seed=seed,
        )
        sep_rows.append(table.assign(labels="order", family=f, weights=weights))
        (nulls if weights == "trained" else random_nulls)[f"order_max/{f}"] = R.max_over_depths_null(
            torch.tensor(table.accuracy.to_numpy()),
            draws,
            statistic="order_accuracy",
            seed=seed,
            task=f,
            n_prompts=n,
            n_clusters=datasets[f].n_sequences,
            description=f"ordered vs shuffled accuracy, max over depths, labels permuted ({weights} weights)",
        )
sep_rows.append(
    R.separability(
        points,
        labels.family.tolist(),
        groups=list(zip(labels.family, labels.prompt)),
        n_folds=folds,
        n_permutations=n_permutations,
        seed=seed,
    ).assign(labels="family", family="all", weights="trained")
)
separation = pd.concat(sep_rows, ignore_index=True)
order_all = separation[separation.labels == "order"]
order_sep = order_all[order_all.weights == "trained"]
base = alt.Chart(order_all).encode(
    x=alt.X("layer:Q", title="depth (blocks applied)"),
    color=alt.Color("family:N"),
    strokeDash=alt.StrokeDash("weights:N", title="weights", sort=["trained", "random"]),
)
display(
    figures.figure(
        (
            base.mark_line(point=True).encode(
                y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
                tooltip=["weights", "family", "layer", alt.Tooltip("accuracy", format=".2f")],
            )
            + base.mark_line(opacity=0.4).encode(y="perm_q95:Q")
        )
        .properties(width=300, height=220)
        .facet(column=alt.Column("weights:N", title="weights", sort=["trained", "random"])),
        "Accuracy of telling an ordered prompt from its shuffled twin (last member in place) by the nearest class "
        "centroid of the other folds, from the final-position residual stream at each depth, per family; left the "
        "trained model, right the random-weight control. Faint lines: the 95th percentile with the labels permuted.",
    )
)
order_table = pd.DataFrame(
    [
        {"weights": w, "family": f, "max_accuracy": nd.observed, "depth": nd.matched["depth"]}
        | {"null_p95": nd.null_p95, "percentile": nd.observed_percentile, "p": nd.p_value}
        for w, table in (("trained", nulls), ("random", random_nulls))
        for f in families
        for nd in [table[f"order_max/{f}"]]
    ]
)
reader_table(
    order_table,
    [
        Column("weights", "weights"),
        Column("family", "family"),
        Column("max_accuracy", "best accuracy over depths", "fraction"),
        Column("depth", "at depth", "int"),
        Column("null_p95", "null 95th percentile (max over depths)", "fraction"),
        Column("percentile", "percentile", "number", 0),
        Column("p", "p", "number", 3),
    ],
    caption=f"Ordered vs shuffled on the evaluation prompts: the best accuracy over depths against the best over depths "
    f"of each of {n_permutations} label permutations (the same permutation at every depth).",
)
family_sep = separation[separation.labels == "family"]
reader_table(
    family_sep.iloc[:: max(1, n_depths // 8)],
    [
        Column("layer", "depth (blocks applied)", "int"),
        Column("accuracy", "family accuracy", "fraction"),
        Column("chance", "chance", "fraction"),
        Column("perm_q95", "permutation 95th percentile", "fraction"),
    ],
    caption="Telling the families apart (trained model): cross-validated nearest-centroid accuracy at every few depths.",
)

# %% [markdown]
# ## 2. The same value in different formats
#
# The residual stream at the position of member `member_index` of every evaluation prompt (by causal
# attention the same as a prompt that ends in that member; every prompt shows the same number of
# members before it, so the values are not confounded with the position), averaged per (format,
# value). Number of prompts averaged:


# %%
def member_rows(res: dict, which: dict) -> tuple[torch.Tensor, list[str], list[int]]:
    """The read member's residual stack of every prompt, with its format and value."""
    rows = torch.cat([res[f].members[:, member_index] for f in families])
    fmts = [f for f in families for _ in range(len(which[f]))]
    vals = torch.cat([res[f].values[:, member_index] for f in families]).tolist()
    return rows, fmts, vals


rows, row_formats, row_values = member_rows(resid, datasets)
formats, values, means, counts = R.format_value_means(rows, row_formats, row_values)
reader_table(
    pd.DataFrame(counts.numpy(), index=formats, columns=[str(v) for v in values]).rename_axis("format").reset_index(),
    [Column("format", "format")] + [Column(str(v), f"value {v}", "int") for v in values[:7]],
    caption="Evaluation prompts averaged per (format, value).",
)

# %% [markdown]
# The mean cosine per depth of the three comparisons, without centring and with each format's mean
# over values removed (`format`: what is left is the part of a representation that differs
# between values of one format; `global` removes one mean over everything). After `format`
# centring the values of one format sum to zero, so *different value, same format* is pulled
# towards `-1/(V-1)` by construction; *different value, different format* is the fair control for
# *same value, different format*.

# %%
summaries, pair_tables = [], []
for c in centers:
    s_, p_ = R.value_cosine_summary(R.pairwise_cosine(R.center_means(means, c)), formats)
    summaries.append(s_.assign(center=c))
    pair_tables.append(p_.assign(center=c))
value_summary = pd.concat(summaries, ignore_index=True)
value_pairs = pd.concat(pair_tables, ignore_index=True)
display(
    figures.figure(
        alt.Chart(value_summary)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="depth (blocks applied)"),
            y=alt.Y("cosine:Q", title="mean cosine"),
            color=alt.Color("comparison:N", sort=list(R.COMPARISONS), legend=alt.Legend(orient="bottom", columns=1)),
            tooltip=["center", "comparison", "layer", alt.Tooltip("cosine", format=".3f")],
        )
        .properties(width=300, height=220)
        .facet(column=alt.Column("center:N", title="centring", sort=centers)),
        "Mean cosine between the (format, value) representations at each depth (evaluation prompts): the same value "
        "in different formats (e.g. `3` and `March`), different values in one format, and different values in "
        "different formats (control). One panel per centring. Where the first line lies above the third, the "
        "residual stream holds the value in a direction shared by the formats.",
    )
)

# %% [markdown]
# **Against chance.** The statistic is the *gap*: the same-value cosine minus the control's
# (`center` centring). Its null shuffles the value labels of the prompts within each format
# (`n_permutations` times; the number of prompts per value kept) and recomputes everything. The depth
# reported is chosen on the selection prompts (largest gap there); the maximum over depths is tested
# against the maximum over depths of each permutation. The random-weight control gets the same test.

# %%
observed, draws = R.value_permutation_null(
    rows, row_formats, row_values, center=center, n_permutations=n_permutations, seed=seed
)
sel_rows, sel_formats, sel_values = member_rows(resid_sel, selection)
sel_stats = R.value_statistics(sel_rows, sel_formats, sel_values, center)
value_layer = int(sel_stats["value_gap"].argmax())  # chosen on the selection prompts
step_layer = int(sel_stats["step_cosine"].argmax())
rnd_rows, _, _ = member_rows(resid_random, datasets)
rnd_observed, rnd_draws = R.value_permutation_null(
    rnd_rows, row_formats, row_values, center=center, n_permutations=n_permutations, seed=seed
)
context = {"n_prompts": len(rows), "n_clusters": sum(ds.n_sequences for ds in datasets.values())}
described = {
    "value_gap": "same-value minus different-value-different-format cosine",
    "step_cosine": "cross-format cosine of the value-step directions",
}
for name, depth in (("value_gap", value_layer), ("step_cosine", step_layer)):
    for tag, obs, nul, table in (
        ("trained", observed, draws, nulls),
        ("random", rnd_observed, rnd_draws, random_nulls),
    ):
        table[f"{name}_max"] = R.max_over_depths_null(
            obs[name],
            nul[name],
            statistic=name,
            seed=seed,
            description=f"{described[name]}, max over depths, value labels permuted within format ({tag} weights)",
            **context,
        )
    nulls[f"{name}_selected"] = R.at_depth_null(
        observed[name],
        draws[name],
        depth,
        statistic=name,
        seed=seed,
        description=f"{described[name]} at depth {depth} (chosen on the selection prompts)",
        **context,
    )
value_stats = pd.DataFrame(
    [
        {
            "layer": e,
            "weights": w,
            "statistic": k,
            "observed": float(o[k][e]),
            "null_q95": float(d[k][:, e].quantile(0.95)),
        }
        for w, o, d in (("trained", observed, draws), ("random", rnd_observed, rnd_draws))
        for k in R.VALUE_STATISTICS
        for e in range(n_depths)
    ]
)
null_table = pd.DataFrame(
    [
        {"statistic": described[k], "test": t, "weights": w, "observed": nd.observed}
        | {"depth": nd.matched["depth"], "null_p95": nd.null_p95, "percentile": nd.observed_percentile, "p": nd.p_value}
        for k, t, w, nd in [
            (k, "depth chosen on selection", "trained", nulls[f"{k}_selected"]) for k in R.VALUE_STATISTICS
        ]
        + [
            (k, "max over depths", w, tb[f"{k}_max"])
            for k in R.VALUE_STATISTICS
            for w, tb in (("trained", nulls), ("random", random_nulls))
        ]
    ]
)
display(
    figures.figure(
        alt.Chart(value_stats[value_stats.statistic == "value_gap"])
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="depth (blocks applied)"),
            y=alt.Y("observed:Q", title="same-value cosine minus control"),
            strokeDash=alt.StrokeDash("weights:N", sort=["trained", "random"]),
            tooltip=["weights", "layer", alt.Tooltip("observed", format=".3f"), alt.Tooltip("null_q95", format=".3f")],
        )
        + alt.Chart(value_stats[value_stats.statistic == "value_gap"])
        .mark_line(opacity=0.4, color="gray")
        .encode(x="layer:Q", y="null_q95:Q", strokeDash=alt.StrokeDash("weights:N")),
        f"The gap between the same value in different formats and the control ({center} centring, evaluation "
        "prompts) per depth, trained model (solid) and random-weight control (dashed); gray: the 95th percentile of "
        "the gap with the value labels permuted within each format.",
    )
)
reader_table(
    null_table,
    [
        Column("statistic", "statistic"),
        Column("test", "test"),
        Column("weights", "weights"),
        Column("observed", "observed", "number", 3),
        Column("depth", "depth", "int"),
        Column("null_p95", "null 95th percentile", "number", 3),
        Column("percentile", "percentile", "number", 0),
        Column("p", "p", "number", 3),
    ],
    caption=f"Value statistics on the evaluation prompts against {n_permutations} permutations of the value labels "
    "within each format; 'max over depths' compares the largest value over depths with the largest of each permutation.",
)

# %%
same_pairs = value_pairs[(value_pairs.center == center) & (value_pairs.format_a != value_pairs.format_b)].assign(
    pair=lambda d: d.format_a + " ~ " + d.format_b
)
display(
    figures.figure(
        alt.Chart(same_pairs)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="depth (blocks applied)"),
            y=alt.Y("same_value:Q", title="cosine, same value"),
            color=alt.Color("pair:N", title="formats"),
            tooltip=["pair", "layer", alt.Tooltip("same_value", format=".3f")],
        )
        .properties(width=420, height=220, title=f"same value, per pair of formats ({center} centring)"),
        f"Mean cosine between the same value in two formats, per pair of formats and depth ({center} centring, "
        "evaluation prompts). A pair whose line stays low keeps its values apart from the other format's.",
    )
)

# %% [markdown]
# ## 3. The value-step direction
#
# Per format and depth, the least-squares slope of the mean representation over the value: how the
# mean moves per unit of value (with two values, their difference of means over their distance). It is
# a difference of means between values read at one position, so by construction it is whatever
# differs between those prompts; we call it a "next" direction only if it passes the **successor
# test**: fitted on the selection prompts' values and added (`successor_alpha` value steps, fixed in
# advance) at the last member's position at the depth where the formats' directions agree most on
# the selection prompts, does the model's top-1 on the held-out evaluation values move from `n + 1`
# to `n + 2` more often than with a random direction of the same norm? The cross-format cosine of the
# directions is measured on the evaluation prompts against the value-label permutation null.

# %%
sel_formats_, sel_vals_, sel_means, _ = R.format_value_means(sel_rows, sel_formats, sel_values)
directions = R.step_directions(sel_means, sel_vals_)  # [F, depth, d_model], fitted on the selection prompts
eval_directions = R.step_directions(means, values)
step_pairs = R.direction_cosine_frame(R.direction_cosines(eval_directions), formats).assign(
    pair=lambda d: d.format_a + " ~ " + d.format_b
)
step_norms = pd.DataFrame(
    [
        {
            "layer": e,
            "format": f,
            "norm": float(eval_directions[i, e].norm()),
            "resid_norm": float(means[i, :, e].norm(dim=-1).mean()),
        }
        for i, f in enumerate(formats)
        for e in range(n_depths)
    ]
)
step_curve = value_stats[value_stats.statistic == "step_cosine"]
display(
    figures.figure(
        alt.layer(
            alt.Chart(step_pairs)
            .mark_line(point=True)
            .encode(
                x=alt.X("layer:Q", title="depth (blocks applied)"),
                y=alt.Y("cosine:Q", title="cosine of the value-step directions", scale=alt.Scale(domain=[-1, 1])),
                color=alt.Color("pair:N", title="formats"),
                tooltip=["pair", "layer", alt.Tooltip("cosine", format=".3f")],
            ),
            alt.Chart(step_curve[step_curve.weights == "trained"])
            .mark_line(color="black", strokeDash=[4, 3])
            .encode(x="layer:Q", y="null_q95:Q"),
        ).properties(width=420, height=240, title="the value-step direction across formats"),
        "Cosine between two formats' value-step directions (evaluation prompts) at each depth, per pair of formats; "
        "dashed black: the 95th percentile of the mean cross-format cosine with the value labels permuted within "
        "each format.",
    )
)
succ_rows = pd.concat(
    [
        R.successor_test(
            lm,
            datasets[f],
            directions[i, step_layer],
            step_layer,
            alpha=successor_alpha,
            seed=seed,
            unedited_top1=resid[f].top1,
            batch_size=batch_size,
        ).assign(family=f)
        for i, f in enumerate(formats)
    ],
    ignore_index=True,
)
successor = R.successor_summary(succ_rows, seed=seed)
succ_table = pd.DataFrame(
    [{"condition": c, "hit": successor["hit"][c], "correct": successor["correct"][c]} for c in R.SUCCESSOR_CONDITIONS]
)
reader_table(
    succ_table,
    [
        Column("condition", "added at the last member"),
        Column("hit", "top-1 is n + 2 (hit)", "fraction"),
        Column("correct", "top-1 still n + 1", "fraction"),
    ],
    caption=f"Successor test at depth {step_layer} (chosen on the selection prompts), {successor_alpha:g} value "
    f"step(s), on {successor['n_prompts']} evaluation prompts ({successor['n_sequences']} sequences) whose family "
    f"has a member after the answer. Direction minus random: {successor['diff']:+.2f} "
    f"[{successor['diff_ci95'][0]:+.2f}, {successor['diff_ci95'][1]:+.2f}] (cluster bootstrap over sequences); "
    + ("passes." if successor["passes"] else "does not pass."),
)

# %% [markdown]
# ## What the numbers say
#
# Computed from the tables above, so it stays true whichever model, families and template ran.

# %%
headline = representation_headline(
    value_summary,
    order_sep,
    center=center,
    comparisons=R.COMPARISONS,
    families=families,
    value_layer=value_layer,
    step_layer=step_layer,
    nulls=nulls,
    random_nulls=random_nulls,
    successor=successor | {"alpha": successor_alpha, "depth": step_layer},
)
h = headline
raw = (
    value_summary[value_summary.center == "none"].pivot(index="layer", columns="comparison", values="cosine")
    if "none" in centers
    else None
)
order_wide = order_sep.pivot(index="layer", columns="family", values="accuracy")
fam_first = family_sep[family_sep.accuracy > family_sep.perm_q95].layer
live = layer_pca.explained.sum(-1) > 0
pc1_live = pd.Series(layer_pca.explained[:, 0].numpy(), index=range(n_depths))[live.numpy()]


def tested(b: dict, control: bool = False) -> str:
    """'p = .., percentile .. of n permutations', and the plain negative for the trained model."""
    verdict = "" if b["significant"] or control else "; not distinguishable from random"
    return f"p = {b['p']:.2f}, percentile {b['percentile']:.0f} of {b['n']} permutations{verdict}"


vg, vmax, rvmax = h["value_gap"], h["value_gap_max"], h["random_value_gap_max"]
sc, smax, rsmax, su = h["step_cosine"], h["step_cosine_max"], h["random_step_cosine_max"], h["successor"]
lines = [
    f"- **Readout.** {n_depths} depths of {model}, {len(families)} formats ({', '.join(families)}), "
    f"{n_prompts} `{template}` prompts per family and side with {length} members; values read: selection "
    f"{split_values[SEL]}, evaluation {split_values[EVAL]}; final tokens: "
    + ", ".join(f"{f} `{t!r}`" for f, t in final_tokens.items())
    + ".",
    "- **PCA** (evaluation prompts). "
    + (
        "Depth 0 has no variance at the final position (every prompt ends in the same token). "
        if float(layer_pca.explained[0].sum()) == 0
        else f"PC1 explains {layer_pca.explained[0, 0]:.0%} of the variance at depth 0. "
    )
    + f"Over the depths with variance PC1 explains between {pc1_live.min():.0%} (depth {int(pc1_live.idxmin())}) and "
    f"{pc1_live.max():.0%} (depth {int(pc1_live.idxmax())}). The families are told apart (above the permutation 95th "
    f"percentile) from depth {int(fam_first.iloc[0]) if len(fam_first) else 'none'} on.",
    "- **Ordered vs shuffled** (last member in place; best accuracy over depths against the best over depths of "
    f"{n_permutations} label permutations): "
    + "; ".join(f"{f} {b['observed']:.2f} at depth {b['depth']} ({tested(b)})" for f, b in h["order_max"].items())
    + f" (chance {h['order_chance']:.2f}). The random-weight control: "
    + "; ".join(f"{f} {b['observed']:.2f} ({tested(b, control=True)})" for f, b in h["random_order_max"].items())
    + ".",
    f"- **Same value, different format** ({center} centring, evaluation values {', '.join(map(str, values))}, "
    f"{int(counts.min())}-{int(counts.max())} prompts per mean): at depth {h['value_layer']} (chosen on the selection "
    f"prompts) the same value in different formats has cosine {h['same_value_cosine']:.2f} against "
    f"{h['diff_value_diff_format_cosine']:.2f} for different values of different formats (gap {vg['observed']:.2f}, "
    f"{tested(vg)}) and {h['diff_value_same_format_cosine']:.2f} for different values of one format"
    + (f" (about {-1 / (len(values) - 1):.2f} by construction after format centring)" if center == "format" else "")
    + f". The largest gap over depths, {vmax['observed']:.2f} at depth {vmax['depth']}, has {tested(vmax)}; the "
    f"random-weight control's is {rvmax['observed']:.2f} ({tested(rvmax, control=True)})."
    + (
        f" Without centring, different values of one format have cosine "
        f"{raw.loc[h['value_layer'], R.COMPARISONS[1]]:.2f} there and the same value in other formats "
        f"{raw.loc[h['value_layer'], R.COMPARISONS[0]]:.2f}."
        if raw is not None and center != "none"
        else ""
    ),
    f"- **The {h['direction_name']}.** Its cross-format cosine at depth {h['step_layer']} (chosen on the selection "
    f"prompts) is {sc['observed']:.2f} ({tested(sc)}); the largest over depths, {smax['observed']:.2f} at depth "
    f"{smax['depth']}, has {tested(smax)} (random-weight control {rsmax['observed']:.2f}, {tested(rsmax, control=True)}). "
    f"Successor test ({su['alpha']:g} value step(s) at depth {su['depth']}, {su['n_prompts']} held-out prompts): "
    f"the top-1 becomes n + 2 on {su['hit']['value-step direction']:.0%} with the direction, "
    f"{su['hit']['random direction']:.0%} with a random direction of the same norm and "
    f"{su['hit']['unedited']:.0%} unedited (difference {su['diff']:+.2f}, 95% interval "
    f"[{su['diff_ci95'][0]:+.2f}, {su['diff_ci95'][1]:+.2f}]): "
    + (
        "it passes, so the direction moves the readout to the next value."
        if su["passes"]
        else "it does not pass, so it is a difference of means between values, not shown to be a 'next' direction."
    ),
]
display(Markdown("\n".join(lines)))

# %%
_ = write_json_atomic(
    results_dir(model) / Representations.file,
    Representations(
        model=model,
        smoke=smoke,
        seed=seed,
        prefix=prefix,
        families=families,
        template=template,
        length=length,
        corruption=corruption,
        n_prompts=n_prompts,
        member_index=member_index,
        n_components=n_components,
        n_folds=folds,
        n_permutations=n_permutations,
        center=center,
        centers=centers,
        n_layers=info.n_layers,
        depths=frame_records(depths),
        final_tokens=final_tokens,
        pca={
            "explained": frame_records(explained),
            "scatter_layers": list(scatter_layers),
            "points": frame_records(scatter),
        },
        separability=frame_records(separation),
        value_cosine={
            "formats": formats,
            "values": values,
            "counts": counts.tolist(),
            "summary": frame_records(value_summary),
            "pairs": frame_records(value_pairs),
            "statistics": frame_records(value_stats),
        },
        step_direction={
            "selection_values": sel_vals_,
            "pairs": frame_records(step_pairs.drop(columns="pair")),
            "norms": frame_records(step_norms),
        },
        successor={
            "alpha": successor_alpha,
            "depth": step_layer,
            "rows": frame_records(succ_rows),
            "summary": successor,
        },
        split=split_info,
        selection_dataset={f: d.to_json() for f, d in selection.items()},
        evaluation_dataset={f: d.to_json() for f, d in datasets.items()},
        nulls=nulls,
        random_control={
            "model": random_info.name,
            "init_seed": random_init_seed,
            "separability": frame_records(order_all[order_all.weights == "random"]),
            "value_summary": frame_records(value_stats[value_stats.weights == "random"]),
        },
        random_nulls=random_nulls,
        headline=headline,
    ),
)
