"""Where results live (``results/<model>/``) and how they are written (atomically)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

RESULTS_ROOT = Path("results")


def results_dir(model: str, root: str | Path | None = None) -> Path:
    """``results/<model>/`` with the model spec made filesystem-safe (created if missing)."""
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
