"""Representation geometry: the residual stream at every layer, its PCA, value cosines, the value-step direction.

**Layers.** A residual stack has ``n_layers + 1`` entries, indexed by *depth* ``e`` = the number of
blocks applied: entry ``e < n_layers`` is ``blocks.e.hook_resid_pre`` (the input of block ``e``;
``e = 0`` is the embedding), entry ``n_layers`` is ``blocks.{n_layers-1}.hook_resid_post`` (the
output of the last block, before the final norm). :func:`residuals_at` reads these with
TransformerLens hooks at chosen positions only, and unembeds one position per prompt.

**PCA** (:func:`pca`, :func:`layer_pca`): per layer, the prompts' vectors are centred and
decomposed by SVD; ``coords = (x - mean) @ components.T`` and ``explained[k] = s_k^2 / sum_j s_j^2``
(the fraction of the total variance along component ``k``, decreasing in ``k``). Signs of
components are fixed so that each component's largest-magnitude coordinate is positive.

**Separability** (:func:`separability`): cross-validated nearest-centroid accuracy of a labelling
(e.g. ordered vs shuffled) in the full residual space, per layer, with folds that keep a group
(a prompt and its shuffled twin) together; chance is the majority share, and a seeded
label-permutation baseline is available. (Leave-one-out is not used: removing a point from its own
class's centroid biases it below chance when the classes do not differ.)

**Values across formats.** ``means[f, v]`` is the mean representation of value ``v`` in format
``f`` (e.g. ``3`` as ``"3"``, ``"three"``, ``"March"``), ``[F, V, n_layers + 1, d_model]``
(:func:`format_value_means`). :func:`pairwise_cosine` gives every pair's cosine per layer;
:func:`value_cosine_summary` averages it into *same value, different format*, *different value,
same format* and the control *different value, different format*, after optional centring
(:data:`CENTERINGS`: ``"none"``; ``"global"`` subtracts the mean over all formats and values;
``"format"`` subtracts each format's mean over values, leaving the value-specific part).

**The value-step direction** (:func:`step_directions`): per format and layer, the least-squares slope of
``means[f, v]`` over ``v`` (the change of the mean representation per unit of value; a difference of means
between values read at one position). :func:`next_directions` is the older mean of ``means[f, v+1] -
means[f, v]`` over consecutive values. :func:`direction_cosines` compares formats. It earns the name
"next" only by the **successor test** (:func:`successor_test`, :func:`successor_summary`): added at the last
member's position, does it move the model's top-1 from ``n + 1`` to ``n + 2`` on held-out values more often
than a random direction of the same norm?

**Splits and nulls.** :func:`value_split_datasets` gives sequence-disjoint selection / evaluation datasets
that read the same values in every family. The nulls are permutation nulls of the **maximum over depths**
(:func:`max_over_depths_null`): each permutation is applied at every depth and its maximum over depths taken,
so the p-value ``(1 + #{null >= observed}) / (n + 1)`` covers the choice of depth. Value statistics
(:func:`value_statistics`: same-value minus control cosine; cross-format cosine of the value-step directions)
are permuted by shuffling the value labels of the prompts within each format
(:func:`value_label_permutations`); the order probe by shuffling its labels (:func:`separability_with_null`).
:func:`at_depth_null` reads the same draws at one depth fixed in advance.

Units: residual-stream activations in the model's units; cosines in [-1, 1]; fractions in [0, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError
from seqcirc_utils.core.options import SELECTION_ROLES
from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.stats import cluster_bootstrap_mean_ci
from seqcirc_utils.evaluation.nulls import null_summary
from seqcirc_utils.models.loading import model_device
from seqcirc_utils.tasks.datasets import (
    FAMILIES,
    ROLE_SEED_OFFSET,
    Split,
    TaskDataset,
    make_dataset,
    partition,
    sequence_overlap,
    sequence_space,
    single_token_id,
    single_token_members,
)

#: Centring applied before value cosines (see the module docstring).
CENTERINGS = ("none", "global", "format")
#: The three comparisons of :func:`value_cosine_summary`.
COMPARISONS = ("same value, different format", "different value, same format", "different value, different format")
#: Member value of the first member of each format (``months``: January is 1).
VALUE_OFFSETS = {"digits": 0, "number_words": 0, "months": 1, "days": 1, "letters": 1}


def resid_hook_names(n_layers: int) -> list[str]:
    """Hook names of the ``n_layers + 1`` residual entries (depth 0 .. n_layers; see the module docstring)."""
    if n_layers < 1:
        raise ParameterError(f"n_layers must be >= 1, got {n_layers}")
    return [get_act_name("resid_pre", l) for l in range(n_layers)] + [get_act_name("resid_post", n_layers - 1)]


@torch.no_grad()
def residuals_at(
    model,
    tokens: torch.Tensor,
    positions: torch.Tensor | Sequence | None = None,
    *,
    batch_size: int = 32,
    progress: bool = True,
    with_top1: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The residual stream at every depth, read at ``positions``.

    ``tokens`` ``[n, pos]``; ``positions`` ``[n]`` (one position per prompt; default the last) or
    ``[n, k]`` (k positions per prompt). Returns float32 on the CPU, ``[n, n_layers + 1, d_model]``
    or ``[n, k, n_layers + 1, d_model]``; with ``with_top1`` also the model's top-1 next token at the
    last position ``[n]`` (read from the same pass).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens must be [n_prompts, pos] with n_prompts >= 1, got shape {tuple(tokens.shape)}")
    n, length = tokens.shape
    pos = (
        torch.full((n,), length - 1, dtype=torch.long)
        if positions is None
        else torch.as_tensor(positions, dtype=torch.long)
    )
    single = pos.ndim == 1
    pos = pos[:, None] if single else pos
    if pos.ndim != 2 or pos.shape[0] != n:
        raise ValueError(f"positions must be [n_prompts] or [n_prompts, k] with n_prompts={n}, got {tuple(pos.shape)}")
    if pos.numel() and (pos.min() < 0 or pos.max() >= length):
        raise ValueError(f"positions must lie in 0..{length - 1} (the prompts' token length is {length})")
    n_layers = len(model.blocks)
    names = resid_hook_names(n_layers)
    out = torch.empty(n, pos.shape[1], len(names), model.cfg.d_model)
    top1 = torch.empty(n, dtype=torch.long)
    dev = model_device(model)
    for start in tqdm(range(0, n, batch_size), desc="residuals", disable=not progress, leave=False):
        chunk = tokens[start : start + batch_size].to(dev)
        where = pos[start : start + batch_size].to(dev)
        rows = torch.arange(chunk.shape[0], device=dev)[:, None]
        store: dict[int, torch.Tensor] = {}

        def grab(e: int):
            def hook(act, hook):  # act [b, pos, d_model]
                store[e] = act[rows, where].detach().float().cpu()  # [b, k, d_model]

            return hook

        with model.hooks(fwd_hooks=[(name, grab(e)) for e, name in enumerate(names)]):
            logits = model(chunk, logits_to_keep=1)
        out[start : start + chunk.shape[0]] = torch.stack([store[e] for e in range(len(names))], dim=2)
        top1[start : start + chunk.shape[0]] = logits[:, -1].argmax(-1).cpu()
    res = out[:, 0] if single else out
    return (res, top1) if with_top1 else res


# --------------------------------------------------------------------------- PCA


def pca(
    x: torch.Tensor, n_components: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of the rows of ``x`` ``[n, d]`` by centred SVD.

    Returns ``(coords [n, k], components [k, d], explained [k], mean [d])`` with
    ``k = min(n_components, n, d)``; ``explained`` is each component's fraction of the total
    variance (all zeros when the rows are identical). Component signs: largest |coordinate| positive.
    """
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"pca needs a [n, d] matrix with n >= 1, got shape {tuple(x.shape)}")
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    k = min(n_components or s.numel(), s.numel())
    total = (s**2).sum()
    explained = (s**2) / total if total > 0 else torch.zeros_like(s)
    coords = u[:, :k] * s[:k]
    comps = vh[:k]
    flip = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True))[0])
    flip[flip == 0] = 1
    return (coords * flip).float(), (comps * flip[:, None]).float(), explained[:k].float(), mean.float()


