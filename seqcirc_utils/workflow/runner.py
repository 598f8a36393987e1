"""Run the compendium's notebooks: ``notebooks/NN_name.py`` -> papermill -> ``book/executed/NN_name.ipynb``.

A notebook source is a jupytext *percent* script with one cell tagged ``parameters``. Running it
converts it with jupytext, injects the given parameters and executes it with papermill (progress bar
on) in the repository root, so relative paths such as ``results/<model>/`` land in the repository.
The executed notebook is written to a temporary file beside its destination and renamed into place,
also when the notebook fails: the traceback stays in the output notebook (papermill's error markers)
and the run reports a failure.

Adding a notebook is adding a file ``notebooks/NN_name.py``: ``seqcirc list`` shows it, ``seqcirc run
name`` runs it, ``seqcirc run --all`` runs it in ``NN`` order, and the book's table of contents
(``_toc.yml``) picks up every executed ``book/executed/NN_name.ipynb``: ``00``-``89`` as chapters,
``90``-``99`` as appendices.

Execution cache: a notebook whose inputs are unchanged is not executed again. Its inputs are hashed by
:func:`cache_key` (the notebook source, its effective parameters, the package's source files and the
model spec) and the key is stored in the executed notebook's metadata (``metadata["seqcirc"]``, next
to papermill's own), together with the result files the run wrote (``results/<model>/...``, found as
the files modified during the run, with their sha256). A later run reuses the executed notebook when
its stored key is the same, it completed without error, it wrote into the same results directory and
every result file it wrote is still there unchanged; it then only records ``"run": "reused"`` in that
metadata (the book's run table shows it). Appendices (``90``-``99``) read what the chapters wrote, so
their reuse also needs the results directory's other files to be unchanged. ``force=True``
(``seqcirc run --force``) always executes.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.paths import repo_root
from seqcirc_utils.core.results import RESULTS_DIR_ENV, write_atomic
from seqcirc_utils.core.results import results_root as default_results_root

NOTEBOOK_RE = re.compile(r"^(?P<number>\d{2})_(?P<name>[A-Za-z0-9_]+)\.py$")
REPO_ROOT = repo_root()
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
KERNEL_NAME = "python3"
#: Environment of the notebook kernels: no tqdm bars or ipywidgets warnings in the book's outputs.
KERNEL_ENV = {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found", "TOKENIZERS_PARALLELISM": "false"}
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Bump when the cache key's recipe or the cache metadata changes (old executed notebooks then rerun).
CACHE_FORMAT = 1
#: The notebook metadata key holding the cache record (``metadata[CACHE_METADATA]["cache_key"]``, ...).
CACHE_METADATA = "seqcirc"
#: Appendix numbers: their notebooks read the chapters' results (see the module docstring).
APPENDIX_NUMBERS = range(90, 100)


@dataclass(frozen=True)
class Parameter:
    """One entry of a notebook's ``parameters`` cell: name, default (as Python source), type, help."""

    name: str
    default: str
    type_name: str
    help: str = ""


@dataclass(frozen=True)
class NotebookSource:
    """A notebook source file ``notebooks/NN_name.py``."""

    path: Path

    @property
    def stem(self) -> str:
        """``NN_name``: the executed notebook's file name without ``.ipynb``."""
        return self.path.stem

    @property
    def number(self) -> int:
        return int(self.stem[:2])

    @property
    def name(self) -> str:
        """``name`` without the ``NN_`` prefix."""
        return self.stem[3:]

    def read(self):
        """The source as an ``nbformat`` notebook (jupytext conversion, python3 kernel)."""
        import jupytext

        nb = jupytext.read(self.path, fmt="py:percent")
        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
        nb.metadata.setdefault("language_info", {"name": "python"})
        return nb

    def parameters(self) -> list[Parameter]:
        """The parameters declared in the cell tagged ``parameters`` (papermill's own parser)."""
        from papermill.translators import PythonTranslator

        cells = [c for c in self.read().cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if not cells:
            raise BadFileError(f"{self.path} has no cell tagged 'parameters' (use '# %% tags=[\"parameters\"]')")
        return [Parameter(p.name, p.default, p.inferred_type_name, p.help or "")
                for p in PythonTranslator.inspect(cells[0])]

    def default_values(self) -> dict[str, Any]:
        """The parameters' defaults as Python values (the source text where it is not a literal)."""
        values = {}
        for p in self.parameters():
            try:
                values[p.name] = ast.literal_eval(p.default)
            except (ValueError, SyntaxError):
                values[p.name] = p.default
        return values

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.stem}.ipynb"


