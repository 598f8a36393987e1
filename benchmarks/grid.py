"""Benchmark ``seqcirc grid``: the same cells run one after another with ``seqcirc run`` and as a grid.

    python -m benchmarks.grid --json                       # 01_behaviour, smoke, tiny-gpt2/tiny-llama x seeds 0,1
    python -m benchmarks.grid --notebook 02_shared_circuits --models tiny-llama --seeds 0,1,2,3 --workers 2

- ``sequential``: one ``seqcirc run NOTEBOOK -p model M -p seed S -p smoke true --force`` per cell,
  one after another (each its own process and kernel, as a user would run them);
- ``grid``: one ``seqcirc grid NOTEBOOK -p model ... -p seed ... -p smoke true --force --workers W``
  (an embedded LocalCluster of W single-threaded worker processes; its start-up is included).

Both write into fresh temporary results folders (nothing is reused). ``same_results`` compares each
cell's result JSON files between the two ways (numbers to 1e-9). Prints ``sequential_seconds``,
``grid_seconds``, ``speedup`` (sequential / grid), the cell count, workers and ``OMP_NUM_THREADS``;
``--json`` prints one JSON line. The target on 2 cores (2 workers, one thread each) is a speedup of
at least 1.6; on a machine shared with other work the figure is noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from seqcirc_utils.core.results import RESULTS_ROOT_ENV
from seqcirc_utils.workflow.cluster import default_workers
from seqcirc_utils.workflow.grid import cell_id, runs_root
from seqcirc_utils.workflow.runner import REPO_ROOT, resolve_notebook


def _seqcirc(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, RESULTS_ROOT_ENV: str(results)}
    return subprocess.run(
        [sys.executable, "-m", "seqcirc_utils.workflow.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def _close(a: Any, b: Any) -> bool:
    """Equal JSON values, floats to 1e-9 (relative or absolute)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebook", default="01_behaviour")
    ap.add_argument("--models", default="tiny-gpt2,tiny-llama", help="comma-separated model specs")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--workers", type=int, default=min(2, default_workers()), help="LocalCluster workers")
    ap.add_argument("--no-smoke", action="store_true", help="full-size cells instead of smoke=True")
    ap.add_argument("--json", action="store_true", help="print one JSON line (default: also human-readable)")
    args = ap.parse_args(argv)

    notebook = resolve_notebook(args.notebook)
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    fixed = {} if args.no_smoke else {"smoke": True}
    cells = [{**fixed, "model": m, "seed": s} for m in models for s in seeds]
    fixed_args = [x for k, v in fixed.items() for x in ("-p", k, json.dumps(v))]

    with tempfile.TemporaryDirectory(prefix="seqcirc-grid-bench-") as scratch:
        scratch = Path(scratch)
        seq_results, grid_results = scratch / "sequential", scratch / "grid"
        start = time.perf_counter()
        for i, params in enumerate(cells):
            res = _seqcirc(
                [
                    "run",
                    notebook.stem,
                    "-p",
                    "model",
                    params["model"],
                    "-p",
                    "seed",
                    str(params["seed"]),
                    *fixed_args,
                    "--force",
                    "--no-progress",
                    "--out-dir",
                    str(scratch / f"executed{i}"),
                ],
                seq_results / f"cell{i}",
            )
            if res.returncode != 0:
                print(res.stdout + res.stderr, file=sys.stderr)
                return 1
        sequential = time.perf_counter() - start

        start = time.perf_counter()
        res = _seqcirc(
            [
                "grid",
                notebook.stem,
                "-p",
                "model",
                ",".join(models),
                "-p",
                "seed",
                ",".join(map(str, seeds)),
                *fixed_args,
                "--force",
                "--no-progress",
                "--workers",
                str(args.workers),
            ],
            grid_results,
        )
        grid = time.perf_counter() - start
        if res.returncode != 0:
            print(res.stdout + res.stderr, file=sys.stderr)
            return 1

        same = True
        for i, params in enumerate(cells):
            direct = seq_results / f"cell{i}" / runs_root(params["model"], seq_results).parent.name
            cell = runs_root(params["model"], grid_results) / cell_id(notebook, params)
            files = sorted(p.name for p in direct.glob("*.json"))
            same &= bool(files) and all(
                _close(json.loads((direct / f).read_text()), json.loads((cell / f).read_text())) for f in files
            )

    out = {
        "notebook": notebook.stem,
        "cells": len(cells),
        "models": models,
        "seeds": seeds,
        "smoke": not args.no_smoke,
        "workers": args.workers,
        "cores": default_workers(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "sequential_seconds": round(sequential, 2),
        "grid_seconds": round(grid, 2),
        "speedup": round(sequential / grid, 2),
        "same_results": same,
    }
    if not args.json:
        print(
            f"{len(cells)} cells of {notebook.stem}: sequential `seqcirc run` {sequential:.1f} s, "
            f"grid on {args.workers} workers {grid:.1f} s -> {sequential / grid:.2f}x; same results: {same}"
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