@dataclass
class LayerPCA:
    """PCA of one set of vectors at every depth.

    ``coords`` ``[n_layers + 1, n, k]``, ``components`` ``[n_layers + 1, k, d_model]``,
    ``explained`` ``[n_layers + 1, k]`` (fraction of variance per component), ``mean``
    ``[n_layers + 1, d_model]``.
    """

    coords: torch.Tensor
    components: torch.Tensor
    explained: torch.Tensor
    mean: torch.Tensor

    def explained_frame(self) -> pd.DataFrame:
        """One row per (layer, component): ``layer, component`` (1-based), ``explained``, ``cumulative``."""
        cum = self.explained.cumsum(-1)
        return pd.DataFrame(
            [
                {
                    "layer": e,
                    "component": k + 1,
                    "explained": float(self.explained[e, k]),
                    "cumulative": float(cum[e, k]),
                }
                for e in range(self.explained.shape[0])
                for k in range(self.explained.shape[1])
            ]
        )

    def points_frame(
        self, layers: Sequence[int], labels: pd.DataFrame | None = None, n_components: int = 2
    ) -> pd.DataFrame:
        """Coordinates on the first ``n_components`` components at ``layers``: ``layer, point, pc1, pc2, ...``
        plus the columns of ``labels`` (one row per point)."""
        frames = []
        for e in layers:
            df = pd.DataFrame(
                self.coords[e, :, :n_components].numpy(),
                columns=[f"pc{k + 1}" for k in range(min(n_components, self.coords.shape[-1]))],
            )
            df.insert(0, "point", range(len(df)))
            df.insert(0, "layer", e)
            if labels is not None:
                df = pd.concat([df, labels.reset_index(drop=True)], axis=1)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)


def layer_pca(resid: torch.Tensor, n_components: int = 10) -> LayerPCA:
    """:func:`pca` of ``resid`` ``[n, n_layers + 1, d_model]`` at every depth (see :class:`LayerPCA`)."""
    if resid.ndim != 3:
        raise ValueError(f"resid must be [n, n_layers + 1, d_model], got shape {tuple(resid.shape)}")
    parts = [pca(resid[:, e], n_components) for e in range(resid.shape[1])]
    return LayerPCA(*(torch.stack([p[i] for p in parts]) for i in range(4)))


# --------------------------------------------------------------------------- separability


def _cv_centroid_accuracy(x: torch.Tensor, codes: torch.Tensor, n_classes: int, folds: torch.Tensor) -> float:
    """Cross-validated nearest-centroid accuracy: ``x`` [n, d], integer labels ``codes`` [n], fold ids ``folds`` [n].

    Each fold's points are classified by the class centroids of the other folds' points (a class
    absent from the other folds is never predicted)."""
    correct = 0
    for k in folds.unique():
        test, train = folds == k, folds != k
        onehot = torch.nn.functional.one_hot(codes[train], n_classes).double()  # [n_train, C]
        counts = onehot.sum(0)
        cents = (onehot.T @ x[train]) / counts.clamp(min=1)[:, None]  # [C, d]
        dist = torch.cdist(x[test], cents)  # [n_test, C]
        dist[:, counts == 0] = float("inf")
        correct += int((dist.argmin(1) == codes[test]).sum())
    return correct / len(codes)