@dataclass
class RunResult:
    """Outcome of one notebook run."""

    notebook: NotebookSource
    output: Path | None
    ok: bool
    seconds: float
    error: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  #: True when the cached executed notebook was reused (nothing ran)
    cache_key: str = ""


def find_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[NotebookSource]:
    """Every ``NN_name.py`` under ``notebooks_dir``, in ``NN`` order."""
    directory = Path(notebooks_dir)
    if not directory.is_dir():
        raise BadFileError(f"no notebooks directory at {directory}")
    found = [NotebookSource(p) for p in directory.iterdir() if p.is_file() and NOTEBOOK_RE.match(p.name)]
    return sorted(found, key=lambda nb: (nb.number, nb.name))


def resolve_notebook(name: str, notebooks_dir: str | Path = NOTEBOOKS_DIR) -> NotebookSource:
    """The notebook called ``name``: ``behaviour``, ``01_behaviour``, ``01_behaviour.py`` or a path."""
    notebooks = find_notebooks(notebooks_dir)
    key = Path(name).name.removesuffix(".py").removesuffix(".ipynb")
    for nb in notebooks:
        if key in (nb.stem, nb.name):
            return nb
    valid = ", ".join(nb.stem for nb in notebooks) or "(none)"
    raise ParameterError(f"unknown notebook {name!r}; valid names: {valid}")


def parse_value(text: str) -> Any:
    """A ``-p`` value: JSON when it parses (``4``, ``0.5``, ``true``, ``[1, 2]``, ``null``), else a Python
    literal (``True``, ``False``, ``None``, ``(1, 2)``: ``-p smoke False`` must not arrive as the truthy
    string ``"False"``), else the string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_parameters(pairs: Iterable[Sequence[str]]) -> dict[str, Any]:
    """``[("model", "gpt2-small"), ("n_prompts", "8")]`` -> ``{"model": "gpt2-small", "n_prompts": 8}``."""
    return {key: parse_value(value) for key, value in pairs}


def _check_parameters(nb: NotebookSource, parameters: Mapping[str, Any]) -> None:
    known = {p.name for p in nb.parameters()}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ParameterError(f"{nb.stem} has no parameter {', '.join(unknown)}; its parameters: {', '.join(sorted(known))}")


# --------------------------------------------------------------------------- execution cache


def canonical_json(obj: Any) -> str:
    """``obj`` as canonical JSON (sorted keys, no spaces; non-JSON values by ``str``): the hashed form."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def effective_parameters(source: NotebookSource, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The notebook's defaults overlaid with ``parameters``: what the run computes with."""
    return {**source.default_values(), **dict(parameters or {})}


