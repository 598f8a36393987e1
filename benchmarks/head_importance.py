"""Benchmark single-component ablation and head importance, one run, one dataset.

    python -m benchmarks.head_importance --model smollm2-135m --task digits --json

- ``full_passes``: each component ablated alone with a full forward pass (``Ablator.logits``).
- ``resumed``: :func:`seqcirc_utils.scoring.ablation.single_component_effects` — one clean pass caches the
  residual stream, each component's pass resumes at its own layer.
- ``head_importance``: :func:`seqcirc_utils.scoring.importance.head_importance` — attribution estimate for
  every head plus exact ablation of the ``--exact-top`` largest.
- ``exact_all_heads``: :func:`single_component_effects` over every head (what ``head_importance``
  avoids).

Prints one JSON line with each variant's ``seconds``, ``speedup_resumed`` (full / resumed),
``max_abs_diff`` between the full-pass and resumed drops (points), ``speedup_importance``
(exact_all_heads / head_importance) and ``spearman_estimate_vs_exact`` over all heads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import AblatorCache, single_component_effects
from seqcirc_utils.scoring.importance import head_importance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.head_importance", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--template", default="among_words")
    parser.add_argument("--n", type=int, default=24, help="prompts before filtering to correct answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact-top", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    model, info = load_model(args.model)
    ds = discovery_dataset(model, args.model, args.task, template=args.template, n=args.n, seed=args.seed)
    ablators = AblatorCache()
    ab = ablators.get(model, info, ds)  # means and clean caches built once, outside every timing
    out: dict = {
        "model": args.model,
        "task": args.task,
        "template": args.template,
        "n_prompts": len(ds),
        "n_components": len(info.components),
        "n_heads": len(info.heads),
    }

    t0 = time.perf_counter()
    full = {str(c): 100 * (1 - ab.fraction_of_full(ab.metric_value(ab.logits([c])))) for c in info.components}
    out["full_passes"] = {"seconds": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    resumed = single_component_effects(model, info, ds, info.components, progress=False, ablators=ablators).set_index(
        "component"
    )
    out["resumed"] = {"seconds": round(time.perf_counter() - t0, 2)}
    out["speedup_resumed"] = round(out["full_passes"]["seconds"] / out["resumed"]["seconds"], 2)
    out["max_abs_diff"] = float(max(abs(full[c] - resumed.loc[c, "drop_points"]) for c in full))

    t0 = time.perf_counter()
    importance = head_importance(model, info, ds, exact_top=args.exact_top, progress=False, ablators=ablators)
    out["head_importance"] = {"seconds": round(time.perf_counter() - t0, 2), "exact_top": args.exact_top}
    t0 = time.perf_counter()
    exact_all = single_component_effects(model, info, ds, info.heads, progress=False, ablators=ablators).set_index(
        "component"
    )["drop_points"]
    out["exact_all_heads"] = {"seconds": round(time.perf_counter() - t0, 2)}
    out["speedup_importance"] = round(out["exact_all_heads"]["seconds"] / out["head_importance"]["seconds"], 2)
    estimate = importance.set_index("component")["estimated_drop"]
    ranks = pd.DataFrame({"estimate": estimate, "exact": exact_all}).rank()
    out["spearman_estimate_vs_exact"] = round(float(ranks["estimate"].corr(ranks["exact"])), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
