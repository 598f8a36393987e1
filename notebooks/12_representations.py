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
#     estimate_s: 28
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
#    apart? We show a PCA per depth (centred SVD: the variance each component explains, and the
#    prompts on the first two components) and a cross-validated nearest-centroid accuracy of
#    *ordered vs shuffled* per family, against a label-permutation baseline.
# 2. **Values across formats.** Is `3` represented like `three` and `March`? At the position of a
#    member (by causal attention, the same as a prompt ending in that member) we average the
#    representation of each value in each format and compare the cosine of *the same value in
#    different formats* with that of *different values in the same format* (and, as a control,
#    different values in different formats).
# 3. **The "next" direction.** The mean difference between the representations of consecutive
#    values (`v+1` minus `v`), per format and depth: does it point the same way in every format?

# %% tags=["parameters"]
model = "smollm2-135m"  # model spec for seqcirc_utils.models.loading.load_model
n_prompts = 32  # prompts per family (each with a shuffled twin)
seed = 0  # dataset seed (and the folds and permutations)
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
member_index = -1  # the member read for questions 2 and 3 (-1 is the last, so each prompt ends in the value read)
n_components = 10  # PCA components kept per depth
scatter_layers = None  # depths drawn in the PCA scatter; None picks four evenly spaced from 0 to the last
centers = ["none", "format"]  # centrings compared for the value cosines (none, global, format)
center = "format"  # the centring the prose and the headline use
n_folds = 4  # folds of the cross-validated separability
n_permutations = 100  # label / value permutations of the baselines
batch_size = 32  # prompts per forward pass

# %%
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display

from seqcirc_utils.core.result_records import Representations
from seqcirc_utils.core.results import frame_records, results_dir, write_json_atomic
from seqcirc_utils.mechanisms import representations as R
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.report import plots
from seqcirc_utils.report.tables import Column, reader_table
from seqcirc_utils.report.verdicts import representation_headline, smoke_note

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
for c in [*centers, center]:
    if c not in R.CENTERINGS:
        raise ValueError(f"unknown centering {c!r}; valid: {', '.join(R.CENTERINGS)}")
if center not in centers:
    centers = [*centers, center]
if smoke:
    n_prompts, n_permutations, n_components = min(n_prompts, 12), min(n_permutations, 5), min(n_components, 4)
    display(smoke_note(f"{n_prompts} prompts per family, {n_permutations} permutations, {n_components} components"))

# %% [markdown]
# ## The prompts
#
# One dataset per family, built with the `permutation` corruption: each prompt's twin shows the
# same members in a non-monotone order, at the same positions. Every member is a value that all
# families have as a single token (digits `3`, `three` and `March` are all 3), so the formats are
# matched by value throughout. The first prompts, with the token at the final position (where the
# residual stream is read for question 1).

# %%
lm, info = load_model(model, device=device)
shared_values = R.common_values(lm.tokenizer, families)
display(Markdown(f"Values every family has as a single token: {', '.join(map(str, shared_values))}."))
datasets = {
    f: R.value_matched_dataset(
        lm.tokenizer,
        f,
        shared_values,
        n=n_prompts,
        model_name=model,
        template=template,
        length=length,
        seed=seed,
        corruption="permutation",
        prefix=prefix,
    )
    for f in families
}
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

# %%
resid = {f: R.dataset_residuals(lm, ds, batch_size=batch_size, progress=not smoke) for f, ds in datasets.items()}
n_depths = info.n_layers + 1
depths = pd.DataFrame({"layer": range(n_depths), "hook": R.resid_hook_names(info.n_layers)})
Markdown(f"The residual stream is read at {n_depths} depths, `{depths.hook.iloc[0]}` to `{depths.hook.iloc[-1]}`.")

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
# prompts; the dashed line is the 95th percentile of the same accuracy with the labels permuted.

# %%
folds = min(n_folds, n_prompts)
sep_rows = []
for f in families:
    x = torch.cat([resid[f].ordered, resid[f].shuffled])
    n = len(datasets[f])
    sep_rows.append(
        R.separability(
            x,
            ["ordered"] * n + ["shuffled"] * n,
            groups=list(range(n)) * 2,
            n_folds=folds,
            n_permutations=n_permutations,
            seed=seed,
        ).assign(labels="order", family=f)
    )
sep_rows.append(
    R.separability(
        points,
        labels.family.tolist(),
        groups=list(zip(labels.family, labels.prompt)),
        n_folds=folds,
        n_permutations=n_permutations,
        seed=seed,
    ).assign(labels="family", family="all")
)
separation = pd.concat(sep_rows, ignore_index=True)
order_sep = separation[separation.labels == "order"]
base = alt.Chart(order_sep).encode(x=alt.X("layer:Q", title="depth (blocks applied)"), color=alt.Color("family:N"))
display(
    figures.figure(
        (
            base.mark_line(point=True).encode(
                y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
                tooltip=["family", "layer", alt.Tooltip("accuracy", format=".2f")],
            )
            + base.mark_line(strokeDash=[4, 3]).encode(y="perm_q95:Q")
        ).properties(width=420, height=220, title="ordered vs shuffled: cross-validated nearest-centroid accuracy"),
        "Accuracy of telling an ordered prompt from its shuffled twin by the nearest class centroid of the other folds, "
        "from the final-position residual stream at each depth, per family (solid); dashed: the 95th percentile with "
        "the labels permuted. Where the solid line leaves the dashed one, the residual stream encodes whether the "
        "members were in order.",
    )
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
    caption="Telling the families apart: cross-validated nearest-centroid accuracy at every few depths.",
)