def package_files(package_dir: str | Path | None = None) -> list[Path]:
    """The files of the package (default :data:`PACKAGE_DIR`) that the cache key covers: ``**/*.py`` and
    ``data/*.json``, sorted by relative path."""
    root = Path(package_dir or PACKAGE_DIR)
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts] + sorted((root / "data").glob("*.json"))
    return sorted(set(files), key=lambda p: p.relative_to(root).as_posix())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(spec: Any) -> str:
    """The model spec as hashed: the spec text, plus size and mtime of its files when it is a local path."""
    text = canonical_json(spec)
    if isinstance(spec, str) and spec:
        path = Path(spec).expanduser()
        try:
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
            text += "".join(f"|{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        except OSError:
            pass
    return text


def cache_key(source: NotebookSource, parameters: Mapping[str, Any]) -> str:
    """sha256 (hex) of one run's inputs: the notebook source text, its parameters, the package, the model spec.

    The parameters are the effective ones (defaults overlaid with ``parameters``, see
    :func:`effective_parameters`) as canonical JSON, so passing a default explicitly gives the same key.
    The package part covers every file of :func:`package_files` (path and bytes); the model spec is
    the ``model`` parameter (:func:`model_fingerprint`).
    """
    params = effective_parameters(source, parameters)
    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    part("format", str(CACHE_FORMAT).encode())
    part("notebook", source.path.read_bytes())
    part("parameters", canonical_json(params).encode())
    for path in package_files(PACKAGE_DIR):
        part("package:" + path.relative_to(PACKAGE_DIR).as_posix(), path.read_bytes())
    part("model", model_fingerprint(params.get("model")).encode())
    return digest.hexdigest()


def results_root_for(cwd: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """Where a run's notebook writes results (absolute): ``$SEQCIRC_RESULTS_DIR`` (one directory for
    every model, e.g. a grid cell's) or else ``$SEQCIRC_RESULTS`` (default ``results``), relative to ``cwd``."""
    merged = {**os.environ, **dict(env or {})}
    if merged.get(RESULTS_DIR_ENV):
        return (Path(cwd) / merged[RESULTS_DIR_ENV]).resolve()
    return (Path(cwd) / default_results_root(merged)).resolve()


def _result_files(root: Path, since_ns: int | None = None, exclude: Collection[Path] = (),
                  exclude_names: Collection[str] = ()) -> list[Path]:
    """Plain files under ``root`` (modified at or after ``since_ns`` when given), without dot files,
    ``exclude``/``exclude_names`` and grid cells' folders (``<model>/runs/``) unless ``root`` is one."""
    if not root.is_dir():
        return []
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or (len(rel) > 2 and rel[1] == "runs") \
                or path.name in exclude_names or not path.is_file() or path.resolve() in skip:
            continue
        if since_ns is None or path.stat().st_mtime_ns >= since_ns:
            found.append(path)
    return sorted(found)


def _results_digest(root: Path, exclude: Collection[Path] = (), exclude_names: Collection[str] = ()) -> str:
    """sha256 over the (relative path, sha256) of every result file under ``root``: an appendix's inputs."""
    digest = hashlib.sha256()
    for path in _result_files(root, exclude=exclude, exclude_names=exclude_names):
        digest.update(f"{path.relative_to(root).as_posix()}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cached_record(executed: str | Path) -> dict[str, Any] | None:
    """The cache record (``metadata["seqcirc"]``) of an executed notebook, or None (missing/unreadable)."""
    import nbformat

    try:
        nb = nbformat.read(Path(executed), as_version=4)
    except Exception:
        return None
    record = nb.metadata.get(CACHE_METADATA)
    return dict(record) if isinstance(record, Mapping) else None


def reuse_problem(executed: str | Path, key: str, results_root: Path, appendix: bool = False,
                  exclude_names: Collection[str] = ()) -> str | None:
    """Why the executed notebook at ``executed`` cannot stand for a run with ``key`` (None: it can).

    It can when it exists, its stored cache key is ``key`` (same format), it completed without error,
    it wrote into ``results_root`` and every result file it recorded still exists with the same sha256
    (and, for an appendix, the other results are those it read).
    """
    import nbformat

    path = Path(executed)
    if not path.is_file():
        return "no executed notebook"
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        return f"unreadable executed notebook ({type(err).__name__})"
    record, pm = nb.metadata.get(CACHE_METADATA) or {}, nb.metadata.get("papermill") or {}
    if record.get("cache_format") != CACHE_FORMAT or record.get("cache_key") != key:
        return "inputs changed"
    if pm.get("exception") or record.get("status") != "ok" or any(
            o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])):
        return "the cached run failed"
    if record.get("results_root") != str(results_root):
        return "another results directory"
    files = record.get("result_files") or []
    for entry in files:
        file = Path(entry["path"])
        file = file if file.is_absolute() else results_root / file
        if not file.is_file():
            return f"result file {file} is missing"
        if _file_sha256(file) != entry.get("sha256"):
            return f"result file {file} changed"
    if appendix and record.get("results_inputs") != _results_digest(
            results_root, exclude=[path, *(results_root / e["path"] for e in files)], exclude_names=exclude_names):
        return "the results it reads changed"
    return None


def _kernel_manager_class(env: Mapping[str, str]):
    """An ``AsyncKernelManager`` whose kernels start with ``env`` (the process environment is untouched,
    so concurrent runs in one process, e.g. threads of a Dask worker, do not see each other's variables)."""
    from jupyter_client import AsyncKernelManager

    kernel_env = dict(env)

    class EnvKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):  # type: ignore[override]
            kw["env"] = {**kw.get("env", os.environ), **kernel_env}
            return await super().start_kernel(**kw)

    return EnvKernelManager


