"""Benchmark the cost of a null distribution (99 matched random circuits) and of faithfulness curves.

    python -m benchmarks.nulls_curves --model smollm2-135m --task digits --n 24 --json

On one dataset (unfiltered, ``n`` prompts): the circuit is the top ``--circuit-size`` components of the
fast method's attribution ranking (its cost is reported apart). Measures, each with its forward passes
(prompt-batch passes) and seconds: :func:`~seqcirc_utils.evaluation.nulls.circuit_null` with ``--draws``
draws for each ``draws_per_pass`` in ``--batch`` (0: the default, as many as fill the rows), and one :func:`~seqcirc_utils.evaluation.curves.faithfulness_curve`
for a random ranking (unsigned: one curve) and for the attribution ranking (signed and absolute curves).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from seqcirc_utils.evaluation import curves, nulls
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import make_dataset


def _timed(ablator: Ablator, fn):
    t0, p0 = time.perf_counter(), ablator.forward_passes
    out = fn()
    return out, {"seconds": round(time.perf_counter() - t0, 2), "forward_passes": ablator.forward_passes - p0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--template", default="pure")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--draws", type=int, default=nulls.N_DRAWS)
    ap.add_argument(
        "--batch", type=int, nargs="+", default=[1, 0], help="circuits per batched call; 0: the default (fill rows)"
    )
    ap.add_argument("--circuit-size", type=int, default=20)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model, info = load_model(args.model, device=args.device)
    ds = make_dataset(model.tokenizer, args.task, template=args.template, n=args.n, seed=0, model_name=args.model)
    t0 = time.perf_counter()
    ab = Ablator(model, info, ds)
    setup = {"seconds": round(time.perf_counter() - t0, 2), "forward_passes": ab.forward_passes}
    empty, empty_cost = _timed(ab, ab.empty_values)
    scores, attr_cost = _timed(ab, lambda: curves.attribution_node_scores(ab, ig_steps=3))
    circuit = curves.ranked(scores)[: args.circuit_size]
    out = {
        "model": args.model,
        "task": args.task,
        "n_prompts": len(ds),
        "n_sequences": ds.n_sequences,
        "n_components": len(info.components),
        "threads": torch.get_num_threads(),
        "ablator_setup": setup,
        "empty_circuit": empty_cost,
        "attribution_ranking": attr_cost,
        "null": {},
    }
    for batch in args.batch:
        rec, cost = _timed(
            ab,
            lambda: nulls.circuit_null(
                ab, circuit, n_draws=args.draws, draws_per_pass=batch or nulls.DRAWS_PER_PASS, progress=False
            ),
        )
        out["null"][f"draws_per_pass={batch or 'default'}"] = cost | {
            "observed": round(rec.observed, 4),
            "null_p95": round(rec.null_p95, 4),
            "p_value": rec.p_value,
        }
    rand, cost = _timed(
        ab,
        lambda: curves.faithfulness_curve(ab, curves.random_scores(info.components, 0), "random", signed=False, seed=0),
    )
    out["curve_random"] = cost | {"cpr": round(rand.cpr, 4), "cmd": round(rand.cmd, 4)}
    fast, cost = _timed(ab, lambda: curves.faithfulness_curve(ab, scores, "fast"))
    out["curve_fast_signed_and_abs"] = cost | {
        "cpr": round(fast.cpr, 4),
        "cmd": round(fast.cmd, 4),
        "cpr_log": round(fast.cpr_log, 4),
        "cmd_log": round(fast.cmd_log, 4),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
