"""The evidence under the book's circuit scores, before and after sequence-disjoint splits and cluster intervals.

    python -m benchmarks.evidence --json                 # every circuit file of the last `make book`, at 80 %
    python -m benchmarks.evidence --threshold 0.9 --results results/smollm2-135m

For each circuit file (``circuit_*.json``) in the results folder, the circuit at ``--threshold`` is scored again
on the two datasets its record carries (discovery and held-out, rebuilt from the record's JSON, so nothing is
drawn anew), and per task the script reports:

- ``overlap_before``: how many of the held-out set's sequence identities a held-out set drawn the old way would
  share with the discovery set (the same options and filter, seed + 1000, no split: the whole sequence space),
  beside ``overlap_after`` (the record's disjoint held-out set; 0 by construction);
- ``width_prompt`` and ``width_sequence``: the width (points of the paper's ratio) of the 95 % percentile bootstrap
  interval of the held-out score when prompts are resampled as if independent (before) and when sequence
  identities are (after, what the records report), on the same per-prompt values and the same number of resamples;
- ``empty_%``: the empty circuit's metric as a percentage of the full model's (everything ablated, same means)
  and ``faithfulness_%`` beside the paper's ratio ``score_%``.

One Ablator per dataset (a clean pass, the means, the circuit's pass and the empty circuit's pass; the old-way
held-out set costs one filtering pass). ``--json`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqcirc_utils.core.options import N_RESAMPLES
from seqcirc_utils.core.result_records import read_circuits
from seqcirc_utils.core.results import results_dir
from seqcirc_utils.core.stats import bootstrap_ratio_ci, cluster_bootstrap_ratio_ci
from seqcirc_utils.core.types import Circuit
from seqcirc_utils.discovery.pipeline import HELDOUT_SEED_OFFSET, discovery_dataset
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import TaskDataset, sequence_overlap


def _width(interval: tuple[float, float]) -> float:
    return round(100 * (interval[1] - interval[0]), 2)


def evidence_row(model, info, record, n_resamples: int = N_RESAMPLES) -> dict:
    """One task's row (see the module docstring) from a circuit record that carries both datasets."""
    kept = Circuit.from_lists(record.heads, record.mlps).components
    discovery = TaskDataset.from_json(record.dataset)
    heldout = TaskDataset.from_json(record.heldout_dataset)
    ab = Ablator(model, info, heldout, mode=record.ablation, metric=record.metric)
    num, den = ab.score_parts(kept)
    complement = record.metric == "kl"
    prompt_ci = bootstrap_ratio_ci(num, den, n_resamples, seed=0, complement=complement)
    sequence_ci = cluster_bootstrap_ratio_ci(num, den, heldout.sequence_ids, n_resamples, 0, complement=complement)
    spec = discovery.spec
    options = {k: getattr(spec, k) for k in ("template", "direction", "step", "length", "corruption", "verb", "prefix")}
    old_way = discovery_dataset(  # the old held-out draw: seed + 1000 over the whole sequence space, no split
        model,
        record.model,
        record.task,
        filter_correct=record.filter not in (None, "none"),
        metric=record.metric,
        n=len(heldout),
        seed=record.seed + HELDOUT_SEED_OFFSET,
        growth=(1, 2, 4),
        **{k: v for k, v in options.items() if v is not None},
    )
    empty = float(ab.empty_values().mean())
    held = record.heldout or {}
    return {
        "task": record.task,
        "threshold": record.threshold,
        "method": record.method,
        "discovery_prompts": len(discovery),
        "discovery_sequences": discovery.n_sequences,
        "heldout_prompts": len(heldout),
        "heldout_sequences": heldout.n_sequences,
        "overlap_before": sequence_overlap(discovery, old_way),
        "old_heldout_sequences": old_way.n_sequences,
        "overlap_after": sequence_overlap(discovery, heldout),
        "heldout_%": round(100 * ab.fraction_of_full(float(num.mean())), 2),
        "width_prompt": _width(prompt_ci),
        "width_sequence": _width(sequence_ci),
        "empty_%": round(100 * empty / ab.full_metric, 2),
        "score_%": round(100 * record.score, 2),
        "faithfulness_%": round(100 * record.faithfulness, 2) if record.faithfulness is not None else None,
        "heldout_faithfulness_%": round(100 * held["faithfulness"], 2)
        if held.get("faithfulness") is not None
        else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--results", type=Path, default=None, help="folder of circuit_*.json (default: the model's)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    folder = args.results or results_dir(args.model)
    files = sorted(folder.glob("circuit_*.json"))
    model, info = load_model(args.model, device=args.device)
    rows = []
    for path in files:
        records = [r for r in read_circuits(path) if abs(r.threshold - args.threshold) < 1e-9 and r.heldout_dataset]
        rows += [{"file": path.name} | evidence_row(model, info, r) for r in records[:1]]
    out = {"model": args.model, "threshold": args.threshold, "files": [p.name for p in files], "rows": rows}
    if args.json:
        print(json.dumps(out))
    else:
        for row in rows:
            print(row)
    return out


if __name__ == "__main__":
    main()
