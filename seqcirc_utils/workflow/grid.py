"""Parameter grids of one notebook on Dask distributed: ``seqcirc grid`` and ``seqcirc grid-summary``.

A grid is the Cartesian product of parameter values; each *cell* is one papermill execution of the
notebook (:func:`seqcirc_utils.workflow.runner.run_notebook`) with that cell's parameters, run as one task on a
Dask cluster: by default an embedded ``LocalCluster`` with one single-threaded worker process per
core; ``scheduler="tcp://HOST:8786"`` uses an existing cluster (e.g. one started on Slurm with
dask-jobqueue, see the README). The workers must see the same file system as the client (they
write the results) and have this package installed.

Each cell writes ``results/<model>/runs/<cell-id>/``:

- ``params.json``: the notebook, the cell's parameters, its id and cache key;
- ``NN_name.ipynb``: the executed notebook (with the traceback when it failed);
- the notebook's result files: the kernel gets ``SEQCIRC_RESULTS_DIR=<cell dir>``, which
  :func:`seqcirc_utils.core.results.results_dir` returns for every model;
- ``error.txt`` when the cell failed (its traceback, as text).

A cell whose executed notebook has the same cache key (:func:`seqcirc_utils.workflow.runner.cache_key`), completed
and whose result files are unchanged is not run again (``force=True`` reruns). A failing cell does not
stop the others. The cell id is ``<NN_name>__<key=value_...>-<hash>``: readable, and stable for the
same notebook and explicit parameters.

Command line::

    seqcirc grid 02_shared_circuits -p model smollm2-135m,tiny-llama -p seed 0,1,2 -p smoke true
    seqcirc grid --file grid.yaml [--scheduler tcp://HOST:8786] [--resources GPU=1] [--force]
    seqcirc grid-summary results/smollm2-135m/runs [--out grid_summary]

``-p KEY V1,V2,...``: the values of one grid axis, split at commas outside brackets and quotes, each
parsed like a ``seqcirc run -p`` value (JSON when it parses, else a string): ``-p thresholds
"[0.9,0.8]"`` is one value (a list), ``-p thresholds "[0.9],[0.8]"`` two. A key with one value is
the same in every cell.

The YAML file (``--file``)::

    notebook: 02_shared_circuits     # name as for `seqcirc run` (optional when given on the command line)
    parameters:                      # the same in every cell (optional)
      smoke: true
    grid:                            # the axes: a list of values, or one value
      model: [smollm2-135m, tiny-llama]
      seed: [0, 1, 2]
      thresholds: [[0.9, 0.8], [0.7]]  # a list-valued parameter: a list of lists

Every scalar in the file is read as text and parsed like a ``-p`` value, so ``true``, ``0.5`` and
``null`` mean what they mean on the command line. ``-p`` options given with ``--file`` replace
the file's axes of the same name.

``grid-summary`` reads every cell under the given folders (a ``runs/`` folder, or any folder with
cells below it): one row per cell and circuit record (a dict with ``heads``, ``mlps``, ``score``, as
written by :func:`seqcirc_utils.discovery.pipeline.write_circuits`): the cell's parameters, status, circuit
size and score; cells without circuit records contribute their result files' top-level numbers.
It writes the table (CSV, JSON) and an altair chart (``.html``, drawn offline, and the Vega-Lite
``.json``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.results import results_root as default_results_root
from seqcirc_utils.core.results import write_atomic
from seqcirc_utils.workflow.cluster import default_workers, local_cluster, thread_environment, worker_name
from seqcirc_utils.workflow.runner import (
    APPENDIX_NUMBERS,
    REPO_ROOT,
    NotebookSource,
    cache_key,
    canonical_json,
    check_parameter_types,
    effective_parameters,
    parse_value,
    run_notebook,
)

#: Files a cell writes besides the notebook's results.
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- grid specification


def split_values(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; commas inside ``[]``, ``{}``, ``()`` or quotes do not split."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    if any(p == "" for p in parts):
        raise ParameterError(f"empty value in {text!r}: give comma-separated values, e.g. 0,1,2")
    return parts


def parse_axes(pairs: Iterable[Sequence[str]]) -> dict[str, list[Any]]:
    """``[("seed", "0,1,2")]`` -> ``{"seed": [0, 1, 2]}`` (values typed as by ``seqcirc run -p``)."""
    axes: dict[str, list[Any]] = {}
    for key, text in pairs:
        if key in axes:
            raise ParameterError(f"grid parameter {key!r} given twice; give its values once, comma-separated")
        axes[key] = [parse_value(v) for v in split_values(text)]
    return axes


def _typed(value: Any) -> Any:
    """YAML read as text (``BaseLoader``) -> values typed like ``-p`` values, recursively."""
    if isinstance(value, str):
        return parse_value(value)
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return value


@dataclass
class GridSpec:
    """A notebook name, the parameters shared by every cell and the grid's axes (name -> values)."""

    notebook: str | None
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def cells(self) -> list[dict[str, Any]]:
        """The Cartesian product: one parameter dict per cell (axes in the given order, last fastest)."""
        overlap = sorted(set(self.fixed) & set(self.axes))
        if overlap:
            raise ParameterError(f"parameter(s) {', '.join(overlap)} both fixed and a grid axis; give each once")
        names = list(self.axes)
        return [{**self.fixed, **dict(zip(names, combo))} for combo in itertools.product(*self.axes.values())]


