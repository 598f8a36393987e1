"""Editing a circuit's function with activations: next -> prev by mean replacement, and format steering.

**Function edit** (:func:`function_edit`). On *target* prompts (e.g. increasing digits) the chosen
heads' outputs (``hook_z``, one query head's slice, at every position) are replaced by their mean
over *source* prompts (e.g. decreasing digits) **matched by member**: for each target prompt one
source prompt with the same set of member values (:func:`member_key`, :func:`match_prompts`), so the
replacement mean has the target's member distribution. Target and source prompts must share one
token length (the same template). The edit succeeds on a prompt when its top-1 becomes the member
``shift`` away from the last one shown (``n-1`` for next -> prev, ``n+1`` for prev -> next; see
:func:`seqcirc_utils.mechanisms.knockout.member_offsets`). Two baselines: the **ablation-only control**
(the same heads replaced by their mean over member-matched prompts of the target's *own* direction: what
removing the heads' prompt-specific output does, with no other-direction information), whose hit rate the
edit's is reported above (paired per prompt, cluster-bootstrap interval over sequences); and ``n_draws``
random head sets of the same layers (:func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`)
edited with the same source means (:func:`replaced_predictions`: identical sets once, shared lower blocks).
How often a hit (or any top-1) is a token already in the prompt: :func:`in_prompt_flags`.

**Format steering** (:func:`format_direction`, :func:`steered_logits`, :func:`steering_test`,
:func:`dose_response`). At the residual stream after block ``layer`` (``blocks.<layer>.hook_resid_post``),
final position: ``direction = mean_k [mean resid(to-format prompts with key k) - mean resid(from-format
prompts with key k)]`` over the member keys ``k`` both formats have (matched by member: digits ``3 4 5 6``
against number words ``three four five six``), fitted on the selection prompts. Then ``alpha * direction``
is added there on the (sequence-disjoint) evaluation prompts, ``alpha`` fixed in advance, and we count how
often the top-1 becomes the answer in the to-format (``"7"`` -> ``" seven"``, ``" July"``). Baselines of
the same norm: difference of means of two random halves of the prompts, each format split evenly between
them (:func:`random_halves_directions`), an unrelated difference of means (any other pair of prompt sets), and
isotropic Gaussian directions (:func:`random_directions`); a curve over ``alpha`` is descriptive only.

All passes resume from a cached clean residual stream (:meth:`Ablator.logits_from_layer`); with
``alpha = 0`` or no heads the logits are the clean run's.

Units: residual-stream vectors in the model's units; ``alpha`` multiplies the direction (1 = the
full mean difference); fractions of prompts in [0, 1].
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError, TokenizationError, TooFewPromptsError
from seqcirc_utils.core.records import NullDistribution
from seqcirc_utils.core.stats import CI_UNIT_SEQUENCE, N_RESAMPLES, cluster_bootstrap_mean_ci, n_clusters
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.evaluation.nulls import N_DRAWS, matched_random_circuits, matching_description, null_summary
from seqcirc_utils.mechanisms.knockout import categorise, category_shares, member_offsets
from seqcirc_utils.mechanisms.ov_scores import family_tokens
from seqcirc_utils.mechanisms.representations import VALUE_OFFSETS, member_value
from seqcirc_utils.models.loading import ModelInfo, model_device
from seqcirc_utils.scoring.ablation import Ablator, ablation_hooks, component_hook_name
from seqcirc_utils.tasks.datasets import FAMILIES, TaskDataset

# --------------------------------------------------------------------------- matching prompts by member


def member_key(dataset: TaskDataset, index: int) -> tuple[int, ...]:
    """The sorted member values of prompt ``index`` (``3 4 5 6`` and ``six five four three`` -> ``(3, 4, 5, 6)``)."""
    return tuple(sorted(member_value(dataset.task, m) for m in dataset.prompts[index].members))


def match_prompts(target: TaskDataset, source: TaskDataset, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pair every target prompt with a source prompt of the same :func:`member_key`.

    Returns ``(target_indices, source_indices)`` of equal length: target prompts without a match are
    left out; a source prompt may serve several targets (its key's prompts are cycled in a seeded
    random order).
    """
    by_key: dict[tuple[int, ...], list[int]] = {}
    for j in range(len(source)):
        by_key.setdefault(member_key(source, j), []).append(j)
    rng = random.Random(seed)
    for js in by_key.values():
        rng.shuffle(js)
    used: dict[tuple[int, ...], int] = {}
    t_idx, s_idx = [], []
    for i in range(len(target)):
        k = member_key(target, i)
        if k in by_key:
            n = used.get(k, 0)
            t_idx.append(i)
            s_idx.append(by_key[k][n % len(by_key[k])])
            used[k] = n + 1
    return t_idx, s_idx


