"""Circuit discovery end to end: dataset -> (filter) -> ablator -> pruning -> circuit JSON.

The circuit JSON (``seqcirc circuit --out ...``) is a circuit file (kind ``"circuit_file"``) ``{"kind",
"schema_version", "circuits": [one dict per threshold]}``, read by
:func:`seqcirc_utils.core.result_records.read_circuit`; each
dict holds ``model, task, template, direction, seed, threshold, method, ablation, metric, heads``
(``[[layer, head], ...]``), ``mlps`` (``[layer, ...]``), ``score`` (circuit metric / full metric, every
non-circuit component ablated at every position), ``full_metric, circuit_metric, forward_passes,
seconds, n_components`` and the exact ``dataset`` used (the dict ``seqcirc dataset --format json``
prints).

Schema version 2 adds (see :func:`circuit_record`): ``kind`` (``"circuit"``), ``schema_version``,
``prefix`` (the prompt prefix mode), ``filter`` (how prompts were kept), ``order``, ``minimal``,
``removable_left`` (from pruning), ``score_ci95`` (95 % bootstrap interval of ``score`` over prompts),
``bootstrap`` (its ``n_resamples``, ``seed``, ``level``), ``heldout`` = ``{"seed", "n_prompts", "score",
"ci95", "full_metric", "circuit_metric"}`` (the circuit scored on a fresh dataset: same task,
template, direction, prefix and other options, seed + :data:`HELDOUT_SEED_OFFSET`, filtered the same
way, its own ablation means) and ``heldout_dataset`` (that dataset, the same dict shape as
``dataset``). Schema version 3 adds (:data:`FAITHFULNESS_KEYS`, :func:`score_with_ci`) ``ci_unit``
(``"sequence"``: every interval is a cluster bootstrap over the prompts' sequence identities), ``n_clusters``
(distinct identities), ``empty_metric`` (every component ablated, same mode and means), ``faithfulness`` =
(m(C) - m(empty)) / (m(full) - m(empty)) and ``faithfulness_ci95``; ``heldout`` carries the same five keys
for the held-out set. Pruning thresholds stay on ``score`` (m(C) / m(full)). Greater-than records also carry ``pruning_metric``, ``metric_note`` and
``exact_prob_diff`` = ``{"mode", "full", "circuit", "score", "ci95"}`` (the exact two-digit PD,
:mod:`seqcirc_utils.scoring.greater_than`; also inside ``heldout``).

Sequence-disjoint held-out sets (issue 17): by default (``split="disjoint"``) the discovery dataset and
the held-out dataset draw from the two sides of one seeded partition of the task's sequence identities
(:class:`seqcirc_utils.tasks.datasets.Split`, seeded by the dataset ``seed``), so no held-out prompt
continues a sequence discovery saw. Every record states ``n_sequences`` (distinct sequence identities
of its discovery prompts, after the filter), and ``heldout`` adds ``split`` (``"disjoint"``, or
``"resampled"`` when a caller asked for a same-pool resample), ``n_sequences`` and ``overlap`` (shared
identities with the discovery prompts: 0 for a disjoint split). A task whose sequences cannot give
both sides ``min_sequences`` is refused (:class:`~seqcirc_utils.core.errors.TooFewPromptsError`).

:func:`discover` returns these records typed (:class:`seqcirc_utils.core.records.CircuitRecord`: ``to_json()``
is exactly the dict above, and the record reads like it: ``r["heads"]``, ``r.get("heldout")``).

The metric defaults to the dataset's own (:func:`seqcirc_utils.scoring.ablation.default_metric`: the
probability difference for greater-than, else the logit difference), and discovery refuses a
meaningless baseline (:func:`seqcirc_utils.scoring.ablation.check_baseline`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from seqcirc_utils.core.config import DiscoveryConfig
from seqcirc_utils.core.errors import BaselineError, ParameterError, SeqcircError, TooFewPromptsError
from seqcirc_utils.core.options import MIN_SEQUENCES_PER_ROLE, SELECTION_ROLES, SPLIT_MODES, SPLIT_ROLES
from seqcirc_utils.core.records import CIRCUIT_SCHEMA_VERSION, CircuitRecord
from seqcirc_utils.core.result_records import CircuitFile, read_circuits
from seqcirc_utils.core.results import write_json_atomic
from seqcirc_utils.core.stats import (
    CI_UNIT_SEQUENCE,
    LEVEL,
    N_RESAMPLES,
    cluster_bootstrap_mean_ci,
    cluster_bootstrap_ratio_ci,
    n_clusters,
    ratio_of_means,
)
from seqcirc_utils.core.types import Circuit, Component
from seqcirc_utils.discovery.pruning import PruningResult, prune
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import Ablator, check_baseline
from seqcirc_utils.scoring.greater_than import YEAR_MODES, ExactProbDiff
from seqcirc_utils.tasks.datasets import (
    GREATER_THAN,
    ROLE_SEED_OFFSET,
    Split,
    TaskDataset,
    TaskSpec,
    filter_to_correct,
    filter_to_year_continuation,
    make_dataset,
    sequence_overlap,
)

SCHEMA_VERSION = CIRCUIT_SCHEMA_VERSION
HELDOUT_SEED_OFFSET = 1000
#: When too few fresh prompts pass the filter, the held-out set is drawn again this many times larger
#: (same seed), so a held-out score exists wherever discovery itself had enough prompts.
#: Draw sizes (multiples of ``n``) tried in turn when too few prompts pass the filter: held-out sets and the
#: robustness runs' datasets (a small dataset seed can leave too few).
DRAW_GROWTH = (1, 2, 4)


FILTERS = {
    "correct": "top-1 is the answer and p(correct) > 2 p(incorrect) (the paper's filter)",
    "year": "top-1 is a year token, whichever value (greater-than under the probability difference)",
    "none": "every prompt kept",
}


def resolve_metric(task: str, metric: str | None) -> str:
    """``metric``, or the task's own when None: ``prob_diff`` for greater-than, else ``logit_diff``."""
    if metric is None:
        return "prob_diff" if task == GREATER_THAN else "logit_diff"
    return metric


