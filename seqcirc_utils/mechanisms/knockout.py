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

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from seqcirc_utils.core.errors import ParameterError, TokenizationError
from seqcirc_utils.scoring.ablation import Ablator, ablation_hooks, component_hook_name, single_component_effects
from seqcirc_utils.mechanisms.logit_lens import dataset_dla
from seqcirc_utils.models.loading import ModelInfo
from seqcirc_utils.mechanisms.ov_scores import ov_scores
from seqcirc_utils.discovery.pruning import PruningResult, fast_prune
from seqcirc_utils.tasks.datasets import FAMILIES, TaskDataset
from seqcirc_utils.core.options import AblationMode
from seqcirc_utils.core.types import Component, parse_component, sort_components

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
    model, info: ModelInfo, datasets: Mapping[str, TaskDataset], n_heads: int = 2, n_candidates: int = 4,
    families: Sequence[str] | None = None, mode: AblationMode | str = "mean", progress: bool = True, **ov_kwargs,
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
        raise ParameterError(f"predictions are categorised for sequence families ({', '.join(FAMILIES)}), not {family!r}")
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
    return Knockout(condition, list(components), logits, ablator.fraction_of_full(value), value,
                    float((pred.cpu() == ds.answer_ids).float().mean()), categorise(tok, ds, pred.cpu()),
                    top_k_decoded(tok, logits, k))


def knockout_rows(results: Sequence[Knockout], **labels) -> pd.DataFrame:
    """One row per knockout: ``condition``, ``ablated``, ``kept_%``, ``drop_points``, ``metric``,
    ``accuracy`` and the share of each prediction category, plus ``labels`` (e.g. ``task=...``)."""
    rows = []
    for r in results:
        rows.append({**labels, "condition": r.condition, "ablated": " ".join(map(str, r.components)) or "-",
                     "kept_%": 100 * r.fraction, "drop_points": 100 * (1 - r.fraction), "metric": r.metric,
                     "accuracy": r.accuracy, **category_shares(r.categories)})
    return pd.DataFrame(rows)


def prediction_records(dataset: TaskDataset, results: Sequence[Knockout], **labels) -> list[dict]:
    """Per (condition, prompt): the prompt text, answer, top-1 category and decoded top-5 (JSON-ready)."""
    out = []
    for r in results:
        for p, cat, top in zip(dataset.prompts, r.categories, r.top5):
            out.append({**labels, "condition": r.condition, "prompt": p.text, "answer": p.answer,
                        "last_member": p.members[-1], "category": cat, "top5": top})
    return out


# --------------------------------------------------------------------------- backups


@dataclass(frozen=True)
class KnockoutInfo(ModelInfo):
    """A :class:`ModelInfo` whose ``components`` and ``heads`` leave out ``knocked_out`` (they still
    exist: :meth:`check` accepts them)."""

    knocked_out: frozenset[Component] = frozenset()

    @classmethod
    def of(cls, info: ModelInfo, knocked_out: Iterable[Component]) -> "KnockoutInfo":
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

    def __init__(self, model, info: ModelInfo, dataset: TaskDataset, knocked_out: Iterable[Component],
                 mode: AblationMode | str = AblationMode.MEAN, metric: str = "logit_diff") -> None:
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


def circuit_of(ablator: Ablator, threshold: float, rounds: int = 1, minimal: bool = False,
               max_refine_passes: int | None = None) -> PruningResult:
    """A fast circuit (:func:`~seqcirc_utils.discovery.pruning.fast_prune`) of the ablator's model at ``threshold``."""
    return fast_prune(ablator, [threshold], rounds=rounds, progress=False, minimal=minimal,
                      max_refine_passes=max_refine_passes)[0]


def backup_table(main: Iterable[Component], knocked: Iterable[Component], knocked_out: Iterable[Component]) -> pd.DataFrame:
    """Membership of every component of either circuit: ``component``, ``kind``, ``layer``,
    ``status`` (``kept`` in both, ``joins`` only after the knockout, ``leaves`` only before, and
    ``knocked out``)."""
    main, knocked, out = set(main), set(knocked), set(knocked_out)
    rows = []
    for c in sort_components(main | knocked | out):
        status = ("knocked out" if c in out else "kept" if c in main and c in knocked
                  else "joins" if c in knocked else "leaves")
        rows.append({"component": str(c), "kind": c.kind, "layer": c.layer, "status": status})
    return pd.DataFrame(rows)


def compensation(model, dataset: TaskDataset, ablator: Ablator, knocked_out: Sequence[Component],
                 batch_size: int = 64) -> pd.DataFrame:
    """Each head's mean direct logit attribution (nats) on ``dataset`` before and after the knockout.

    The knockout uses ``ablator``'s values (mean/zero/resample of the same dataset). Returns one row
    per head: ``component``, ``layer``, ``head``, ``dla_clean``, ``dla_knockout``, ``change``
    (``knockout - clean``; positive = the head pushes the answer more once the heads are gone) and
    ``knocked_out``; plus the model's mean logit difference under each as ``attrs``.
    """
    clean = dataset_dla(model, dataset, batch_size=batch_size, progress=False)
    with model.hooks(fwd_hooks=ablator.hooks(knocked_out)):
        ko = dataset_dla(model, dataset, batch_size=batch_size, progress=False)
    a, b = clean.to_dataframe(), ko.to_dataframe()
    df = a[a["kind"] == "head"][["component", "layer", "mean"]].rename(columns={"mean": "dla_clean"})
    df["dla_knockout"] = b.set_index("component").loc[df["component"], "mean"].to_numpy()
    df["change"] = df["dla_knockout"] - df["dla_clean"]
    df.insert(2, "head", [parse_component(c).index for c in df["component"]])
    df["knocked_out"] = df["component"].isin({str(c) for c in knocked_out})
    df = df.reset_index(drop=True)
    df.attrs = {"logit_diff_clean": float(clean.logit_diff.mean()), "logit_diff_knockout": float(ko.logit_diff.mean())}
    return df


def negative_heads(model, info: ModelInfo, dataset: TaskDataset, estimated: pd.Series, n_check: int = 6,
                   dla: pd.DataFrame | None = None, mode: AblationMode | str = "mean") -> pd.DataFrame:
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


def position_ablation_logits(ablator: Ablator, components: Sequence[Component], positions: Sequence[int]) -> torch.Tensor:
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


def position_drops(ablator: Ablator, heads: Sequence[Component], positions: Sequence[int] | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Each head ablated at one position at a time: one row per (head, position) with ``component``,
    ``position``, ``metric``, ``fraction`` (of the ablator's full metric) and ``drop_points``.
    One partial pass per cell (``positions`` default: every position)."""
    positions = list(range(ablator.seq_len)) if positions is None else list(positions)
    rows = []
    cells = [(h, p) for h in heads for p in positions]
    for h, p in tqdm(cells, desc="per-position ablation", disable=not progress, leave=False):
        value = ablator.metric_value(position_ablation_logits(ablator, [h], [p]))
        frac = ablator.fraction_of_full(value)
        rows.append({"component": str(h), "position": p, "metric": value, "fraction": frac,
                     "drop_points": 100 * (1 - frac)})
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