@torch.no_grad()
def mean_activations(
    model, tokens: torch.Tensor, hook_names: Sequence[str], batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Per-position mean over the prompts ``tokens`` ``[batch, pos]`` of each hook's activation
    (``{name: [pos, ...]}``, e.g. ``hook_z`` -> ``[pos, n_heads, d_head]``)."""
    names = set(hook_names)
    sums: dict[str, torch.Tensor] = {}
    tokens = torch.as_tensor(tokens).to(model_device(model))
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size], names_filter=lambda n: n in names)
        for n in names:
            s = cache[n].sum(0)
            sums[n] = s if n not in sums else sums[n] + s
    return {n: s / tokens.shape[0] for n, s in sums.items()}


# --------------------------------------------------------------------------- next -> prev


def replaced_logits(ablator: Ablator, heads: Sequence[Component], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` of the ablator's prompts with ``heads``' ``hook_z``
    replaced by ``values`` (``{hook name: [pos, n_heads, d_head]}``) at every position; resumed from the
    lowest head's layer. No heads: the clean logits."""
    heads = list(heads)
    if not heads:
        return ablator.full_logits
    for h in heads:
        if not h.is_head:
            raise ParameterError(f"{h} is not an attention head; the function edit replaces head outputs")
    hooks = ablation_hooks(ablator.info, heads, values, ablator.seq_len)
    layer = min(h.layer for h in heads)
    with ablator.model.hooks(fwd_hooks=hooks):
        logits, _ = ablator.logits_from_layer(layer, ablator.clean_residuals()[layer], [])
    return logits


def random_heads_same_layers(
    info: ModelInfo, heads: Sequence[Component], n_samples: int = 3, seed: int = 0
) -> list[list[Component]]:
    """``n_samples`` random head sets matched to ``heads`` layer by layer: as many heads of each layer
    as ``heads`` has there, none of ``heads`` (:func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`
    with ``exclude_own=True``, seeded)."""
    heads = [h for h in set(heads) if h.is_head]
    if n_samples < 1:
        return []
    return [sort_components(d) for d in matched_random_circuits(info, heads, n_samples, seed, exclude_own=True)]


def replaced_predictions(
    ablator: Ablator, head_sets: Sequence[Iterable[Component]], values: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Top-1 token ids ``[batch]`` (CPU) of the ablator's prompts with each head set's ``hook_z`` replaced by
    ``values`` at every position, in ``head_sets`` order (each equals ``replaced_logits(...).argmax(-1)``).

    Shared work: identical sets are computed once, and sets that replace the same heads below a layer share
    the blocks up to it (the pass branches at each layer where the sets differ: a same-layer null of two heads
    in layers ``a < b`` runs blocks ``a .. b-1`` once per distinct head of layer ``a``)."""
    sets = [frozenset(s) for s in head_sets]
    for s in sets:
        for h in s:
            if not h.is_head:
                raise ParameterError(f"{h} is not an attention head; the function edit replaces head outputs")
    unique = list(dict.fromkeys(sets))
    out: dict[frozenset, torch.Tensor] = {}
    if frozenset() in unique:
        out[frozenset()] = ablator.full_logits.argmax(-1).cpu()
    todo = [s for s in unique if s]
    if todo:
        start = min(h.layer for s in todo for h in s)
        _branch(ablator, todo, values, start, ablator.clean_residuals()[start], out)
    return [out[s] for s in sets]


def _branch(
    ablator: Ablator,
    sets: list[frozenset],
    values: dict[str, torch.Tensor],
    start: int,
    resid: torch.Tensor,
    out: dict[frozenset, torch.Tensor],
) -> None:
    """Run ``sets`` (their heads below ``start`` already replaced in ``resid``, block ``start``'s input) to the end."""
    pending = sorted({h.layer for s in sets for h in s if h.layer >= start})
    n_layers = ablator.info.n_layers
    if not pending:
        pred = ablator.unembed_final(ablator.run_blocks(start, n_layers, resid)).argmax(-1).cpu()
        for s in sets:
            out[s] = pred
        return
    layer = pending[0]
    x = ablator.run_blocks(start, layer, resid)
    groups: dict[frozenset, list[frozenset]] = {}
    for s in sets:
        groups.setdefault(frozenset(h for h in s if h.layer == layer), []).append(s)
    for here, members in groups.items():
        hooks = ablation_hooks(ablator.info, sorted(here), values, ablator.seq_len) if here else []
        with ablator.model.hooks(fwd_hooks=hooks):
            y = ablator.run_blocks(layer, layer + 1, x)
        _branch(ablator, members, values, layer + 1, y, out)


def in_prompt_flags(tokenizer, dataset: TaskDataset, token_ids: torch.Tensor | Sequence[int]) -> list[bool]:
    """Per prompt, whether the predicted token is already in the prompt: its text (decoded, spaces stripped)
    equals the text of one of the prompt's tokens (``" 5"`` and ``"5"`` count as the same; the prefix token
    and tokens that are only spaces are not counted)."""
    skip = len(dataset.prefix_info.ids)
    out = []
    for p, t in zip(dataset.prompts, torch.as_tensor(token_ids).tolist()):
        shown = {tokenizer.decode([int(x)]).strip() for x in p.tokens[skip:]} - {""}
        out.append(tokenizer.decode([int(t)]).strip() in shown)
    return out


@dataclass
class FunctionEdit:
    """The edit of one task's target prompts against its ablation-only control and a same-layer random null.

    ``table``: one row per condition (``edit`` = ``none``, ``successor heads`` (the edit: replaced by the mean
    over member-matched prompts of the other direction), ``ablation control`` (replaced by the mean over
    member-matched prompts of the *same* direction: what mean-ablating the heads does, with no other-direction
    information), ``random heads <k>`` (the first draws of the null, edited like the heads)) with ``heads``,
    ``hit`` and its cluster-bootstrap ``hit_ci95``, ``correct``, ``in_family``, ``in_prompt`` (top-1 is a token
    already in the prompt), ``hit_in_prompt`` (share of the hits whose token is in the prompt; NaN without
    hits) and the category shares. ``effect``: the hit rate above the control, per-prompt paired, with its
    cluster-bootstrap interval over sequences (the record's ``edit_effects`` row). ``null``: the edit's hit rate
    against ``n_draws`` random head sets of the same layers edited the same way (statistic ``hit``)."""

    table: pd.DataFrame
    effect: dict
    null: NullDistribution
    n_matched: int
    n_target: int
    categories: dict[str, list[str]] = field(repr=False)


def matched_targets(
    target: TaskDataset, sources: Sequence[TaskDataset], seed: int = 0
) -> tuple[list[int], list[list[int]]]:
    """Target prompts with a member-matched prompt in *every* source (:func:`match_prompts` per source):
    ``(target_indices, [source_indices per source])``, aligned."""
    pairs = [dict(zip(*match_prompts(target, s, seed))) for s in sources]
    t_idx = [i for i in range(len(target)) if all(i in p for p in pairs)]
    return t_idx, [[p[i] for i in t_idx] for p in pairs]


def function_edit(
    ablator: Ablator,
    source: TaskDataset,
    control: TaskDataset,
    heads: Sequence[Component],
    shift: int,
    n_draws: int = N_DRAWS,
    n_show: int = 2,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> FunctionEdit:
    """Replace ``heads``' outputs on the ablator's (target) prompts by their mean over member-matched ``source``
    prompts (the other direction); how often the top-1 becomes the member ``shift`` from the last one shown,
    against the same heads replaced by their mean over member-matched ``control`` prompts (the target's own
    direction: the ablation-only control) and against ``n_draws`` same-layer random head sets
    (:func:`~seqcirc_utils.evaluation.nulls.matched_random_circuits`, ``exclude_own=True``) edited with the same
    source means (see :class:`FunctionEdit`). Only target prompts matched in both source and control count; the
    ablator's dataset must be the target prompts (e.g. filtered to correct answers). Intervals: cluster bootstrap
    over the matched prompts' sequences (``n_resamples``, ``seed``). Cost: 2 resumed passes plus the distinct random
    sets' (:func:`replaced_predictions` shares their lower blocks)."""
    target = ablator.dataset
    for other in (source, control):
        if other.seq_len != target.seq_len:
            raise ParameterError(
                f"source/control prompts have {other.seq_len} tokens and target prompts {target.seq_len}; "
                "use the same template (one token length)"
            )
    heads = sort_components(set(heads))
    t_idx, (s_idx, c_idx) = matched_targets(target, [source, control], seed)
    if not t_idx:
        raise TooFewPromptsError(
            f"no {source.spec.direction} and {control.spec.direction} {source.task} prompts share their members "
            "with a target prompt"
        )
    t0, p0 = time.perf_counter(), ablator.forward_passes
    draws = [sort_components(d) for d in matched_random_circuits(ablator.info, heads, n_draws, seed, exclude_own=True)]
    names = sorted({component_hook_name(h) for h in [*heads, *(h for d in draws for h in d)]})
    edit_values = mean_activations(ablator.model, source.tokens[s_idx], names)
    control_values = mean_activations(ablator.model, control.tokens[c_idx], names)
    tok = ablator.model.tokenizer
    sub = target.subset(t_idx)
    clusters = sub.sequence_ids
    edited = replaced_predictions(ablator, [[], heads, *draws], edit_values)
    preds = {"none": edited[0], "successor heads": edited[1]}
    preds["ablation control"] = replaced_predictions(ablator, [heads], control_values)[0]
    for k in range(min(n_show, len(draws))):
        preds[f"random heads {k}"] = edited[2 + k]
    labels = {"none": [], "successor heads": heads, "ablation control": heads}
    labels |= {f"random heads {k}": draws[k] for k in range(min(n_show, len(draws)))}

    def hits_of(pred: torch.Tensor) -> torch.Tensor:
        return torch.tensor([o == shift for o in member_offsets(tok, sub, pred[t_idx])], dtype=torch.float64)

    rows, cats, hits = [], {}, {}
    for name, pred in preds.items():
        p = pred[t_idx]
        offsets = member_offsets(tok, sub, p)
        hit = hits_of(pred)
        inside = torch.tensor(in_prompt_flags(tok, sub, p), dtype=torch.float64)
        hits[name] = hit
        cats[name] = categorise(tok, sub, p)
        rows.append(
            {
                "edit": name,
                "heads": " ".join(map(str, labels[name])) or "-",
                "hit": float(hit.mean()),
                "hit_ci95": list(cluster_bootstrap_mean_ci(hit, clusters, n_resamples, seed)),
                "correct": float((p == sub.answer_ids).double().mean()),
                "in_family": sum(o is not None for o in offsets) / len(t_idx),
                "in_prompt": float(inside.mean()),
                "hit_in_prompt": float((hit * inside).sum() / hit.sum()) if hit.sum() > 0 else float("nan"),
                **category_shares(cats[name]),
            }
        )
    diff = hits["successor heads"] - hits["ablation control"]
    effect = {
        "hit": float(hits["successor heads"].mean()),
        "control_hit": float(hits["ablation control"].mean()),
        "effect": float(diff.mean()),
        "effect_ci95": list(cluster_bootstrap_mean_ci(diff, clusters, n_resamples, seed)),
        "ci_unit": CI_UNIT_SEQUENCE,
        "n_clusters": n_clusters(clusters),
        "n_matched": len(t_idx),
        "hit_in_prompt": None if math.isnan(rows[1]["hit_in_prompt"]) else rows[1]["hit_in_prompt"],
    }
    observed = float(hits["successor heads"].mean())
    null = [float(hits_of(p).mean()) for p in edited[2:]]
    record = NullDistribution(
        statistic="hit",
        observed=observed,
        **null_summary(observed, null),
        matched=matching_description(heads, exclude_own=True),
        seed=seed,
        null=null,
        circuit=[str(h) for h in heads],
        task=target.task,
        metric=f"top-1 is the member at offset {shift:+d} from the last one shown",
        ablation=f"mean over member-matched {source.spec.direction} prompts",
        n_prompts=len(t_idx),
        n_clusters=n_clusters(clusters),
        forward_passes=ablator.forward_passes - p0,
        seconds=time.perf_counter() - t0,
        description=f"{target.task}: the edit's hit rate against same-layer random head sets edited the same way",
    )
    return FunctionEdit(pd.DataFrame(rows), effect, record, len(t_idx), len(target), cats)


# --------------------------------------------------------------------------- format steering


@torch.no_grad()
def final_residuals(model, dataset: TaskDataset, layer: int, batch_size: int = 64) -> torch.Tensor:
    """``blocks.<layer>.hook_resid_post`` at the final position, ``[batch, d_model]`` (float32, CPU)."""
    name = get_act_name("resid_post", layer)
    out = []
    tokens = dataset.tokens.to(model_device(model))
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size], names_filter=lambda n: n == name)
        out.append(cache[name][:, -1].float().cpu())
    return torch.cat(out)


def keyed_mean_difference(
    to_resid: torch.Tensor, to_keys: Sequence, from_resid: torch.Tensor, from_keys: Sequence
) -> tuple[torch.Tensor, list]:
    """``mean_k [mean(to_resid rows with key k) - mean(from_resid rows with key k)]`` over the keys in
    both (``[d_model]``), and those keys (sorted)."""
    common = sorted(set(to_keys) & set(from_keys))
    if not common:
        raise TooFewPromptsError("no member key is present in both prompt sets; nothing to match")
    diffs = []
    for k in common:
        a = to_resid[[i for i, x in enumerate(to_keys) if x == k]].mean(0)
        b = from_resid[[i for i, x in enumerate(from_keys) if x == k]].mean(0)
        diffs.append(a - b)
    return torch.stack(diffs).mean(0), common


def format_direction(model, layer: int, from_ds: TaskDataset, to_ds: TaskDataset) -> tuple[torch.Tensor, list]:
    """The member-matched mean difference ``to - from`` of the final-position residual after block
    ``layer`` (see the module docstring): ``([d_model], matched keys)``."""
    return keyed_mean_difference(
        final_residuals(model, to_ds, layer),
        [member_key(to_ds, i) for i in range(len(to_ds))],
        final_residuals(model, from_ds, layer),
        [member_key(from_ds, i) for i in range(len(from_ds))],
    )


def steered_logits(
    ablator: Ablator, layer: int, direction: torch.Tensor, alpha: float, position: int = -1
) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` of the ablator's prompts with ``alpha * direction``
    added to ``blocks.<layer>.hook_resid_post`` at ``position``: block ``layer``'s clean output (the next block's
    cached input) is steered and the pass resumed from block ``layer + 1`` (one partial pass)."""
    n_layers = ablator.info.n_layers
    if not 0 <= layer < n_layers:
        raise ParameterError(f"layer {layer} outside 0..{n_layers - 1}")
    if alpha == 0:
        return ablator.full_logits
    with torch.no_grad():
        if layer + 1 < n_layers:
            resid = ablator.clean_residuals()[layer + 1].clone()
        else:  # the last block: its clean output, then the final norm and unembedding
            resid = ablator.run_blocks(layer, n_layers, ablator.clean_residuals()[layer])
        resid[:, position] += alpha * direction.to(resid.device, resid.dtype)
    if layer + 1 < n_layers:
        return ablator.logits_from_layer(layer + 1, resid, [])[0]
    return ablator.unembed_final(resid)


def random_directions(direction: torch.Tensor, n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` seeded Gaussian directions rescaled to ``direction``'s norm."""
    g = torch.Generator().manual_seed(seed)
    norm = direction.float().norm()
    out = []
    for _ in range(n):
        r = torch.randn(direction.shape, generator=g)
        out.append((r / r.norm() * norm).to(direction.dtype))
    return out


def format_targets(tokenizer, dataset: TaskDataset, to_family: str) -> list[frozenset[int] | None]:
    """Per prompt, the token ids that spell its answer's value in ``to_family`` (``"7"`` -> ``" seven"``
    / ``"seven"``), or ``None`` when that member does not exist or is not a single token."""
    fam = family_tokens(tokenizer, to_family)
    out: list[frozenset[int] | None] = []
    for p in dataset.prompts:
        idx = member_value(dataset.task, p.answer) - VALUE_OFFSETS[to_family]
        row = fam.position_of(idx) if 0 <= idx < len(FAMILIES[to_family]) else None
        out.append(None if row is None else fam.surface_ids[row])
    return out


def rescaled(direction: torch.Tensor, norm: float) -> torch.Tensor:
    """``direction`` rescaled to ``norm`` (float32)."""
    d = direction.float()
    return d / d.norm() * norm


def random_halves_directions(groups: Sequence[torch.Tensor], n: int, norm: float, seed: int = 0) -> list[torch.Tensor]:
    """``n`` differences of means of two random halves of the prompts, each rescaled to ``norm``: directions with
    the residual stream's structure but no label. Each group (rows ``[prompts, d_model]``, e.g. the to-format and
    the from-format prompts) is shuffled and cut in half (the first ``len // 2`` rows to half A, the rest to B), so
    both halves hold the groups in equal shares and the difference carries no group difference (seeded)."""
    if not groups or any(len(g) < 2 for g in groups):
        raise TooFewPromptsError("random halves need at least two prompts in every group")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a, b = [], []
        for g in groups:
            perm = torch.randperm(len(g), generator=gen)
            a.append(g[perm[: len(g) // 2]].float())
            b.append(g[perm[len(g) // 2 :]].float())
        out.append(rescaled(torch.cat(a).mean(0) - torch.cat(b).mean(0), norm))
    return out


def _outcomes(
    ablator: Ablator, layer: int, direction: torch.Tensor, alpha: float, targets: list, keep: list[int], family_ids: set
) -> dict[str, torch.Tensor]:
    """Per kept prompt ``hit`` / ``correct`` / ``to_family_any`` (float64 0/1) with ``alpha * direction`` added."""
    pred = steered_logits(ablator, layer, direction, float(alpha)).argmax(-1).cpu().tolist()
    answers = ablator.dataset.answer_ids
    return {
        "hit": torch.tensor([float(pred[i] in targets[i]) for i in keep], dtype=torch.float64),
        "correct": torch.tensor([float(pred[i] == int(answers[i])) for i in keep], dtype=torch.float64),
        "to_family_any": torch.tensor([float(pred[i] in family_ids) for i in keep], dtype=torch.float64),
    }


def _steering_setup(ablator: Ablator, to_family: str) -> tuple[list, list[int], set]:
    tok = ablator.model.tokenizer
    targets = format_targets(tok, ablator.dataset, to_family)
    keep = [i for i, t in enumerate(targets) if t is not None]
    if not keep:
        raise TokenizationError(f"no prompt's answer has a single-token {to_family} member")
    return targets, keep, set().union(*family_tokens(tok, to_family).surface_ids)


def dose_response(
    ablator: Ablator,
    layer: int,
    direction: torch.Tensor,
    alphas: Sequence[float],
    to_family: str,
    n_random: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """For each ``alpha``: the fraction of the ablator's prompts whose top-1 becomes the answer in
    ``to_family`` (``hit``), stays the answer (``correct``), or is any ``to_family`` member
    (``to_family_any``), for the ``direction`` and for ``n_random`` random directions of its norm.

    One row per (``direction`` = ``"format"`` / ``"random"``, ``draw``, ``alpha``); ``n_prompts`` are
    the prompts whose answer exists in ``to_family`` (the others are left out). Descriptive: a claim
    uses one alpha fixed in advance (:func:`steering_test`).
    """
    targets, keep, family_ids = _steering_setup(ablator, to_family)
    runs = [("format", 0, direction)] + [
        ("random", k, d) for k, d in enumerate(random_directions(direction, n_random, seed))
    ]
    rows = []
    for kind, draw, d in tqdm(runs, desc="steering", disable=not progress, leave=False):
        for alpha in alphas:
            o = _outcomes(ablator, layer, d, alpha, targets, keep, family_ids)
            rows.append(
                {"direction": kind, "draw": draw, "alpha": float(alpha), "n_prompts": len(keep)}
                | {k: float(v.mean()) for k, v in o.items()}
            )
    return pd.DataFrame(rows)


@dataclass
class SteeringTest:
    """Format steering at one alpha fixed in advance, against baseline directions of the same norm.

    ``table``: one row per direction (``direction`` = ``format`` or a baseline kind, ``draw``) with ``hit``,
    ``correct``, ``to_family_any``. ``effect``: the format direction's ``hit`` with its cluster-bootstrap
    ``hit_ci95`` over sequences, ``correct``, ``n_prompts``, ``n_clusters``, ``ci_unit``. ``nulls``: per baseline
    kind, the format direction's hit rate against that kind's draws (statistic ``hit``; one-sided p)."""

    table: pd.DataFrame
    effect: dict
    nulls: dict[str, NullDistribution]


def steering_test(
    ablator: Ablator,
    layer: int,
    direction: torch.Tensor,
    alpha: float,
    to_family: str,
    baselines: dict[str, Sequence[torch.Tensor]],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    progress: bool = False,
) -> SteeringTest:
    """Add ``alpha * direction`` (and ``alpha *`` each baseline direction) to ``blocks.<layer>.hook_resid_post`` at
    the final position of the ablator's prompts (the evaluation prompts); how often the top-1 becomes the answer
    in ``to_family`` (:func:`format_targets`; prompts whose answer has no such member are left out). See
    :class:`SteeringTest`. Cost: one resumed pass per direction."""
    t0, p0 = time.perf_counter(), ablator.forward_passes
    targets, keep, family_ids = _steering_setup(ablator, to_family)
    clusters = [ablator.dataset.sequence_ids[i] for i in keep]
    fmt = _outcomes(ablator, layer, direction, alpha, targets, keep, family_ids)
    rows = [{"direction": "format", "draw": 0} | {k: float(v.mean()) for k, v in fmt.items()}]
    runs = [(kind, k, d) for kind, ds in baselines.items() for k, d in enumerate(ds)]
    for kind, k, d in tqdm(runs, desc="baseline directions", disable=not progress, leave=False):
        o = _outcomes(ablator, layer, d, alpha, targets, keep, family_ids)
        rows.append({"direction": kind, "draw": k} | {name: float(v.mean()) for name, v in o.items()})
    table = pd.DataFrame(rows).assign(alpha=float(alpha), n_prompts=len(keep))
    observed = float(fmt["hit"].mean())
    effect = {
        "hit": observed,
        "hit_ci95": list(cluster_bootstrap_mean_ci(fmt["hit"], clusters, n_resamples, seed)),
        "correct": float(fmt["correct"].mean()),
        "n_prompts": len(keep),
        "n_clusters": n_clusters(clusters),
        "ci_unit": CI_UNIT_SEQUENCE,
    }
    norm = float(direction.float().norm())
    nulls = {}
    for kind in baselines:
        null = table[table["direction"] == kind]["hit"].tolist()
        if not null:
            continue
        nulls[kind] = NullDistribution(
            statistic="hit",
            observed=observed,
            **null_summary(observed, null),
            matched={"baseline": kind, "norm": norm, "alpha": float(alpha), "layer": layer},
            seed=seed,
            null=null,
            circuit=[],
            task=ablator.dataset.task,
            metric=f"top-1 is the answer spelled in {to_family}",
            n_prompts=len(keep),
            n_clusters=n_clusters(clusters),
            forward_passes=ablator.forward_passes - p0,
            seconds=time.perf_counter() - t0,
            description=f"format steering at alpha {alpha:g} after block {layer} against {kind} directions",
        )
    return SteeringTest(table, effect, nulls)
