"""Typed configuration of circuit discovery: :class:`DiscoveryConfig` with per-method :class:`SweepConfig` and
:class:`FastConfig`.

One frozen dataclass holds everything :func:`~seqcirc_utils.discovery.pipeline.discover` needs beyond the
model, the task and the dataset options: thresholds, pruning method, ablation, metric, prompt filter,
held-out scoring, bootstrap, split. Options of one pruning method live in that method's config (the sweep's
order; the fast method's rounds, frontier, integration steps and 1-minimal refinement), so a sweep-only
option cannot be given to the fast method by accident. Every value is checked when the config is made
(a one-line :class:`~seqcirc_utils.core.errors.ParameterError` naming what is valid), so the command line
builds one from its arguments and refuses bad input before any model loads.

:func:`config_fields` lists every field, nested ones as ``sweep.order``: the command line exposes each of
them (``--sweep-order``), which a test checks. Importable without torch (this module imports only
:mod:`seqcirc_utils.core`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import (
    MIN_SEQUENCES_PER_ROLE,
    N_RESAMPLES,
    SPLIT_MODES,
    AblationMode,
    Metric,
    PruneMethod,
    SweepOrder,
)


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")


def _discovery_heldout_pair(name: str, value: Any) -> tuple[int, int]:
    """``value`` as a ``(discovery, held-out)`` pair of positive integers, else a one-line ParameterError."""
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pair):
        raise ParameterError(f"{name} must be two positive integers (discovery, held-out), got {value!r}")
    return pair


def check_thresholds(thresholds: Iterable[float]) -> list[float]:
    """Validate thresholds (each a number in (0, 1]) and return them sorted high to low, without repeats."""
    out = []
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < float(t) <= 1:
            raise ParameterError(
                f"threshold {t!r} outside (0, 1]; thresholds are fractions of the full model's metric, e.g. 0.8"
            )
        out.append(float(t))
    if not out:
        raise ParameterError("give at least one threshold in (0, 1]")
    return sorted(set(out), reverse=True)


@dataclass(frozen=True)
class SweepConfig:
    """The paper's iterative pruning (:func:`~seqcirc_utils.discovery.pruning.sweep_prune`): ``order`` in which
    candidates are tried (:class:`~seqcirc_utils.core.options.SweepOrder`; ``paper`` = from the last layer down,
    MLP before heads)."""

    order: SweepOrder = SweepOrder.PAPER

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", SweepOrder.parse(self.order))


@dataclass(frozen=True)
class FastConfig:
    """Attribution-ranked pruning (:func:`~seqcirc_utils.discovery.pruning.fast_prune`): ``rounds`` of
    (attribute, search a prefix), ``frontier`` extra components tried past each prefix, ``ig_steps`` integration
    steps of the attribution, and the refinement to a 1-minimal circuit (``minimal``; ``max_refine_passes``
    bounds it, None = until no component can go)."""

    rounds: int = 2
    frontier: int = 0
    ig_steps: int = 3
    minimal: bool = True
    max_refine_passes: int | None = None

    def __post_init__(self) -> None:
        _at_least("fast.rounds", self.rounds, 1)
        _at_least("fast.frontier", self.frontier, 0)
        _at_least("fast.ig_steps", self.ig_steps, 1)
        if not isinstance(self.minimal, bool):
            raise ParameterError(f"fast.minimal must be true or false, got {self.minimal!r}")
        if self.max_refine_passes is not None:
            _at_least("fast.max_refine_passes", self.max_refine_passes, 1)


@dataclass(frozen=True)
class DiscoveryConfig:
    """How circuits are found and scored (see :func:`~seqcirc_utils.discovery.pipeline.discover`).

    - ``thresholds``: nested circuit thresholds, fractions of the full model's metric in (0, 1] (kept high to
      low); ``method``: :class:`~seqcirc_utils.core.options.PruneMethod`; ``sweep`` / ``fast``: that method's
      options.
    - ``ablation`` (:class:`~seqcirc_utils.core.options.AblationMode`), ``metric``
      (:class:`~seqcirc_utils.core.options.Metric`; None = the task's own).
    - ``filter_correct``: keep only prompts the model answers right; ``min_prompts``: the fewest that must pass
      (the draw grows 2x / 4x first).
    - ``heldout``: also score every circuit on a held-out set; ``heldout_seed``: its seed when ``split`` is
      ``resampled`` (None = the dataset seed + an offset).
    - ``split``: ``disjoint`` (discovery and held-out from disjoint sequence identities) or ``resampled``;
      ``split_shares``: discovery : held-out sizes of the partition (None = equal, or the proportions of
      ``sequences``); ``min_sequences``: the fewest distinct sequences each side needs.
    - ``sequences``: ``(discovery, held-out)`` distinct sequences: both sets sized by sequence rather than by
      prompt (one prompt per sequence, before the correct-answer filter); None: the dataset's ``n`` prompts
      drawn from the role's sequences.
    - ``n_resamples`` / ``bootstrap_seed``: the cluster bootstrap of every interval.
    """

    thresholds: tuple[float, ...] = (0.8,)
    method: PruneMethod = PruneMethod.SWEEP
    sweep: SweepConfig = field(default_factory=SweepConfig)
    fast: FastConfig = field(default_factory=FastConfig)
    ablation: AblationMode = AblationMode.MEAN
    metric: Metric | None = None
    filter_correct: bool = True
    min_prompts: int = 8
    heldout: bool = True
    heldout_seed: int | None = None
    split: str = "disjoint"
    split_shares: tuple[int, int] | None = None
    sequences: tuple[int, int] | None = None
    min_sequences: int = MIN_SEQUENCES_PER_ROLE
    n_resamples: int = N_RESAMPLES
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        values = (self.thresholds,) if isinstance(self.thresholds, int | float) else self.thresholds
        object.__setattr__(self, "thresholds", tuple(check_thresholds(values)))
        object.__setattr__(self, "method", PruneMethod.parse(self.method))
        object.__setattr__(self, "ablation", AblationMode.parse(self.ablation))
        if self.metric is not None:
            object.__setattr__(self, "metric", Metric.parse(self.metric))
        if isinstance(self.sweep, dict):
            object.__setattr__(self, "sweep", SweepConfig(**self.sweep))
        if isinstance(self.fast, dict):
            object.__setattr__(self, "fast", FastConfig(**self.fast))
        for name in ("filter_correct", "heldout"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _at_least("min_prompts", self.min_prompts, 1)
        _at_least("min_sequences", self.min_sequences, 1)
        _at_least("n_resamples", self.n_resamples, 1)
        _at_least("bootstrap_seed", self.bootstrap_seed, 0)
        if self.heldout_seed is not None:
            _at_least("heldout_seed", self.heldout_seed, 0)
        if self.split not in SPLIT_MODES:
            raise ParameterError(f"unknown split {self.split!r}; valid: {', '.join(SPLIT_MODES)}")
        for name in ("split_shares", "sequences"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _discovery_heldout_pair(name, getattr(self, name)))

    def method_options(self) -> dict[str, SweepConfig | FastConfig]:
        """The chosen method's config as :func:`~seqcirc_utils.discovery.pruning.prune` takes it
        (``{"sweep": ...}`` or ``{"fast": ...}``)."""
        return {"sweep": self.sweep} if self.method == PruneMethod.SWEEP else {"fast": self.fast}

    def with_options(self, **changes: Any) -> DiscoveryConfig:
        """A copy with ``changes``; nested fields by dotted name through ``sweep`` / ``fast`` dicts, e.g.
        ``config.with_options(method="fast", fast={"minimal": False})`` (unnamed nested fields are kept)."""
        for name in ("sweep", "fast"):
            if isinstance(changes.get(name), dict):
                changes[name] = replace(getattr(self, name), **changes[name])
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ParameterError(
                f"unknown discovery option(s) {sorted(unknown)}; valid: {', '.join(f.name for f in fields(self))}"
            )
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (enums as their strings, tuples as lists)."""

        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return str(value) if isinstance(value, SweepOrder | PruneMethod | AblationMode | Metric) else value

        return {
            name: {k: plain(v) for k, v in value.items()} if isinstance(value, dict) else plain(value)
            for name, value in dataclasses.asdict(self).items()
        }


def config_fields(config_type: type = DiscoveryConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """Every field of ``config_type`` as ``(dotted name, field)``, nested configs flattened (``sweep.order``)."""
    for f in fields(config_type):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from config_fields(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def flag_of(dotted: str) -> str:
    """The command-line flag of a config field: ``sweep.order`` -> ``--sweep-order``."""
    return "--" + dotted.replace(".", "-").replace("_", "-")