def load_grid_file(path: str | Path) -> GridSpec:
    """Read a grid YAML file (format in the module docstring); errors name the valid keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadFileError(f"grid file {path} not found")
    try:
        data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except yaml.YAMLError as err:
        raise BadFileError(f"grid file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    data = data or {}
    valid = ("notebook", "parameters", "grid")
    if not isinstance(data, dict) or set(data) - set(valid):
        extra = sorted(set(data) - set(valid)) if isinstance(data, dict) else ["(not a mapping)"]
        raise BadFileError(f"grid file {path}: unknown key(s) {', '.join(extra)}; valid keys: {', '.join(valid)}")
    fixed, grid = data.get("parameters") or {}, data.get("grid") or {}
    if not isinstance(fixed, dict) or not isinstance(grid, dict):
        raise BadFileError(f"grid file {path}: 'parameters' and 'grid' must be mappings (name: value)")
    axes = {k: _typed(v) if isinstance(v, list) else [_typed(v)] for k, v in grid.items()}
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise BadFileError(f"grid file {path}: axis {', '.join(empty)} has no values")
    return GridSpec(data.get("notebook") or None, _typed(fixed), axes)


def cell_id(notebook: NotebookSource, parameters: Mapping[str, Any]) -> str:
    """``<NN_name>__<key=value_...>-<8 hex>``: readable (truncated) and unique (hash of the full parameters)."""
    digest = hashlib.sha256(canonical_json([notebook.stem, dict(parameters)]).encode()).hexdigest()[:8]
    readable = "_".join(f"{k}={v if isinstance(v, str) else canonical_json(v)}" for k, v in sorted(parameters.items()))
    readable = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", readable).strip("-_")[:80].rstrip("-_")
    return f"{notebook.stem}__{readable}-{digest}" if readable else f"{notebook.stem}__{digest}"


def runs_root(model: Any, results_root: str | Path | None = None) -> Path:
    """``<results root>/<model>/runs`` (absolute; the results root as ``seqcirc run`` resolves it)."""
    from seqcirc_utils.core.results import results_dir

    root = Path(results_root) if results_root else default_results_root()
    root = root if root.is_absolute() else REPO_ROOT / root
    return results_dir(str(model if model is not None else "no-model"), root=root) / "runs"


# --------------------------------------------------------------------------- one cell (runs on a worker)


@dataclass(frozen=True)
class CellSpec:
    """Everything a worker needs to run one cell (absolute paths: workers share the file system)."""

    cell_id: str
    notebook: str  # path of the notebook source
    parameters: dict[str, Any]
    directory: str  # the cell's folder
    cwd: str = str(REPO_ROOT)
    force: bool = False
    threads: int = 1  # threads of the cell's kernel (torch, BLAS)


@dataclass
class CellResult:
    """Outcome of one cell."""

    cell_id: str
    parameters: dict[str, Any]
    directory: str
    ok: bool
    reused: bool = False
    seconds: float = 0.0
    error: str = ""
    worker: str = ""


def notebook_traceback(path: str | Path) -> str:
    """The error outputs of an executed notebook as plain text (ANSI colours removed)."""
    import nbformat

    try:
        nb = nbformat.read(Path(path), as_version=4)
    except Exception:
        return ""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                parts.append(
                    _ANSI.sub("", "\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}")
                )
    return "\n\n".join(parts)


def run_cell(spec: CellSpec) -> CellResult:
    """Run (or reuse) one cell; never raises: a failure is a ``CellResult`` with ``ok=False`` and ``error.txt``."""
    from seqcirc_utils.core.results import RESULTS_DIR_ENV, write_json_atomic

    directory = Path(spec.directory)
    start = time.perf_counter()
    worker = ""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # not on a Dask worker (tests, a plain call), or no distributed
        pass
    result = CellResult(spec.cell_id, spec.parameters, str(directory), ok=False, worker=worker)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        notebook = NotebookSource(Path(spec.notebook))
        write_json_atomic(
            directory / PARAMS_FILE,
            {
                "cell_id": spec.cell_id,
                "notebook": notebook.stem,
                "notebook_path": spec.notebook,
                "parameters": spec.parameters,
                "effective_parameters": effective_parameters(notebook, spec.parameters),
                "cache_key": cache_key(notebook, spec.parameters),
            },
        )
        env = {RESULTS_DIR_ENV: str(directory), **thread_environment(spec.threads)}
        run = run_notebook(
            notebook,
            spec.parameters,
            out_dir=directory,
            cwd=spec.cwd,
            progress=False,
            force=spec.force,
            env=env,
            not_results=(PARAMS_FILE, ERROR_FILE),
            worker=worker_name(),
        )
        result.ok, result.reused, result.error = run.ok, run.reused, run.error
        if run.ok:
            (directory / ERROR_FILE).unlink(missing_ok=True)
        else:
            tb = notebook_traceback(run.output) if run.output else ""
            write_atomic(directory / ERROR_FILE, f"{run.error}\n\n{tb}".rstrip() + "\n")
    except Exception as err:  # outside the notebook: bad cell spec, unwritable folder, ...
        result.ok, result.error = False, f"{type(err).__name__}: {err}"
        try:
            write_atomic(directory / ERROR_FILE, traceback.format_exc())
        except OSError:
            pass
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- the grid (client side)


def parse_resources(text: str | None) -> dict[str, float]:
    """``"GPU=1,MEMORY=8e9"`` -> ``{"GPU": 1.0, "MEMORY": 8e9}`` (Dask worker resources)."""
    if not text:
        return {}
    out = {}
    for item in split_values(text):
        name, sep, amount = item.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ParameterError(f"bad resource {item!r}: give NAME=AMOUNT[,NAME=AMOUNT], e.g. GPU=1")
    return out


def plan_cells(
    notebook: NotebookSource,
    cells: Sequence[Mapping[str, Any]],
    results_root: str | Path | None = None,
    force: bool = False,
    threads: int = 1,
) -> list[CellSpec]:
    """One :class:`CellSpec` per parameter dict; unknown parameter names and values of the wrong type
    raise :class:`~seqcirc_utils.core.errors.ParameterError` (before any work)."""
    known = {p.name for p in notebook.parameters()}
    unknown = sorted({k for c in cells for k in c} - known)
    if unknown:
        raise ParameterError(
            f"{notebook.stem} has no parameter {', '.join(unknown)}; its parameters: {', '.join(sorted(known))}"
        )
    if not cells:
        raise ParameterError("the grid has no cells")
    for params in cells:
        check_parameter_types(notebook, params)
    specs, seen = [], set()
    for params in cells:
        cid = cell_id(notebook, params)
        if cid in seen:
            continue
        seen.add(cid)
        model = effective_parameters(notebook, params).get("model")
        directory = runs_root(model, results_root) / cid
        specs.append(
            CellSpec(cid, str(notebook.path.resolve()), dict(params), str(directory), force=force, threads=threads)
        )
    return specs


def cached_cells(specs: Sequence[CellSpec]) -> dict[str, CellResult]:
    """The cells whose executed notebook can be reused as is (checked on the client: no cluster needed)."""
    from seqcirc_utils.workflow.runner import reuse_problem

    found = {}
    for spec in specs:
        if spec.force:
            continue
        notebook = NotebookSource(Path(spec.notebook))
        directory = Path(spec.directory)
        start = time.perf_counter()
        if (
            reuse_problem(
                notebook.output_path(directory),
                cache_key(notebook, spec.parameters),
                directory.resolve(),
                notebook.number in APPENDIX_NUMBERS,
                (PARAMS_FILE, ERROR_FILE),
            )
            is None
        ):
            found[spec.cell_id] = CellResult(
                spec.cell_id, spec.parameters, spec.directory, ok=True, reused=True, seconds=time.perf_counter() - start
            )
    return found


def _warn_missing_resources(client, resources: Mapping[str, float] | None) -> None:
    """Say so when no connected worker offers ``resources`` (the cells would wait for one to join)."""
    import sys

    if not resources:
        return
    workers = client.scheduler_info().get("workers", {}).values()
    if not any(all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()) for w in workers):
        need = ",".join(f"{k}={v:g}" for k, v in resources.items())
        print(
            f"seqcirc grid: no worker of the cluster offers {need} yet; the cells wait for one "
            f"(start workers with `--resources {need}`)",
            file=sys.stderr,
        )


def run_grid(
    notebook: NotebookSource,
    cells: Sequence[Mapping[str, Any]],
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    resources: Mapping[str, float] | None = None,
    force: bool = False,
    results_root: str | Path | None = None,
    progress: bool = True,
    threads: int = 1,
) -> list[CellResult]:
    """Run every cell of a grid on Dask; returns one :class:`CellResult` per distinct cell, in grid order.

    ``scheduler``: address of an existing cluster (``tcp://HOST:8786``), else an embedded
    :func:`local_cluster` of ``n_workers`` (default: one per core, at most one per cell to run).
    ``resources``: what each cell needs of a worker (e.g. ``{"GPU": 1}``; the local cluster's
    workers get the same). Cells already done with unchanged inputs are reused without a cluster.
    """
    from tqdm.auto import tqdm

    specs = plan_cells(notebook, cells, results_root=results_root, force=force, threads=threads)
    results = cached_cells(specs)
    todo = [s for s in specs if s.cell_id not in results]
    if todo:
        from distributed import Client, as_completed

        cluster = None
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as err:
                raise ParameterError(
                    f"cannot reach the Dask scheduler at {scheduler!r} ({type(err).__name__}: {err}); "
                    "give its address as tcp://HOST:PORT (`dask scheduler` prints it)"
                ) from None
            _warn_missing_resources(client, resources)
        else:
            cluster = local_cluster(min(n_workers or default_workers(), len(todo)), resources)
            client = Client(cluster)
        try:
            futures = {
                client.submit(
                    run_cell,
                    spec,
                    key=f"seqcirc-cell-{spec.cell_id}-{uuid.uuid4().hex[:8]}",
                    pure=False,
                    retries=0,
                    resources=dict(resources) if resources else None,
                ): spec
                for spec in todo
            }
            bar = tqdm(
                total=len(specs), initial=len(results), desc=f"grid {notebook.stem}", unit="cell", disable=not progress
            )
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    res = future.result()
                except Exception as err:  # the worker died (or the task could not be sent)
                    res = CellResult(
                        spec.cell_id, spec.parameters, spec.directory, ok=False, error=f"{type(err).__name__}: {err}"
                    )
                    try:
                        Path(spec.directory).mkdir(parents=True, exist_ok=True)
                        write_atomic(Path(spec.directory) / ERROR_FILE, f"{res.error}\n")
                    except OSError:
                        pass
                results[spec.cell_id] = res
                bar.update(1)
                if not res.ok:
                    bar.write(f"cell {spec.cell_id} FAILED: {res.error.splitlines()[0] if res.error else ''}")
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return [results[s.cell_id] for s in specs]


def grid_table(results: Sequence[CellResult]) -> str:
    """Plain text: one line per cell (status ``ok``/``reused``/``FAILED``, seconds, folder or error)."""
    rows = [("cell", "status", "seconds", "folder / error")]
    for r in results:
        status = "FAILED" if not r.ok else "reused" if r.reused else "ok"
        rows.append(
            (
                r.cell_id,
                status,
                f"{r.seconds:.1f}",
                r.directory if r.ok else f"{(r.error.splitlines() or [''])[0][:100]} (see {r.directory}/{ERROR_FILE})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


# --------------------------------------------------------------------------- grid-summary


def find_cells(paths: Iterable[str | Path]) -> list[Path]:
    """Every cell folder (one holding ``params.json``) at or below ``paths``, sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise BadFileError(f"{path} does not exist; give a results/<model>/runs folder (or a folder of cells)")
        if (path / PARAMS_FILE).is_file():
            found.add(path)
        found.update(p.parent for p in path.rglob(PARAMS_FILE))
    return sorted(found)


def _circuit_records(obj: Any) -> list:
    """Every circuit record inside a result file's JSON, found by kind (``"circuit"``) and typed as a
    :class:`~seqcirc_utils.core.records.CircuitRecord` (:func:`seqcirc_utils.core.result_records.circuits_in`):
    a circuit file's circuits, or those a chapter's summary file embeds."""
    from seqcirc_utils.core.result_records import circuits_in

    return circuits_in(obj)


def cell_rows(cell: Path) -> list[dict[str, Any]]:
    """The summary rows of one cell: its parameters and status, then one row per circuit record
    (task, threshold, n_heads, n_mlps, n_components, score, ...) or one row of top-level numbers."""
    import nbformat

    info = json.loads((cell / PARAMS_FILE).read_text())
    base: dict[str, Any] = {"cell": cell.name, "notebook": info.get("notebook", "")}
    base.update(info.get("effective_parameters") or info.get("parameters") or {})
    executed = cell / f"{info.get('notebook', '')}.ipynb"
    record: dict = {}
    if executed.is_file():
        meta = nbformat.read(executed, as_version=4).metadata
        record = meta.get("seqcirc") or {}
        base["seconds"] = (meta.get("papermill") or {}).get("duration")
    base["status"] = (
        "failed"
        if (cell / ERROR_FILE).is_file() or record.get("status") == "error"
        else "ok"
        if record.get("status") == "ok"
        else "not run"
    )
    files = [cell / e["path"] for e in record.get("result_files", [])] or sorted(cell.glob("*.json"))
    rows, numbers = [], {}
    for path in files:
        if path.suffix != ".json" or path.name == PARAMS_FILE or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        for rec in _circuit_records(data):
            heads, mlps = rec["heads"], rec["mlps"]
            rows.append(
                {
                    **base,
                    "file": path.name,
                    "task": rec.get("task"),
                    "threshold": rec.get("threshold"),
                    "n_heads": len(heads),
                    "n_mlps": len(mlps),
                    "n_components": rec.get("n_components", len(heads) + len(mlps)),
                    "score": rec["score"],
                    "heldout_score": (rec.get("heldout") or {}).get("score"),
                }
            )
        if isinstance(data, dict):
            numbers.update(
                {
                    f"{path.stem}.{k}": v
                    for k, v in data.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
            )
    return rows or [{**base, **numbers}]


def summary_frame(paths: Iterable[str | Path]):
    """One table of every cell under ``paths`` (see :func:`cell_rows`)."""
    import pandas as pd

    cells = find_cells(paths)
    if not cells:
        raise BadFileError(f"no grid cells ({PARAMS_FILE}) under {', '.join(map(str, paths))}")
    df = pd.DataFrame([row for cell in cells for row in cell_rows(cell)])
    for column in ("n_heads", "n_mlps", "n_components"):
        if column in df:
            df[column] = df[column].astype("Int64")
    return df


def summary_chart(df):
    """Circuit size against score per cell (colour: model, shape: seed, facets: task) where circuits
    were found; otherwise the first numeric result per cell."""
    import altair as alt

    ok = df[df["status"] == "ok"] if "status" in df and (df["status"] == "ok").any() else df
    ok = ok.dropna(axis=1, how="all")  # e.g. no held-out scores: no empty column in the chart
    tooltip = [c for c in ok.columns if c not in ("notebook", "status", "seconds", "file")]
    if {"n_components", "score"} <= set(ok.columns):
        data = ok.dropna(subset=["score"])
        color = "model:N" if "model" in data else alt.value("steelblue")
        chart = (
            alt.Chart(data)
            .mark_point(filled=True, size=70)
            .encode(
                x=alt.X("n_components:Q", title="circuit size (components)"),
                y=alt.Y("score:Q", title="score (fraction of the full model)"),
                color=color,
                tooltip=tooltip,
            )
        )
        if "seed" in data:
            chart = chart.encode(shape="seed:N")
        chart = chart.properties(title="grid: circuit size and score per cell")
        if "task" in data and data["task"].nunique() > 1:
            chart = chart.facet(column="task:N")
        return chart
    numeric = [c for c in ok.columns if "." in c and str(ok[c].dtype) != "object"]
    if not numeric:
        raise BadFileError("the cells have no circuit records and no numeric results to chart")
    value = numeric[0]
    return (
        alt.Chart(ok)
        .mark_bar()
        .encode(
            x=alt.X("cell:N", sort=None),
            y=alt.Y(f"{value}:Q"),
            color="model:N" if "model" in ok else alt.value("steelblue"),
            tooltip=tooltip,
        )
        .properties(title=f"grid: {value} per cell")
    )


def write_summary(df, chart, out: str | Path) -> dict[str, Path]:
    """Write ``out.csv``, ``out.json`` (records), ``out.vl.json`` (the chart's Vega-Lite spec) and
    ``out.html`` (table + chart, drawn offline with the bundled Vega: no CDN)."""
    import html

    from seqcirc_utils.core.results import frame_records, write_json_atomic
    from seqcirc_utils.report.plots import javascript_bundle, offline_html

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out.with_suffix(".csv"),
        "json": out.with_suffix(".json"),
        "chart": out.with_suffix(".vl.json"),
        "html": out.with_suffix(".html"),
    }
    write_atomic(paths["csv"], df.to_csv(index=False))
    write_json_atomic(paths["json"], frame_records(df))
    spec = chart.to_dict()
    write_json_atomic(paths["chart"], spec)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>seqcirc grid summary</title>\n'
        f'<script type="text/javascript">\n{javascript_bundle()}\n</script></head>\n<body>\n'
        f"<h1>Grid summary</h1>\n<p>{html.escape(str(len(df)))} rows from "
        f"{html.escape(str(df['cell'].nunique()))} cells.</p>\n{offline_html(spec)}\n"
        f"{df.to_html(index=False, na_rep='', float_format=lambda x: f'{x:.3f}')}\n</body></html>\n"
    )
    write_atomic(paths["html"], page)
    return paths


def cell_results_json(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """The cells' outcomes as JSON-ready dicts."""
    return [asdict(r) for r in results]