def _cv_centroid_accuracies(x: torch.Tensor, codes: torch.Tensor, n_classes: int, folds: torch.Tensor) -> torch.Tensor:
    """:func:`_cv_centroid_accuracy` for a batch of labellings at once: ``codes`` ``[P, n]`` -> ``[P]``."""
    correct = torch.zeros(codes.shape[0], dtype=torch.float64)
    for k in folds.unique():
        test, train = folds == k, folds != k
        onehot = torch.nn.functional.one_hot(codes[:, train], n_classes).double()  # [P, n_train, C]
        counts = onehot.sum(1)  # [P, C]
        cents = (onehot.transpose(1, 2) @ x[train]) / counts.clamp(min=1)[..., None]  # [P, C, d]
        dist = torch.stack([torch.cdist(x[test], c) for c in cents])  # [P, n_test, C], as the scalar version
        dist[(counts == 0)[:, None, :].expand_as(dist)] = float("inf")
        correct += (dist.argmin(-1) == codes[:, test]).sum(-1)
    return correct / codes.shape[1]


def fold_ids(groups: Sequence, n_folds: int, seed: int = 0) -> torch.Tensor:
    """Fold id of each point ``[n]``: the distinct ``groups`` shuffled (seeded) and dealt round-robin
    into ``n_folds`` folds, so points of one group always share a fold."""
    keys = list(dict.fromkeys(groups))
    if not 2 <= n_folds <= len(keys):
        raise ParameterError(f"n_folds must be in 2..{len(keys)} (the number of groups), got {n_folds}")
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {keys[i]: rank % n_folds for rank, i in enumerate(order)}
    return torch.tensor([fold_of[g] for g in groups])


def separability_with_null(
    resid: torch.Tensor,
    labels: Sequence,
    *,
    groups: Sequence | None = None,
    n_folds: int = 4,
    n_permutations: int = 0,
    seed: int = 0,
) -> tuple[pd.DataFrame, torch.Tensor]:
    """:func:`separability`'s table and its permutation draws ``[n_permutations, n_layers + 1]``: draw ``i``
    is the accuracy with the labels shuffled by the same seeded permutation at every depth (so the maximum
    over depths of a draw is the null of the maximum over depths, :func:`max_over_depths_null`)."""
    labels = list(labels)
    if resid.ndim != 3 or resid.shape[0] != len(labels):
        raise ValueError(
            f"resid must be [n, n_layers + 1, d_model] with n = len(labels) = {len(labels)}, "
            f"got shape {tuple(resid.shape)}"
        )
    classes = sorted(set(labels), key=str)
    if len(classes) < 2:
        raise TooFewPromptsError(f"separability needs at least 2 distinct labels, got {classes}")
    groups = list(range(len(labels))) if groups is None else list(groups)
    if len(groups) != len(labels):
        raise ValueError(f"groups must have one entry per point ({len(labels)}), got {len(groups)}")
    folds = fold_ids(groups, n_folds, seed)
    codes = torch.tensor([classes.index(l) for l in labels])
    chance = float(torch.bincount(codes).max()) / len(labels)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(labels), generator=gen) for _ in range(n_permutations)]
    rows, null = [], torch.zeros(n_permutations, resid.shape[1], dtype=torch.float64)
    labellings = torch.stack([codes] + [codes[p] for p in perms])  # [1 + n_permutations, n]
    for e in range(resid.shape[1]):
        all_accs = _cv_centroid_accuracies(resid[:, e].double(), labellings, len(classes), folds)
        row = {"layer": e, "accuracy": float(all_accs[0]), "chance": chance}
        if perms:
            accs = all_accs[1:]
            null[:, e] = accs
            row["perm_mean"], row["perm_q95"] = float(accs.mean()), float(accs.quantile(0.95))
        rows.append(row)
    return pd.DataFrame(rows), null


