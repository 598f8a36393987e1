"""Knocking out successor heads: what breaks, what the model predicts instead, which components take over.

**Successor heads** (:func:`select_successor_heads`): computed, never named. The candidates are the
``n_candidates`` heads with the highest mean OV "next" score over the tasks' families
(:func:`~seqcirc_utils.mechanisms.ov_scores.ov_scores`, top-1 over the family); each candidate is ablated alone
from the full model on every task's prompts
(:func:`~seqcirc_utils.scoring.ablation.single_component_effects`) and the ``n_heads`` candidates with the
largest mean drop are the successor heads the model uses.

**Knockout** (:func:`ablated_logits`, :func:`knockout_rows`): the heads are mean-ablated (the
ablator's mode and values) at every position; the pass resumes from the lowest ablated layer's
cached clean residual stream, so it equals :meth:`Ablator.score` of every component but them.

**Predictions** (:func:`member_offsets`, :func:`categorise`): the top-1 token is mapped to a member
of the prompt's family (its one-token spellings, bare or after a space: :func:`member_token_index`)
and its index compared with the last member shown, ``n``: ``correct`` (the dataset's answer),
``copy`` (``n`` itself), ``n-1``, ``n+1``, ``n+2``, ``n-2``, ``other member`` (any other member of the
family) or ``off-family`` (not a member). Offsets are in member-index units.

**Backups** (:class:`KnockoutAblator`): an :class:`~seqcirc_utils.scoring.ablation.Ablator` whose model has
the knocked-out components ablated *throughout*: every forward pass (scores, resumed passes,
attribution) ablates them, they are not candidates of pruning (``info.components`` leaves them out),
and the reference ("full") metric is the knocked-out model's. Pruning with it finds the circuit of
the damaged model; components in it but not in the intact model's circuit are the ones that join.
**Compensation** (:func:`compensation`): each head's direct logit attribution
(:func:`~seqcirc_utils.mechanisms.logit_lens.dataset_dla`) with and without the knockout.

**Per position** (:func:`position_ablation_logits`, :func:`position_drops`): a head ablated at one
query position only (its output replaced there, untouched elsewhere); ablating at every position is
the ordinary ablation.

Units: logit differences in nats; ``fraction`` of the reference metric; ``drop_points`` =
``100 * (1 - fraction)``; shares in [0, 1].
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.core.options import AblationMode
from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.stats import CI_UNIT_SEQUENCE, cluster_bootstrap_ratio_ci, n_clusters
from seqcirc_utils.core.types import Component, head, parse_component, sort_components
from seqcirc_utils.discovery.pruning import PruningResult, fast_prune
from seqcirc_utils.evaluation.nulls import N_DRAWS, matched_random_circuits, matching_description, null_summary
from seqcirc_utils.mechanisms.logit_lens import dataset_dla, direct_logit_attribution, final_norm_scale, frozen_ln_final
from seqcirc_utils.mechanisms.ov_scores import ov_scores
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.scoring.ablation import (
    Ablator,
    AblatorCache,
    ablation_hooks,
    component_hook_name,
    single_component_effects,
)
from seqcirc_utils.tasks.datasets import FAMILIES, TaskDataset

#: Prediction categories of :func:`categorise`, in display order.
CATEGORIES = ("correct", "copy", "n-1", "n+1", "n+2", "n-2", "other member", "off-family")
_OFFSET_LABELS = {0: "copy", -1: "n-1", 1: "n+1", 2: "n+2", -2: "n-2"}


# --------------------------------------------------------------------------- which heads


def successor_candidates(model, families: Sequence[str], n_candidates: int = 4, **ov_kwargs) -> pd.DataFrame:
    """The ``n_candidates`` heads with the highest mean OV next score over ``families``.

    Returns one row per candidate (best first; ties by layer, head): ``component``, ``layer``,
    ``head``, ``next_<family>`` per family and ``next_mean``. ``ov_kwargs`` go to
    :func:`~seqcirc_utils.mechanisms.ov_scores.ov_scores` (default: top-1 over the family, MLP0 embedding).
    Families with fewer than two single-token members are skipped (a :class:`TokenizationError` if none is left).
    """
    if n_candidates < 1:
        raise ParameterError(f"n_candidates must be >= 1, got {n_candidates}")
    tables = {}
    for f in families:
        try:
            tables[f] = ov_scores(model, f, kinds=["next"], progress=False, **ov_kwargs).set_index("component")
        except TokenizationError:  # too few single-token members
            continue
    if not tables:
        raise TokenizationError(f"no family of {list(families)} has two single-token members for this tokenizer")
    first = next(iter(tables.values()))
    df = first[["layer", "head"]].copy()
    for f, t in tables.items():
        df[f"next_{f}"] = t["next"]
    df["next_mean"] = df[[f"next_{f}" for f in tables]].mean(axis=1)
    df = df.reset_index().sort_values(["next_mean", "layer", "head"], ascending=[False, True, True])
    return df.head(n_candidates).reset_index(drop=True)


def select_successor_heads(
    model,
    info: ModelInfo,
    datasets: Mapping[str, TaskDataset],
    n_heads: int = 2,
    n_candidates: int = 4,
    families: Sequence[str] | None = None,
    mode: AblationMode | str = "mean",
    progress: bool = True,
    **ov_kwargs,
) -> tuple[pd.DataFrame, list[Component]]:
    """The successor heads the model uses: OV next candidates ranked by single-head ablation.

    ``datasets``: ``{task: dataset}`` (the tasks' prompts); ``families`` default to the tasks. Each of
    the :func:`successor_candidates` is ablated alone on every dataset (exact, one partial pass each)
    and the ``n_heads`` with the largest mean drop (points) are returned. The table has the
    candidates' OV scores, ``drop_<task>`` per task, ``drop_mean`` and ``selected``.
    """
    if not 1 <= n_heads <= n_candidates:
        raise ParameterError(f"need 1 <= n_heads <= n_candidates, got n_heads={n_heads}, n_candidates={n_candidates}")
    table = successor_candidates(model, list(families or datasets), n_candidates, **ov_kwargs)
    comps = [parse_component(c) for c in table["component"]]
    for task, ds in datasets.items():
        eff = single_component_effects(model, info, ds, comps, mode=mode, metric=None, progress=progress)
        table[f"drop_{task}"] = eff["drop_points"].to_numpy()
    table["drop_mean"] = table[[f"drop_{t}" for t in datasets]].mean(axis=1)
    order = table.sort_values(["drop_mean", "next_mean"], ascending=False, kind="stable").index[:n_heads]
    table["selected"] = table.index.isin(order)
    return table, [comps[i] for i in order]


# --------------------------------------------------------------------------- knockouts


def ablated_logits(ablator: Ablator, components: Iterable[Component]) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` with ``components`` ablated (the ablator's values and
    positions), resumed from the lowest ablated layer's cached clean residual stream."""
    components = list(components)
    if not components:
        return ablator.full_logits
    layer = min(c.layer for c in components)
    logits, _ = ablator.logits_from_layer(layer, ablator.clean_residuals()[layer], components)
    return logits


def top_k_decoded(tokenizer, logits: torch.Tensor, k: int = 5) -> list[list[str]]:
    """The ``k`` most likely tokens of each row of ``logits`` ``[batch, d_vocab]``, decoded (``repr`` kept
    readable: leading spaces stay)."""
    ids = logits.topk(k, dim=-1).indices.tolist()
    return [[tokenizer.decode([i]) for i in row] for row in ids]


def member_token_index(tokenizer, family: str) -> dict[int, int]:
    """``{token id: member index}`` for every member of ``family`` spelled as one token, bare
    (``"five"``) or after a space (``" five"``); members that are several tokens either way are absent."""
    index_of: dict[int, int] = {}
    for idx, word in enumerate(FAMILIES[family]):
        for form in (word, " " + word):
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                index_of.setdefault(int(ids[0]), idx)
    return index_of


def member_offsets(tokenizer, dataset: TaskDataset, token_ids: torch.Tensor | Sequence[int]) -> list[int | None]:
    """Per prompt, the member-index offset of the predicted token from the last member shown
    (``0`` = the last member, ``+1`` = the member after it), or ``None`` when the token is not a
    member of the prompt's family (``dataset.task``)."""
    family = dataset.task
    if family not in FAMILIES:
        raise ParameterError(
            f"predictions are categorised for sequence families ({', '.join(FAMILIES)}), not {family!r}"
        )
    index_of = member_token_index(tokenizer, family)
    members = FAMILIES[family]
    for p in dataset.prompts:  # the dataset's own answer / last-member tokens count too
        index_of.setdefault(p.answer_id, members.index(p.answer))
        index_of.setdefault(p.incorrect_id, members.index(p.members[-1]))
    out: list[int | None] = []
    for p, t in zip(dataset.prompts, torch.as_tensor(token_ids).tolist()):
        idx = index_of.get(int(t))
        out.append(None if idx is None else idx - members.index(p.members[-1]))
    return out


def categorise(tokenizer, dataset: TaskDataset, token_ids: torch.Tensor | Sequence[int]) -> list[str]:
    """One of :data:`CATEGORIES` per prompt for the predicted ``token_ids`` ``[batch]`` (see the module docstring)."""
    offsets = member_offsets(tokenizer, dataset, token_ids)
    out = []
    for p, t, off in zip(dataset.prompts, torch.as_tensor(token_ids).tolist(), offsets):
        if int(t) == p.answer_id:
            out.append("correct")
        elif off is None:
            out.append("off-family")
        else:
            out.append(_OFFSET_LABELS.get(off, "other member"))
    return out


def category_shares(categories: Sequence[str]) -> dict[str, float]:
    """``{category: share of prompts}`` for every category of :data:`CATEGORIES` (zeros included)."""
    n = len(categories)
    return {c: (sum(x == c for x in categories) / n if n else float("nan")) for c in CATEGORIES}


@dataclass
class Knockout:
    """One knockout condition on one dataset: its logits and how the predictions changed."""

    condition: str
    components: list[Component]
    logits: torch.Tensor
    fraction: float
    metric: float
    accuracy: float
    categories: list[str]
    top5: list[list[str]] = field(repr=False)


def knockout(ablator: Ablator, condition: str, components: Sequence[Component], k: int = 5) -> Knockout:
    """Ablate ``components`` on the ablator's dataset (resumed pass): metric, fraction of the full
    model's, top-1 accuracy, prediction categories and the top-``k`` decoded tokens per prompt."""
    ds, tok = ablator.dataset, ablator.model.tokenizer
    logits = ablated_logits(ablator, components)
    value = ablator.metric_value(logits)
    pred = logits.argmax(-1)
    return Knockout(
        condition,
        list(components),
        logits,
        ablator.fraction_of_full(value),
        value,
        float((pred.cpu() == ds.answer_ids).float().mean()),
        categorise(tok, ds, pred.cpu()),
        top_k_decoded(tok, logits, k),
    )


def knockout_rows(results: Sequence[Knockout], **labels) -> pd.DataFrame:
    """One row per knockout: ``condition``, ``ablated``, ``kept_%``, ``drop_points``, ``metric``,
    ``accuracy`` and the share of each prediction category, plus ``labels`` (e.g. ``task=...``)."""
    rows = []
    for r in results:
        rows.append(
            {
                **labels,
                "condition": r.condition,
                "ablated": " ".join(map(str, r.components)) or "-",
                "kept_%": 100 * r.fraction,
                "drop_points": 100 * (1 - r.fraction),
                "metric": r.metric,
                "accuracy": r.accuracy,
                **category_shares(r.categories),
            }
        )
    return pd.DataFrame(rows)


def prediction_records(dataset: TaskDataset, results: Sequence[Knockout], **labels) -> list[dict]:
    """Per (condition, prompt): the prompt text, answer, top-1 category and decoded top-5 (JSON-ready)."""
    out = []
    for r in results:
        for p, cat, top in zip(dataset.prompts, r.categories, r.top5):
            out.append(
                {
                    **labels,
                    "condition": r.condition,
                    "prompt": p.text,
                    "answer": p.answer,
                    "last_member": p.members[-1],
                    "category": cat,
                    "top5": top,
                }
            )
    return out


# --------------------------------------------------------------------------- replacement values

#: What replaces a knocked-out head's output (:func:`replacement_dataset`): ``corrupted_mean`` the per-position
#: mean over the corrupted prompts (the paper's, and this module's default); ``clean_mean`` the per-position mean
#: over the clean prompts themselves (no activation from another distribution is injected); ``clean_resample``
#: each prompt gets the activation of another clean prompt of a different sequence identity (seeded).
REPLACEMENTS = ("corrupted_mean", "clean_mean", "clean_resample")


def check_replacements(replacements: Iterable[str]) -> list[str]:
    """``replacements`` as a list; a one-line :class:`ParameterError` naming :data:`REPLACEMENTS` otherwise."""
    out = list(replacements)
    bad = [r for r in out if r not in REPLACEMENTS]
    if bad or not out:
        raise ParameterError(f"unknown replacement(s) {bad or out}; valid: {', '.join(REPLACEMENTS)}")
    return out


def resample_donors(dataset: TaskDataset, seed: int = 0) -> list[int]:
    """Per prompt, the index of another prompt whose clean activations replace its own under ``clean_resample``:
    drawn (seeded) among the prompts of a different sequence identity, or any other prompt when all share one."""
    if len(dataset) < 2:
        raise ParameterError("clean_resample needs at least two prompts (a prompt is never its own donor)")
    rng = random.Random(f"resample|{seed}")
    ids = dataset.sequence_ids
    donors = []
    for i, sid in enumerate(ids):
        pool = [j for j, other in enumerate(ids) if other != sid] or [j for j in range(len(ids)) if j != i]
        donors.append(rng.choice(pool))
    return donors


def replacement_dataset(dataset: TaskDataset, replacement: str = "corrupted_mean", seed: int = 0) -> TaskDataset:
    """``dataset`` with its corrupted twins swapped so that an :class:`Ablator` of it (mode ``mean`` for the
    means, ``resample`` for ``clean_resample``) replaces activations by ``replacement`` (:data:`REPLACEMENTS`):
    ``corrupted_mean`` the dataset itself; ``clean_mean`` every prompt's twin is the prompt itself;
    ``clean_resample`` its twin is its :func:`resample_donors` prompt. Clean tokens and answers are unchanged."""
    check_replacements([replacement])
    if replacement == "corrupted_mean":
        return dataset
    donors = list(range(len(dataset))) if replacement == "clean_mean" else resample_donors(dataset, seed)
    prompts = [
        replace(
            p,
            corrupted_text=dataset.prompts[j].text,
            corrupted_tokens=list(dataset.prompts[j].tokens),
            corrupted_members=list(dataset.prompts[j].members),
        )
        for p, j in zip(dataset.prompts, donors)
    ]
    return TaskDataset(
        dataset.model,
        dataset.spec,
        prompts,
        dataset.answer_token_policy,
        dataset.greater_than_groups,
        dataset.prefix_info,
    )


def replacement_ablator(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    replacement: str = "corrupted_mean",
    seed: int = 0,
    ablators: AblatorCache | None = None,
) -> Ablator:
    """The :class:`Ablator` whose ablations replace by ``replacement`` (see :func:`replacement_dataset`);
    from ``ablators`` when given."""
    ds = replacement_dataset(dataset, replacement, seed)
    mode = AblationMode.RESAMPLE if replacement == "clean_resample" else AblationMode.MEAN
    if ablators is not None:
        return ablators.get(model, info, ds, mode)
    return Ablator(model, info, ds, mode)


# --------------------------------------------------------------------------- knockout against its null


def knockout_dla(
    ablator: Ablator, components: Sequence[Component], scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass with ``components`` ablated (the ablator's values, every position): the per-prompt logit
    difference ``[batch]`` (nats) and each head's mean direct logit attribution ``[n_layers * n_heads]``
    (nats, ``info.heads`` order of the full model) with the final norm's scale frozen at ``scale`` ``[batch]``."""
    if ablator.metric != "logit_diff":
        raise ParameterError(f"knockout DLA is defined for the logit difference, not {ablator.metric}")
    ds, model = ablator.dataset, ablator.model
    hooks = ablator.hooks(components) if components else []
    res = direct_logit_attribution(
        model,
        ds.tokens,
        ds.answer_ids,
        ds.incorrect_ids,
        batch_size=len(ds),
        progress=False,
        scale=scale,
        fwd_hooks=hooks,
    )
    ablator.forward_passes += 1
    where = {label: i for i, label in enumerate(res.labels)}
    heads = [where[str(h)] for h in ModelInfo.heads.fget(ablator.info)]  # every head, knocked out too
    return res.logit_diff, res.values[heads].mean(1)


@torch.no_grad()
def resumed_knockout_dla(
    ablator: Ablator, components: Sequence[Component], scale: torch.Tensor, clean_dla: torch.Tensor, W_O: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`knockout_dla` from a pass resumed at the lowest knocked-out layer (the clean residual stream
    below it is cached): heads below that layer write what they write in the clean run, so their DLA is
    ``clean_dla`` ``[n_layers * n_heads]``; the others are read off the resumed pass's ``hook_z``.
    ``W_O`` ``[n_layers, n_heads, d_head, d_model]`` (read once by the caller). Same values, fewer layers run."""
    if not components:
        raise ParameterError("a resumed knockout needs at least one knocked-out component")
    model, ds, info = ablator.model, ablator.dataset, ablator.info
    layer = min(c.layer for c in components)
    store: dict[int, torch.Tensor] = {}

    def keeper(l: int):
        def keep(act, hook=None):  # noqa: ARG001 - TransformerLens signature
            store[l] = act[:, -1].detach()  # [batch, n_heads, d_head], after any ablation hook of this point
            return act

        return keep

    hooks = ablator.hooks(components) + [
        (component_hook_name(head(l, 0)), keeper(l)) for l in range(layer, info.n_layers)
    ]
    with model.hooks(fwd_hooks=hooks):
        logits, _ = ablator.logits_from_layer(layer, ablator.clean_residuals()[layer], [])
    parts = torch.cat(
        [torch.einsum("bhe,hed->bhd", store[l], W_O[l].to(store[l])) for l in range(layer, info.n_layers)], 1
    )  # [batch, heads at >= layer, d_model]
    frozen = scale.reshape(-1).to(parts.device, parts.dtype)[:, None, None]
    g = frozen_ln_final(model, torch.cat([parts, torch.zeros_like(parts[:, :1])], 1), frozen)
    a, i = ds.answer_ids.to(parts.device), ds.incorrect_ids.to(parts.device)
    direction = (model.W_U[:, a] - model.W_U[:, i]).T  # [batch, d_model]
    upper = ((g[:, :-1] - g[:, -1:]) * direction[:, None, :]).sum(-1).mean(0).float().cpu()
    dla = clean_dla.clone()
    dla[layer * info.n_heads :] = upper
    return ablator.metric_values(logits).float().cpu(), dla


def _repeat_batch(value, n: int, copies: int):
    """``value`` (a replayed block argument) with every tensor whose first dimension is the batch ``n``
    repeated ``copies`` times along it (tuples / lists element-wise; anything else as it is)."""
    if torch.is_tensor(value):
        return (
            value.repeat(copies, *([1] * (value.dim() - 1))) if value.dim() and value.shape[0] == n and n > 1 else value
        )
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat_batch(v, n, copies) for v in value)
    return value


@torch.no_grad()
def batched_knockout_dla(
    ablator: Ablator,
    sets: Sequence[Sequence[Component]],
    scale: torch.Tensor,
    clean_dla: torch.Tensor,
    W_O: torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`resumed_knockout_dla` of every head set in ``sets`` in one batched pass: the prompts repeated once
    per set, one ablation mask per copy, resumed at the lowest layer any set touches. Heads only; mean and
    zero ablation values broadcast, resample values are repeated. Returns one ``(logit diff [batch],
    head DLA [n_layers * n_heads])`` per set, equal to the sets' one-by-one values."""
    sets = [list(s) for s in sets]
    if not sets or any(not s or not all(c.is_head for c in s) for s in sets):
        raise ParameterError("batched knockouts take non-empty sets of heads")
    model, ds, info = ablator.model, ablator.dataset, ablator.info
    n, copies, seq = len(ds), len(sets), ablator.seq_len
    layer = min(c.layer for s in sets for c in s)
    if ablator._replay is None:
        ablator._replay = ablator._capture_replay()
    names = {l: component_hook_name(head(l, 0)) for l in range(layer, info.n_layers)}
    ablator.ensure_values(names.values())
    pos = torch.zeros(seq, dtype=torch.bool)
    pos[slice(None) if ablator.positions is None else ablator.positions] = True
    store: dict[int, torch.Tensor] = {}

    def hook_at(l: int):
        which = torch.zeros(copies, info.n_heads, dtype=torch.bool)
        for k, s in enumerate(sets):
            for c in s:
                if c.layer == l:
                    which[k, c.index] = True
        mask = (which[:, None, None, :] & pos[None, None, :, None]).expand(copies, n, seq, info.n_heads)
        mask = mask.reshape(copies * n, seq, info.n_heads)[..., None]
        value = ablator.values[names[l]]
        if value.dim() == 4:  # resample: one value per prompt
            value = value.repeat(copies, 1, 1, 1)

        def hook(act, hook=None):  # noqa: ARG001 - TransformerLens signature
            out = torch.where(mask.to(act.device), value.to(act.device, act.dtype), act) if which.any() else act
            store[l] = out[:, -1].detach()
            return out

        return hook

    x = ablator.clean_residuals()[layer].repeat(copies, 1, 1)
    with model.hooks(fwd_hooks=[(names[l], hook_at(l)) for l in range(layer, info.n_layers)]):
        for l in range(layer, info.n_layers):
            args = _repeat_batch(ablator._replay.args[l], n, copies)
            kwargs = {k: _repeat_batch(v, n, copies) for k, v in ablator._replay.kwargs[l].items()}
            out = model.blocks[l](x, *args, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        logits = model.unembed(model.ln_final(x[:, -1:, :]))[:, -1, :]
    ablator.forward_passes += copies
    parts = torch.cat(
        [torch.einsum("bhe,hed->bhd", store[l], W_O[l].to(store[l])) for l in range(layer, info.n_layers)], 1
    )  # [copies * batch, heads at >= layer, d_model]
    frozen = scale.reshape(-1).repeat(copies).to(parts.device, parts.dtype)[:, None, None]
    g = frozen_ln_final(model, torch.cat([parts, torch.zeros_like(parts[:, :1])], 1), frozen)
    a, i = ds.answer_ids.to(parts.device), ds.incorrect_ids.to(parts.device)
    direction = (model.W_U[:, a] - model.W_U[:, i]).T.repeat(copies, 1)  # [copies * batch, d_model]
    upper = ((g[:, :-1] - g[:, -1:]) * direction[:, None, :]).sum(-1).reshape(copies, n, -1).mean(1).float().cpu()
    out = []
    for k in range(copies):
        dla = clean_dla.clone()
        dla[layer * info.n_heads :] = upper[k]
        out.append((ablator.metric_values(logits[k * n : (k + 1) * n]).float().cpu(), dla))
    return out


@dataclass
class KnockoutNull:
    """The successor-head knockout and ``n_draws`` same-layer random knockouts on one dataset.

    ``drop``: the knockout's drop in points of the logit difference (``100 * (1 - ld_ko / ld_full)``) against the
    random knockouts' drops (:class:`NullDistribution`, statistic ``drop_points``). ``compensation_total`` /
    ``compensation_max``: the summed / the largest change of the other heads' DLA (frozen clean scale, nats)
    against the same random knockouts' (each draw's heads not knocked out). ``table``: per head ``component``,
    ``layer``, ``head``, ``dla_clean``, ``dla_knockout``, ``change``, ``knocked_out``, ``null_change_mean``,
    ``null_change_p95`` and ``change_p`` (one-sided, over the draws that keep that head).
    The knockout and every draw are resumed passes (:func:`resumed_knockout_dla`); the draws go
    ``draws_per_pass`` to one batched pass (:func:`batched_knockout_dla`).
    """

    drop: NullDistribution
    compensation_total: NullDistribution
    compensation_max: NullDistribution
    table: pd.DataFrame
    logit_diff_clean: float
    logit_diff_knockout: float
    #: 95 % cluster-bootstrap interval of the drop (points), resampling sequence identities.
    drop_ci95: tuple[float, float] = (float("nan"), float("nan"))
    ci_unit: str = CI_UNIT_SEQUENCE

    def interval_row(self) -> dict:
        """``{task, drop_points, ci95, ci_unit, n_clusters, n_prompts}`` (the record's ``knockout_intervals`` row)."""
        return {
            "task": self.drop.task,
            "drop_points": self.drop.observed,
            "ci95": list(self.drop_ci95),
            "ci_unit": self.ci_unit,
            "n_clusters": self.drop.n_clusters,
            "n_prompts": self.drop.n_prompts,
        }


def knockout_null(
    ablator: Ablator,
    heads: Sequence[Component],
    n_draws: int = N_DRAWS,
    seed: int = 0,
    progress: bool = True,
    draws_per_pass: int = 8,
) -> KnockoutNull:
    """The knockout of ``heads`` against ``n_draws`` random head sets with as many heads in the same layers,
    the heads themselves excluded (:func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`,
    ``exclude_own=True``), all scored on ``ablator``'s prompts with its values. One pass per draw gives both
    the drop and every head's DLA with the clean run's final-norm scale frozen (a knockout would otherwise
    rescale every head's DLA together). Cost: ``n_draws + 2`` passes plus one for the scale."""
    heads = sort_components(set(heads))
    if not heads or not all(h.is_head for h in heads):
        raise ParameterError("knock out one or more heads (MLPs and neurons are not matched here)")
    t0, p0 = time.perf_counter(), ablator.forward_passes
    draws = [sort_components(d) for d in matched_random_circuits(ablator.info, heads, n_draws, seed, exclude_own=True)]
    model, ds = ablator.model, ablator.dataset
    scale = final_norm_scale(model, ds.tokens, batch_size=len(ds))
    ld_clean, dla_clean = knockout_dla(ablator, [], scale)
    W_O = model.W_O  # read once (the bridge rebuilds it per access)
    ld_ko, dla_ko = resumed_knockout_dla(ablator, heads, scale, dla_clean, W_O)
    names = [str(h) for h in ModelInfo.heads.fget(ablator.info)]
    null_ld, null_change = [], []
    if draws_per_pass < 1:
        raise ParameterError(f"draws_per_pass must be >= 1, got {draws_per_pass}")
    chunks = [draws[k : k + draws_per_pass] for k in range(0, len(draws), draws_per_pass)]
    for chunk in tqdm(chunks, desc=f"{n_draws} same-layer random knockouts", disable=not progress, leave=False):
        for d, (ld, dla) in zip(chunk, batched_knockout_dla(ablator, chunk, scale, dla_clean, W_O)):
            null_ld.append(float(ld.mean()))
            change = dla - dla_clean
            change[[names.index(str(h)) for h in d]] = float("nan")
            null_change.append(change)
    full = float(ld_clean.mean())

    def drop(ld: float) -> float:
        return 100.0 * (1.0 - ld / full)

    change = dla_ko - dla_clean
    own = torch.tensor([n in {str(h) for h in heads} for n in names])
    others = change.masked_fill(own, float("nan"))
    nulls = torch.stack(null_change) if null_change else torch.zeros(0, len(names))
    common = dict(
        matched=matching_description(heads, exclude_own=True),
        seed=seed,
        circuit=[str(h) for h in heads],
        task=ds.spec.task,
        metric=ablator.metric,
        ablation=ablator.mode.value,
        n_prompts=len(ds),
        n_clusters=n_clusters(ds.sequence_ids),
    )
    seconds = time.perf_counter() - t0

    def record(statistic: str, observed: float, null: list[float], description: str) -> NullDistribution:
        return NullDistribution(
            statistic=statistic,
            observed=observed,
            **null_summary(observed, null),
            null=null,
            forward_passes=ablator.forward_passes - p0,
            seconds=seconds,
            description=description,
            **common,
        )

    drops = [drop(v) for v in null_ld]
    total = [float(torch.nansum(c)) for c in nulls]
    biggest = [float(c[~c.isnan()].max()) for c in nulls]
    table = pd.DataFrame(
        {
            "component": names,
            "layer": [parse_component(n).layer for n in names],
            "head": [parse_component(n).index for n in names],
            "dla_clean": dla_clean.tolist(),
            "dla_knockout": dla_ko.tolist(),
            "change": change.tolist(),
            "knocked_out": own.tolist(),
        }
    )
    valid = ~nulls.isnan()
    counts = valid.sum(0).clamp(min=1)
    filled = nulls.nan_to_num(0.0)
    table["null_change_mean"] = (filled.sum(0) / counts).tolist() if len(nulls) else float("nan")
    table["null_change_p95"] = [
        float(torch.quantile(nulls[valid[:, i], i], 0.95)) if valid[:, i].any() else float("nan")
        for i in range(len(names))
    ]
    table["change_p"] = [
        float((1 + (nulls[valid[:, i], i] >= change[i]).sum()) / (1 + valid[:, i].sum())) for i in range(len(names))
    ]
    return KnockoutNull(
        drop=record(
            "drop_points",
            drop(float(ld_ko.mean())),
            drops,
            "points of the logit difference lost when the heads are knocked out, against random heads of the "
            "same layers",
        ),
        compensation_total=record(
            "dla_change_total",
            float(torch.nansum(others)),
            total,
            "summed change of the other heads' direct logit attribution (nats, clean final-norm scale frozen)",
        ),
        compensation_max=record(
            "dla_rise_max",
            float(others[~others.isnan()].max()),
            biggest,
            "largest rise of one other head's direct logit attribution (nats, clean final-norm scale frozen)",
        ),
        table=table,
        logit_diff_clean=full,
        logit_diff_knockout=float(ld_ko.mean()),
        drop_ci95=tuple(
            100.0 * v for v in cluster_bootstrap_ratio_ci(ld_ko, ld_clean, ds.sequence_ids, seed=seed, complement=True)
        ),
    )


# --------------------------------------------------------------------------- backups


@dataclass(frozen=True)
class KnockoutInfo(ModelInfo):
    """A :class:`ModelInfo` whose ``components`` and ``heads`` leave out ``knocked_out`` (they still
    exist: :meth:`check` accepts them)."""

    knocked_out: frozenset[Component] = frozenset()

    @classmethod
    def of(cls, info: ModelInfo, knocked_out: Iterable[Component]) -> KnockoutInfo:
        base = {f: getattr(info, f) for f in ModelInfo.__dataclass_fields__}
        return cls(**base, knocked_out=frozenset(knocked_out))

    @property
    def heads(self) -> list[Component]:
        return [c for c in super().heads if c not in self.knocked_out]

    @property
    def components(self) -> list[Component]:
        return [c for c in super().components if c not in self.knocked_out]


class KnockoutAblator(Ablator):
    """An :class:`Ablator` of the model with ``knocked_out`` ablated throughout (see the module docstring).

    ``full_logits`` / ``full_metric`` are the knocked-out model's (so ``score`` is a fraction of what
    the damaged model still does); the intact model's are kept as ``intact_logits`` /
    ``intact_metric``. Ablations are at every position.
    """

    def __init__(
        self,
        model,
        info: ModelInfo,
        dataset: TaskDataset,
        knocked_out: Iterable[Component],
        mode: AblationMode | str = AblationMode.MEAN,
        metric: str = "logit_diff",
    ) -> None:
        knocked_out = sort_components(set(knocked_out))
        if not knocked_out:
            raise ParameterError("knock out at least one component (an empty knockout is the plain Ablator)")
        for c in knocked_out:
            info.check(c)
        self.knocked_out = knocked_out
        super().__init__(model, KnockoutInfo.of(info, knocked_out), dataset, mode, metric)
        self.ensure_values(component_hook_name(c) for c in knocked_out)
        self.intact_logits, self.intact_metric = self.full_logits, self.full_metric
        self.full_logits = self._run([])
        self.full_metric = self.metric_value(self.full_logits)

    def hooks(self, ablated: Iterable[Component]):
        return super().hooks(list(dict.fromkeys([*ablated, *self.knocked_out])))


def circuit_of(
    ablator: Ablator, threshold: float, rounds: int = 1, minimal: bool = False, max_refine_passes: int | None = None
) -> PruningResult:
    """A fast circuit (:func:`~seqcirc_utils.discovery.pruning.fast_prune`) of the ablator's model at ``threshold``."""
    return fast_prune(
        ablator, [threshold], rounds=rounds, progress=False, minimal=minimal, max_refine_passes=max_refine_passes
    )[0]


def backup_table(
    main: Iterable[Component], knocked: Iterable[Component], knocked_out: Iterable[Component]
) -> pd.DataFrame:
    """Membership of every component of either circuit: ``component``, ``kind``, ``layer``,
    ``status`` (``kept`` in both, ``joins`` only after the knockout, ``leaves`` only before, and
    ``knocked out``)."""
    main, knocked, out = set(main), set(knocked), set(knocked_out)
    rows = []
    for c in sort_components(main | knocked | out):
        status = (
            "knocked out"
            if c in out
            else "kept"
            if c in main and c in knocked
            else "joins"
            if c in knocked
            else "leaves"
        )
        rows.append({"component": str(c), "kind": c.kind, "layer": c.layer, "status": status})
    return pd.DataFrame(rows)


def compensation(
    model,
    dataset: TaskDataset,
    ablator: Ablator,
    knocked_out: Sequence[Component],
    batch_size: int = 64,
    frozen_scale: bool = True,
) -> pd.DataFrame:
    """Each head's mean direct logit attribution (nats) on ``dataset`` before and after the knockout.

    The knockout uses ``ablator``'s values (mean/zero/resample of the same dataset). With ``frozen_scale``
    (default) both runs read the heads through the final norm with the *clean* run's scale
    (:func:`~seqcirc_utils.mechanisms.logit_lens.final_norm_scale`), so a change is the head's own output
    changing, not the knockout rescaling every head together; ``False`` uses each run's own scale.
    Returns one row per head: ``component``, ``layer``, ``head``, ``dla_clean``, ``dla_knockout``, ``change``
    (``knockout - clean``; positive = the head pushes the answer more once the heads are gone) and
    ``knocked_out``; plus the model's mean logit difference under each as ``attrs`` (and ``frozen_scale``).
    """
    scale = final_norm_scale(model, dataset.tokens, batch_size=batch_size) if frozen_scale else None
    clean = dataset_dla(model, dataset, batch_size=batch_size, progress=False, scale=scale)
    ko = dataset_dla(
        model,
        dataset,
        batch_size=max(batch_size, len(dataset)),
        progress=False,
        scale=scale,
        fwd_hooks=ablator.hooks(knocked_out),
    )
    a, b = clean.to_dataframe(), ko.to_dataframe()
    df = a[a["kind"] == "head"][["component", "layer", "mean"]].rename(columns={"mean": "dla_clean"})
    df["dla_knockout"] = b.set_index("component").loc[df["component"], "mean"].to_numpy()
    df["change"] = df["dla_knockout"] - df["dla_clean"]
    df.insert(2, "head", [parse_component(c).index for c in df["component"]])
    df["knocked_out"] = df["component"].isin({str(c) for c in knocked_out})
    df = df.reset_index(drop=True)
    df.attrs = {
        "logit_diff_clean": float(clean.logit_diff.mean()),
        "logit_diff_knockout": float(ko.logit_diff.mean()),
        "frozen_scale": frozen_scale,
    }
    return df


def negative_heads(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    estimated: pd.Series,
    n_check: int = 6,
    dla: pd.DataFrame | None = None,
    mode: AblationMode | str = "mean",
) -> pd.DataFrame:
    """Heads whose exact single ablation *raises* the metric (``drop_points < 0``), most negative first.

    ``estimated``: every head's estimated single-ablation drop in points, indexed by name
    (:func:`~seqcirc_utils.scoring.importance.estimated_drops`). The ``n_check`` heads with the most negative
    estimates are ablated alone exactly (:func:`~seqcirc_utils.scoring.ablation.single_component_effects`,
    the dataset's default metric); those whose exact drop is negative are returned with ``component``,
    ``layer``, ``head``, ``drop_points``, ``estimated_drop`` and, given ``dla`` (a per-head table with
    ``component`` and ``dla_clean``, e.g. :func:`compensation`), their direct logit attribution.
    The table's ``attrs["checked"]`` lists the heads checked.
    """
    est = estimated[estimated < 0].sort_values(kind="stable")
    checked = [parse_component(c) for c in est.index[:n_check]]
    cols = ["component", "layer", "head", "drop_points", "estimated_drop"]
    if checked:
        exact = single_component_effects(model, info, dataset, checked, mode=mode, metric=None, progress=False)
        neg = exact[exact["drop_points"] < 0].sort_values("drop_points").rename(columns={"index": "head"})
        neg = neg.assign(estimated_drop=[float(estimated[c]) for c in neg["component"]])[cols].reset_index(drop=True)
    else:
        neg = pd.DataFrame(columns=cols)
    if dla is not None:
        neg = neg.merge(dla[["component", "dla_clean"]], on="component", how="left")
    neg.attrs = {"checked": [str(c) for c in checked]}
    return neg


# --------------------------------------------------------------------------- per position


def position_ablation_logits(
    ablator: Ablator, components: Sequence[Component], positions: Sequence[int]
) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` with ``components`` ablated (the ablator's values) at
    query ``positions`` only, resumed from the lowest layer's cached clean residual stream."""
    components = list(components)
    if not components:
        return ablator.full_logits
    positions = list(positions)
    bad = [p for p in positions if not -ablator.seq_len <= p < ablator.seq_len]
    if bad:
        raise ParameterError(f"positions {bad} outside the prompts' 0..{ablator.seq_len - 1}")
    ablator.ensure_values(component_hook_name(c) for c in components)
    layer = min(c.layer for c in components)
    hooks = ablation_hooks(ablator.info, components, ablator.values, ablator.seq_len, positions)
    with ablator.model.hooks(fwd_hooks=hooks):
        logits, _ = ablator.logits_from_layer(layer, ablator.clean_residuals()[layer], [])
    return logits


def position_drops(
    ablator: Ablator, heads: Sequence[Component], positions: Sequence[int] | None = None, progress: bool = True
) -> pd.DataFrame:
    """Each head ablated at one position at a time: one row per (head, position) with ``component``,
    ``position``, ``metric``, ``fraction`` (of the ablator's full metric) and ``drop_points``.
    One partial pass per cell (``positions`` default: every position)."""
    positions = list(range(ablator.seq_len)) if positions is None else list(positions)
    rows = []
    cells = [(h, p) for h in heads for p in positions]
    for h, p in tqdm(cells, desc="per-position ablation", disable=not progress, leave=False):
        value = ablator.metric_value(position_ablation_logits(ablator, [h], [p]))
        frac = ablator.fraction_of_full(value)
        rows.append(
            {"component": str(h), "position": p, "metric": value, "fraction": frac, "drop_points": 100 * (1 - frac)}
        )
    return pd.DataFrame(rows)


def position_labels(tokenizer, dataset: TaskDataset) -> list[str]:
    """A label per position: ``"<p> m<k>"`` for the k-th member, ``"<p> final"`` for the prediction
    position, otherwise ``"<p> <token>"`` when every prompt has the same token there, else ``"<p> ·"``."""
    first = dataset.prompts[0]
    member_at = {pos: k for k, pos in enumerate(first.member_positions)}
    tokens = dataset.tokens
    labels = []
    for p in range(dataset.seq_len):
        if p == first.final_position:
            name = "final"
        elif p in member_at:
            name = f"m{member_at[p]}"
        elif bool((tokens[:, p] == tokens[0, p]).all()):
            name = repr(tokenizer.decode([int(tokens[0, p])]))[1:-1] or "''"
        else:
            name = "·"
        labels.append(f"{p} {name}")
    return labels
