"""Benchmark the parallel book: the smoke book run one notebook after another and on a Dask LocalCluster.

    python -m benchmarks.book --json                          # the whole smoke book, 1 vs 2 workers (~20 min)
    python -m benchmarks.book --notebooks 06_induction_offsets,12_representations --workers 2
    python -m benchmarks.book --table-only                    # only the run table of book/executed/

- ``sequential``: ``seqcirc run NAMES (or --all) -p smoke true --workers 1 --force --keep-going``: today's
  behaviour, one kernel after another (each with the threads torch picks by default);
- ``parallel``: the same command with ``--workers W`` (an embedded LocalCluster of W single-threaded
  workers, longest first; its start-up is included).

Each writes into fresh temporary folders (nothing is reused). ``same_results`` compares every result
JSON file of the two runs: ``identical_files`` are byte-identical, ``timing_only_files`` differ only in
values under timing keys (``seconds``, ``*_seconds``, ``duration``, ``elapsed``), ``different_files``
lists the others (the target is none). ``speedup`` is sequential / parallel wall time; the target on
2 cores is >= 1.5 for the whole smoke book.

``run_table`` reads the full book's last run from ``book/executed/`` (``--executed DIR``; the run table
of ``make book``): per notebook its wall time, papermill's duration, the worker and the run
(``executed``/``reused``), the sum of the wall times (what one worker would need) and the span from
the first start to the last finish of the executions recorded (what the parallel run took, when
``reused`` is empty: a reused notebook keeps the times of the run that executed it).
``--json`` prints one JSON line. On a machine shared with other work the timings are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from seqcirc_utils.core.results import RESULTS_ROOT_ENV
from seqcirc_utils.workflow.cluster import default_workers
from seqcirc_utils.workflow.runner import EXECUTED_DIR, REPO_ROOT, find_notebooks, resolve_notebook

#: Keys whose values are timings (the only numbers that may differ between two runs of the same inputs).
TIMING_KEY = re.compile(r"(^|_)(seconds|duration|elapsed)$")


def _seqcirc(args: list[str], results: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, RESULTS_ROOT_ENV: str(results)}
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "seqcirc_utils.workflow.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return res, time.perf_counter() - start


def equal_but_timings(a: Any, b: Any) -> bool:
    """Equal JSON values, ignoring the values under :data:`TIMING_KEY` keys (at any depth)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(TIMING_KEY.search(k) or equal_but_timings(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal_but_timings(x, y) for x, y in zip(a, b))
    return a == b


def compare_results(one: Path, two: Path) -> dict[str, Any]:
    """Every ``*.json`` under the two results folders: identical, timing-only differences, or different."""
    files = {p.relative_to(one).as_posix() for p in one.rglob("*.json")} | {
        p.relative_to(two).as_posix() for p in two.rglob("*.json")
    }
    identical, timing_only, different = [], [], []
    for name in sorted(files):
        a, b = one / name, two / name
        if not (a.is_file() and b.is_file()):
            different.append(f"{name} (only in one run)")
        elif a.read_bytes() == b.read_bytes():
            identical.append(name)
        elif equal_but_timings(json.loads(a.read_text()), json.loads(b.read_text())):
            timing_only.append(name)
        else:
            different.append(name)
    return {
        "n_files": len(files),
        "identical_files": len(identical),
        "timing_only_files": timing_only,
        "different_files": different,
        "same_results": bool(files) and not different,
    }


def run_table(executed: Path) -> dict[str, Any]:
    """The per-notebook times of the last run in ``executed`` (see the module docstring)."""
    import nbformat

    rows, starts, ends = [], [], []
    for path in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata
        pm, record = meta.get("papermill") or {}, meta.get("seqcirc") or {}
        params = {**(pm.get("default_parameters") or {}), **(pm.get("parameters") or {})}
        rows.append(
            {
                "notebook": path.stem,
                "status": "failed" if pm.get("exception") else "ok",
                "run": record.get("run", "executed"),
                "model": params.get("model"),
                "smoke": bool(params.get("smoke")),
                "wall_seconds": record.get("wall_seconds"),
                "papermill_seconds": round(pm["duration"], 1) if pm.get("duration") else None,
                "worker": record.get("worker"),
            }
        )
        if record.get("started_at") and record.get("executed_at"):  # of the run that executed it
            starts.append(datetime.datetime.fromisoformat(record["started_at"]))
            ends.append(datetime.datetime.fromisoformat(record["executed_at"]))
    walls = [r["wall_seconds"] or r["papermill_seconds"] or 0.0 for r in rows]
    return {
        "executed_dir": str(executed),
        "notebooks": rows,
        "sum_seconds": round(sum(walls), 1),
        "span_seconds": round((max(ends) - min(starts)).total_seconds(), 1)
        if len(starts) == len(rows) and rows
        else None,
        "workers": sorted({str(r["worker"]) for r in rows if r["worker"]}),
        "reused": [r["notebook"] for r in rows if r["run"] == "reused"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--notebooks", default=None, help="comma-separated notebook names (default: every notebook, as make book)"
    )
    ap.add_argument("--workers", type=int, default=min(2, default_workers()), help="parallel run's workers")
    ap.add_argument("--model", default=None, help="model spec (default: each notebook's own)")
    ap.add_argument("--no-smoke", action="store_true", help="full-size notebooks instead of smoke=True")
    ap.add_argument("--executed", default=str(EXECUTED_DIR), help="the full book's executed notebooks (run table)")
    ap.add_argument("--table-only", action="store_true", help="only read the run table; run nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON line (default: also human-readable)")
    args = ap.parse_args(argv)

    out: dict[str, Any] = {}
    if not args.table_only:
        names = (
            [resolve_notebook(n).stem for n in args.notebooks.split(",") if n]
            if args.notebooks
            else [nb.stem for nb in find_notebooks()]
        )
        params = [] if args.no_smoke else ["-p", "smoke", "true"]
        params += ["-p", "model", args.model] if args.model else []
        seconds: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="seqcirc-book-bench-") as scratch:
            scratch = Path(scratch)
            for label, workers in (("sequential", 1), ("parallel", args.workers)):
                res, seconds[label] = _seqcirc(
                    [
                        "run",
                        *names,
                        *params,
                        "--workers",
                        str(workers),
                        "--force",
                        "--keep-going",
                        "--no-progress",
                        "--out-dir",
                        str(scratch / label / "executed"),
                    ],
                    scratch / label / "results",
                )
                if res.returncode != 0:
                    print(res.stdout[-4000:] + res.stderr[-4000:], file=sys.stderr)
                    print(f"benchmarks.book: the {label} run failed (exit {res.returncode})", file=sys.stderr)
                    return 1
            comparison = compare_results(scratch / "sequential" / "results", scratch / "parallel" / "results")
            smoke_table = run_table(scratch / "parallel" / "executed")
        out.update(
            {
                "notebooks": names,
                "smoke": not args.no_smoke,
                "model": args.model,
                "workers": args.workers,
                "cores": default_workers(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "sequential_seconds": round(seconds["sequential"], 1),
                "parallel_seconds": round(seconds["parallel"], 1),
                "speedup": round(seconds["sequential"] / seconds["parallel"], 2),
                **comparison,
                "parallel_run_table": smoke_table["notebooks"],
            }
        )
    executed = Path(args.executed)
    out["run_table"] = run_table(executed) if executed.is_dir() else None
    if not args.json:
        if "speedup" in out:
            print(
                f"{len(out['notebooks'])} notebooks{' (smoke)' if out['smoke'] else ''}: one after another "
                f"{out['sequential_seconds']:.0f} s, on {args.workers} workers {out['parallel_seconds']:.0f} s "
                f"-> {out['speedup']:.2f}x; result files: {out['identical_files']} identical, "
                f"{len(out['timing_only_files'])} differing only in timings, {len(out['different_files'])} different"
            )
        table = out["run_table"]
        if table and table["notebooks"]:
            print(
                f"run table of {table['executed_dir']}: sum of wall times {table['sum_seconds']:.0f} s, "
                f"span {table['span_seconds']} s, workers {', '.join(table['workers']) or '-'}"
            )
            for r in table["notebooks"]:
                print(
                    f"  {r['notebook']:28s} {r['status']:6s} {r['run']:8s} wall {r['wall_seconds']} s, "
                    f"papermill {r['papermill_seconds']} s, worker {r['worker']}"
                )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
