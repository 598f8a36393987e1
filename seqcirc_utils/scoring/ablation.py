"""Ablating components (heads, MLPs, neurons, layer outputs) and scoring circuits.

Hook points (TransformerLens names on the bridge):

- attention head ``L.H``  -> ``blocks.L.attn.hook_z`` ``[batch, pos, n_heads, d_head]``, one query head's
  slice (so grouped-query attention is handled per *query* head: its key/value head is untouched);
- MLP ``L``              -> ``blocks.L.hook_mlp_out`` ``[batch, pos, d_model]``;
- neuron ``L.N``          -> ``blocks.L.mlp.hook_post`` ``[batch, pos, d_mlp]``;
- layer outputs           -> ``blocks.L.hook_attn_out`` / ``blocks.L.hook_resid_post``.

Replacement values (:class:`~seqcirc_utils.core.types.AblationMode`): ``mean`` = the per-position mean
over the corrupted prompts (the paper), ``zero``, ``resample`` = the paired corrupted prompt's
activation. They are computed once per (model, dataset, mode) by :class:`Ablator` and reused.

A circuit's **score** is ``metric(circuit) / metric(full model)`` with every component *not* in
the circuit ablated at every position (or at the positions given).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformer_lens.utilities import get_act_name

from seqcirc_utils.core import metrics
from seqcirc_utils.core.errors import BaselineError, ParameterError
from seqcirc_utils.core.options import AblationMode, Metric
from seqcirc_utils.core.types import Circuit, Component, sort_components
from seqcirc_utils.models.forward import final_logits
from seqcirc_utils.models.loading import ModelInfo, model_device
from seqcirc_utils.tasks.datasets import GREATER_THAN, TaskDataset

if TYPE_CHECKING:
    import pandas as pd

Hook = tuple[str, Callable]


def component_hook_name(component: Component) -> str:
    """The TransformerLens hook whose activation carries ``component``'s output."""
    if component.kind == "head":
        return get_act_name("z", component.layer)
    if component.kind == "mlp":
        return get_act_name("mlp_out", component.layer)
    return get_act_name("post", component.layer)


def layer_output_hook_name(layer: int, which: str) -> str:
    """``which`` = ``"attn"`` (attention-layer output) or ``"resid"`` (residual stream after the block)."""
    if which == "attn":
        return get_act_name("attn_out", layer)
    if which == "resid":
        return get_act_name("resid_post", layer)
    raise ParameterError(f"unknown layer output {which!r}; valid: attn, resid")


def dataset_fingerprint(dataset: TaskDataset) -> str:
    """A hash of the dataset's clean and corrupted tokens and answers (identifies cached means)."""
    h = hashlib.sha1()
    for t in (dataset.tokens, dataset.corrupted_tokens, dataset.answer_ids, dataset.incorrect_ids):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- replacement values


