"""Circuit discovery end to end: dataset -> (filter) -> ablator -> pruning -> circuit JSON.

The circuit JSON (``seqcirc circuit --out ...``) is ``{"circuits": [one dict per threshold]}``; each
dict holds ``model, task, template, direction, seed, threshold, method, ablation, metric, heads``
(``[[layer, head], ...]``), ``mlps`` (``[layer, ...]``), ``score`` (circuit metric / full metric, every
non-circuit component ablated at every position), ``full_metric, circuit_metric, forward_passes,
seconds, n_components`` and the exact ``dataset`` used (the dict ``seqcirc dataset --format json``
prints).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from .ablation import Ablator
from .models import load_model
from .pruning import PruningResult, check_thresholds, prune
from .results import write_json_atomic
from .tasks import TaskDataset, filter_to_correct, make_dataset
from .types import Circuit


def circuit_record(result: PruningResult, dataset: TaskDataset, ablator: Ablator, seconds: float | None = None) -> dict:
    """The per-threshold circuit dict (the circuit-JSON schema)."""
    heads, mlps = Circuit(result.components).to_lists()
    spec = dataset.spec
    return {
        "model": dataset.model, "task": spec.task, "template": spec.template, "direction": spec.direction,
        "seed": spec.seed, "threshold": result.threshold, "method": result.method,
        "ablation": ablator.mode.value, "metric": ablator.metric, "heads": heads, "mlps": mlps,
        "n_components": len(result.components), "score": result.score.score,
        "full_metric": result.score.full_metric, "circuit_metric": result.score.circuit_metric,
        "forward_passes": result.forward_passes, "seconds": result.seconds if seconds is None else seconds,
        "n_prompts": len(dataset), "dataset": dataset.to_json(),
    }


def discovery_dataset(model, model_name: str, task: str, filter_correct: bool = True, min_prompts: int = 8, **kwargs) -> TaskDataset:
    """The dataset circuit discovery runs on: built with :func:`make_dataset`, then (by default)
    filtered to prompts the model gets right (top-1 and p(correct) > 2 p(incorrect))."""
    ds = make_dataset(model.tokenizer, task, model_name=model_name, **kwargs)
    if filter_correct:
        kept = filter_to_correct(model, ds)
        if len(kept) < min_prompts:
            raise ValueError(
                f"only {len(kept)} of {len(ds)} {task} prompts are answered correctly by {model_name}; "
                f"need >= {min_prompts} (try another template, more prompts, or filter_correct=False)"
            )
        ds = kept
    return ds


def discover(
    model,
    info,
    model_name: str,
    task: str = "digits",
    thresholds: Sequence[float] = (0.8,),
    method: str = "sweep",
    ablation: str = "mean",
    metric: str = "logit_diff",
    filter_correct: bool = True,
    progress: bool = True,
    **dataset_kwargs,
) -> tuple[list[dict], TaskDataset, Ablator]:
    """Find nested circuits for each threshold with an already loaded model.

    Returns ``(records, dataset, ablator)``: the per-threshold circuit dicts (highest threshold
    first), the dataset used and the :class:`Ablator` (reuse it to score more circuits on this data).
    """
    thresholds = check_thresholds(thresholds)
    ds = discovery_dataset(model, model_name, task, filter_correct=filter_correct, **dataset_kwargs)
    t0 = time.perf_counter()
    ablator = Ablator(model, info, ds, mode=ablation, metric=metric)
    results = prune(ablator, thresholds, method=method, progress=progress)
    records = [circuit_record(r, ds, ablator) for r in results]
    records[0]["setup_seconds"] = time.perf_counter() - t0 - sum(r.seconds for r in results)
    return records, ds, ablator


def find_circuits(
    model_spec: str,
    task: str = "digits",
    thresholds: Sequence[float] = (0.8,),
    method: str = "sweep",
    ablation: str = "mean",
    metric: str = "logit_diff",
    device: str | None = None,
    filter_correct: bool = True,
    progress: bool = True,
    **dataset_kwargs,
) -> list[dict]:
    """Load ``model_spec`` and find nested circuits for each threshold (see :func:`discover`)."""
    model, info = load_model(model_spec, device=device)
    records, _, _ = discover(model, info, model_spec, task, thresholds, method, ablation, metric,
                             filter_correct, progress, **dataset_kwargs)
    return records


def write_circuits(path: str | Path, records: list[dict]) -> Path:
    """Write ``{"circuits": records}`` atomically."""
    return write_json_atomic(Path(path), {"circuits": records})


def load_circuit(path: str | Path, threshold: float | None = None) -> dict:
    """Read one circuit dict from a circuit JSON (the one at ``threshold``, or the only/lowest one)."""
    import json

    data = json.loads(Path(path).read_text())
    records = data.get("circuits", [data])
    if threshold is None:
        return min(records, key=lambda r: r["threshold"])
    for r in records:
        if abs(r["threshold"] - threshold) < 1e-9:
            return r
    raise ValueError(f"{path} has no circuit at threshold {threshold}; it has {[r['threshold'] for r in records]}")