def filter_kind(task: str, metric: str | None, filter_correct: bool = True) -> str:
    """Which filter discovery applies (a key of :data:`FILTERS`)."""
    if not filter_correct:
        return "none"
    return "year" if task == GREATER_THAN and resolve_metric(task, metric) == "prob_diff" else "correct"


def discovery_dataset(
    model,
    model_name: str,
    task: str,
    filter_correct: bool = True,
    min_prompts: int = 8,
    metric: str | None = None,
    growth: Sequence[int] = (1,),
    **kwargs,
) -> TaskDataset:
    """The dataset circuit discovery runs on: built with :func:`make_dataset`, then (by default) filtered.

    The filter (:func:`filter_kind`) is the paper's (the model gets the answer right: top-1 and
    p(correct) > 2 p(incorrect)), except for greater-than under the probability difference (its
    default metric), where prompts are kept whose top-1 is any year token: no particular digit is
    required, the PD measures how the mass splits around ``YY``.

    When fewer than ``min_prompts`` prompts pass, the set is drawn again ``growth[1]``, ``growth[2]``, ...
    times larger (same seed; e.g. :data:`DRAW_GROWTH`); the default ``(1,)`` draws once. Raises
    :class:`TooFewPromptsError` when even the largest draw is too small.
    """
    n_base = int(kwargs.pop("n", TaskSpec.n))
    kind = filter_kind(task, metric, filter_correct)
    for factor in growth:
        ds = make_dataset(model.tokenizer, task, model_name=model_name, n=n_base * factor, **kwargs)
        if kind == "none":
            return ds
        kept = filter_to_year_continuation(model, ds) if kind == "year" else filter_to_correct(model, ds)
        if len(kept) >= min_prompts:
            return kept
    raise TooFewPromptsError(
        f"only {len(kept)} of {len(ds)} {task} prompts pass the filter ({FILTERS[kind]}) for {model_name}; "
        f"need >= {min_prompts} (try another template, more prompts, or filter_correct=False)"
    )


T = TypeVar("T")


def build_or_skip(build: Callable[[str], T], names: Iterable[str]) -> tuple[dict[str, T], dict[str, str]]:
    """``({name: build(name)}, {name: why skipped})`` over ``names`` (duplicates once, in order).

    Only the :class:`~seqcirc_utils.core.errors.SeqcircError` family (too few correctly answered prompts,
    a family the tokenizer cannot spell, a split with too few sequences) skips a name, with the error's
    one-line message; any other exception is a bug and propagates with its traceback.
    """
    built: dict[str, T] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            built[name] = build(name)
        except SeqcircError as err:
            skipped[name] = str(err)
    return built, skipped


