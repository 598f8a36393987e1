"""Editing a circuit's function with activations: next -> prev by mean replacement, and format steering.

**Function edit** (:func:`function_edit`). On *target* prompts (e.g. increasing digits) the chosen
heads' outputs (``hook_z``, one query head's slice, at every position) are replaced by their mean
over *source* prompts (e.g. decreasing digits) **matched by member**: for each target prompt one
source prompt with the same set of member values (:func:`member_key`, :func:`match_prompts`), so the
replacement mean has the target's member distribution. Target and source prompts must share one
token length (the same template). The edit succeeds on a prompt when its top-1 becomes the member
``shift`` away from the last one shown (``n-1`` for next -> prev, ``n+1`` for prev -> next; see
:func:`seqcirc_utils.mechanisms.knockout.member_offsets`). The same edit on random heads of the same layers
(:func:`random_heads_same_layers`) is the baseline.

**Format steering** (:func:`format_direction`, :func:`steered_logits`, :func:`dose_response`). At the
residual stream after block ``layer`` (``blocks.<layer>.hook_resid_post``), final position:
``direction = mean_k [mean resid(to-format prompts with key k) - mean resid(from-format prompts with
key k)]`` over the member keys ``k`` both formats have (matched by member: digits ``3 4 5 6`` against
number words ``three four five six``). Then ``alpha * direction`` is added there on the from-format
prompts and we count how often the top-1 becomes the answer in the to-format (``"7"`` -> ``" seven"``,
``" July"``). Baseline: random directions of the same norm (seeded Gaussian, rescaled).

All passes resume from a cached clean residual stream (:meth:`Ablator.logits_from_layer`); with
``alpha = 0`` or no heads the logits are the clean run's.

Units: residual-stream vectors in the model's units; ``alpha`` multiplies the direction (1 = the
full mean difference); fractions of prompts in [0, 1].
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core.errors import ParameterError, TokenizationError, TooFewPromptsError
from seqcirc_utils.core.types import Component, sort_components
from seqcirc_utils.evaluation.nulls import matched_random_circuits
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


def function_edit(
    ablator: Ablator,
    source: TaskDataset,
    heads: Sequence[Component],
    shift: int,
    random_sets: Sequence[Sequence[Component]] = (),
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Replace ``heads``' outputs on the ablator's (target) prompts by their mean over member-matched
    ``source`` prompts; how often the top-1 becomes the member ``shift`` from the last one shown.

    Returns ``(table, info)``: one row per edit (``edit`` = ``"successor heads"``, ``"none"`` or
    ``"random heads <k>"``) with ``heads``, ``hit`` (fraction of matched prompts whose top-1 is at
    offset ``shift``), ``correct`` (top-1 still the answer), ``in_family`` and the share of each
    prediction category (:data:`~seqcirc_utils.mechanisms.knockout.CATEGORIES`); ``info`` has ``n_matched``, ``n_target`` and per-prompt categories of the
    successor-head edit. The ablator's dataset must already be the target prompts (e.g. filtered to
    correct answers); its unmatched prompts are left out of every fraction.
    """
    target = ablator.dataset
    if source.seq_len != target.seq_len:
        raise ParameterError(
            f"source prompts have {source.seq_len} tokens and target prompts {target.seq_len}; "
            "use the same template (one token length)"
        )
    t_idx, s_idx = match_prompts(target, source, seed)
    if not t_idx:
        raise TooFewPromptsError(
            f"no {source.spec.direction} {source.task} prompt shares its members with a target prompt"
        )
    layers_heads = sort_components({*heads, *(c for s in random_sets for c in s)})
    names = sorted({component_hook_name(h) for h in layers_heads})
    values = mean_activations(ablator.model, source.tokens[s_idx], names)
    tok = ablator.model.tokenizer
    sub = target.subset(t_idx)
    rows, cats = [], {}
    edits = [("none", []), ("successor heads", list(heads))] + [
        (f"random heads {k}", list(s)) for k, s in enumerate(random_sets)
    ]
    for name, hs in edits:
        pred = replaced_logits(ablator, hs, values).argmax(-1).cpu()[t_idx]
        offsets = member_offsets(tok, sub, pred)
        cat = categorise(tok, sub, pred)
        cats[name] = cat
        n = len(t_idx)
        rows.append(
            {
                "edit": name,
                "heads": " ".join(map(str, hs)) or "-",
                "hit": sum(o == shift for o in offsets) / n,
                "correct": float((pred == sub.answer_ids).float().mean()),
                "in_family": sum(o is not None for o in offsets) / n,
                **category_shares(cat),
            }
        )
    return pd.DataFrame(rows), {"n_matched": len(t_idx), "n_target": len(target), "categories": cats}


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
    added to ``blocks.<layer>.hook_resid_post`` at ``position`` (resumed from block ``layer``)."""
    if not 0 <= layer < ablator.info.n_layers:
        raise ParameterError(f"layer {layer} outside 0..{ablator.info.n_layers - 1}")

    def add(act, hook=None):  # noqa: ARG001 - TransformerLens signature
        out = act.clone()
        out[:, position] = out[:, position] + alpha * direction.to(act.device, act.dtype)
        return out

    with ablator.model.hooks(fwd_hooks=[(get_act_name("resid_post", layer), add)]):
        logits, _ = ablator.logits_from_layer(layer, ablator.clean_residuals()[layer], [])
    return logits


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
    the prompts whose answer exists in ``to_family`` (the others are left out).
    """
    ds, tok = ablator.dataset, ablator.model.tokenizer
    targets = format_targets(tok, ds, to_family)
    keep = [i for i, t in enumerate(targets) if t is not None]
    if not keep:
        raise TokenizationError(f"no prompt's answer has a single-token {to_family} member")
    family_ids = set().union(*family_tokens(tok, to_family).surface_ids)
    answers = ds.answer_ids
    runs = [("format", 0, direction)] + [
        ("random", k, d) for k, d in enumerate(random_directions(direction, n_random, seed))
    ]
    rows = []
    for kind, draw, d in tqdm(runs, desc="steering", disable=not progress, leave=False):
        for alpha in alphas:
            pred = steered_logits(ablator, layer, d, float(alpha)).argmax(-1).cpu().tolist()
            rows.append(
                {
                    "direction": kind,
                    "draw": draw,
                    "alpha": float(alpha),
                    "n_prompts": len(keep),
                    "hit": sum(pred[i] in targets[i] for i in keep) / len(keep),
                    "correct": sum(pred[i] == int(answers[i]) for i in keep) / len(keep),
                    "to_family_any": sum(pred[i] in family_ids for i in keep) / len(keep),
                }
            )
    return pd.DataFrame(rows)
