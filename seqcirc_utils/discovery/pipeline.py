"""Circuit discovery end to end: dataset -> (filter) -> ablator -> pruning -> circuit JSON.

The circuit JSON (``seqcirc circuit --out ...``) is ``{"circuits": [one dict per threshold]}``; each
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
``dataset``). Greater-than records also carry ``pruning_metric``, ``metric_note`` and
``exact_prob_diff`` = ``{"mode", "full", "circuit", "score", "ci95"}`` (the exact two-digit PD,
:mod:`seqcirc_utils.scoring.greater_than`; also inside ``heldout``).

:func:`discover` returns these records typed (:class:`seqcirc_utils.core.records.CircuitRecord`: ``to_json()``
is exactly the dict above, and the record reads like it: ``r["heads"]``, ``r.get("heldout")``).

The metric defaults to the dataset's own (:func:`seqcirc_utils.scoring.ablation.default_metric`: the
probability difference for greater-than, else the logit difference), and discovery refuses a
meaningless baseline (:func:`seqcirc_utils.scoring.ablation.check_baseline`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from seqcirc_utils.scoring.ablation import Ablator, check_baseline
from seqcirc_utils.scoring.greater_than import YEAR_MODES, ExactProbDiff
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.discovery.pruning import PruningResult, check_thresholds, prune
from seqcirc_utils.core.records import CIRCUIT_KEYS, CIRCUIT_SCHEMA_VERSION, CircuitRecord, as_json
from seqcirc_utils.core.results import write_json_atomic
from seqcirc_utils.core.stats import LEVEL, N_RESAMPLES, bootstrap_ratio_ci
from seqcirc_utils.tasks.datasets import GREATER_THAN, TaskDataset, TaskSpec, filter_to_correct, filter_to_year_continuation, make_dataset
from seqcirc_utils.core.types import Circuit, Component
from seqcirc_utils.core.errors import ParameterError, TooFewPromptsError

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


def discovery_dataset(model, model_name: str, task: str, filter_correct: bool = True, min_prompts: int = 8,
                      metric: str | None = None, growth: Sequence[int] = (1,), **kwargs) -> TaskDataset:
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


def score_with_ci(ablator: Ablator, kept: Iterable[Component], n_resamples: int = N_RESAMPLES, seed: int = 0,
                  level: float = LEVEL) -> dict:
    """(Re)score the circuit ``kept`` on the ablator's dataset with a bootstrap interval over prompts.

    Returns ``{"score", "ci95", "circuit_metric", "full_metric", "n_prompts"}``: ``score`` equals
    :meth:`Ablator.score` (``kept`` and nothing else unablated), ``ci95`` = ``[lo, hi]`` the percentile
    bootstrap interval (``n_resamples`` resamples of the prompts, seeded; the ratio of the resampled
    means per resample). One forward pass (two the first time for KL).
    """
    num, den = ablator.score_parts(kept)
    value = float(num.mean())
    lo, hi = bootstrap_ratio_ci(num, den, n_resamples, seed, level, complement=ablator.metric == "kl")
    return {"score": ablator.fraction_of_full(value), "ci95": [lo, hi], "circuit_metric": value,
            "full_metric": ablator.full_metric, "n_prompts": len(ablator.dataset)}


def score_dataset(model, info, dataset: TaskDataset, kept: Iterable[Component], ablation: str = "mean",
                  metric: str | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
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
        return {"pruning_metric": ablator.metric,
                "metric_note": f"pruned by {ablator.metric}; exact_prob_diff is the exact two-digit PD"}
    if len(groups) == 10:
        return {"pruning_metric": "tens-digit prob_diff",
                "metric_note": "years split into digit tokens: score is the tens-digit approximation of the PD "
                               "(tie digit excluded); exact_prob_diff is the exact two-digit PD (" + YEAR_MODES["digit"] + ")"}
    return {"pruning_metric": "prob_diff",
            "metric_note": "years' two digits are one token: score is the exact two-digit PD (" + YEAR_MODES["two_digit"] + ")"}


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
        "model": dataset.model, "task": spec.task, "template": spec.template, "direction": spec.direction,
        "seed": spec.seed, "threshold": result.threshold, "method": result.method,
        "ablation": ablator.mode.value, "metric": ablator.metric, "heads": heads, "mlps": mlps,
        "n_components": len(result.components), "score": result.score.score,
        "full_metric": result.score.full_metric, "circuit_metric": result.score.circuit_metric,
        "forward_passes": result.forward_passes, "seconds": result.seconds if seconds is None else seconds,
        "n_prompts": len(dataset), "dataset": dataset.to_json(),
    }
    in_sample = score_with_ci(ablator, result.components, n_resamples, bootstrap_seed)
    record |= {
        "kind": "circuit", "schema_version": SCHEMA_VERSION, "prefix": _prefix_mode(dataset), "filter": prompt_filter,
        "order": getattr(result, "order", None), "minimal": getattr(result, "minimal", None),
        "removable_left": getattr(result, "removable_left", 0),
        "score_ci95": in_sample["ci95"],
        "bootstrap": {"n_resamples": n_resamples, "seed": bootstrap_seed, "level": LEVEL},
        "heldout": heldout, "heldout_dataset": heldout_dataset.to_json() if heldout_dataset is not None else None,
    }
    if spec.task == GREATER_THAN:
        record |= greater_than_metric_fields(ablator)
        if exact is not None:
            record["exact_prob_diff"] = exact.score(result.components, n_resamples, bootstrap_seed)
    return CircuitRecord.from_json(record)


def heldout_scores(
    model, info, model_name: str, task: str, circuits: Sequence[Iterable[Component]], *,
    seed: int, ablation: str = "mean", metric: str | None = None, filter_correct: bool = True,
    min_prompts: int = 8, n_resamples: int = N_RESAMPLES, bootstrap_seed: int = 0, **dataset_kwargs,
) -> tuple[list[dict], TaskDataset]:
    """Score each circuit on a fresh dataset drawn with ``seed`` (the other dataset options as given),
    filtered as discovery filters, with its own ablation means. When fewer than ``min_prompts`` fresh
    prompts pass the filter, the set is drawn again 2x and 4x larger (:data:`DRAW_GROWTH`, same seed).

    Returns ``(heldout dicts, dataset)``; each dict is ``{"seed", "n_prompts", "score", "ci95",
    "full_metric", "circuit_metric"}`` plus ``exact_prob_diff`` for greater-than. Raises like
    discovery when the held-out baseline is meaningless.
    """
    metric = resolve_metric(task, metric)
    ds = discovery_dataset(model, model_name, task, filter_correct=filter_correct, min_prompts=min_prompts,
                           metric=metric, seed=seed, growth=DRAW_GROWTH, **dataset_kwargs)
    ablator = Ablator(model, info, ds, mode=ablation, metric=metric)
    check_baseline(ablator, f"{model_name} (held-out seed {seed})")
    exact = ExactProbDiff(ablator) if task == GREATER_THAN else None
    out = []
    for kept in circuits:
        kept = list(kept)
        scored = score_with_ci(ablator, kept, n_resamples, bootstrap_seed)
        entry = {"seed": seed, "n_prompts": len(ds), "score": scored["score"], "ci95": scored["ci95"],
                 "full_metric": scored["full_metric"], "circuit_metric": scored["circuit_metric"]}
        if exact is not None:
            entry["exact_prob_diff"] = exact.score(kept, n_resamples, bootstrap_seed)
        out.append(entry)
    return out, ds


def discover(
    model,
    info,
    model_name: str,
    task: str = "digits",
    thresholds: Sequence[float] = (0.8,),
    method: str = "sweep",
    ablation: str = "mean",
    metric: str | None = None,
    filter_correct: bool = True,
    progress: bool = True,
    *,
    heldout: bool = True,
    heldout_seed: int | None = None,
    min_prompts: int = 8,
    n_resamples: int = N_RESAMPLES,
    bootstrap_seed: int = 0,
    order: str | None = None,
    minimal: bool = True,
    max_refine_passes: int | None = None,
    **dataset_kwargs,
) -> tuple[list[CircuitRecord], TaskDataset, Ablator]:
    """Find nested circuits for each threshold with an already loaded model.

    The dataset is :func:`discovery_dataset`'s, drawn 2x / 4x larger when fewer than ``min_prompts`` prompts
    pass its filter (:data:`DRAW_GROWTH`; the record's ``dataset`` holds the draw used).
    ``metric=None`` (default) is the dataset's own metric (:func:`resolve_metric`). The full model's
    baseline is checked first (:func:`~seqcirc_utils.scoring.ablation.check_baseline`: a ``BaselineError`` when it
    is <= 0 or tiny). With ``heldout=True`` (default) every circuit is also scored on a fresh dataset
    drawn with ``heldout_seed`` (default ``seed + HELDOUT_SEED_OFFSET``), see :func:`heldout_scores`.
    ``order``, ``minimal`` and ``max_refine_passes`` go to :func:`~seqcirc_utils.discovery.pruning.prune`.

    Returns ``(records, dataset, ablator)``: the per-threshold :class:`CircuitRecord` objects (highest
    threshold first; the first carries ``setup_seconds`` in ``extra``), the dataset used and the :class:`Ablator` (reuse it to score more circuits on this data).
    """
    thresholds = check_thresholds(thresholds)
    metric = resolve_metric(task, metric)
    ds = discovery_dataset(model, model_name, task, filter_correct=filter_correct, min_prompts=min_prompts,
                           metric=metric, growth=DRAW_GROWTH, **dataset_kwargs)
    t0 = time.perf_counter()
    ablator = Ablator(model, info, ds, mode=ablation, metric=metric)
    check_baseline(ablator, model_name)
    results = prune(ablator, thresholds, method=method, progress=progress, order=order, minimal=minimal,
                    max_refine_passes=max_refine_passes)
    setup_seconds = time.perf_counter() - t0 - sum(r.seconds for r in results)
    ho_dicts: list[dict | None] = [None] * len(results)
    ho_ds = None
    if heldout:
        seed = dataset_kwargs.pop("seed", 0)
        ho_seed = seed + HELDOUT_SEED_OFFSET if heldout_seed is None else heldout_seed
        ho_dicts, ho_ds = heldout_scores(
            model, info, model_name, task, [r.components for r in results], seed=ho_seed, ablation=ablation,
            metric=metric, filter_correct=filter_correct, min_prompts=min_prompts, n_resamples=n_resamples,
            bootstrap_seed=bootstrap_seed, **dataset_kwargs)
    exact = ExactProbDiff(ablator) if task == GREATER_THAN else None
    kind = filter_kind(task, metric, filter_correct)
    records = [circuit_record(r, ds, ablator, heldout=h, heldout_dataset=ho_ds, exact=exact, prompt_filter=kind,
                              n_resamples=n_resamples, bootstrap_seed=bootstrap_seed)
               for r, h in zip(results, ho_dicts)]
    records[0] = records[0].with_extra(setup_seconds=setup_seconds)
    return records, ds, ablator


def find_circuits(
    model_spec: str,
    task: str = "digits",
    thresholds: Sequence[float] = (0.8,),
    method: str = "sweep",
    ablation: str = "mean",
    metric: str | None = None,
    device: str | None = None,
    filter_correct: bool = True,
    progress: bool = True,
    *,
    heldout: bool = True,
    order: str | None = None,
    minimal: bool = True,
    max_refine_passes: int | None = None,
    **dataset_kwargs,
) -> list[CircuitRecord]:
    """Load ``model_spec`` and find nested circuits for each threshold (see :func:`discover`)."""
    model, info = load_model(model_spec, device=device)
    records, _, _ = discover(model, info, model_spec, task, thresholds, method, ablation, metric,
                             filter_correct, progress, heldout=heldout, order=order, minimal=minimal,
                             max_refine_passes=max_refine_passes, **dataset_kwargs)
    return records


def score_columns(record: Mapping) -> dict:
    """Table columns for a circuit record's score beside its held-out score, in percent, each with its
    95 % bootstrap interval as text: ``score_%, score_ci95, heldout_%, heldout_ci95, heldout_prompts``
    (held-out columns NaN / empty when the record has none)."""
    def interval(ci) -> str:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""

    held = record.get("heldout") or {}
    return {"score_%": 100 * record["score"], "score_ci95": interval(record.get("score_ci95")),
            "heldout_%": 100 * held["score"] if held else float("nan"), "heldout_ci95": interval(held.get("ci95")),
            "heldout_prompts": held.get("n_prompts")}


def write_circuits(path: str | Path, records: Sequence[CircuitRecord | dict]) -> Path:
    """Write ``{"circuits": records}`` atomically (records as ``to_json()``; plain dicts as they are)."""
    return write_json_atomic(Path(path), {"circuits": [as_json(r) for r in records]})


def load_circuit(path: str | Path, threshold: float | None = None) -> CircuitRecord | dict:
    """Read one circuit from a circuit JSON (the one at ``threshold``, or the only/lowest one): a
    :class:`CircuitRecord` for a schema-version-2 ``"circuit"`` record, else the dict as stored (older
    files); either reads like the dict."""
    import json

    data = json.loads(Path(path).read_text())
    records = data.get("circuits", [data])
    if threshold is None:
        return _typed(min(records, key=lambda r: r["threshold"]))
    for r in records:
        if abs(r["threshold"] - threshold) < 1e-9:
            return _typed(r)
    raise ParameterError(f"{path} has no circuit at threshold {threshold}; it has {[r['threshold'] for r in records]}")


def _typed(record: dict) -> CircuitRecord | dict:
    """``record`` as a :class:`CircuitRecord` when it is a current-schema circuit record, else as is."""
    if isinstance(record, dict) and record.get("kind") == CircuitRecord.kind \
            and record.get("schema_version") == CircuitRecord.schema_version and set(CIRCUIT_KEYS) <= set(record):
        return CircuitRecord.from_json(record)
    return record