def split_discovery_datasets(
    model,
    model_name: str,
    task: str,
    *,
    roles: Sequence[str] = SELECTION_ROLES,
    shares: Sequence[int] | None = None,
    seed: int = 0,
    min_sequences: int = MIN_SEQUENCES_PER_ROLE,
    min_prompts: int = 8,
    growth: Sequence[int] = DRAW_GROWTH,
    **kwargs,
) -> dict[str, TaskDataset]:
    """One filtered dataset per role of a sequence-disjoint split (:class:`Split` of ``roles``, seeded by
    ``seed``): ``{role: dataset}`` as :func:`discovery_dataset` builds it (role ``i`` drawn with ``seed + i *
    ROLE_SEED_OFFSET``, filtered, grown by ``growth`` when too few pass). No two roles share a sequence identity
    (checked). Raises :class:`TooFewPromptsError` when a role has too few sequences or passing prompts."""
    if {"split", "seed"} & set(kwargs):
        raise ParameterError("split_discovery_datasets sets each role's split and seed; pass roles, shares and seed")
    out: dict[str, TaskDataset] = {}
    for i, role in enumerate(roles):
        split = Split(role, tuple(roles), tuple(shares) if shares is not None else None, seed, min_sequences)
        out[role] = discovery_dataset(
            model,
            model_name,
            task,
            min_prompts=min_prompts,
            growth=growth,
            seed=seed + i * ROLE_SEED_OFFSET,
            split=split,
            **kwargs,
        )
    names = list(out)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            shared = sequence_overlap(out[names[a]], out[names[b]])
            if shared:
                raise AssertionError(f"split roles {names[a]} and {names[b]} share {shared} sequences")
    return out


