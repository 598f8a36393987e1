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
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

NOTEBOOK_RE = re.compile(r"^(?P<number>\d{2})_(?P<name>[A-Za-z0-9_]+)\.py$")
REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
KERNEL_NAME = "python3"
#: Environment of the notebook kernels: no tqdm bars or ipywidgets warnings in the book's outputs.
KERNEL_ENV = {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found", "TOKENIZERS_PARALLELISM": "false"}


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
            raise ValueError(f"{self.path} has no cell tagged 'parameters' (use '# %% tags=[\"parameters\"]')")
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


def find_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[NotebookSource]:
    """Every ``NN_name.py`` under ``notebooks_dir``, in ``NN`` order."""
    directory = Path(notebooks_dir)
    if not directory.is_dir():
        raise ValueError(f"no notebooks directory at {directory}")
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
    raise ValueError(f"unknown notebook {name!r}; valid names: {valid}")


def parse_value(text: str) -> Any:
    """A ``-p`` value: JSON when it parses (``4``, ``0.5``, ``true``, ``[1, 2]``, ``null``), else the string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def parse_parameters(pairs: Iterable[Sequence[str]]) -> dict[str, Any]:
    """``[("model", "gpt2-small"), ("n_prompts", "8")]`` -> ``{"model": "gpt2-small", "n_prompts": 8}``."""
    return {key: parse_value(value) for key, value in pairs}


def _check_parameters(nb: NotebookSource, parameters: Mapping[str, Any]) -> None:
    known = {p.name for p in nb.parameters()}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"{nb.stem} has no parameter {', '.join(unknown)}; its parameters: {', '.join(sorted(known))}")


@contextlib.contextmanager
def _kernel_env(extra: Mapping[str, str]):
    """Set ``extra`` (where not already set) in ``os.environ`` while kernels start, then restore it."""
    added = {k: v for k, v in extra.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _finalise_output(tmp: Path, final: Path, source: NotebookSource, root: Path) -> bool:
    """Record the ``.py`` source as papermill's ``input_path`` and rename ``tmp`` onto ``final``.

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
    nbformat.write(nb, tmp)
    os.replace(tmp, final)
    return True


def run_notebook(
    notebook: NotebookSource,
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    progress: bool = True,
) -> RunResult:
    """Execute one notebook with papermill; never raises for errors *inside* the notebook.

    Unknown parameter names raise ``ValueError``. The executed notebook (with the traceback when a
    cell failed) is written atomically to ``out_dir/NN_name.ipynb``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    params = dict(parameters or {})
    _check_parameters(notebook, params)
    out_dir = Path(out_dir).resolve()  # papermill saves from inside ``cwd``: relative paths would move
    out_dir.mkdir(parents=True, exist_ok=True)
    final = notebook.output_path(out_dir)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{notebook.stem}.", suffix=".ipynb", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    error = ""
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            src = Path(scratch) / f"{notebook.stem}.ipynb"
            import nbformat

            nbformat.write(notebook.read(), src)
            with _kernel_env(KERNEL_ENV):
                pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name=KERNEL_NAME, cwd=str(cwd),
                                    progress_bar=progress, log_output=False)
    except PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
    except Exception as err:  # kernel start-up and other papermill failures
        error = f"{type(err).__name__}: {err}"
    except BaseException:  # interrupted: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    kept = _finalise_output(tmp, final, notebook, Path(cwd))
    return RunResult(notebook, final if kept else None, ok=not error, seconds=seconds, error=error,
                     parameters=params)


def run_notebooks(
    notebooks: Sequence[NotebookSource],
    parameters: Mapping[str, Any] | None = None,
    out_dir: str | Path = EXECUTED_DIR,
    cwd: str | Path = REPO_ROOT,
    keep_going: bool = False,
    progress: bool = True,
) -> list[RunResult]:
    """Run several notebooks in order, each with the subset of ``parameters`` it declares.

    A parameter that none of them declares raises ``ValueError``. Stops at the first failure unless
    ``keep_going``.
    """
    params = dict(parameters or {})
    if len(notebooks) == 1:
        _check_parameters(notebooks[0], params)
    declared = {nb.stem: {p.name for p in nb.parameters()} for nb in notebooks}
    known = set().union(*declared.values()) if declared else set()
    unused = sorted(set(params) - known)
    if unused:
        raise ValueError(f"no notebook has parameter {', '.join(unused)}; their parameters: {', '.join(sorted(known))}")
    results = []
    for nb in notebooks:
        own = {k: v for k, v in params.items() if k in declared[nb.stem]}
        print(f"==> {nb.stem} {json.dumps(own)}", flush=True)
        result = run_notebook(nb, own, out_dir=out_dir, cwd=cwd, progress=progress)
        results.append(result)
        if not result.ok and not keep_going:
            break
    return results


def summary_table(results: Sequence[RunResult]) -> str:
    """A plain-text table: notebook, status, seconds, output or error."""
    rows = [("notebook", "status", "seconds", "output / error")]
    for r in results:
        rows.append((r.notebook.stem, "ok" if r.ok else "FAILED", f"{r.seconds:.1f}",
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
        except ValueError as err:
            lines.append(f"    ! {err}")
            continue
        for p in params:
            help_text = f"  # {p.help}" if p.help else ""
            lines.append(f"    {p.name} = {p.default}{help_text}")
    return "\n".join(lines)
