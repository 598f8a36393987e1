"""Where results live (``results/<model>/``) and how they are written (atomically)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS_ROOT = Path("results")
#: When set (and no ``root`` is given), :func:`results_dir` is this directory for every model: a
#: ``seqcirc grid`` cell's ``results/<model>/runs/<cell-id>/`` (see :mod:`seqcirc_utils.grid`).
RESULTS_DIR_ENV = "SEQCIRC_RESULTS_DIR"


def results_dir(model: str, root: str | Path | None = None) -> Path:
    """``results/<model>/`` with the model spec made filesystem-safe (created if missing).

    The root is ``root``, else ``$SEQCIRC_RESULTS``, else ``results``; ``$SEQCIRC_RESULTS_DIR``
    (without ``root``) replaces the whole path.
    """
    if root is None and os.environ.get(RESULTS_DIR_ENV):
        path = Path(os.environ[RESULTS_DIR_ENV])
        path.mkdir(parents=True, exist_ok=True)
        return path
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name if os.sep in model else model).strip("_") or "model"
    path = Path(root or os.environ.get("SEQCIRC_RESULTS", RESULTS_ROOT)) / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, default=_jsonable)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: str | Path) -> Any:
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


def frame_records(df) -> list[dict]:
    """A DataFrame as JSON-ready records: one dict per row, missing values (NaN) as ``None``."""
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def _jsonable(obj: Any):
    if isinstance(obj, Mapping):  # a typed record (CircuitRecord): its JSON form
        return obj.to_json() if callable(getattr(obj, "to_json", None)) else dict(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


# --------------------------------------------------------------------------- finding figures in result files
# The appendix draws every per-head score and attention pattern it finds in results/<model>/*.json.
# Conventions it recognises (anywhere in a file, at any depth):
# - per-head scores: a list of records that all have integer "layer" and "head" keys (what
#   ``DataFrame.to_dict("records")`` gives for the per-head tables of attention.py, ov_scores.py, ...);
#   every other numeric column is one score;
# - attention patterns: a dict with a 2-D list "pattern" (rows = queries, columns = keys) and optional
#   "labels" (or "tokens"), "query_labels"/"key_labels" and "component".


def _walk(obj: Any, path: str = ""):
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list) and obj and not all(_is_head_record(r) for r in obj):
        for i, value in enumerate(obj):
            if isinstance(value, (dict, list)):
                yield from _walk(value, f"{path}[{i}]")


def _is_head_record(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("layer"), int) and isinstance(value.get("head"), int)
            and not isinstance(value.get("layer"), bool))


def head_score_tables(obj: Any) -> list[tuple[str, Any]]:
    """``(json_path, DataFrame)`` for every list of per-head records in ``obj`` (see the conventions above)."""
    import pandas as pd

    found = []
    for path, value in _walk(obj):
        if isinstance(value, list) and value and all(_is_head_record(r) for r in value):
            found.append((path or "(top level)", pd.DataFrame(value)))
    return found


def head_records(table, **labels: Any) -> list[dict]:
    """The head rows of a per-component table as per-head records (the convention above).

    ``table``: a DataFrame with a ``component`` column of names (``"L9.H1"``, ``"MLP9"``, ...) and
    score columns (e.g. :func:`~seqcirc_utils.ablation.single_component_effects`), or a Series of
    scores indexed by component name (e.g. :func:`~seqcirc_utils.pruning.attribution_scores`).
    Rows that are not heads are dropped; ``layer`` and ``head`` are parsed from the name (any
    ``layer``/``kind``/``index`` columns of the table are replaced); ``labels`` (e.g.
    ``task="digits"``) are added to every record, so the appendix draws one heatmap per label value.
    """
    import pandas as pd

    from .types import parse_component

    df = table.rename_axis("component").reset_index() if isinstance(table, pd.Series) else table.copy()
    if "component" not in df.columns:
        raise ValueError(f"a per-component table needs a 'component' column; it has {list(df.columns)}")
    parsed = [parse_component(str(c)) for c in df["component"]]
    is_head = [c.is_head for c in parsed]
    df = df.drop(columns=[c for c in ("layer", "head", "kind", "index") if c in df.columns])
    df = df.loc[is_head].reset_index(drop=True)
    heads = [c for c in parsed if c.is_head]
    df.insert(1, "layer", [c.layer for c in heads])
    df.insert(2, "head", [c.index for c in heads])
    for key, value in labels.items():
        df[key] = value
    return frame_records(df)


def head_score_groups(obj: Any) -> list[tuple[str, Any]]:
    """Like :func:`head_score_tables`, with sibling tables merged: ``scores.digits``, ``scores.months``, ...
    (lists of per-head records under one dict) become one table ``scores`` with a column ``scores``
    holding the key (``digits``, ...), so the appendix draws them as panels of one figure.
    """
    import pandas as pd

    groups: dict[str, list[tuple[str, Any]]] = {}
    for path, table in head_score_tables(obj):
        parent, _, key = path.rpartition(".")
        sibling = bool(parent) and "[" not in key
        groups.setdefault(parent if sibling else path, []).append((key if sibling else "", table))
    merged = []
    for path, parts in groups.items():
        if len(parts) == 1 and not parts[0][0]:
            merged.append((path, parts[0][1]))
        else:
            label = path.rpartition(".")[2] or path
            merged.append((path, pd.concat([t.assign(**{label: key}) for key, t in parts], ignore_index=True)))
    return merged


#: A result file name written by a notebook: a string literal ending in ``.json`` (f-string fields -> ``*``).
_WRITTEN_RE = re.compile(r"""(?:\bf)?(["'])([A-Za-z0-9_.{}\[\]-]+\.json)\1""")


def result_writers(notebooks_dir: str | Path, below: int = 90) -> dict[str, str]:
    """``{file-name pattern: notebook stem}`` for the result files the chapters write.

    Read from the notebook sources ``NN_name.py`` (``NN < below``): every ``"name.json"`` or
    ``f"circuit_{task}.json"`` literal (fields become ``*``). The appendix groups figures by it.
    """
    writers: dict[str, str] = {}
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py")):
        if int(path.name[:2]) >= below:
            continue
        for _, name in _WRITTEN_RE.findall(path.read_text()):
            writers.setdefault(re.sub(r"\{[^}]*\}", "*", name), path.stem)
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


def score_columns(df) -> list[str]:
    """The numeric score columns of a per-head table (not ``layer``, ``head`` or counts ``n_*``)."""
    import pandas as pd

    return [c for c in df.columns if c not in ("layer", "head", "index") and not str(c).startswith("n_")
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def attention_patterns(obj: Any) -> list[tuple[str, dict]]:
    """``(json_path, dict)`` for every attention-pattern dict in ``obj`` (a 2-D list under ``"pattern"``)."""
    found = []
    for path, value in _walk(obj):
        if isinstance(value, dict) and isinstance(value.get("pattern"), list) and value["pattern"] \
                and all(isinstance(row, list) for row in value["pattern"]):
            found.append((path or "(top level)", value))
    return found


def records_of_kind(obj: Any, kind: str) -> list[dict]:
    """Every typed record in ``obj`` (the file itself or a dict at any depth) whose ``"kind"`` is ``kind``,
    e.g. ``"edge_circuit"`` (:class:`~seqcirc_utils.edge_pruning.EdgeCircuit`) or ``"circuit"``."""
    return [value for _, value in _walk(obj) if isinstance(value, dict) and value.get("kind") == kind]