def kernel_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernels' environment: ``KERNEL_ENV`` where not already set, then ``extra`` (overrides)."""
    env = {k: v for k, v in KERNEL_ENV.items() if k not in os.environ}
    env.update(dict(extra or {}))
    return env


def _finalise_output(tmp: Path, final: Path, source: NotebookSource, root: Path,
                     record: Mapping[str, Any] | None = None) -> bool:
    """Record the ``.py`` source as papermill's ``input_path`` (and the cache ``record``), rename ``tmp`` onto ``final``.

    Returns False (and removes ``tmp``) when papermill never wrote a readable notebook.
    """
    import nbformat

    try:
        nb = nbformat.read(tmp, as_version=4)
    except Exception:  # kernel died before the first save: nothing worth keeping
        tmp.unlink(missing_ok=True)
        return False
    try:
        rel = source.path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = source.path
    pm_meta = nb.metadata.setdefault("papermill", {})
    pm_meta["input_path"] = str(rel)
    pm_meta["output_path"] = str(final)
    pm_meta["default_parameters"] = source.default_values()
    if record is not None:
        nb.metadata[CACHE_METADATA] = dict(record)
    write_atomic(final, nbformat.writes(nb))
    tmp.unlink(missing_ok=True)
    return True


def _mark_reused(final: Path) -> None:
    """Record in the executed notebook that this run reused it (``"run": "reused"``), atomically."""
    import nbformat

    nb = nbformat.read(final, as_version=4)
    nb.metadata[CACHE_METADATA] = {**nb.metadata.get(CACHE_METADATA, {}), "run": "reused", "reused_at": _now()}
    write_atomic(final, nbformat.writes(nb))