def faithfulness_parts(ablator: Ablator, circuit_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt numerator and denominator ``([batch], [batch])`` of normalised faithfulness:
    ``m(C) - m(empty)`` and ``m(full) - m(empty)`` (metric units; for KL, ``m(full) = 0``), where the
    empty circuit has every head and MLP ablated the same way (:meth:`Ablator.empty_values`, cached).
    ``faithfulness = mean(numerator) / mean(denominator)``: 0 for the empty circuit, 1 for the full model."""
    empty = ablator.empty_values()
    full = ablator.metric_values(ablator.full_logits)
    return circuit_values - empty, full - empty


def check_faithfulness_baseline(
    ablator: Ablator, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Refuse a faithfulness denominator ``m(full) - m(empty)`` whose cluster-bootstrap interval (over
    sequence identities) includes 0 or lies on the wrong side (the full model must beat the empty
    circuit: a positive gap for logit/probability differences, a negative one for KL).
    Raises :class:`~seqcirc_utils.core.errors.BaselineError`; returns the interval."""
    _, den = faithfulness_parts(ablator, ablator.empty_values())
    lo, hi = cluster_bootstrap_mean_ci(den, ablator.dataset.sequence_ids, n_resamples, seed, level)
    sign = -1.0 if ablator.metric == "kl" else 1.0
    if not (sign * lo > 0 and sign * hi > 0):
        spec = ablator.dataset.spec
        raise BaselineError(
            f"faithfulness undefined: m(full) - m(empty) has {int(100 * level)} % interval [{lo:.4g}, {hi:.4g}] "
            f"({ablator.metric}, {spec.task}/{spec.template}, {len(ablator.dataset)} prompts from "
            f"{ablator.dataset.n_sequences} sequences); it must be {'negative' if sign < 0 else 'positive'} "
            "and exclude 0 (use more sequences, another template, or the correct-answer filter)"
        )
    return lo, hi


def score_with_ci(
    ablator: Ablator,
    kept: Iterable[Component],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    faithfulness: bool = True,
) -> dict:
    """(Re)score the circuit ``kept`` on the ablator's dataset with cluster-bootstrap intervals.

    Returns ``{"score", "ci95", "circuit_metric", "full_metric", "n_prompts", "ci_unit", "n_clusters",
    "empty_metric", "faithfulness", "faithfulness_ci95"}``: ``score`` equals :meth:`Ablator.score`
    (``kept`` and nothing else unablated; the paper's ratio m(C) / m(full)); ``empty_metric`` is the
    dataset-mean metric with every component ablated; ``faithfulness`` = (m(C) - m(empty)) /
    (m(full) - m(empty)) (:func:`faithfulness_parts`). Both intervals are percentile cluster-bootstrap
    intervals (:func:`~seqcirc_utils.core.stats.cluster_bootstrap_ratio_ci`: ``n_resamples`` resamples of
    the dataset's sequence identities, all their prompts taken, seeded); ``ci_unit`` is ``"sequence"`` and
    ``n_clusters`` the number of distinct identities. Raises
    :class:`~seqcirc_utils.core.errors.BaselineError` when the faithfulness denominator's interval includes
    0 (:func:`check_faithfulness_baseline`). One forward pass (one more per ablator for the empty circuit).
    ``faithfulness=False``: only the paper's ratio (no empty circuit, no check; the three faithfulness
    keys are None), for comparisons that read ``score`` alone.
    """
    if faithfulness:
        check_faithfulness_baseline(ablator, n_resamples, seed, level)
    num, den = ablator.score_parts(kept)
    clusters = ablator.dataset.sequence_ids
    value = float(num.mean())
    lo, hi = cluster_bootstrap_ratio_ci(num, den, clusters, n_resamples, seed, level, complement=ablator.metric == "kl")
    out = {
        "score": ablator.fraction_of_full(value),
        "ci95": [lo, hi],
        "circuit_metric": value,
        "full_metric": ablator.full_metric,
        "n_prompts": len(ablator.dataset),
        "ci_unit": CI_UNIT_SEQUENCE,
        "n_clusters": n_clusters(clusters),
        "empty_metric": None,
        "faithfulness": None,
        "faithfulness_ci95": None,
    }
    if faithfulness:
        f_num, f_den = faithfulness_parts(ablator, num)
        f_lo, f_hi = cluster_bootstrap_ratio_ci(f_num, f_den, clusters, n_resamples, seed, level)
        out |= {
            "empty_metric": float(ablator.empty_values().mean()),
            "faithfulness": ratio_of_means(f_num, f_den),
            "faithfulness_ci95": [f_lo, f_hi],
        }
    return out


#: The keys :func:`score_with_ci` adds beside the score (copied into records and their ``heldout``).
FAITHFULNESS_KEYS = ("ci_unit", "n_clusters", "empty_metric", "faithfulness", "faithfulness_ci95")


def score_dataset(
    model,
    info,
    dataset: TaskDataset,
    kept: Iterable[Component],
    ablation: str = "mean",
    metric: str | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Score a circuit on ``dataset`` with its own ablation means (a new :class:`Ablator`):
    :func:`score_with_ci`'s dict, plus ``exact_prob_diff`` for greater-than."""
    ablator = Ablator(model, info, dataset, mode=ablation, metric=resolve_metric(dataset.task, metric))
    kept = list(kept)
    out = score_with_ci(ablator, kept, n_resamples, seed)
    if dataset.task == GREATER_THAN:
        out["exact_prob_diff"] = ExactProbDiff(ablator).score(kept, n_resamples, seed)
    return out


def _prefix_mode(dataset: TaskDataset) -> str | None:
    prefix = dataset.to_json().get("prefix")
    if isinstance(prefix, dict):
        return prefix.get("mode")
    return getattr(dataset.spec, "prefix", prefix)


def greater_than_metric_fields(ablator: Ablator) -> dict:
    """``pruning_metric`` and ``metric_note`` of a greater-than record (what the score measures)."""
    groups = ablator.dataset.greater_than_groups or []
    if ablator.metric != "prob_diff":
        return {
            "pruning_metric": ablator.metric,
            "metric_note": f"pruned by {ablator.metric}; exact_prob_diff is the exact two-digit PD",
        }
    if len(groups) == 10:
        return {
            "pruning_metric": "tens-digit prob_diff",
            "metric_note": "years split into digit tokens: score is the tens-digit approximation of the PD "
            "(tie digit excluded); exact_prob_diff is the exact two-digit PD (" + YEAR_MODES["digit"] + ")",
        }
    return {
        "pruning_metric": "prob_diff",
        "metric_note": "years' two digits are one token: score is the exact two-digit PD ("
        + YEAR_MODES["two_digit"]
        + ")",
    }


def circuit_record(
    result: PruningResult,
    dataset: TaskDataset,
    ablator: Ablator,
    seconds: float | None = None,
    *,
    heldout: dict | None = None,
    heldout_dataset: TaskDataset | None = None,
    exact: ExactProbDiff | None = None,
    prompt_filter: str | None = None,
    n_resamples: int = N_RESAMPLES,
    bootstrap_seed: int = 0,
) -> CircuitRecord:
    """The per-threshold circuit record (the circuit-JSON schema, version :data:`SCHEMA_VERSION`;
    ``to_json()`` is the dict written to the circuit JSON, and the record reads like that dict).

    Computes the in-sample ``score_ci95`` (one forward pass) and, given ``exact``, the in-sample
    ``exact_prob_diff``; ``heldout`` / ``heldout_dataset`` come from :func:`heldout_scores`.
    """
    heads, mlps = Circuit(result.components).to_lists()
    spec = dataset.spec
    record = {
        "model": dataset.model,
        "task": spec.task,
        "template": spec.template,
        "direction": spec.direction,
        "seed": spec.seed,
        "threshold": result.threshold,
        "method": result.method,
        "ablation": ablator.mode.value,
        "metric": ablator.metric,
        "heads": heads,
        "mlps": mlps,
        "n_components": len(result.components),
        "score": result.score.score,
        "full_metric": result.score.full_metric,
        "circuit_metric": result.score.circuit_metric,
        "forward_passes": result.forward_passes,
        "seconds": result.seconds if seconds is None else seconds,
        "n_prompts": len(dataset),
        "dataset": dataset.to_json(),
    }
    in_sample = score_with_ci(ablator, result.components, n_resamples, bootstrap_seed)
    record |= {
        "kind": "circuit",
        "schema_version": SCHEMA_VERSION,
        "prefix": _prefix_mode(dataset),
        "filter": prompt_filter,
        "order": getattr(result, "order", None),
        "minimal": getattr(result, "minimal", None),
        "removable_left": getattr(result, "removable_left", 0),
        "score_ci95": in_sample["ci95"],
        "bootstrap": {"n_resamples": n_resamples, "seed": bootstrap_seed, "level": LEVEL},
        "heldout": heldout,
        "heldout_dataset": heldout_dataset.to_json() if heldout_dataset is not None else None,
        "n_sequences": dataset.n_sequences,
    }
    record |= {key: in_sample[key] for key in FAITHFULNESS_KEYS}
    if spec.task == GREATER_THAN:
        record |= greater_than_metric_fields(ablator)
        if exact is not None:
            record["exact_prob_diff"] = exact.score(result.components, n_resamples, bootstrap_seed)
    return CircuitRecord.from_json(record)


def split_pair(
    split: str, seed: int, shares: Sequence[int] | None = None, min_sequences: int = MIN_SEQUENCES_PER_ROLE
) -> tuple[Split | None, Split | None]:
    """The discovery and held-out :class:`Split` of ``split`` mode (:data:`SPLIT_MODES`): ``"disjoint"``
    gives the two sides of one partition seeded by ``seed`` (``shares`` = discovery : held-out sizes);
    ``"resampled"`` gives ``(None, None)`` (both drawn from the whole space; records label it)."""
    if split not in SPLIT_MODES:
        raise ParameterError(f"unknown split {split!r}; valid: {', '.join(SPLIT_MODES)}")
    if split == "resampled":
        return None, None
    shares = tuple(shares) if shares is not None else None
    return tuple(Split(role, SPLIT_ROLES, shares, seed, min_sequences) for role in SPLIT_ROLES)  # type: ignore[return-value]


def heldout_scores(
    model,
    info,
    model_name: str,
    task: str,
    circuits: Sequence[Iterable[Component]],
    *,
    seed: int,
    ablation: str = "mean",
    metric: str | None = None,
    filter_correct: bool = True,
    min_prompts: int = 8,
    n_resamples: int = N_RESAMPLES,
    bootstrap_seed: int = 0,
    discovery: TaskDataset | None = None,
    **dataset_kwargs,
) -> tuple[list[dict], TaskDataset]:
    """Score each circuit on a fresh dataset drawn with ``seed`` (the other dataset options as given,
    ``split=`` the held-out role of a :class:`Split` for a sequence-disjoint set), filtered as discovery
    filters, with its own ablation means. When fewer than ``min_prompts`` fresh prompts pass the filter,
    the set is drawn again 2x and 4x larger (:data:`DRAW_GROWTH`, same seed).

    Returns ``(heldout dicts, dataset)``; each dict is ``{"seed", "n_prompts", "score", "ci95",
    "full_metric", "circuit_metric", "split", "n_sequences", "overlap"}`` and :data:`FAITHFULNESS_KEYS` plus
    ``exact_prob_diff`` for greater-than: ``split`` is ``"disjoint"`` when drawn with a split, else
    ``"resampled"``; ``overlap`` the number of sequence identities shared with ``discovery`` (None when no
    discovery dataset is given). Raises like discovery when the held-out baseline is meaningless.
    """
    metric = resolve_metric(task, metric)
    ds = discovery_dataset(
        model,
        model_name,
        task,
        filter_correct=filter_correct,
        min_prompts=min_prompts,
        metric=metric,
        seed=seed,
        growth=DRAW_GROWTH,
        **dataset_kwargs,
    )
    label = "resampled" if dataset_kwargs.get("split") is None else "disjoint"
    overlap = sequence_overlap(discovery, ds) if discovery is not None else None
    if label == "disjoint" and overlap:
        raise AssertionError(f"a disjoint held-out set shares {overlap} sequences with the discovery set")
    ablator = Ablator(model, info, ds, mode=ablation, metric=metric)
    check_baseline(ablator, f"{model_name} (held-out seed {seed})")
    exact = ExactProbDiff(ablator) if task == GREATER_THAN else None
    out = []
    for kept in circuits:
        kept = list(kept)
        scored = score_with_ci(ablator, kept, n_resamples, bootstrap_seed)
        entry = {
            "seed": seed,
            "n_prompts": len(ds),
            "score": scored["score"],
            "ci95": scored["ci95"],
            "full_metric": scored["full_metric"],
            "circuit_metric": scored["circuit_metric"],
            "split": label,
            "n_sequences": ds.n_sequences,
            "overlap": overlap,
        }
        entry |= {key: scored[key] for key in FAITHFULNESS_KEYS}
        if exact is not None:
            entry["exact_prob_diff"] = exact.score(kept, n_resamples, bootstrap_seed)
        out.append(entry)
    return out, ds


def task_sizing(
    task: str, task_sequences: Mapping[str, Sequence[int]], n_prompts: int
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """How a chapter sizes ``task``: ``(DiscoveryConfig options, dataset options)``.

    ``({"sequences": (d, h)}, {})`` when ``task_sequences`` lists the task (``d`` discovery and ``h`` held-out
    distinct sequences, one prompt each), else ``({}, {"n": n_prompts})`` (prompts drawn from the role's sequences).
    """
    if task in task_sequences:
        discovery, heldout = task_sequences[task]
        return {"sequences": (int(discovery), int(heldout))}, {}
    return {}, {"n": n_prompts}


def discover(
    model,
    info,
    model_name: str,
    task: str = "digits",
    config: DiscoveryConfig | None = None,
    *,
    progress: bool = True,
    heldout_options: Mapping | None = None,
    **dataset_kwargs,
) -> tuple[list[CircuitRecord], TaskDataset, Ablator]:
    """Find nested circuits for each of ``config.thresholds`` with an already loaded model.

    ``config`` (:class:`~seqcirc_utils.core.config.DiscoveryConfig`, default: its defaults) says how: pruning
    method and its options, ablation, metric (None = the task's own, :func:`resolve_metric`), prompt filter,
    held-out scoring, split, bootstrap. ``dataset_kwargs`` are :func:`~seqcirc_utils.tasks.datasets.make_dataset`
    options (``template``, ``n``, ``seed``, ``prefix``, ...).

    The dataset is :func:`discovery_dataset`'s, drawn 2x / 4x larger when fewer than ``config.min_prompts``
    prompts pass its filter (:data:`DRAW_GROWTH`; the record's ``dataset`` holds the draw used). The full
    model's baseline is checked first (:func:`~seqcirc_utils.scoring.ablation.check_baseline`: a
    ``BaselineError`` when it is <= 0 or tiny). With ``config.heldout`` every circuit is also scored on a
    held-out dataset (:func:`heldout_scores`).

    ``config.split="disjoint"`` (default) draws discovery and held-out prompts from the two sides of one seeded
    partition of the task's sequence identities (:func:`split_pair`; ``split_shares`` = discovery : held-out
    sizes, equal by default; each side needs ``min_sequences``, else :class:`TooFewPromptsError`);
    ``"resampled"`` draws both from the whole space (the held-out dict says ``"split": "resampled"``; its seed
    is ``heldout_seed``, default ``seed + HELDOUT_SEED_OFFSET``). ``heldout_options`` override dataset options
    for the held-out draw only (e.g. ``{"n": 48, "sequences": 24}`` beside ``n=96, sequences=48`` for discovery:
    sizes by distinct sequences). ``config.sequences = (d, h)`` is the short form of one prompt per sequence:
    ``n = sequences = d`` for discovery, ``h`` held out, the partition's shares ``d : h`` unless ``split_shares``
    says otherwise (giving ``n`` or ``sequences`` beside it is refused).

    Returns ``(records, dataset, ablator)``: the per-threshold :class:`CircuitRecord` objects (highest
    threshold first; the first carries ``setup_seconds`` in ``extra``), the dataset used and the
    :class:`Ablator` (reuse it to score more circuits on this data).
    """
    config = config or DiscoveryConfig()
    thresholds, ablation, filter_correct = config.thresholds, config.ablation, config.filter_correct
    min_prompts, n_resamples, bootstrap_seed = config.min_prompts, config.n_resamples, config.bootstrap_seed
    metric = resolve_metric(task, config.metric)
    if {"seed", "split"} & set(heldout_options or {}):
        raise ParameterError(
            "heldout_options holds dataset sizes and options; set the held-out seed with heldout_seed "
            "and the split with split='disjoint'|'resampled'"
        )
    if config.sequences is not None:
        given = sorted({"n", "sequences"} & (set(dataset_kwargs) | set(heldout_options or {})))
        if given:
            raise ParameterError(
                f"config.sequences={list(config.sequences)} sizes both sets by distinct sequences; drop {given} "
                "or set sequences=None"
            )
        n_discovery, n_heldout = config.sequences
        dataset_kwargs = {**dataset_kwargs, "n": n_discovery, "sequences": n_discovery}
        heldout_options = {**(heldout_options or {}), "n": n_heldout, "sequences": n_heldout}
    discovery_split, heldout_split = split_pair(
        config.split, dataset_kwargs.get("seed", 0), config.split_shares or config.sequences, config.min_sequences
    )
    ds = discovery_dataset(
        model,
        model_name,
        task,
        filter_correct=filter_correct,
        min_prompts=min_prompts,
        metric=metric,
        growth=DRAW_GROWTH,
        split=discovery_split,
        **dataset_kwargs,
    )
    t0 = time.perf_counter()
    ablator = Ablator(model, info, ds, mode=ablation, metric=metric)
    check_baseline(ablator, model_name)
    check_faithfulness_baseline(ablator, n_resamples, bootstrap_seed)
    results = prune(ablator, thresholds, method=config.method, progress=progress, **config.method_options())
    setup_seconds = time.perf_counter() - t0 - sum(r.seconds for r in results)
    ho_dicts: list[dict | None] = [None] * len(results)
    ho_ds = None
    if config.heldout:
        seed = dataset_kwargs.pop("seed", 0)
        ho_seed = seed + HELDOUT_SEED_OFFSET if config.heldout_seed is None else config.heldout_seed
        ho_dicts, ho_ds = heldout_scores(
            model,
            info,
            model_name,
            task,
            [r.components for r in results],
            seed=ho_seed,
            ablation=ablation,
            metric=metric,
            filter_correct=filter_correct,
            min_prompts=min_prompts,
            n_resamples=n_resamples,
            bootstrap_seed=bootstrap_seed,
            discovery=ds,
            split=heldout_split,
            **(dataset_kwargs | dict(heldout_options or {})),
        )
    exact = ExactProbDiff(ablator) if task == GREATER_THAN else None
    kind = filter_kind(task, metric, filter_correct)
    records = [
        circuit_record(
            r,
            ds,
            ablator,
            heldout=h,
            heldout_dataset=ho_ds,
            exact=exact,
            prompt_filter=kind,
            n_resamples=n_resamples,
            bootstrap_seed=bootstrap_seed,
        )
        for r, h in zip(results, ho_dicts)
    ]
    records[0] = records[0].with_extra(setup_seconds=setup_seconds)
    return records, ds, ablator


def find_circuits(
    model_spec: str,
    task: str = "digits",
    config: DiscoveryConfig | None = None,
    *,
    device: str | None = None,
    progress: bool = True,
    **dataset_kwargs,
) -> list[CircuitRecord]:
    """Load ``model_spec`` and find nested circuits for each threshold (see :func:`discover`)."""
    model, info = load_model(model_spec, device=device)
    records, _, _ = discover(model, info, model_spec, task, config, progress=progress, **dataset_kwargs)
    return records


def score_columns(record: Mapping) -> dict:
    """Table columns for a circuit record's score beside its held-out score, in percent, each with its
    95 % bootstrap interval as text: ``score_%, score_ci95, sequences, heldout_%, heldout_ci95, heldout_prompts,
    heldout_sequences, heldout_split``, then the normalised faithfulness beside them (schema 3): ``faithfulness_%,
    faithfulness_ci95, heldout_faithfulness_%, heldout_faithfulness_ci95`` (held-out columns NaN / empty when the
    record has none; faithfulness columns and sequence counts of older records NaN / None)."""

    def interval(ci) -> str:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""

    def percent(value) -> float:
        return 100 * value if value is not None else float("nan")

    held = record.get("heldout") or {}
    return {
        "score_%": 100 * record["score"],
        "score_ci95": interval(record.get("score_ci95")),
        "sequences": record.get("n_sequences"),
        "heldout_%": 100 * held["score"] if held else float("nan"),
        "heldout_ci95": interval(held.get("ci95")),
        "heldout_prompts": held.get("n_prompts"),
        "heldout_sequences": held.get("n_sequences"),
        "heldout_split": held.get("split"),
        "faithfulness_%": percent(record.get("faithfulness")),
        "faithfulness_ci95": interval(record.get("faithfulness_ci95")),
        "heldout_faithfulness_%": percent(held.get("faithfulness")),
        "heldout_faithfulness_ci95": interval(held.get("faithfulness_ci95")),
    }


def reusable_circuit(
    path: str | Path,
    threshold: float,
    found_as: Mapping[str, object],
    sequences: tuple[int, int],
) -> tuple[CircuitRecord | None, str]:
    """The circuit at ``threshold`` in the circuit file ``path`` when it was found the way another chapter would
    find it, so that chapter can take it instead of finding it again: ``(record, "")``, or ``(None, why not)``.

    Found the same way: every key of ``found_as`` equals the record's (e.g. ``model``, ``task``, ``template``,
    ``direction``, ``seed``, ``method``, ``ablation``, ``metric``, ``prefix``, ``minimal``), and both sets were
    sized by sequence as ``sequences = (discovery, held-out)`` says (:attr:`DiscoveryConfig.sequences`: one prompt
    per sequence, the partition's shares in that proportion). Only sequence-sized circuits are reused: a prompt-
    sized draw depends on more options than a record states. A missing file is a reason, not an error.
    """
    path = Path(path)
    if not path.is_file():
        return None, f"{path.name} does not exist"
    discovery, heldout = sequences
    for record in read_circuits(path):
        if abs(record["threshold"] - threshold) > 1e-9:
            continue
        differ = sorted(k for k, v in found_as.items() if record.get(k) != v)
        ds, held = record["dataset"] or {}, record.get("heldout_dataset") or {}
        split = ds.get("split") or {}
        if ds.get("sequences") != discovery or held.get("sequences") != heldout:
            differ.append("sequences")
        if split.get("shares") != [discovery, heldout]:
            differ.append("split shares")
        if differ:
            return None, f"{path.name} at {threshold:g} was found with another {', '.join(differ)}"
        return record, ""
    return None, f"{path.name} has no circuit at {threshold:g}"


def write_circuits(path: str | Path, records: Sequence[CircuitRecord | dict]) -> Path:
    """Write a :class:`~seqcirc_utils.core.result_records.CircuitFile` (``{"kind": "circuit_file",
    "schema_version": 1, "circuits": [record, ...]}``) atomically; plain dicts are read as circuit records.
    Read it back with :func:`seqcirc_utils.core.result_records.read_circuit` (the one circuit-file reader)."""
    typed = [r if isinstance(r, CircuitRecord) else CircuitRecord.from_json(r) for r in records]
    return write_json_atomic(Path(path), CircuitFile(circuits=typed).to_json())