# %% [markdown]
# ## 2. The same value in different formats
#
# The residual stream at the position of member `member_index` of every prompt (by causal attention
# the same as a prompt that ends in that member; every prompt shows the same number of members
# before it, so the values are not confounded with the position), averaged per (format, value)
# (`3`, `three` and `March` are all 3; only the values present in every format are kept). Number
# of prompts averaged:

# %%
rows = torch.cat([resid[f].members[:, member_index] for f in families])
row_formats = [f for f in families for _ in range(len(datasets[f]))]
row_values = torch.cat([resid[f].values[:, member_index] for f in families]).tolist()
formats, values, means, counts = R.format_value_means(rows, row_formats, row_values)
reader_table(
    pd.DataFrame(counts.numpy(), index=formats, columns=[str(v) for v in values]).rename_axis("format").reset_index(),
    [Column("format", "format")] + [Column(str(v), f"value {v}", "int") for v in values[:7]],
    caption="Prompts averaged per (format, value); the full table has every value.",
)

# %% [markdown]
# The mean cosine per depth of the three comparisons, without centring and with each format's mean
# over values removed (`format`: what is left is the part of a representation that differs
# between values of one format; `global` removes one mean over everything). After `format`
# centring the values of one format sum to zero, so *different value, same format* is pulled
# towards `-1/(V-1)` by construction; *different value, different format* is the fair control for
# *same value, different format*.

# %%
summaries, pair_tables, cosines = [], [], {}
for c in centers:
    cosines[c] = R.pairwise_cosine(R.center_means(means, c))
    s, p = R.value_cosine_summary(cosines[c], formats)
    summaries.append(s.assign(center=c))
    pair_tables.append(p.assign(center=c))
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
        "Mean cosine between the (format, value) representations at each depth: the same value in different formats "
        "(e.g. `3` and `March`), different values in one format, and different values in different formats (control). "
        "One panel per centring. Where the first line lies above the other two, the residual stream holds the value "
        "in a direction shared by the formats.",
    )
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
        f"Mean cosine between the same value in two formats, per pair of formats and depth ({center} centring). A pair "
        "whose line stays low keeps its values apart from the other format's.",
    )
)

# %% [markdown]
# ## 3. The "next" direction
#
# Per format and depth, the mean of `mean[v+1] - mean[v]` over the consecutive values above (over a
# run of consecutive values this is the step from the first to the last value divided by the
# number of steps; centring does not change it). Its cosine between formats, against the same
# computation with each format's values relabelled at random (`n_permutations` seeded
# permutations).

# %%
directions = R.next_directions(means, values)  # [F, depth, d_model]
dir_cos = R.direction_cosines(directions)
next_pairs = R.direction_cosine_frame(dir_cos, formats).assign(pair=lambda d: d.format_a + " ~ " + d.format_b)
perm = R.permuted_direction_cosines(means, values, n_permutations=n_permutations, seed=seed)  # [perm, depth]
next_mean = pd.DataFrame(
    {
        "layer": range(n_depths),
        "cosine": R.mean_offdiag(dir_cos).numpy(),
        "perm_mean": perm.mean(0).numpy(),
        "perm_q95": perm.quantile(0.95, dim=0).numpy(),
    }
)
next_norms = pd.DataFrame(
    [
        {
            "layer": e,
            "format": f,
            "norm": float(directions[i, e].norm()),
            "resid_norm": float(means[i, :, e].norm(dim=-1).mean()),
        }
        for i, f in enumerate(formats)
        for e in range(n_depths)
    ]
)
band = alt.Chart(next_mean).encode(x=alt.X("layer:Q", title="depth (blocks applied)"))
display(
    figures.figure(
        alt.layer(
            alt.Chart(next_pairs)
            .mark_line(point=True)
            .encode(
                x="layer:Q",
                y=alt.Y("cosine:Q", title="cosine of the next directions", scale=alt.Scale(domain=[-1, 1])),
                color=alt.Color("pair:N", title="formats"),
                tooltip=["pair", "layer", alt.Tooltip("cosine", format=".3f")],
            ),
            band.mark_line(color="black", strokeDash=[4, 3]).encode(y="perm_q95:Q"),
        ).properties(width=420, height=240, title="the 'next' direction across formats"),
        'Cosine between two formats\' "next" directions (mean step from each value to the next) at each depth, per pair '
        "of formats; dashed black: the 95th percentile of the mean cross-format cosine with each format's values "
        "relabelled at random. Lines well above the dashed one mean the formats step through their values along a "
        "shared direction.",
    )
)