def compute_ablation_values(
    model, dataset: TaskDataset, mode: AblationMode | str, hook_names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Replacement activations per hook name.

    ``mean``: ``[pos, ...]`` mean over the corrupted prompts; ``resample``: ``[batch, pos, ...]`` the
    corrupted run itself; ``zero``: ``[pos, ...]`` zeros. One corrupted forward pass in all.
    """
    mode = AblationMode.parse(mode)
    dataset.check_uniform_length()
    names = set(hook_names)
    tokens = dataset.corrupted_tokens.to(model_device(model))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = {}
    for name in names:
        act = cache[name]
        if mode is AblationMode.MEAN:
            out[name] = act.mean(0)
        elif mode is AblationMode.ZERO:
            out[name] = torch.zeros_like(act[0])
        else:
            out[name] = act
    return out


def _ablation_mask(
    info: ModelInfo, hook_name: str, components: Sequence[Component], seq_len: int, positions: Sequence[int] | None
) -> torch.Tensor:
    """Boolean mask ``[pos, n_heads, 1]`` / ``[pos, 1]`` / ``[pos, d_mlp]`` of what to replace."""
    pos_mask = torch.zeros(seq_len, dtype=torch.bool)
    if positions is None:
        pos_mask[:] = True
    else:
        pos_mask[list(positions)] = True
    kind = components[0].kind
    if kind == "head":
        which = torch.zeros(info.n_heads, dtype=torch.bool)
        which[[c.index for c in components]] = True
        return (pos_mask[:, None] & which[None, :])[:, :, None]
    if kind == "mlp":
        return pos_mask[:, None]
    which = torch.zeros(info.d_mlp, dtype=torch.bool)
    which[[c.index for c in components]] = True
    return pos_mask[:, None] & which[None, :]


def ablation_hooks(
    info: ModelInfo,
    ablated: Iterable[Component],
    values: dict[str, torch.Tensor],
    seq_len: int,
    positions: Sequence[int] | None = None,
) -> list[Hook]:
    """Forward hooks that replace ``ablated`` components' activations by ``values``.

    One hook per hook point (all ablated heads of a layer are handled by one ``torch.where``).
    """
    by_hook: dict[str, list[Component]] = {}
    for c in ablated:
        info.check(c)
        by_hook.setdefault(component_hook_name(c), []).append(c)
    hooks: list[Hook] = []
    for name, comps in by_hook.items():
        if name not in values:
            raise KeyError(f"no ablation values computed for {name}")
        mask = _ablation_mask(info, name, comps, seq_len, positions)
        hooks.append((name, _replace_fn(mask, values[name])))
    return hooks


def _replace_fn(mask: torch.Tensor, value: torch.Tensor) -> Callable:
    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:  # noqa: ARG001 - TransformerLens signature
        m = mask.to(act.device)
        v = value.to(act.device, act.dtype)
        if v.dim() == act.dim() and v.shape[0] != act.shape[0]:
            raise ValueError(f"resample values cover {v.shape[0]} prompts but the batch has {act.shape[0]}")
        return torch.where(m, v, act)

    return hook


# --------------------------------------------------------------------------- the ablator


@dataclass
class CircuitScore:
    """A circuit's metric next to the full model's; ``score`` = circuit / full (1.0 = all behaviour kept)."""

    score: float
    circuit_metric: float
    full_metric: float
    metric: str
    n_components: int


@dataclass
class _Replay:
    """Per-block call arguments captured from one forward pass, to resume a pass at any block."""

    args: list[tuple]
    kwargs: list[dict]


class Ablator:
    """Scores many ablations of one (model, dataset) pair, reusing everything that can be reused.

    Computed once at construction: the replacement values (one corrupted pass), the full model's
    final-position logits, metric and clean activations (``clean_acts``, one clean pass), and the per-block call arguments used by
    :meth:`logits_from_layer` to resume a forward pass from a cached residual stream.
    The whole dataset runs as one batch (prompts share one length).
    """

    def __init__(
        self,
        model,
        info: ModelInfo,
        dataset: TaskDataset,
        mode: AblationMode | str = AblationMode.MEAN,
        metric: Metric | str = Metric.LOGIT_DIFF,
        positions: Sequence[int] | None = None,
    ) -> None:
        metric = Metric.parse(metric)  # ParameterError naming the metrics
        if metric == Metric.PROB_DIFF and dataset.task != GREATER_THAN:
            raise ParameterError(
                "metric prob_diff is the greater-than probability difference; use it with task greater_than"
            )
        self.model = model
        self.info = info
        self.dataset = dataset
        self.mode = AblationMode.parse(mode)
        self.metric = metric
        self.positions = list(positions) if positions is not None else None
        self.seq_len = dataset.check_uniform_length()
        self.tokens = dataset.tokens.to(model_device(model))
        self.forward_passes = 0
        hook_names = [component_hook_name(c) for c in info.components]
        self.values = compute_ablation_values(model, dataset, self.mode, hook_names)
        self.forward_passes += 1
        self.clean_acts: dict[str, torch.Tensor] = {}
        self.forward_passes += 1
        self.full_logits = final_logits(
            model, self.tokens, batch_size=len(self.tokens), fwd_hooks=[(n, self._store(n)) for n in hook_names]
        )
        self.full_metric = self.metric_value(self.full_logits)
        self._empty_kl: float | None = None
        self._empty_kl_values: torch.Tensor | None = None
        self._empty_values: torch.Tensor | None = None
        self._replay: _Replay | None = None
        self._clean_resid: dict[int, torch.Tensor] | None = None

    # ---- metrics
    def metric_values(self, logits: torch.Tensor) -> torch.Tensor:
        """The per-prompt metric of final-position ``logits`` ``[batch, d_vocab]``, ``[batch]``
        (logit difference in nats, PD in probability, KL to the full model in nats)."""
        ds = self.dataset
        if self.metric == Metric.LOGIT_DIFF:
            return metrics.logit_diff(logits, ds.answer_ids, ds.incorrect_ids)
        if self.metric == Metric.PROB_DIFF:
            groups = ds.greater_than_groups
            if groups is None:
                raise ValueError(f"the {self.metric} metric needs a greater-than dataset (its year groups)")
            t = metrics.greater_than_thresholds(ds.years, len(groups))
            return metrics.greater_than_prob_diff(logits, t, groups)
        return metrics.kl_to_full(logits, self.full_logits)

    def metric_value(self, logits: torch.Tensor) -> float:
        """The dataset-mean metric of final-position ``logits`` ``[batch, d_vocab]``."""
        return float(self.metric_values(logits).mean())

    def score_parts(self, kept: Iterable[Component]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-prompt numerator and denominator ``([batch], [batch])`` of the circuit ``kept``'s score.

        Logit difference / PD: (the circuit's metric, the full model's metric), score = ratio of
        their means. KL: (KL(circuit), KL(nothing kept)), score = 1 - ratio of their means.
        One forward pass (two for KL the first time). Used to bootstrap the score over prompts.
        """
        kept = set(kept)
        circuit = self.metric_values(self._run([c for c in self.info.components if c not in kept]))
        if self.metric == Metric.KL:
            if self._empty_kl_values is None:
                self._empty_kl_values = self.metric_values(self._run(self.info.components))
            return circuit, self._empty_kl_values
        return circuit, self.metric_values(self.full_logits)

    def empty_values(self) -> torch.Tensor:
        """Per-prompt metric ``[batch]`` of the empty circuit: every head and MLP ablated (this ablator's
        mode, means and positions). One forward pass the first time, then cached (for KL: KL's denominator)."""
        if self._empty_values is None:
            if self.metric == "kl" and self._empty_kl_values is not None:
                self._empty_values = self._empty_kl_values
            else:
                self._empty_values = self.metric_values(self._run(self.info.components))
        return self._empty_values

    def fraction_of_full(self, value: float) -> float:
        """``value`` as a fraction of the full model (for KL: 1 - KL / KL(everything ablated))."""
        if self.metric == Metric.KL:
            if self._empty_kl is None:
                self._empty_kl = self.metric_value(self._run(self.info.components))
            return 1.0 - value / self._empty_kl
        return value / self.full_metric

    # ---- running
    def hooks(self, ablated: Iterable[Component]) -> list[Hook]:
        ablated = list(ablated)
        self.ensure_values(component_hook_name(c) for c in ablated)
        return ablation_hooks(self.info, ablated, self.values, self.seq_len, self.positions)

    def ensure_values(self, hook_names: Iterable[str]) -> None:
        """Compute replacement values and clean activations for hook points not covered yet
        (e.g. ``mlp.hook_post`` for neurons): one corrupted and one clean pass, only when needed."""
        missing = sorted(set(hook_names) - set(self.values))
        if not missing:
            return
        self.values.update(compute_ablation_values(self.model, self.dataset, self.mode, missing))
        final_logits(
            self.model, self.tokens, batch_size=len(self.tokens), fwd_hooks=[(n, self._store(n)) for n in missing]
        )
        self.forward_passes += 2

    def _store(self, name: str) -> Callable:
        def hook(act, hook=None):  # noqa: ARG001
            self.clean_acts[name] = act.detach()
            return act

        return hook

    def _run(self, ablated: Iterable[Component]) -> torch.Tensor:
        self.forward_passes += 1
        return final_logits(self.model, self.tokens, batch_size=len(self.tokens), fwd_hooks=self.hooks(ablated))

    def logits(self, ablated: Iterable[Component]) -> torch.Tensor:
        """Final-position logits ``[batch, d_vocab]`` with ``ablated`` components replaced."""
        return self._run(ablated)

    def score_ablated(self, ablated: Iterable[Component]) -> float:
        """Fraction of the full metric kept when ``ablated`` are ablated."""
        return self.fraction_of_full(self.metric_value(self._run(ablated)))

    def score(self, kept: Iterable[Component]) -> CircuitScore:
        """Score the circuit ``kept``: every head and MLP not in it is ablated."""
        kept = set(kept)
        ablated = [c for c in self.info.components if c not in kept]
        value = self.metric_value(self._run(ablated))
        return CircuitScore(self.fraction_of_full(value), value, self.full_metric, self.metric, len(kept))

    # ---- resumable passes (used by the optimised pruning sweep)
    def _capture_replay(self) -> _Replay:
        captured: dict[int, tuple] = {}
        handles = []
        for i, block in enumerate(self.model.blocks):

            def pre(mod, args, kwargs, i=i):
                captured[i] = (args, kwargs)

            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with torch.no_grad():
                self.model(self.tokens, logits_to_keep=1, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        self.forward_passes += 1

        def strip(v):  # drop KV caches: a replayed block must not append to a cache
            return None if type(v).__name__.endswith("Cache") else v

        args = [tuple(strip(a) for a in captured[i][0][1:]) for i in range(self.info.n_layers)]
        kwargs = [{k: strip(v) for k, v in captured[i][1].items()} for i in range(self.info.n_layers)]
        return _Replay(args, kwargs)

    def residuals(self, ablated: Iterable[Component]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One full pass with ``ablated`` ablated: final logits and ``resid_pre`` of every layer."""
        store: dict[int, torch.Tensor] = {}

        def keeper(layer: int):
            def keep(act, hook):
                store[layer] = act.detach()
                return act

            return keep

        hooks = self.hooks(ablated) + [(get_act_name("resid_pre", l), keeper(l)) for l in range(self.info.n_layers)]
        self.forward_passes += 1
        logits = final_logits(self.model, self.tokens, batch_size=len(self.tokens), fwd_hooks=hooks)
        return logits, store

    def clean_residuals(self) -> dict[int, torch.Tensor]:
        """``resid_pre`` ``[batch, pos, d_model]`` of every layer on the clean prompts, nothing ablated
        (one pass, computed once and reused by every single-component ablation on this dataset)."""
        if self._clean_resid is None:
            _, self._clean_resid = self.residuals([])
        return self._clean_resid

    def run_blocks(self, start: int, stop: int, resid_pre: torch.Tensor) -> torch.Tensor:
        """Blocks ``start .. stop - 1`` on ``resid_pre`` (block ``start``'s input ``[batch, pos, d_model]``, e.g. from
        :meth:`clean_residuals`): block ``stop``'s input (the last block's output when ``stop = n_layers``).

        Nothing is ablated here; hooks active in the caller's ``model.hooks`` context apply. Not counted as a forward
        pass (:meth:`unembed_final` counts the pass it ends)."""
        if not 0 <= start <= stop <= self.info.n_layers:
            raise ParameterError(f"blocks {start}..{stop} outside 0..{self.info.n_layers}")
        if self._replay is None:
            self._replay = self._capture_replay()
        x = resid_pre
        with torch.no_grad():
            for l in range(start, stop):
                out = self.model.blocks[l](x, *self._replay.args[l], **self._replay.kwargs[l])
                x = out[0] if isinstance(out, tuple) else out
        return x

    def unembed_final(self, resid: torch.Tensor) -> torch.Tensor:
        """Final-position logits ``[batch, d_vocab]`` of the last block's output ``resid`` ``[batch, pos, d_model]``
        (final norm, then unembedding); counts one (partial) forward pass."""
        with torch.no_grad():
            logits = self.model.unembed(self.model.ln_final(resid[:, -1:, :]))[:, -1, :]
        self.forward_passes += 1
        return logits

    def logits_from_layer(
        self, layer: int, resid_pre: torch.Tensor, ablated: Iterable[Component], keep_residuals: bool = False
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Resume the pass at block ``layer`` from its cached input ``resid_pre`` ``[batch, pos, d_model]``.

        Blocks below ``layer`` are not run (their output is unchanged by ablations at or above it).
        Only the final position is unembedded. Returns logits ``[batch, d_vocab]`` and, if asked,
        the new ``resid_pre`` of layers > ``layer``. Counts as one forward pass (a partial one).
        """
        if self._replay is None:
            self._replay = self._capture_replay()
        ablated = [c for c in ablated if c.layer >= layer]
        store: dict[int, torch.Tensor] = {}
        x = resid_pre
        with torch.no_grad(), self.model.hooks(fwd_hooks=self.hooks(ablated)):
            for l in range(layer, self.info.n_layers):
                if keep_residuals and l > layer:
                    store[l] = x
                out = self.model.blocks[l](x, *self._replay.args[l], **self._replay.kwargs[l])
                x = out[0] if isinstance(out, tuple) else out
            logits = self.model.unembed(self.model.ln_final(x[:, -1:, :]))[:, -1, :]
        self.forward_passes += 1
        return logits, store


def default_metric(dataset: TaskDataset) -> str:
    """The natural metric for a dataset: greater-than's probability difference, else the logit difference."""
    return "prob_diff" if dataset.task == GREATER_THAN else "logit_diff"


# The smallest baseline a circuit score may be divided by, per metric (its own units). Below it the
# score's denominator is within the noise of a few prompts and a ratio against it means nothing;
# a negative one would invert pruning (removing a helpful component would "raise" the score).
# logit_diff: 0.1 nats (the full model favours the answer by an odds ratio of at least e^0.1 = 1.105);
# prob_diff: 0.01 (one percentage point of probability mass, on a [-1, 1] scale);
# kl: the everything-ablated KL to the full model (the KL score's denominator) of at least 0.01 nats.
MIN_BASELINE = {"logit_diff": 0.1, "prob_diff": 0.01, "kl": 0.01}


def check_baseline(ablator: Ablator, model_name: str = "") -> float:
    """Refuse a meaningless baseline: raise :class:`BaselineError` (naming the model, task, template and the
    value) when the score's denominator is <= :data:`MIN_BASELINE` of the ablator's metric.

    The denominator is the full model's metric (logit difference, PD) or, for KL, the KL of the
    everything-ablated model. Returns the checked value.
    """
    if ablator.metric == Metric.KL:
        value, what = ablator.metric_value(ablator.logits(ablator.info.components)), "everything-ablated KL"
    else:
        value, what = ablator.full_metric, f"full-model {ablator.metric}"
    floor = MIN_BASELINE[ablator.metric]
    if not value > floor:
        spec = ablator.dataset.spec
        raise BaselineError(
            f"meaningless baseline: {what} = {value:.4g} (must exceed {floor}) for model "
            f"{model_name or ablator.dataset.model!r}, task {spec.task}, template {spec.template} on "
            f"{len(ablator.dataset)} prompts; a circuit score divides by it (choose another template or prefix, "
            "more prompts, or the filter to correct answers)"
        )
    return value


class AblatorCache:
    """Ablators a caller owns and reuses: one :class:`Ablator` (means and clean caches computed once) per
    (model, dataset, mode, metric, positions).

    A notebook or script creates one (``ablators = AblatorCache()``) and passes it to the functions that
    take ``ablators=`` (:func:`circuit_score`, :func:`single_component_effects`, ``compare.cross_task_scores``,
    ``importance.head_importance``, ...); without one, each call builds its own Ablator. Holds at most
    ``max_size`` Ablators (the oldest is dropped first). The key uses the model's ``id``: safe, because a
    cached Ablator holds a reference to its model, so the id cannot be reused while the entry lives.
    """

    def __init__(self, max_size: int = 8):
        if max_size < 1:
            raise ParameterError(f"max_size must be >= 1 (Ablators kept), got {max_size}")
        self.max_size = max_size
        self._ablators: dict[tuple, Ablator] = {}

    def __len__(self) -> int:
        return len(self._ablators)

    def clear(self) -> None:
        """Drop every cached Ablator (frees their means and clean caches)."""
        self._ablators.clear()

    def get(
        self,
        model,
        info: ModelInfo,
        dataset: TaskDataset,
        mode: AblationMode | str = "mean",
        metric: str | None = "logit_diff",
        positions: Sequence[int] | None = None,
    ) -> Ablator:
        """The cached :class:`Ablator` for these arguments (built on first use); ``metric=None`` picks
        :func:`default_metric` for the dataset."""
        metric = metric or default_metric(dataset)
        key = (
            id(model),
            dataset_fingerprint(dataset),
            AblationMode.parse(mode),
            metric,
            tuple(positions) if positions is not None else None,
        )
        if key not in self._ablators:
            if len(self._ablators) >= self.max_size:
                self._ablators.pop(next(iter(self._ablators)))
            self._ablators[key] = Ablator(model, info, dataset, mode, metric, positions)
        return self._ablators[key]


def _ablator(
    ablators: AblatorCache | None,
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    mode: AblationMode | str = "mean",
    metric: str | None = "logit_diff",
    positions: Sequence[int] | None = None,
) -> Ablator:
    """From the caller's cache, or a fresh Ablator when the caller keeps none."""
    return (ablators if ablators is not None else AblatorCache(max_size=1)).get(
        model, info, dataset, mode, metric, positions
    )


# --------------------------------------------------------------------------- convenience API


def _components(heads=None, mlps=None, circuit: Circuit | Iterable[Component] | None = None) -> set[Component]:
    from seqcirc_utils.core.types import head, mlp

    comps: set[Component] = set()
    if circuit is not None:
        comps |= set(circuit.components if isinstance(circuit, Circuit) else circuit)
    for h in heads or ():
        comps.add(h if isinstance(h, Component) else head(*h))
    for m in mlps or ():
        comps.add(m if isinstance(m, Component) else mlp(m))
    return comps


def circuit_score(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    heads: Iterable | None = None,
    mlps: Iterable | None = None,
    circuit: Circuit | Iterable[Component] | None = None,
    mode: AblationMode | str = "mean",
    metric: str = "logit_diff",
    positions: Sequence[int] | None = None,
    ablators: AblatorCache | None = None,
) -> CircuitScore:
    """Ablate every head and MLP NOT in the circuit and return its metric as a fraction of the full model's.

    ``heads`` as ``[(layer, head), ...]`` or Components, ``mlps`` as ``[layer, ...]``, or a ``circuit``.
    ``ablators``: the caller's :class:`AblatorCache` (means reused across calls); None builds a fresh Ablator.
    """
    return _ablator(ablators, model, info, dataset, mode, metric, positions).score(_components(heads, mlps, circuit))


def ablate(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    components: Iterable[Component],
    mode: AblationMode | str = "mean",
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` with ``components`` ablated (heads, MLPs or neurons)."""
    components = sort_components(components)
    for c in components:
        info.check(c)
    names = {component_hook_name(c) for c in components}
    values = compute_ablation_values(model, dataset, mode, sorted(names))
    hooks = ablation_hooks(info, components, values, dataset.check_uniform_length(), positions)
    return final_logits(model, dataset.tokens, batch_size=len(dataset), fwd_hooks=hooks)


def mean_ablate_heads(
    model, info: ModelInfo, dataset: TaskDataset, heads: Iterable[Component], positions: Sequence[int] | None = None
) -> torch.Tensor:
    """Final-position logits ``[batch, d_vocab]`` with ``heads`` replaced by their corrupted per-position means."""
    return ablate(model, info, dataset, heads, "mean", positions)


def ablate_layer_outputs(
    model, dataset: TaskDataset, layers: Iterable[int], which: str = "attn", mode: AblationMode | str = "mean"
) -> torch.Tensor:
    """Final logits ``[batch, d_vocab]`` with whole attention-layer (``which="attn"``) or residual
    (``which="resid"``) outputs of ``layers`` replaced."""
    names = [layer_output_hook_name(l, which) for l in layers]
    values = compute_ablation_values(model, dataset, mode, names)
    hooks = [(n, _replace_fn(torch.ones(1, dtype=torch.bool), values[n])) for n in names]
    return final_logits(model, dataset.tokens, batch_size=len(dataset), fwd_hooks=hooks)


def single_component_effects(
    model,
    info: ModelInfo,
    dataset: TaskDataset,
    components: Sequence[Component] | None = None,
    mode: AblationMode | str = "mean",
    metric: str | None = "logit_diff",
    progress: bool = True,
    ablators: AblatorCache | None = None,
) -> pd.DataFrame:
    """Ablate each component alone from the full model (``metric=None``: the dataset's default metric).

    Returns a DataFrame with ``component``, ``layer``, ``kind``, ``index``, ``metric`` (the dataset
    mean with that component ablated), ``fraction`` (of the full metric) and ``drop_points``
    (``100 * (1 - fraction)``, the paper's "points" of single-head ablation). With
    ``mode="resample"`` this is activation patching of each component (corrupted into clean).

    Cost: one clean pass (once per dataset) caches the residual stream entering every block; each component's pass
    then resumes at its own layer (:meth:`Ablator.logits_from_layer`), so the blocks below it are
    not rerun (about half a forward pass per component on average). With the caller's ``ablators``
    (:class:`AblatorCache`) the means and the clean pass are reused by later calls on the same dataset.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    ab = _ablator(ablators, model, info, dataset, mode, metric)
    clean_resid = ab.clean_residuals()
    rows = []
    for c in tqdm(components or info.components, desc="single-component ablation", disable=not progress, leave=False):
        logits, _ = ab.logits_from_layer(c.layer, clean_resid[c.layer], [c])
        value = ab.metric_value(logits)
        frac = ab.fraction_of_full(value)
        rows.append(
            {
                "component": str(c),
                "layer": c.layer,
                "kind": c.kind,
                "index": c.index,
                "metric": value,
                "fraction": frac,
                "drop_points": 100 * (1 - frac),
            }
        )
    return pd.DataFrame(rows)


@contextlib.contextmanager
def ablated(model, info: ModelInfo, dataset: TaskDataset, components: Iterable[Component], mode="mean", positions=None):
    """Context manager: inside it, ``model`` runs with ``components`` ablated; hooks removed on exit (even on error)."""
    components = list(components)
    values = compute_ablation_values(model, dataset, mode, sorted({component_hook_name(c) for c in components}))
    with model.hooks(fwd_hooks=ablation_hooks(info, components, values, dataset.check_uniform_length(), positions)):
        yield model
