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
    return json.loads(Path(path).read_text())


def _jsonable(obj: Any):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)