# %% [markdown]
# ## What the numbers say
#
# Computed from the tables above, so it stays true whichever model, families and template ran.

# %%
headline = representation_headline(
    value_summary, next_mean, order_sep, center=center, comparisons=R.COMPARISONS, families=families
)
vs = value_summary[value_summary.center == center].pivot(index="layer", columns="comparison", values="cosine")
best_value, best_next, first_sep = headline["value_layer"], headline["next_layer"], headline["order_first_layer"]
raw = (
    value_summary[value_summary.center == "none"].pivot(index="layer", columns="comparison", values="cosine")
    if "none" in centers
    else None
)
order_wide = order_sep.pivot(index="layer", columns="family", values="accuracy")
fam_first = family_sep[family_sep.accuracy > family_sep.perm_q95].layer
live = layer_pca.explained.sum(-1) > 0
pc1_live = pd.Series(layer_pca.explained[:, 0].numpy(), index=range(n_depths))[live.numpy()]
lines = [
    f"- **Readout.** {n_depths} depths of {model}, {len(families)} formats ({', '.join(families)}), "
    f"{n_prompts} `{template}` prompts each with {length} members; final tokens: "
    + ", ".join(f"{f} `{t!r}`" for f, t in final_tokens.items())
    + (
        " (the same token in every family, so depth 0 cannot tell them apart)."
        if len(set(final_tokens.values())) == 1
        else " (not the same token in every family, so the families differ from depth 0 on)."
    ),
    "- **PCA.** "
    + (
        "Depth 0 has no variance at the final position (every prompt ends in the same token). "
        if float(layer_pca.explained[0].sum()) == 0
        else f"PC1 explains {layer_pca.explained[0, 0]:.0%} of the variance at depth 0. "
    )
    + f"Over the depths with variance PC1 explains between {pc1_live.min():.0%} (depth {int(pc1_live.idxmin())}) and "
    f"{pc1_live.max():.0%} (depth {int(pc1_live.idxmax())}), {layer_pca.explained[-1, 0]:.0%} at the last depth, "
    f"where the first two components together explain {float(layer_pca.explained[-1, :2].sum()):.0%}. The families "
    f"are told apart (cross-validated, above the permutation 95th percentile) from depth "
    f"{int(fam_first.iloc[0]) if len(fam_first) else 'none'} on.",
    "- **Ordered vs shuffled.** "
    + (
        f"Every family's ordered prompts are told from their shuffled twins better than the permutation baseline "
        f"from depth {first_sep} on; at the last depth the accuracy is "
        + ", ".join(f"{f} {order_wide[f].iloc[-1]:.2f}" for f in families)
        + f" (chance {order_sep.chance.iloc[0]:.2f}), best "
        + ", ".join(f"{f} {order_wide[f].max():.2f} at depth {int(order_wide[f].idxmax())}" for f in families)
        + "."
        if first_sep is not None
        else "At no depth are all families' ordered prompts told from their shuffled twins better than the permutation "
        "baseline; best accuracy " + ", ".join(f"{f} {order_wide[f].max():.2f}" for f in families) + "."
    ),
    f"- **Same value, different format** ({center} centring, values {values[0]}..{values[-1]}, "
    f"{int(counts.min())}-{int(counts.max())} prompts per mean): the same value in different formats is most similar, "
    f"relative to the control, at depth {best_value}: cosine {vs.loc[best_value, R.COMPARISONS[0]]:.2f} against "
    f"{vs.loc[best_value, R.COMPARISONS[2]]:.2f} between different values of different formats and "
    f"{vs.loc[best_value, R.COMPARISONS[1]]:.2f} between different values of one format"
    + (f" (about {-1 / (len(values) - 1):.2f} by construction after format centring)" if center == "format" else "")
    + f"; it is above the control at {headline['same_value_above_control_layers']} of {n_depths} depths."
    + (
        f" Without centring, different values of one format have cosine {raw.loc[best_value, R.COMPARISONS[1]]:.2f} "
        f"there and the same value in other formats {raw.loc[best_value, R.COMPARISONS[0]]:.2f}: "
        + (
            "the format dominates the raw vectors."
            if raw.loc[best_value, R.COMPARISONS[1]] > raw.loc[best_value, R.COMPARISONS[0]]
            else "the value dominates even the raw vectors."
        )
        if raw is not None and center != "none"
        else ""
    ),
    f'- **The "next" direction.** Its mean cross-format cosine peaks at depth {best_next} '
    f"({next_mean.cosine[best_next]:.2f}; permutation 95th percentile {next_mean.perm_q95[best_next]:.2f}) and lies "
    f"above the permutation baseline at {headline['next_above_baseline_layers']} of {n_depths} depths; at the last depth it is "
    f"{next_mean.cosine.iloc[-1]:.2f} (baseline {next_mean.perm_q95.iloc[-1]:.2f}).",
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
        },
        next_direction={
            "pairs": frame_records(next_pairs.drop(columns="pair")),
            "mean": frame_records(next_mean),
            "norms": frame_records(next_norms),
        },
        headline=headline,
    ),
)
