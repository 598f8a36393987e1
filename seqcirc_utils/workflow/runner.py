"""Run the compendium's notebooks: ``notebooks/NN_name.py`` -> papermill -> ``book/executed/NN_name.ipynb``.

A notebook source is a jupytext *percent* script with one cell tagged ``parameters``. Running it
converts it with jupytext, injects the given parameters and executes it with papermill (progress bar
on) in the repository root, so relative paths such as ``results/<model>/`` land in the repository.
The executed notebook is written to a temporary file beside its destination and renamed into place,
also when the notebook fails: the traceback stays in the output notebook (papermill's error markers)
and the run reports a failure.

Adding a notebook is adding a file ``notebooks/NN_name.py``: ``seqcirc list`` shows it, ``seqcirc run
name`` runs it, ``seqcirc run --all`` runs it (below), and the book's table of contents
(``_toc.yml``) picks up every executed ``book/executed/NN_name.ipynb``: ``00``-``89`` as chapters,
``90``-``99`` as appendices.

Parallel book: with several notebooks and ``workers > 1`` (``seqcirc run --all``; default one worker
per core) the notebooks run on the embedded Dask ``LocalCluster`` of :mod:`seqcirc_utils.workflow.cluster`
(one single-threaded worker process per core; each kernel gets ``OMP_NUM_THREADS=1`` and relatives),
longest first: a notebook's expected time is its wall time in the previous run table (the executed
notebook in ``out_dir``, when that run had the same effective parameters), else the estimate its
header declares (``seqcirc_run: {estimate_s: N}`` in the jupytext header's ``jupyter`` metadata),
else :data:`DEFAULT_ESTIMATE_S`. A notebook that reads other notebooks' results runs after them:
appendices (``90``-``99``) after every chapter of the run, and a chapter after those its header
names (``seqcirc_run: {after: [NN_name, ...]}``). Each notebook is executed exactly as by a
sequential run (same parameters, same papermill call); the execution cache works the same (a
reusable notebook is reused on the client, without starting the cluster), a failing notebook is
listed and the others still run (with ``keep_going``; else nothing new starts after a failure),
and the cache record gains ``wall_seconds``, ``worker`` and ``started_at``. ``workers=1`` is the
sequential run (no Dask), in dependency then ``NN`` order.

Parameters are checked before anything runs: an unknown name, or a value whose type does not match
the parameter's default (``n_prompts = 32`` takes an int, ``thresholds = [0.9, 0.8]`` a list of
numbers, a ``None`` default anything) is a :class:`~seqcirc_utils.core.errors.ParameterError`.

Execution cache: a notebook whose inputs are unchanged is not executed again. Its inputs are hashed by
:func:`cache_key` (the notebook source, its effective parameters, the package's source files, the
model spec and the versions of torch, transformers, transformer-lens and papermill) and the key is
stored in the executed notebook's metadata (``metadata["seqcirc"]``, next to papermill's own),
together with the result files the run wrote (``results/<model>/...``, found as the files modified
during the run, with their sha256; in a parallel run, less the files another notebook's source names,
see :func:`seqcirc_utils.core.results.result_writers`). A later run reuses the executed notebook when
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
import importlib.util
import json
import os
import queue
import re
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.paths import repo_root
from seqcirc_utils.core.results import RESULTS_DIR_ENV, RESULTS_ROOT_ENV, chapter_of, result_writers, write_atomic
from seqcirc_utils.core.results import results_root as default_results_root
from seqcirc_utils.workflow.cluster import thread_environment

NOTEBOOK_RE = re.compile(r"^(?P<number>\d{2})_(?P<name>[A-Za-z0-9_]+)\.py$")
REPO_ROOT = repo_root()
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
KERNEL_NAME = "python3"
#: Environment of the notebook kernels: no tqdm bars or ipywidgets warnings in the book's outputs.
KERNEL_ENV = {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found", "TOKENIZERS_PARALLELISM": "false"}
#: Torch/BLAS threads of every kernel, sequential runs included (a shell's OMP_NUM_THREADS does not change it):
#: float sums split over another number of threads round differently, and the embedded model's results then differ
#: beyond timings (the smoke book run with 1 worker of 2 threads and with 2 workers of 1 thread wrote different
#: values in 13 of its 26 result files). So results do not depend on ``--workers``.
KERNEL_THREADS = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Bump when the cache key's recipe or the cache metadata changes (old executed notebooks then rerun).
CACHE_FORMAT = 2
#: Distributions whose versions the cache key covers (an upgrade reruns every notebook).
KEY_DEPENDENCIES = ("torch", "transformers", "transformer-lens", "papermill")
#: The notebook metadata key holding the cache record (``metadata[CACHE_METADATA]["cache_key"]``, ...).
CACHE_METADATA = "seqcirc"
#: Appendix numbers: their notebooks read the chapters' results (see the module docstring).
APPENDIX_NUMBERS = range(90, 100)
#: The jupytext header's metadata key of a notebook's scheduling declarations (``estimate_s``, ``after``).
SCHEDULE_METADATA = "seqcirc_run"
#: Expected seconds of a notebook with no previous run and no declared estimate.
DEFAULT_ESTIMATE_S = 60.0


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
        return [
            Parameter(p.name, p.default, p.inferred_type_name, p.help or "") for p in PythonTranslator.inspect(cells[0])
        ]

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

    def schedule(self) -> dict[str, Any]:
        """The scheduling declarations of the jupytext header (``jupyter: seqcirc_run: {...}``):
        ``estimate_s`` (expected seconds of a full run, a number) and ``after`` (notebooks whose
        results this one reads). Malformed declarations raise ``ValueError``."""
        declared = self.read().metadata.get(SCHEDULE_METADATA) or {}
        if not isinstance(declared, Mapping) or set(declared) - {"estimate_s", "after"}:
            raise BadFileError(f"{self.path}: '{SCHEDULE_METADATA}' must be a mapping with keys estimate_s, after")
        estimate, after = declared.get("estimate_s"), declared.get("after", [])
        if estimate is not None and (
            isinstance(estimate, bool) or not isinstance(estimate, (int, float)) or estimate <= 0
        ):
            raise BadFileError(f"{self.path}: {SCHEDULE_METADATA}.estimate_s must be a positive number of seconds")
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise BadFileError(f"{self.path}: {SCHEDULE_METADATA}.after must be a list of notebook names")
        return {"estimate_s": estimate, "after": list(after)}


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
    worker: str = ""  #: the Dask worker that ran it ("0", "1", ...), "main" in a sequential run


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


def _literal_default(parameter: Parameter) -> tuple[bool, Any]:
    """``(True, value)`` when the parameter's default is a Python literal, else ``(False, None)``."""
    try:
        return True, ast.literal_eval(parameter.default)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _type_word(value: Any) -> str:
    return {
        bool: "a boolean (true/false)",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of ``default`` (an int fits a float; list and tuple are one type;
    a list's items are checked when the default's items are scalars of one type)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        kinds = {type(d) for d in default}
        if len(kinds) == 1 and next(iter(kinds)) in (bool, int, float, str):
            return all(_fits(v, default[0]) for v in value)
        return True
    return isinstance(value, type(default))


def check_parameter_types(nb: NotebookSource, parameters: Mapping[str, Any]) -> None:
    """Refuse a value whose type does not match its parameter's default (see :func:`_fits`): a
    :class:`~seqcirc_utils.core.errors.ParameterError` naming the expected type. Parameters whose
    default is ``None`` or not a literal take any value."""
    declared = {p.name: p for p in nb.parameters()}
    for name, value in parameters.items():
        if name not in declared:
            continue
        literal, default = _literal_default(declared[name])
        if literal and not _fits(value, default):
            expected = _type_word(default)
            if isinstance(default, (list, tuple)) and default and isinstance(default[0], (bool, int, float, str)):
                expected += f" of {_type_word(default[0]).split(' (')[0].removeprefix('an ').removeprefix('a ')}s"
            raise ParameterError(
                f"{nb.stem}: parameter {name} takes {expected}; its default is {declared[name].default}, got {value!r}"
            )


def _check_parameters(nb: NotebookSource, parameters: Mapping[str, Any]) -> None:
    known = {p.name for p in nb.parameters()}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ParameterError(
            f"{nb.stem} has no parameter {', '.join(unknown)}; its parameters: {', '.join(sorted(known))}"
        )
    check_parameter_types(nb, parameters)


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
            files = (
                [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
            )
            text += "".join(f"|{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        except OSError:
            pass
    return text


def dependency_versions() -> dict[str, str]:
    """The installed versions of :data:`KEY_DEPENDENCIES` (``"not installed"`` for a missing one),
    read from the distributions' metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in KEY_DEPENDENCIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cache_key(source: NotebookSource, parameters: Mapping[str, Any]) -> str:
    """sha256 (hex) of one run's inputs: the notebook source text, its parameters, the package, the
    model spec and the versions of the libraries that compute the results (:func:`dependency_versions`).

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
    part("versions", canonical_json(dependency_versions()).encode())
    return digest.hexdigest()


def results_root_for(cwd: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """Where a run's notebook writes results (absolute): ``$SEQCIRC_RESULTS_DIR`` (one directory for
    every model, e.g. a grid cell's) or else ``$SEQCIRC_RESULTS`` (default ``results``), relative to ``cwd``."""
    merged = {**os.environ, **dict(env or {})}
    if merged.get(RESULTS_DIR_ENV):
        return (Path(cwd) / merged[RESULTS_DIR_ENV]).resolve()
    return (Path(cwd) / default_results_root(merged)).resolve()


def _result_files(
    root: Path, since_ns: int | None = None, exclude: Collection[Path] = (), exclude_names: Collection[str] = ()
) -> list[Path]:
    """Plain files under ``root`` (modified at or after ``since_ns`` when given), without dot files,
    ``exclude``/``exclude_names`` and grid cells' folders (``<model>/runs/``) unless ``root`` is one."""
    if not root.is_dir():
        return []
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if (
            any(part.startswith(".") for part in rel)
            or (len(rel) > 2 and rel[1] == "runs")
            or path.name in exclude_names
            or not path.is_file()
            or path.resolve() in skip
        ):
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
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def cached_record(executed: str | Path) -> dict[str, Any] | None:
    """The cache record (``metadata["seqcirc"]``) of an executed notebook, or None (missing/unreadable)."""
    import nbformat

    try:
        nb = nbformat.read(Path(executed), as_version=4)
    except Exception:
        return None
    record = nb.metadata.get(CACHE_METADATA)
    return dict(record) if isinstance(record, Mapping) else None


def reuse_problem(
    executed: str | Path, key: str, results_root: Path, appendix: bool = False, exclude_names: Collection[str] = ()
) -> str | None:
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
    if (
        pm.get("exception")
        or record.get("status") != "ok"
        or any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    ):
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
        results_root, exclude=[path, *(results_root / e["path"] for e in files)], exclude_names=exclude_names
    ):
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
    """The kernels' environment: ``KERNEL_ENV`` where not already set, :data:`KERNEL_THREADS` threads, then
    ``extra`` (overrides; e.g. a grid cell's ``threads``)."""
    env = {k: v for k, v in KERNEL_ENV.items() if k not in os.environ}
    env.update(thread_environment(KERNEL_THREADS))
    env.update(dict(extra or {}))
    return env


def _finalise_output(
    tmp: Path, final: Path, source: NotebookSource, root: Path, record: Mapping[str, Any] | None = None
) -> bool:
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


def reuse_cached(
    notebook: NotebookSource,
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    not_results: Collection[str] = (),
) -> RunResult | None:
    """Reuse the executed notebook in ``out_dir`` when it stands for this run (see :func:`reuse_problem`):
    it is marked ``"run": "reused"`` and its :class:`RunResult` returned; else None (nothing is touched)."""
    params = dict(parameters or {})
    start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    final = notebook.output_path(out_dir)
    results_root = results_root_for(cwd, kernel_environment(env))
    key = cache_key(notebook, params)
    if reuse_problem(final, key, results_root, notebook.number in APPENDIX_NUMBERS, not_results) is not None:
        return None
    _mark_reused(final)
    record = cached_record(final) or {}
    return RunResult(
        notebook,
        final,
        ok=True,
        seconds=time.perf_counter() - start,
        parameters=params,
        reused=True,
        cache_key=key,
        worker=str(record.get("worker", "")),
    )


def run_notebook(
    notebook: NotebookSource,
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    progress: bool = True,
    force: bool = False,
    env: Mapping[str, str] | None = None,
    not_results: Collection[str] = (),
    worker: str = "",
    writers: Mapping[str, str] | None = None,
) -> RunResult:
    """Execute one notebook with papermill, or reuse its cached executed copy; never raises for errors *inside* the notebook.

    Unknown parameter names and values of the wrong type raise
    :class:`~seqcirc_utils.core.errors.ParameterError`. The executed notebook (with the traceback
    when a cell failed) is written atomically to ``out_dir/NN_name.ipynb`` with its cache record
    (module docstring). Unless ``force``, an executed notebook there with the same :func:`cache_key`
    that completed and whose result files are unchanged is reused instead (``RunResult.reused``).
    ``env``: extra environment variables of the kernel (e.g. ``SEQCIRC_RESULTS_DIR``); ``not_results``:
    file names in the results directory that are not results of the notebook (a grid cell's
    ``params.json``). ``worker``: who runs it, recorded as ``worker`` in the cache record.
    ``writers``: ``{file pattern: notebook stem}`` (:func:`seqcirc_utils.core.results.result_writers`)
    when other notebooks run at the same time: a file they write is not counted as this run's result.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    params = dict(parameters or {})
    _check_parameters(notebook, params)
    out_dir = Path(out_dir).resolve()  # papermill saves from inside ``cwd``: relative paths would move
    out_dir.mkdir(parents=True, exist_ok=True)
    if not force and (reused := reuse_cached(notebook, params, out_dir, cwd, env, not_results)) is not None:
        return reused
    final = notebook.output_path(out_dir)
    kernel_env = kernel_environment(env)
    results_root = results_root_for(cwd, kernel_env)
    appendix = notebook.number in APPENDIX_NUMBERS
    start = time.perf_counter()
    started_at = _now()
    key = cache_key(notebook, params)
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
            pm.execute_notebook(
                str(src),
                str(tmp),
                parameters=params,
                kernel_name=KERNEL_NAME,
                cwd=str(cwd),
                progress_bar=progress,
                log_output=False,
                kernel_manager_class=_kernel_manager_class(kernel_env),
            )
    except PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
    except Exception as err:  # kernel start-up and other papermill failures
        error = f"{type(err).__name__}: {err}"
    except BaseException:  # interrupted: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    written = _result_files(results_root, since_ns, exclude=[final, tmp], exclude_names=not_results)
    if writers:  # other notebooks ran meanwhile: keep the files no other notebook is known to write
        written = [p for p in written if chapter_of(p.name, dict(writers)) in (None, notebook.stem)]
    record = {
        "cache_key": key,
        "cache_format": CACHE_FORMAT,
        "status": "error" if error else "ok",
        "run": "executed",
        "started_at": started_at,
        "executed_at": _now(),
        "wall_seconds": round(seconds, 3),
        "worker": worker,
        "results_root": str(results_root),
        "result_files": [{"path": p.relative_to(results_root).as_posix(), "sha256": _file_sha256(p)} for p in written],
    }
    if appendix:  # what it read: the other results (after the run, so its own earlier outputs are not counted)
        record["results_inputs"] = _results_digest(
            results_root, exclude=[final, tmp, *written], exclude_names=not_results
        )
    kept = _finalise_output(tmp, final, notebook, Path(cwd), record)
    return RunResult(
        notebook,
        final if kept else None,
        ok=not error,
        seconds=seconds,
        error=error,
        parameters=params,
        cache_key=key,
        worker=worker,
    )


# --------------------------------------------------------------------------- several notebooks: order, parallel runs


def dependencies(notebooks: Sequence[NotebookSource]) -> dict[str, list[str]]:
    """``{stem: [stems it runs after]}`` within ``notebooks``: an appendix (``90``-``99``) after every
    chapter, a chapter after those its header names (``after``; a name not in ``notebooks`` is
    ignored there, an unknown one raises ``ValueError``, as does a cycle)."""
    stems = [nb.stem for nb in notebooks]
    deps: dict[str, list[str]] = {}
    for nb in notebooks:
        if nb.number in APPENDIX_NUMBERS:
            deps[nb.stem] = [s for s in stems if int(s[:2]) not in APPENDIX_NUMBERS]
            continue
        after = []
        for name in nb.schedule()["after"]:
            other = resolve_notebook(name, nb.path.parent).stem
            if other == nb.stem:
                raise BadFileError(f"{nb.path}: {SCHEDULE_METADATA}.after names the notebook itself")
            if other in stems:
                after.append(other)
        deps[nb.stem] = after
    state: dict[str, int] = {}

    def visit(stem: str, path: list[str]) -> None:
        if state.get(stem) == 2:
            return
        if state.get(stem) == 1:
            raise BadFileError(f"notebooks wait for each other: {' -> '.join(path + [stem])}")
        state[stem] = 1
        for dep in deps[stem]:
            visit(dep, path + [stem])
        state[stem] = 2

    for stem in stems:
        visit(stem, [])
    return deps


def previous_seconds(notebook: NotebookSource, out_dir: str | Path, parameters: Mapping[str, Any]) -> float | None:
    """The wall time of the previous run in ``out_dir`` (the run table) when it ran with the same
    effective parameters; None when there is none (or it failed)."""
    import nbformat

    path = notebook.output_path(Path(out_dir))
    if not path.is_file():
        return None
    try:
        meta = nbformat.read(path, as_version=4).metadata
    except Exception:
        return None
    pm, record = meta.get("papermill") or {}, meta.get(CACHE_METADATA) or {}
    before = {**(pm.get("default_parameters") or {}), **(pm.get("parameters") or {})}
    if pm.get("exception") or canonical_json(before) != canonical_json(effective_parameters(notebook, parameters)):
        return None
    seconds = record.get("wall_seconds", pm.get("duration"))
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None


def expected_seconds(notebook: NotebookSource, out_dir: str | Path, parameters: Mapping[str, Any]) -> float:
    """What a run is expected to take: :func:`previous_seconds`, else the declared ``estimate_s``, else
    :data:`DEFAULT_ESTIMATE_S`."""
    seconds = previous_seconds(notebook, out_dir, parameters)
    if seconds is None:
        seconds = notebook.schedule()["estimate_s"]
    return float(seconds if seconds is not None else DEFAULT_ESTIMATE_S)


@dataclass(frozen=True)
class NotebookJob:
    """One notebook run as sent to a worker (absolute paths: workers share the file system)."""

    notebook: NotebookSource
    parameters: dict[str, Any]
    out_dir: str
    cwd: str
    force: bool = False
    env: dict[str, str] = field(default_factory=dict)
    writers: dict[str, str] = field(default_factory=dict)


def run_job(job: NotebookJob) -> RunResult:
    """Run one :class:`NotebookJob` (on a Dask worker: its name is recorded); never raises."""
    from seqcirc_utils.workflow.cluster import worker_name

    worker = worker_name() or "main"
    start = time.perf_counter()
    try:
        return run_notebook(
            job.notebook,
            job.parameters,
            out_dir=job.out_dir,
            cwd=job.cwd,
            progress=False,
            force=job.force,
            env=job.env,
            worker=worker,
            writers=job.writers,
        )
    except Exception as err:  # outside the notebook (unwritable folder, ...): a failed run, not a dead worker
        return RunResult(
            job.notebook,
            None,
            ok=False,
            seconds=time.perf_counter() - start,
            error=f"{type(err).__name__}: {err}",
            parameters=dict(job.parameters),
            worker=worker,
        )


def run_scheduled(
    notebooks: Sequence[NotebookSource],
    deps: Mapping[str, Sequence[str]],
    expected: Mapping[str, float],
    slots: int,
    start: Callable[[NotebookSource], Any],
    finish: Callable[[NotebookSource, Any], RunResult],
    ready_now: Callable[[NotebookSource], RunResult | None] = lambda nb: None,
    keep_going: bool = False,
    on_start: Callable[[NotebookSource], None] = lambda nb: None,
    on_done: Callable[[RunResult], None] = lambda r: None,
) -> list[RunResult]:
    """Run ``notebooks`` at most ``slots`` at a time, longest ``expected`` first, each after its ``deps``.

    ``start(nb)`` returns a future (anything with ``add_done_callback``: a Dask or ``concurrent.futures``
    future); ``finish(nb, future)`` turns the finished future into a :class:`RunResult` (a raised error
    included). ``ready_now(nb)`` is asked first and may answer without starting anything (a reused
    notebook). A failure stops new starts unless ``keep_going`` (running ones finish). Returns the
    results in the order of ``notebooks`` (only those that ran).
    """
    done: dict[str, RunResult] = {}
    waiting = list(notebooks)
    finished: queue.Queue = queue.Queue()
    running: dict[str, NotebookSource] = {}
    stop = False
    while True:
        while not stop and len(running) < slots:
            ready = [nb for nb in waiting if all(d in done for d in deps.get(nb.stem, ()))]
            if not ready:
                break
            nb = max(ready, key=lambda n: (expected.get(n.stem, 0.0), -n.number, n.stem))
            waiting.remove(nb)
            result = ready_now(nb)
            if result is not None:
                done[nb.stem] = result
                on_done(result)
                stop = stop or (not result.ok and not keep_going)
                continue
            on_start(nb)
            running[nb.stem] = nb
            future = start(nb)
            future.add_done_callback(lambda f, nb=nb: finished.put((nb, f)))
        if not running:
            break
        nb, future = finished.get()
        del running[nb.stem]
        result = finish(nb, future)
        done[nb.stem] = result
        on_done(result)
        stop = stop or (not result.ok and not keep_going)
    return [done[nb.stem] for nb in notebooks if nb.stem in done]


def _parallel_environment() -> dict[str, str]:
    """The kernel environment of a chapter on a worker: one thread, and the client's results location."""
    from seqcirc_utils.workflow.cluster import thread_environment

    env = thread_environment(1)
    for name in (RESULTS_DIR_ENV, RESULTS_ROOT_ENV):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def run_notebooks(
    notebooks: Sequence[NotebookSource],
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    keep_going: bool = False,
    progress: bool = True,
    force: bool = False,
    workers: int = 1,
) -> list[RunResult]:
    """Run several notebooks, each with the subset of ``parameters`` it declares.

    A parameter that none of them declares, or a value of the wrong type, raises
    :class:`~seqcirc_utils.core.errors.ParameterError` before anything runs. Stops starting notebooks
    after the first failure unless ``keep_going``. Unchanged notebooks are reused unless ``force``
    (see :func:`run_notebook`). ``workers``: 1 runs them one after another in this process (in
    dependency, then ``NN`` order); more runs them on an embedded Dask ``LocalCluster`` of that many
    single-threaded workers, longest first (module docstring).
    """
    params = dict(parameters or {})
    if workers < 1:
        raise ParameterError(f"workers must be an integer >= 1, got {workers}")
    if len(notebooks) == 1:
        _check_parameters(notebooks[0], params)
    declared = {nb.stem: {p.name for p in nb.parameters()} for nb in notebooks}
    known = set().union(*declared.values()) if declared else set()
    unused = sorted(set(params) - known)
    if unused:
        raise ParameterError(
            f"no notebook has parameter {', '.join(unused)}; their parameters: {', '.join(sorted(known))}"
        )
    own = {nb.stem: {k: v for k, v in params.items() if k in declared[nb.stem]} for nb in notebooks}
    for nb in notebooks:
        check_parameter_types(nb, own[nb.stem])
    deps = dependencies(notebooks)
    out_dir = Path(out_dir).resolve()
    if workers > 1 and len(notebooks) > 1 and importlib.util.find_spec("distributed") is None:
        print(
            "seqcirc run: dask distributed is not installed (pip install 'dask[distributed]'); "
            "running the notebooks one after another",
            file=sys.stderr,
            flush=True,
        )
        workers = 1
    if workers == 1 or len(notebooks) <= 1:
        return _run_sequential(notebooks, own, deps, out_dir, cwd, keep_going, progress, force)
    return _run_parallel(notebooks, own, deps, out_dir, cwd, keep_going, force, workers)


def _run_sequential(notebooks, own, deps, out_dir, cwd, keep_going, progress, force) -> list[RunResult]:
    def run(nb: NotebookSource) -> RunResult:
        print(f"==> {nb.stem} {json.dumps(own[nb.stem])}", flush=True)
        result = run_notebook(nb, own[nb.stem], out_dir=out_dir, cwd=cwd, progress=progress, force=force, worker="main")
        if result.reused:
            print(f"    reused {result.output} (inputs unchanged; --force reruns)", flush=True)
        return result

    class _Done:  # an already finished "future": the sequential run needs no executor
        def __init__(self, value):
            self.value = value

        def add_done_callback(self, fn):
            fn(self)

    order = {nb.stem: -i for i, nb in enumerate(notebooks)}  # NN order: the first is "longest"
    return run_scheduled(
        notebooks, deps, order, 1, start=lambda nb: _Done(run(nb)), finish=lambda nb, f: f.value, keep_going=keep_going
    )


def _run_parallel(notebooks, own, deps, out_dir, cwd, keep_going, force, workers) -> list[RunResult]:
    from seqcirc_utils.workflow.cluster import local_cluster

    expected = {nb.stem: expected_seconds(nb, out_dir, own[nb.stem]) for nb in notebooks}
    writers = result_writers(notebooks[0].path.parent)
    env = _parallel_environment()
    state: dict[str, Any] = {}

    def client():
        if "client" not in state:
            from distributed import Client

            n = min(workers, len(notebooks))
            print(f"==> starting a Dask LocalCluster: {n} workers, one thread each", flush=True)
            state["cluster"] = local_cluster(n)
            state["client"] = Client(state["cluster"])
        return state["client"]

    def ready_now(nb: NotebookSource) -> RunResult | None:
        reused = None if force else reuse_cached(nb, own[nb.stem], out_dir, cwd, env)
        if reused is not None:
            print(
                f"==> {nb.stem} {json.dumps(own[nb.stem])}\n    reused {reused.output} "
                "(inputs unchanged; --force reruns)",
                flush=True,
            )
        return reused

    def start(nb: NotebookSource):
        job = NotebookJob(nb, own[nb.stem], str(out_dir), str(Path(cwd).resolve()), force, env, writers)
        return client().submit(run_job, job, key=f"seqcirc-run-{nb.stem}-{time.time_ns()}", pure=False, retries=0)

    def finish(nb: NotebookSource, future) -> RunResult:
        try:
            return future.result()
        except Exception as err:  # the worker died (or the job could not be sent)
            return RunResult(
                nb, None, ok=False, seconds=0.0, error=f"{type(err).__name__}: {err}", parameters=own[nb.stem]
            )

    def on_start(nb: NotebookSource) -> None:
        print(f"==> {nb.stem} {json.dumps(own[nb.stem])} (expected {expected[nb.stem]:.0f} s)", flush=True)

    def on_done(result: RunResult) -> None:
        if not result.reused:
            status = "ok" if result.ok else f"FAILED: {(result.error.splitlines() or [''])[0][:120]}"
            print(
                f"<== {result.notebook.stem} {status} ({result.seconds:.1f} s on worker {result.worker or '?'})",
                file=sys.stdout if result.ok else sys.stderr,
                flush=True,
            )

    try:
        return run_scheduled(
            notebooks, deps, expected, workers, start, finish, ready_now, keep_going, on_start, on_done
        )
    finally:
        if "client" in state:
            state["client"].close()
            state["cluster"].close()


def summary_table(results: Sequence[RunResult]) -> str:
    """A plain-text table: notebook, status (``ok``, ``reused`` or ``FAILED``), seconds, worker, output or error.

    ``seconds`` is this run's wall time (for a reused notebook: the cache check); ``worker`` the Dask
    worker that executed it (``main``: a sequential run; for a reused notebook, the run it reuses)."""
    rows = [("notebook", "status", "seconds", "worker", "output / error")]
    for r in results:
        status = "FAILED" if not r.ok else "reused" if r.reused else "ok"
        rows.append(
            (
                r.notebook.stem,
                status,
                f"{r.seconds:.1f}",
                r.worker or "-",
                str(r.output) if r.ok else (r.error.splitlines() or [""])[0][:120],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


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