def separability(
    resid: torch.Tensor,
    labels: Sequence,
    *,
    groups: Sequence | None = None,
    n_folds: int = 4,
    n_permutations: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """How well ``labels`` separate the vectors at each depth.

    ``resid`` ``[n, n_layers + 1, d_model]``, ``labels`` ``[n]`` (any hashables, >= 2 distinct).
    ``groups`` ``[n]`` (default: each point its own group) keeps related points in one fold, e.g.
    a prompt and its shuffled twin. One row per layer: ``accuracy`` (``n_folds``-fold
    cross-validated nearest-centroid accuracy in the full residual space: the fraction of points
    nearer their own class's centroid, computed from the other folds, than any other),
    ``chance`` (the majority share) and, with ``n_permutations > 0``, ``perm_mean`` / ``perm_q95``:
    the same accuracy with the labels shuffled (seeded), its mean and 95th percentile.
    """
    return separability_with_null(
        resid, labels, groups=groups, n_folds=n_folds, n_permutations=n_permutations, seed=seed
    )[0]


# --------------------------------------------------------------------------- values across formats


def member_value(family: str, member: str) -> int:
    """The number a member stands for: its index plus the family's offset (``"3"``/``"three"`` -> 3, ``"March"`` -> 3)."""
    if family not in VALUE_OFFSETS:
        raise ParameterError(f"unknown family {family!r}; valid: {', '.join(VALUE_OFFSETS)}")
    return FAMILIES[family].index(member) + VALUE_OFFSETS[family]


def format_value_means(
    resid: torch.Tensor,
    formats: Sequence[str],
    values: Sequence[int],
    keep_values: Sequence[int] | None = None,
) -> tuple[list[str], list[int], torch.Tensor, torch.Tensor]:
    """Mean representation of each (format, value).

    ``resid`` ``[m, n_layers + 1, d_model]`` with a ``formats[i]`` and ``values[i]`` per row.
    ``keep_values`` (default: the values present in every format) picks the values. Returns
    ``(formats, values, means [F, V, n_layers + 1, d_model], counts [F, V])``; formats in first-seen
    order, values sorted. Raises when a kept value is missing from a format.
    """
    if resid.ndim != 3 or not (resid.shape[0] == len(formats) == len(values)):
        raise ValueError(
            f"resid [m, n_layers + 1, d_model] needs one format and value per row; got "
            f"{tuple(resid.shape)}, {len(formats)} formats, {len(values)} values"
        )
    fmts = list(dict.fromkeys(formats))
    present = {f: {v for g, v in zip(formats, values) if g == f} for f in fmts}
    vals = sorted(set.intersection(*present.values()) if keep_values is None else set(keep_values))
    if not vals:
        raise TooFewPromptsError(f"no value is present in every format: {present}")
    for f in fmts:
        missing = [v for v in vals if v not in present[f]]
        if missing:
            raise TooFewPromptsError(
                f"format {f!r} has no row with value(s) {missing}; values present: {sorted(present[f])}"
            )
    means = torch.zeros(len(fmts), len(vals), *resid.shape[1:])
    counts = torch.zeros(len(fmts), len(vals), dtype=torch.long)
    index = {(f, v): (i, j) for i, f in enumerate(fmts) for j, v in enumerate(vals)}
    for row, key in enumerate(zip(formats, values)):
        if key in index:
            means[index[key]] += resid[row]
            counts[index[key]] += 1
    return fmts, vals, means / counts[..., None, None], counts


def center_means(means: torch.Tensor, center: str = "none") -> torch.Tensor:
    """``means`` ``[F, V, E, d]`` centred per :data:`CENTERINGS` (``"format"``: minus each format's
    mean over values; ``"global"``: minus the mean over all formats and values)."""
    if center not in CENTERINGS:
        raise ParameterError(f"unknown centering {center!r}; valid: {', '.join(CENTERINGS)}")
    if center == "none":
        return means
    if center == "format":
        return means - means.mean(1, keepdim=True)
    return means - means.mean((0, 1), keepdim=True)


def pairwise_cosine(means: torch.Tensor) -> torch.Tensor:
    """Cosine between every pair of (format, value) means at each depth.

    ``means`` ``[F, V, E, d]`` -> ``[E, F, V, F, V]`` (a zero vector has cosine 0 with everything).
    """
    if means.ndim != 4:
        raise ValueError(f"means must be [F, V, n_layers + 1, d_model], got shape {tuple(means.shape)}")
    unit = torch.nn.functional.normalize(means.double(), dim=-1)
    return torch.einsum("fved,gwed->efvgw", unit, unit).float()


def value_cosine_summary(cos: torch.Tensor, formats: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Averages of :func:`pairwise_cosine` ``[E, F, V, F, V]``.

    Returns ``(summary, pairs)``: ``summary`` has one row per (layer, comparison) of
    :data:`COMPARISONS` with the mean ``cosine`` over all such ordered pairs; ``pairs`` one row per
    (layer, format_a, format_b) with ``a < b`` in ``formats`` order: ``same_value`` (mean over values
    of cos(a v, b v)) and ``diff_value`` (mean over v != w of cos(a v, b w)), plus rows with
    ``format_a == format_b`` whose ``diff_value`` is the within-format mean (``same_value`` None).
    """
    E, F, V = cos.shape[:3]
    if len(formats) != F:
        raise ValueError(f"{len(formats)} format names for {F} formats")
    same_f = torch.eye(F, dtype=torch.bool)[:, None, :, None]
    same_v = torch.eye(V, dtype=torch.bool)[None, :, None, :]
    masks = {COMPARISONS[0]: ~same_f & same_v, COMPARISONS[1]: same_f & ~same_v, COMPARISONS[2]: ~same_f & ~same_v}
    summary = pd.DataFrame(
        [
            {
                "layer": e,
                "comparison": name,
                "cosine": float(cos[e][mask.expand(F, V, F, V)].mean()) if mask.any() else float("nan"),
            }
            for e in range(E)
            for name, mask in masks.items()
        ]
    )
    off = ~torch.eye(V, dtype=torch.bool)
    rows = []
    for e in range(E):
        for a in range(F):
            for b in range(a, F):
                block = cos[e, a, :, b, :]  # [V, V]
                rows.append(
                    {
                        "layer": e,
                        "format_a": formats[a],
                        "format_b": formats[b],
                        "same_value": None if a == b else float(block.diagonal().mean()),
                        "diff_value": float(block[off].mean()) if V > 1 else float("nan"),
                    }
                )
    return summary, pd.DataFrame(rows)


# --------------------------------------------------------------------------- the value-step direction


def next_directions(means: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """Mean of ``means[f, v+1] - means[f, v]`` over consecutive values present, ``[F, E, d]``.

    ``means`` ``[F, V, E, d]`` with ``values`` (length V) labelling its value axis.
    """
    values = list(values)
    steps = [(values.index(v), values.index(v + 1)) for v in values if v + 1 in values]
    if not steps:
        raise TooFewPromptsError(f"no two consecutive values among {values}: the 'next' direction needs v and v+1")
    lo, hi = (torch.tensor(i) for i in zip(*steps))
    return (means[:, hi] - means[:, lo]).mean(1)


def direction_cosines(directions: torch.Tensor) -> torch.Tensor:
    """Cosine between every pair of formats' directions at each depth: ``[F, E, d]`` -> ``[E, F, F]``."""
    unit = torch.nn.functional.normalize(directions.double(), dim=-1)
    return torch.einsum("fed,ged->efg", unit, unit).float()


def direction_cosine_frame(cos: torch.Tensor, formats: Sequence[str]) -> pd.DataFrame:
    """:func:`direction_cosines` ``[E, F, F]`` as rows ``layer, format_a, format_b, cosine`` (``a < b``)."""
    return pd.DataFrame(
        [
            {"layer": e, "format_a": formats[a], "format_b": formats[b], "cosine": float(cos[e, a, b])}
            for e in range(cos.shape[0])
            for a, b in itertools.combinations(range(len(formats)), 2)
        ]
    )


def mean_offdiag(cos: torch.Tensor) -> torch.Tensor:
    """Mean over pairs ``a != b`` of ``[E, F, F]`` -> ``[E]``."""
    F = cos.shape[-1]
    return cos[:, ~torch.eye(F, dtype=torch.bool)].mean(-1)


def permuted_direction_cosines(
    means: torch.Tensor, values: Sequence[int], n_permutations: int = 100, seed: int = 0
) -> torch.Tensor:
    """Baseline for :func:`direction_cosines`: each format's values relabelled by an independent
    seeded random permutation, the directions recomputed; the mean cross-format cosine per
    permutation, ``[n_permutations, E]``."""
    if n_permutations < 1:
        raise ParameterError(f"n_permutations must be >= 1, got {n_permutations}")
    gen = torch.Generator().manual_seed(seed)
    F, V = means.shape[:2]
    out = []
    for _ in range(n_permutations):
        shuffled = torch.stack([means[f, torch.randperm(V, generator=gen)] for f in range(F)])
        out.append(mean_offdiag(direction_cosines(next_directions(shuffled, values))))
    return torch.stack(out)


def step_directions(means: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """The value-step direction: per format and depth the least-squares slope of the means over the values,
    ``sum_v (v - mean v) (means[f, v] - mean_v means[f, v]) / sum_v (v - mean v)^2``, ``[F, E, d]`` (the change of
    the mean representation per unit of value; for two values ``a < b`` it is ``(means[b] - means[a]) / (b - a)``,
    for a run of consecutive values close to :func:`next_directions`). Needs two distinct values."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if means.ndim != 4 or means.shape[1] != len(v):
        raise ValueError(f"means must be [F, V, E, d] with V = len(values) = {len(v)}, got {tuple(means.shape)}")
    if len(set(v.tolist())) < 2:
        raise TooFewPromptsError(f"the value-step direction needs two distinct values, got {v.tolist()}")
    w = (v - v.mean()) / ((v - v.mean()) ** 2).sum()  # [V]
    return torch.einsum("v,fved->fed", w, means.double()).float()


# --------------------------------------------------------------------------- permutation nulls

#: Per-depth statistics of :func:`value_statistics`.
VALUE_STATISTICS = ("value_gap", "step_cosine")


def value_statistics(
    rows: torch.Tensor, formats: Sequence[str], values: Sequence[int], center: str = "format"
) -> dict[str, torch.Tensor]:
    """Per-depth statistics ``[E]`` of member representations ``rows`` ``[m, E, d]`` labelled by format and value:

    - ``value_gap``: mean cosine of the same value in different formats minus that of different values in
      different formats (the control), after ``center`` (:func:`value_cosine_summary`);
    - ``step_cosine``: the mean cross-format cosine of the formats' :func:`step_directions`.
    """
    fmts, vals, means, _ = format_value_means(rows, formats, values)
    summary, _ = value_cosine_summary(pairwise_cosine(center_means(means, center)), fmts)
    wide = summary.pivot(index="layer", columns="comparison", values="cosine")
    gap = torch.tensor((wide[COMPARISONS[0]] - wide[COMPARISONS[2]]).to_numpy(), dtype=torch.float64)
    step = mean_offdiag(direction_cosines(step_directions(means, vals))).double()
    return {"value_gap": gap, "step_cosine": step}


def value_label_permutations(formats: Sequence[str], n_permutations: int, seed: int = 0) -> torch.Tensor:
    """``[n_permutations, m]`` row orders that shuffle the rows' value labels *within* each format (seeded):
    under draw ``p`` row ``i`` takes the value of row ``p[i]``, a row of the same format."""
    if n_permutations < 1:
        raise ParameterError(f"n_permutations must be >= 1, got {n_permutations}")
    gen = torch.Generator().manual_seed(seed)
    formats = list(formats)
    groups = [torch.tensor([i for i, f in enumerate(formats) if f == g]) for g in dict.fromkeys(formats)]
    out = torch.empty(n_permutations, len(formats), dtype=torch.long)
    for k in range(n_permutations):
        for idx in groups:
            out[k, idx] = idx[torch.randperm(len(idx), generator=gen)]
    return out


def value_permutation_null(
    rows: torch.Tensor,
    formats: Sequence[str],
    values: Sequence[int],
    *,
    center: str = "format",
    n_permutations: int = 99,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`value_statistics` observed ``{name: [E]}`` and under :func:`value_label_permutations`
    ``{name: [n_permutations, E]}`` (the value labels shuffled within each format; the counts per value kept)."""
    observed = value_statistics(rows, formats, values, center)
    values = list(values)
    draws = [
        value_statistics(rows, formats, [values[j] for j in perm.tolist()], center)
        for perm in value_label_permutations(formats, n_permutations, seed)
    ]
    return observed, {k: torch.stack([d[k] for d in draws]) for k in observed}


def max_over_depths_null(
    observed: torch.Tensor, null: torch.Tensor, *, statistic: str, seed: int, description: str = "", **context
) -> NullDistribution:
    """The maximum over depths of ``observed`` ``[E]`` against the maximum over depths of each permutation draw
    ``null`` ``[n, E]`` (the same permutation at every depth): a ``null_distribution`` record (``observed``, the
    null's percentiles, ``observed_percentile``, ``p_value = (1 + #{null >= observed}) / (n + 1)``) whose
    ``matched`` says ``{"over": "max over depths", "depth": argmax, "n_depths": E}``; ``context`` fills the
    record's optional fields (``task``, ``n_prompts``, ``n_clusters``)."""
    observed, null = torch.as_tensor(observed, dtype=torch.float64), torch.as_tensor(null, dtype=torch.float64)
    if null.ndim != 2 or observed.ndim != 1 or null.shape[1] != observed.shape[0]:
        raise ValueError(f"observed [E] and null [n, E] must share E; got {tuple(observed.shape)}, {tuple(null.shape)}")
    draws = null.max(1).values.tolist()
    obs = float(observed.max())
    return NullDistribution(
        statistic=statistic,
        observed=obs,
        **null_summary(obs, draws),
        matched={"over": "max over depths", "depth": int(observed.argmax()), "n_depths": int(observed.shape[0])},
        seed=seed,
        null=draws,
        circuit=[],
        description=description,
        **context,
    )


def at_depth_null(
    observed: torch.Tensor,
    null: torch.Tensor,
    depth: int,
    *,
    statistic: str,
    seed: int,
    description: str = "",
    **context,
) -> NullDistribution:
    """``observed[depth]`` against ``null[:, depth]`` (a depth fixed in advance, e.g. chosen on another split):
    a ``null_distribution`` record whose ``matched`` is ``{"over": "one depth", "depth": depth, ...}``."""
    observed, null = torch.as_tensor(observed, dtype=torch.float64), torch.as_tensor(null, dtype=torch.float64)
    if not 0 <= depth < observed.shape[0]:
        raise ParameterError(f"depth must be in 0..{observed.shape[0] - 1}, got {depth}")
    obs, draws = float(observed[depth]), null[:, depth].tolist()
    return NullDistribution(
        statistic=statistic,
        observed=obs,
        **null_summary(obs, draws),
        matched={"over": "one depth", "depth": int(depth), "n_depths": int(observed.shape[0])},
        seed=seed,
        null=draws,
        circuit=[],
        description=description,
        **context,
    )


# --------------------------------------------------------------------------- datasets


def common_values(tokenizer, families: Sequence[str]) -> list[int]:
    """Values (:func:`member_value`) that every family in ``families`` has as a single-token member, sorted."""
    unknown = [f for f in families if f not in VALUE_OFFSETS]
    if unknown:
        raise ParameterError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; valid: {', '.join(VALUE_OFFSETS)}"
        )
    sets = [{i + VALUE_OFFSETS[f] for i in single_token_members(tokenizer, f)} for f in families]
    return sorted(set.intersection(*sets)) if sets else []


def value_matched_dataset(
    tokenizer,
    family: str,
    values: Sequence[int],
    *,
    n: int,
    model_name: str = "",
    max_draws: int = 4,
    read_values: Sequence[int] | None = None,
    member_index: int = -1,
    **kwargs,
) -> TaskDataset:
    """``n`` prompts of ``family`` whose members (clean and shuffled) all have values in ``values`` and, with
    ``read_values``, whose member ``member_index`` has a value in ``read_values`` (every one of them when
    ``n >= len(read_values)``, the prompts dealt round-robin over the values so each gets about as many).

    Draws ``make_dataset(tokenizer, family, n=n, **kwargs)`` and keeps the prompts in range,
    drawing 4x as many up to ``max_draws`` times when too few are (e.g. GPT-2's digits run to 99, its
    months to 12). The dataset is seeded like :func:`~seqcirc_utils.tasks.datasets.make_dataset`.
    """
    allowed = set(values)
    read = None if read_values is None else set(read_values)
    draw = n
    for _ in range(max_draws):
        ds = make_dataset(tokenizer, family, model_name=model_name, n=draw, **kwargs)
        keep = [
            i
            for i, p in enumerate(ds.prompts)
            if all(member_value(family, m) in allowed for m in (*p.members, *p.corrupted_members))
            and (read is None or member_value(family, p.members[member_index]) in read)
        ]
        if read is not None:  # balanced over the read values: round-robin in value order
            by_value = {
                v: [i for i in keep if member_value(family, ds.prompts[i].members[member_index]) == v]
                for v in sorted(read)
            }
            if all(by_value.values()) or n < len(read):
                rounds = itertools.zip_longest(*by_value.values())
                keep = [i for r in rounds for i in r if i is not None]
            else:
                keep = []
        if len(keep) >= n:
            return ds.subset(sorted(keep[:n]))
        draw *= 4
    raise TooFewPromptsError(
        f"only {len(keep)} of {draw // 4} {family} prompts have every member in values "
        f"{sorted(allowed)}"
        + (f" and member {member_index} in {sorted(read)}" if read is not None else "")
        + "; use fewer prompts (n) or shorter sequences (length)"
    )


def read_value_space(
    tokenizer, families: Sequence[str], values: Sequence[int], *, member_index: int = -1, **kwargs
) -> list[int]:
    """The values member ``member_index`` can take in every family, over the sequences whose members all lie in
    ``values`` (``kwargs``: the datasets' :class:`~seqcirc_utils.tasks.datasets.TaskSpec` options: template,
    length, step, direction, prefix). Sorted."""
    length, step = kwargs.get("length", 4), kwargs.get("step", 1)
    sign = -1 if kwargs.get("direction", "increasing") == "decreasing" else 1
    allowed, per_family = set(values), []
    for f in families:
        reads = set()
        for s in sequence_space(tokenizer, f, **kwargs):
            vals = [s + sign * step * k + VALUE_OFFSETS[f] for k in range(length)]
            if all(v in allowed for v in vals):
                reads.add(vals[member_index])
        per_family.append(reads)
    return sorted(set.intersection(*per_family)) if per_family else []


def value_split_datasets(
    tokenizer,
    families: Sequence[str],
    values: Sequence[int],
    *,
    n: int,
    member_index: int = -1,
    roles: Sequence[str] = SELECTION_ROLES,
    shares: Sequence[int] | None = None,
    seed: int = 0,
    min_values: int = 2,
    model_name: str = "",
    **kwargs,
) -> tuple[dict[str, dict[str, TaskDataset]], dict[str, list[int]]]:
    """A selection / evaluation split aligned on the **value read**: ``({family: {role: dataset}}, {role: values})``.

    The values member ``member_index`` can take in every family (:func:`read_value_space`) are partitioned by
    the seeded :func:`~seqcirc_utils.tasks.datasets.partition` of a :class:`~seqcirc_utils.tasks.datasets.Split`
    (``roles``, ``shares``, ``seed``); role ``i``'s dataset of each family (:func:`value_matched_dataset`, seed
    ``seed + i * ROLE_SEED_OFFSET``) keeps the prompts whose read member has one of that role's values. A
    sequence (fixed length, step, direction) fixes its read value, so the roles of one family share no sequence
    identity (checked); and every family reads the same values on one side, so the same value can be compared
    across formats on each side. (``make_split_datasets`` partitions each family's start values on its own, which
    leaves the sides of different families with nearly disjoint values.) Fillers are not split.
    Raises :class:`TooFewPromptsError` when a role gets fewer than ``min_values`` values.
    """
    space = read_value_space(tokenizer, families, values, member_index=member_index, **kwargs)
    parts = partition(space, Split(roles[0], tuple(roles), tuple(shares) if shares else None, seed), "read values")
    if min(len(v) for v in parts.values()) < min_values:
        raise TooFewPromptsError(
            f"the read values {space} split into {parts}: a role has fewer than {min_values} values "
            "(use more families' shared values, another member_index, or other shares)"
        )
    out: dict[str, dict[str, TaskDataset]] = {}
    for f in families:
        out[f] = {
            role: value_matched_dataset(
                tokenizer,
                f,
                values,
                n=n,
                model_name=model_name,
                read_values=parts[role],
                member_index=member_index,
                seed=seed + i * ROLE_SEED_OFFSET,
                **kwargs,
            )
            for i, role in enumerate(roles)
        }
        for a, b in itertools.combinations(roles, 2):
            if sequence_overlap(out[f][a], out[f][b]):
                raise AssertionError(f"{f}: roles {a} and {b} share sequences")  # a sequence fixes its read value
    return out, parts


#: Corruptions whose corrupted prompts are shuffled sequences (the twins of question 1).
SHUFFLES = ("permutation", "permutationKeepLast")


@dataclass
class DatasetResiduals:
    """Residual stacks of one :class:`~seqcirc_utils.tasks.datasets.TaskDataset` made with ``corruption="permutation"``.

    - ``ordered`` / ``shuffled``: at the final position of the clean prompts and of their shuffled
      twins (the same members in a non-monotone order, same token length), ``[n, n_layers + 1, d_model]``;
    - ``members``: at the position of every member of the clean prompts, ``[n, length, n_layers + 1,
      d_model]`` (by causal attention, member ``i``'s entry is that of the prompt cut after member
      ``i``: a prompt ending in that member), with their ``values`` ``[n, length]`` (:func:`member_value`);
    - ``top1``: the model's top-1 next token on the clean prompts ``[n]``.
    """

    family: str
    ordered: torch.Tensor
    shuffled: torch.Tensor | None
    members: torch.Tensor
    values: torch.Tensor
    top1: torch.Tensor | None = None


def dataset_residuals(
    model, dataset, *, batch_size: int = 32, progress: bool = True, shuffled: bool = True
) -> DatasetResiduals:
    """Read :class:`DatasetResiduals` of ``dataset`` (two forward passes: clean, shuffled; ``shuffled=False``
    skips the second and leaves ``shuffled`` None)."""
    family = dataset.task
    if family not in VALUE_OFFSETS:
        raise ParameterError(f"dataset task {family!r} has no member values; valid: {', '.join(VALUE_OFFSETS)}")
    if dataset.spec.corruption not in SHUFFLES:
        raise ParameterError(
            f"dataset corruption is {dataset.spec.corruption!r}; build it with corruption in {', '.join(SHUFFLES)} "
            "(its corrupted prompts are the shuffled sequences)"
        )
    finals = dataset.final_positions[:, None]
    members = torch.tensor([p.member_positions for p in dataset.prompts], dtype=torch.long)
    clean, top1 = residuals_at(
        model, dataset.tokens, torch.cat([members, finals], 1), batch_size=batch_size, progress=progress, with_top1=True
    )
    twins = (
        residuals_at(model, dataset.corrupted_tokens, dataset.final_positions, batch_size=batch_size, progress=progress)
        if shuffled
        else None
    )
    values = torch.tensor([[member_value(family, m) for m in p.members] for p in dataset.prompts])
    return DatasetResiduals(family, clean[:, -1], twins, clean[:, :-1], values, top1)


# --------------------------------------------------------------------------- the successor test

#: Conditions of :func:`successor_test`.
SUCCESSOR_CONDITIONS = ("unedited", "value-step direction", "random direction")


def successor_token_ids(tokenizer, dataset: TaskDataset) -> list[int | None]:
    """Per prompt, the token of the member after the answer (``n + 2`` when the last member is ``n``), spelled
    as the answer is (after a space or bare, whichever gives the prompt's own answer token); None when the
    family has no such member or it is not one token."""
    family = dataset.task
    out: list[int | None] = []
    for p in dataset.prompts:
        spelling = next(
            (s for s in (True, False) if single_token_id(tokenizer, p.answer, after_space=s) == p.answer_id), None
        )
        nxt = FAMILIES[family].index(p.answer) + 1
        if spelling is None or nxt >= len(FAMILIES[family]):
            out.append(None)
        else:
            out.append(single_token_id(tokenizer, FAMILIES[family][nxt], after_space=spelling))
    return out


@torch.no_grad()
def successor_test(
    model,
    dataset: TaskDataset,
    direction: torch.Tensor,
    depth: int,
    *,
    alpha: float = 1.0,
    seed: int = 0,
    unedited_top1: torch.Tensor | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Does adding ``alpha * direction`` move the model's readout from ``n`` to ``n + 1``?

    ``direction`` ``[d_model]`` is added to the residual stream at depth ``depth`` (:func:`resid_hook_names`) at
    the last member's position of every clean prompt; the readout is the top-1 next token at the final position.
    A *hit* is a top-1 equal to the member after the answer (:func:`successor_token_ids`): the model now continues
    from ``n + 1``. Conditions (:data:`SUCCESSOR_CONDITIONS`): unedited (``unedited_top1`` when given, else one
    pass), the direction, and a seeded Gaussian direction of the same norm (a perturbation as large, no value
    content). One row per (prompt, condition): ``prompt, sequence, condition, top1, hit, correct, testable``
    (``testable`` False where the family has no single-token member after the answer; its ``hit`` is False).
    """
    names = resid_hook_names(len(model.blocks))
    if not 0 <= depth < len(names):
        raise ParameterError(f"depth must be in 0..{len(names) - 1}, got {depth}")
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(direction.shape, generator=gen)
    rand = rand * direction.norm() / rand.norm()
    last = torch.tensor([p.member_positions[-1] for p in dataset.prompts])
    targets = successor_token_ids(model.tokenizer, dataset)
    dev = model_device(model)

    def run(vec: torch.Tensor | None) -> torch.Tensor:
        top = torch.empty(len(dataset), dtype=torch.long)
        for start in range(0, len(dataset), batch_size):
            chunk = dataset.tokens[start : start + batch_size].to(dev)
            where = last[start : start + batch_size].to(dev)
            rows = torch.arange(chunk.shape[0], device=dev)

            def add(act, hook):  # act [b, pos, d_model]
                act = act.clone()
                act[rows, where] += (alpha * vec).to(act.device, act.dtype)
                return act

            hooks = [] if vec is None else [(names[depth], add)]
            with model.hooks(fwd_hooks=hooks):
                top[start : start + chunk.shape[0]] = model(chunk, logits_to_keep=1)[:, -1].argmax(-1).cpu()
        return top

    tops = {
        SUCCESSOR_CONDITIONS[0]: run(None) if unedited_top1 is None else torch.as_tensor(unedited_top1),
        SUCCESSOR_CONDITIONS[1]: run(direction),
        SUCCESSOR_CONDITIONS[2]: run(rand),
    }
    return pd.DataFrame(
        [
            {
                "prompt": i,
                "sequence": p.sequence_id,
                "condition": cond,
                "top1": int(top[i]),
                "hit": targets[i] is not None and int(top[i]) == targets[i],
                "correct": int(top[i]) == p.answer_id,
                "testable": targets[i] is not None,
            }
            for cond, top in tops.items()
            for i, p in enumerate(dataset.prompts)
        ]
    )


def successor_summary(frame: pd.DataFrame, *, seed: int = 0) -> dict:
    """The successor test's verdict from :func:`successor_test` rows (several datasets concatenated, with a
    ``family`` column, are fine; sequences are the clusters): per condition the hit rate and the share still
    correct, over testable prompts; ``diff`` = hit rate of the direction minus the random direction's, with a
    cluster-bootstrap 95 % interval over sequences (paired per prompt); ``passes``: that interval's lower end
    is above 0 and the direction's hit rate above the unedited one."""
    ok = frame[frame["testable"]]
    key = ["family", "prompt"] if "family" in ok.columns else ["prompt"]
    hit = ok.pivot_table(index=key, columns="condition", values="hit", aggfunc="first").astype(float)
    seq = ok.drop_duplicates(key).set_index(key).loc[hit.index, "sequence"].tolist()
    out = {
        "n_prompts": len(hit),
        "n_sequences": len(set(seq)),
        "hit": {c: float(hit[c].mean()) if len(hit) else float("nan") for c in SUCCESSOR_CONDITIONS},
        "correct": {
            c: float(ok[ok["condition"] == c]["correct"].mean()) if len(ok) else float("nan")
            for c in SUCCESSOR_CONDITIONS
        },
    }
    if len(hit) == 0:
        return out | {"diff": float("nan"), "diff_ci95": [float("nan")] * 2, "passes": False}
    paired = torch.tensor((hit[SUCCESSOR_CONDITIONS[1]] - hit[SUCCESSOR_CONDITIONS[2]]).to_numpy())
    lo, hi = cluster_bootstrap_mean_ci(paired, seq, seed=seed)
    passes = lo > 0 and out["hit"][SUCCESSOR_CONDITIONS[1]] > out["hit"][SUCCESSOR_CONDITIONS[0]]
    return out | {"diff": float(paired.mean()), "diff_ci95": [lo, hi], "passes": bool(passes)}
