"""Where results live (``results/<model>/``) and how they are written (atomically)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS_ROOT = Path("results")
#: The results root (default :data:`RESULTS_ROOT`, relative to the working directory): one folder per model below it.
RESULTS_ROOT_ENV = "SEQCIRC_RESULTS"
#: When set (and no ``root`` is given), :func:`results_dir` is this directory for every model: a
#: ``seqcirc grid`` cell's ``results/<model>/runs/<cell-id>/`` (see :mod:`seqcirc_utils.workflow.grid`).
RESULTS_DIR_ENV = "SEQCIRC_RESULTS_DIR"


def results_root(env: Mapping[str, str] | None = None) -> Path:
    """The results root: ``$SEQCIRC_RESULTS`` (:data:`RESULTS_ROOT_ENV`) in ``env`` (default: this process's
    environment), else ``results``. Relative paths stay relative (to the working directory that uses them)."""
    env = os.environ if env is None else env
    return Path(env.get(RESULTS_ROOT_ENV) or RESULTS_ROOT)


def results_dir(model: str, root: str | Path | None = None) -> Path:
    """``results/<model>/`` with the model spec made filesystem-safe (created if missing).

    The root is ``root``, else :func:`results_root` (``$SEQCIRC_RESULTS``, else ``results``);
    ``$SEQCIRC_RESULTS_DIR`` (without ``root``) replaces the whole path.
    """
    if root is None and os.environ.get(RESULTS_DIR_ENV):
        path = Path(os.environ[RESULTS_DIR_ENV])
        path.mkdir(parents=True, exist_ok=True)
        return path
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name if os.sep in model else model).strip("_") or "model"
    path = Path(root or results_root()) / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically: into a new temporary file beside it,
    then ``os.replace`` onto ``path``. Readers see the old file or the new one, never a half-written one;
    a failed write leaves the old file and no temporary file. Creates missing parent folders; the file gets
    the usual permissions (the umask applies). The one atomic writer of the package."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (indent 1; typed records by their ``to_json``) to ``path`` with :func:`write_atomic`.
    An object that cannot be serialised raises before anything is written."""
    return write_atomic(path, json.dumps(obj, indent=1, default=_jsonable))


def read_json(path: str | Path) -> Any:
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


def frame_records(df) -> list[dict]:
    """A DataFrame as JSON-ready records: one dict per row, missing values (NaN) as ``None``."""
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def _jsonable(obj: Any):
    if callable(getattr(obj, "to_json", None)):  # a typed record (CircuitRecord, HeadScores, ...): its JSON form
        return obj.to_json()
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


# --------------------------------------------------------------------------- finding records in result files
# The appendix draws what it finds in results/<model>/*.json by kind: typed records anywhere in a file
# (a dict with "kind": "head_scores", "attention_pattern", "circuit", "edge_circuit"; see
# :mod:`seqcirc_utils.core.records` and :class:`seqcirc_utils.discovery.edges.search.EdgeCircuit`).


def _walk(obj: Any, path: str = ""):
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if isinstance(value, (dict, list)):
                yield from _walk(value, f"{path}[{i}]")


def find_records(obj: Any, kind: str) -> list[tuple[str, dict]]:
    """``(json_path, record)`` for every typed record in ``obj`` (the file itself or a dict at any depth)
    whose ``"kind"`` is ``kind``; the path is ``"(top level)"`` for the file itself."""
    return [
        (path or "(top level)", value)
        for path, value in _walk(obj)
        if isinstance(value, dict) and value.get("kind") == kind
    ]


#: A result file name written by a notebook: a string literal ending in ``.json`` (f-string fields -> ``*``).
_WRITTEN_RE = re.compile(r"""(?:\bf)?(["'])([A-Za-z0-9_.{}\[\]-]+\.json)\1""")


def result_writers(notebooks_dir: str | Path, below: int = 90) -> dict[str, str]:
    """``{file-name pattern: notebook stem}`` for the result files the chapters write.

    Read from the notebook sources ``NN_name.py`` (``NN < below``): every ``"name.json"`` or
    ``f"circuit_{task}.json"`` literal (fields become ``*``), and every ``Record.file`` of a result-record type
    (:data:`seqcirc_utils.core.result_records.RESULT_RECORDS`). The appendix groups figures by it.
    """
    from seqcirc_utils.core.result_records import RESULT_RECORDS

    writers: dict[str, str] = {}
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py")):
        if int(path.name[:2]) >= below:
            continue
        source = path.read_text()
        for _, name in _WRITTEN_RE.findall(source):
            writers.setdefault(re.sub(r"\{[^}]*\}", "*", name), path.stem)
        for record_type in RESULT_RECORDS:
            if re.search(rf"\b{record_type.__name__}\.file\b", source):
                writers.setdefault(record_type.file, path.stem)
    return writers


def chapter_titles(notebooks_dir: str | Path) -> dict[str, str]:
    """``{notebook stem: title}``: the first Markdown heading (``# # Title``) of each ``NN_name.py``."""
    titles = {}
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py")):
        match = re.search(r"^# # (.+)$", path.read_text(), re.M)
        titles[path.stem] = match.group(1).strip() if match else path.stem
    return titles


def chapter_of(filename: str, writers: dict[str, str]) -> str | None:
    """The notebook that wrote ``filename``: the most specific matching pattern of :func:`result_writers`."""
    from fnmatch import fnmatchcase

    matches = [p for p in writers if fnmatchcase(filename, p)]
    if not matches:
        return None
    return writers[max(matches, key=lambda p: (len(p.replace("*", "")), -p.count("*")))]


def records_of_kind(obj: Any, kind: str) -> list[dict]:
    """Every typed record in ``obj`` whose ``"kind"`` is ``kind`` (:func:`find_records` without the paths),
    e.g. ``"head_scores"``, ``"circuit"`` or ``"edge_circuit"``."""
    return [record for _, record in find_records(obj, kind)]
