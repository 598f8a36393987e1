"""Representation geometry: the residual stream at every layer, its PCA, value cosines, the "next" direction.

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

**The "next" direction** (:func:`next_directions`): per format and layer, the mean over consecutive
values ``v, v+1`` (both present) of ``means[f, v+1] - means[f, v]``. Over a run of consecutive values
this telescopes to ``(means[f, last] - means[f, first]) / (number of steps)``; centring does not
change it. :func:`direction_cosines` compares formats; :func:`permuted_direction_cosines` is the
baseline with each format's values relabelled by a seeded random permutation.

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
from seqcirc_utils.models.loading import model_device
from seqcirc_utils.tasks.datasets import FAMILIES, make_dataset, single_token_members

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
) -> torch.Tensor:
    """The residual stream at every depth, read at ``positions``.

    ``tokens`` ``[n, pos]``; ``positions`` ``[n]`` (one position per prompt; default the last) or
    ``[n, k]`` (k positions per prompt). Returns float32 on the CPU, ``[n, n_layers + 1, d_model]``
    or ``[n, k, n_layers + 1, d_model]``.
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
            model(chunk, logits_to_keep=1)
        out[start : start + chunk.shape[0]] = torch.stack([store[e] for e in range(len(names))], dim=2)
    return out[:, 0] if single else out


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


def fold_ids(groups: Sequence, n_folds: int, seed: int = 0) -> torch.Tensor:
    """Fold id of each point ``[n]``: the distinct ``groups`` shuffled (seeded) and dealt round-robin
    into ``n_folds`` folds, so points of one group always share a fold."""
    keys = list(dict.fromkeys(groups))
    if not 2 <= n_folds <= len(keys):
        raise ParameterError(f"n_folds must be in 2..{len(keys)} (the number of groups), got {n_folds}")
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {keys[i]: rank % n_folds for rank, i in enumerate(order)}
    return torch.tensor([fold_of[g] for g in groups])


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
    rows = []
    for e in range(resid.shape[1]):
        x = resid[:, e].double()
        row = {"layer": e, "accuracy": _cv_centroid_accuracy(x, codes, len(classes), folds), "chance": chance}
        if perms:
            accs = torch.tensor([_cv_centroid_accuracy(x, codes[p], len(classes), folds) for p in perms])
            row["perm_mean"], row["perm_q95"] = float(accs.mean()), float(accs.quantile(0.95))
        rows.append(row)
    return pd.DataFrame(rows)


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


# --------------------------------------------------------------------------- the "next" direction


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
    tokenizer, family: str, values: Sequence[int], *, n: int, model_name: str = "", max_draws: int = 4, **kwargs
):
    """``n`` prompts of ``family`` whose members (clean and shuffled) all have values in ``values``.

    Draws ``make_dataset(tokenizer, family, n=n, **kwargs)`` and keeps the prompts in range,
    drawing 4x as many up to ``max_draws`` times when too few are (e.g. GPT-2's digits run to 99, its
    months to 12). The dataset is seeded like :func:`~seqcirc_utils.tasks.datasets.make_dataset`.
    """
    allowed = set(values)
    draw = n
    for _ in range(max_draws):
        ds = make_dataset(tokenizer, family, model_name=model_name, n=draw, **kwargs)
        keep = [
            i
            for i, p in enumerate(ds.prompts)
            if all(member_value(family, m) in allowed for m in (*p.members, *p.corrupted_members))
        ]
        if len(keep) >= n:
            return ds.subset(keep[:n])
        draw *= 4
    raise TooFewPromptsError(
        f"only {len(keep)} of {draw // 4} {family} prompts have every member in values "
        f"{sorted(allowed)}; use fewer prompts (n) or shorter sequences (length)"
    )


@dataclass
class DatasetResiduals:
    """Residual stacks of one :class:`~seqcirc_utils.tasks.datasets.TaskDataset` made with ``corruption="permutation"``.

    - ``ordered`` / ``shuffled``: at the final position of the clean prompts and of their shuffled
      twins (the same members in a non-monotone order, same token length), ``[n, n_layers + 1, d_model]``;
    - ``members``: at the position of every member of the clean prompts, ``[n, length, n_layers + 1,
      d_model]`` (by causal attention, member ``i``'s entry is that of the prompt cut after member
      ``i``: a prompt ending in that member), with their ``values`` ``[n, length]`` (:func:`member_value`).
    """

    family: str
    ordered: torch.Tensor
    shuffled: torch.Tensor
    members: torch.Tensor
    values: torch.Tensor


def dataset_residuals(model, dataset, *, batch_size: int = 32, progress: bool = True) -> DatasetResiduals:
    """Read :class:`DatasetResiduals` of ``dataset`` (two forward passes: clean, shuffled)."""
    family = dataset.task
    if family not in VALUE_OFFSETS:
        raise ParameterError(f"dataset task {family!r} has no member values; valid: {', '.join(VALUE_OFFSETS)}")
    if dataset.spec.corruption != "permutation":
        raise ParameterError(
            f"dataset corruption is {dataset.spec.corruption!r}; build it with corruption='permutation' "
            "(its corrupted prompts are the shuffled sequences)"
        )
    finals = dataset.final_positions[:, None]
    members = torch.tensor([p.member_positions for p in dataset.prompts], dtype=torch.long)
    clean = residuals_at(
        model, dataset.tokens, torch.cat([members, finals], 1), batch_size=batch_size, progress=progress
    )
    shuffled = residuals_at(
        model, dataset.corrupted_tokens, dataset.final_positions, batch_size=batch_size, progress=progress
    )
    values = torch.tensor([[member_value(family, m) for m in p.members] for p in dataset.prompts])
    return DatasetResiduals(family, clean[:, -1], shuffled, clean[:, :-1], values)