def run_notebook(
    notebook: NotebookSource,
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    progress: bool = True,
    force: bool = False,
    env: Mapping[str, str] | None = None,
    not_results: Collection[str] = (),
) -> RunResult:
    """Execute one notebook with papermill, or reuse its cached executed copy; never raises for errors *inside* the notebook.

    Unknown parameter names raise :class:`ParameterError`. The executed notebook (with the traceback when a
    cell failed) is written atomically to ``out_dir/NN_name.ipynb`` with its cache record (module
    docstring). Unless ``force``, an executed notebook there with the same :func:`cache_key` that
    completed and whose result files are unchanged is reused instead (``RunResult.reused``). ``env``:
    extra environment variables of the kernel (e.g. ``SEQCIRC_RESULTS_DIR``); ``not_results``: file
    names in the results directory that are not results of the notebook (a grid cell's ``params.json``).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    params = dict(parameters or {})
    _check_parameters(notebook, params)
    out_dir = Path(out_dir).resolve()  # papermill saves from inside ``cwd``: relative paths would move
    out_dir.mkdir(parents=True, exist_ok=True)
    final = notebook.output_path(out_dir)
    kernel_env = kernel_environment(env)
    results_root = results_root_for(cwd, kernel_env)
    appendix = notebook.number in APPENDIX_NUMBERS
    start = time.perf_counter()
    key = cache_key(notebook, params)
    if not force and reuse_problem(final, key, results_root, appendix, not_results) is None:
        _mark_reused(final)
        return RunResult(notebook, final, ok=True, seconds=time.perf_counter() - start, parameters=params,
                         reused=True, cache_key=key)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{notebook.stem}.", suffix=".ipynb", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    error = ""
    # Coarse file-system clocks can stamp a file a few ms before ``time.time_ns()``: allow one second.
    since_ns = time.time_ns() - 1_000_000_000
    try:
        with tempfile.TemporaryDirectory() as scratch:
            src = Path(scratch) / f"{notebook.stem}.ipynb"
            import nbformat

            nbformat.write(notebook.read(), src)
            pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name=KERNEL_NAME, cwd=str(cwd),
                                progress_bar=progress, log_output=False,
                                kernel_manager_class=_kernel_manager_class(kernel_env))
    except PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
    except Exception as err:  # kernel start-up and other papermill failures
        error = f"{type(err).__name__}: {err}"
    except BaseException:  # interrupted: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    written = _result_files(results_root, since_ns, exclude=[final, tmp], exclude_names=not_results)
    record = {
        "cache_key": key, "cache_format": CACHE_FORMAT, "status": "error" if error else "ok", "run": "executed",
        "executed_at": _now(), "results_root": str(results_root),
        "result_files": [{"path": p.relative_to(results_root).as_posix(), "sha256": _file_sha256(p)} for p in written],
    }
    if appendix:  # what it read: the other results (after the run, so its own earlier outputs are not counted)
        record["results_inputs"] = _results_digest(results_root, exclude=[final, tmp, *written],
                                                   exclude_names=not_results)
    kept = _finalise_output(tmp, final, notebook, Path(cwd), record)
    return RunResult(notebook, final if kept else None, ok=not error, seconds=seconds, error=error,
                     parameters=params, cache_key=key)


def run_notebooks(
    notebooks: Sequence[NotebookSource],
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    keep_going: bool = False,
    progress: bool = True,
    force: bool = False,
) -> list[RunResult]:
    """Run several notebooks in order, each with the subset of ``parameters`` it declares.

    A parameter that none of them declares raises :class:`ParameterError`. Stops at the first failure unless
    ``keep_going``. Unchanged notebooks are reused unless ``force`` (see :func:`run_notebook`).
    """
    params = dict(parameters or {})
    if len(notebooks) == 1:
        _check_parameters(notebooks[0], params)
    declared = {nb.stem: {p.name for p in nb.parameters()} for nb in notebooks}
    known = set().union(*declared.values()) if declared else set()
    unused = sorted(set(params) - known)
    if unused:
        raise ParameterError(f"no notebook has parameter {', '.join(unused)}; their parameters: {', '.join(sorted(known))}")
    results = []
    for nb in notebooks:
        own = {k: v for k, v in params.items() if k in declared[nb.stem]}
        print(f"==> {nb.stem} {json.dumps(own)}", flush=True)
        result = run_notebook(nb, own, out_dir=out_dir, cwd=cwd, progress=progress, force=force)
        if result.reused:
            print(f"    reused {result.output} (inputs unchanged; --force reruns)", flush=True)
        results.append(result)
        if not result.ok and not keep_going:
            break
    return results


def summary_table(results: Sequence[RunResult]) -> str:
    """A plain-text table: notebook, status (``ok``, ``reused`` or ``FAILED``), seconds, output or error."""
    rows = [("notebook", "status", "seconds", "output / error")]
    for r in results:
        status = "FAILED" if not r.ok else "reused" if r.reused else "ok"
        rows.append((r.notebook.stem, status, f"{r.seconds:.1f}",
                     str(r.output) if r.ok else (r.error.splitlines() or [""])[0][:120]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


def list_table(notebooks: Sequence[NotebookSource]) -> str:
    """``seqcirc list``: each notebook with its parameters, defaults and help comments."""
    lines = []
    for nb in notebooks:
        lines.append(f"{nb.stem}  ({nb.path.name})")
        try:
            params = nb.parameters()
        except (BadFileError, ValueError) as err:
            lines.append(f"    ! {err}")
            continue
        for p in params:
            help_text = f"  # {p.help}" if p.help else ""
            lines.append(f"    {p.name} = {p.default}{help_text}")
    return "\n".join(lines)
