"""Benchmark circuit discovery: naive sweep vs optimised sweep vs fast method, one run, one dataset.

    python -m benchmarks.discovery --model smollm2-135m --task digits --json

- ``naive``: the paper code's cost model — every candidate recomputes the corrupted means (one
  corrupted forward pass) and runs one full forward pass, unembedding every position.
- ``optimised``: :func:`seqcirc_utils.discovery.pruning.sweep_prune` — means computed once, passes resumed
  from the cached residual stream at the candidate's layer, final position unembedded only.
- ``fast``: :func:`seqcirc_utils.discovery.pruning.fast_prune` without its refinement (``minimal=False``:
  attribution ranking + prefix search, 2 rounds); ``fast_one_round``: the same with one round (fewer
  passes, a larger circuit further above threshold);
- ``fast_minimal``: :func:`seqcirc_utils.discovery.pruning.fast_prune` as :func:`~seqcirc_utils.discovery.pruning.prune`
  runs it by default: ranking, prefix search and the refinement to a 1-minimal circuit.

Forward passes include every method's set-up passes (means, the full model; partial resumed passes
count as one). Prints one JSON line with ``naive``, ``optimised``, ``fast``, ``fast_one_round``,
``fast_minimal`` (each ``seconds, forward_passes, n_components, score``), ``same_circuit``,
``speedup_optimised``, ``forward_ratio_fast`` (optimised passes / fast passes, likewise
``forward_ratio_fast_one_round`` and ``forward_ratio_fast_minimal``), the score gaps to the sweep,
``fast_minimal_is_minimal``, ``fast_minimal_size_ratio`` (its size / the sweep circuit's) and
``optimised_removable_left`` (how many of the sweep circuit's components could still be removed one
at a time: the sweep does not guarantee a 1-minimal circuit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from seqcirc_utils.discovery.pipeline import discovery_dataset
from seqcirc_utils.discovery.pruning import PAPER, fast_prune, refine_to_minimal, sweep_prune
from seqcirc_utils.models.loading import load_model
from seqcirc_utils.scoring.ablation import Ablator, component_hook_name, compute_ablation_values


class NaiveAblator(Ablator):
    """An Ablator with the paper code's costs: means recomputed and a full-width pass per candidate."""

    def _run(self, ablated):
        names = [component_hook_name(c) for c in self.info.components]
        self.values = compute_ablation_values(self.model, self.dataset, self.mode, names)
        self.forward_passes += 2
        with torch.no_grad(), self.model.hooks(fwd_hooks=self.hooks(ablated)):
            return self.model(self.tokens)[:, -1, :]


def _summary(result, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 2),
        "forward_passes": result.forward_passes,
        "n_components": len(result.components),
        "score": round(result.score.score, 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--template", default="pure")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--json", action="store_true", help="print one JSON line (default: also human-readable)")
    args = ap.parse_args(argv)

    model, info = load_model(args.model)
    ds = discovery_dataset(model, args.model, args.task, template=args.template, n=args.n, seed=args.seed)
    out = {
        "model": args.model,
        "task": args.task,
        "template": args.template,
        "n_prompts": len(ds),
        "threshold": args.threshold,
        "n_components_full": len(info.components),
        "order": PAPER,
    }
    runs, ablators = {}, {}
    for name, make, run in (
        ("naive", NaiveAblator, lambda ab: sweep_prune(ab, [args.threshold], resume=False, progress=False)[0]),
        ("optimised", Ablator, lambda ab: sweep_prune(ab, [args.threshold], resume=True, progress=False)[0]),
        ("fast", Ablator, lambda ab: fast_prune(ab, [args.threshold], minimal=False, progress=False)[0]),
        (
            "fast_one_round",
            Ablator,
            lambda ab: fast_prune(ab, [args.threshold], rounds=1, minimal=False, progress=False)[0],
        ),
        ("fast_minimal", Ablator, lambda ab: fast_prune(ab, [args.threshold], progress=False)[0]),
    ):
        t0 = time.perf_counter()
        ab = make(model, info, ds)
        result = run(ab)
        seconds = time.perf_counter() - t0
        result.forward_passes = ab.forward_passes  # set-up passes included, for every method alike
        runs[name], ablators[name] = result, ab
        out[name] = _summary(result, seconds)
    out["same_circuit"] = runs["naive"].components == runs["optimised"].components
    out["speedup_optimised"] = round(out["naive"]["seconds"] / out["optimised"]["seconds"], 2)
    out["forward_ratio_fast"] = round(out["optimised"]["forward_passes"] / out["fast"]["forward_passes"], 2)
    out["fast_score_gap"] = round(abs(out["fast"]["score"] - out["optimised"]["score"]), 4)
    out["forward_ratio_fast_one_round"] = round(
        out["optimised"]["forward_passes"] / out["fast_one_round"]["forward_passes"], 2
    )
    out["fast_one_round_score_gap"] = round(abs(out["fast_one_round"]["score"] - out["optimised"]["score"]), 4)
    out["forward_ratio_fast_minimal"] = round(
        out["optimised"]["forward_passes"] / out["fast_minimal"]["forward_passes"], 2
    )
    out["fast_minimal_score_gap"] = round(abs(out["fast_minimal"]["score"] - out["optimised"]["score"]), 4)
    out["fast_minimal_is_minimal"] = runs["fast_minimal"].minimal
    out["fast_minimal_size_ratio"] = round(
        out["fast_minimal"]["n_components"] / max(out["optimised"]["n_components"], 1), 3
    )
    # Is the sweep's circuit 1-minimal? (checked after its passes were counted)
    out["optimised_removable_left"] = refine_to_minimal(
        ablators["optimised"], runs["optimised"].components, args.threshold, max_passes=0, progress=False
    )[3]
    print(json.dumps(out))
    if not args.json:
        print(json.dumps(out, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
