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
