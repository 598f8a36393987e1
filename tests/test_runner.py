"""`seqcirc run` / `seqcirc list`: parameters reach the notebook, failures keep their traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from seqcirc_utils.runner import find_notebooks, parse_value, resolve_notebook

ROOT = Path(__file__).resolve().parents[1]


def seqcirc(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the ``seqcirc`` CLI in a fresh interpreter (as ``make`` does)."""
    return subprocess.run([sys.executable, "-m", "seqcirc_utils.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def outputs_text(nb) -> str:
    """Every stream, result and error text of an executed notebook, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            parts.extend(out.get("traceback", []))
            parts.append(out.get("evalue", ""))
    return "\n".join(parts)


def write_notebook(path: Path, body: str) -> None:
    path.write_text(textwrap.dedent('''\
        # %% [markdown]
        # # A test notebook

        # %% tags=["parameters"]
        x = 1  # a number
        ''') + "\n# %%\n" + textwrap.dedent(body))


@pytest.mark.parametrize("text, value", [("4", 4), ("0.5", 0.5), ("true", True), ("false", False), ("null", None),
                                         ("[1, 2]", [1, 2]), ("smollm2-135m", "smollm2-135m"), ("cuda:0", "cuda:0")])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_names_resolve_with_or_without_prefix():
    assert resolve_notebook("behaviour").stem == "01_behaviour"
    assert resolve_notebook("01_behaviour").stem == "01_behaviour"
    assert resolve_notebook("notebooks/01_behaviour.py").stem == "01_behaviour"
    with pytest.raises(ValueError, match="valid names: .*01_behaviour"):
        resolve_notebook("no_such_notebook")


def test_list_shows_notebooks_and_parameters():
    res = seqcirc("list")
    assert res.returncode == 0, res.stderr
    assert "01_behaviour" in res.stdout
    block = res.stdout.split("01_behaviour", 1)[1].split("\n0", 1)[0]  # 01_behaviour's parameter lines
    for line in ('model = "smollm2-135m"', "n_prompts = ", "smoke = False"):
        assert line in block
    assert [nb.stem for nb in find_notebooks()][0] == "01_behaviour"


def test_unknown_notebook_and_parameter_are_clear_errors():
    res = seqcirc("run", "no_such_notebook")
    assert res.returncode == 2
    assert "unknown notebook 'no_such_notebook'" in res.stderr and "01_behaviour" in res.stderr
    res = seqcirc("run", "behaviour", "-p", "n_promts", "4")
    assert res.returncode == 2
    assert "n_promts" in res.stderr and "n_prompts" in res.stderr


def test_run_behaviour_uses_the_given_parameters(tmp_path):
    """The acceptance command: the changed parameters are recorded and used (JSON and printed text)."""
    out_dir, results = tmp_path / "executed", tmp_path / "results"
    res = seqcirc("run", "01_behaviour", "-p", "model", "tiny-gpt2", "-p", "n_prompts", "4", "-p", "smoke", "true",
                  "--out-dir", str(out_dir), env={"SEQCIRC_RESULTS": str(results)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^01_behaviour +ok ", res.stdout, re.M)
    executed = out_dir / "01_behaviour.ipynb"
    assert sorted(p.name for p in out_dir.iterdir()) == ["01_behaviour.ipynb"]  # no temporary file left behind

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.papermill
    assert meta["parameters"] == {"model": "tiny-gpt2", "n_prompts": 4, "smoke": True}
    assert meta["default_parameters"]["model"] == "smollm2-135m"
    assert meta["input_path"] == "notebooks/01_behaviour.py"
    assert meta["exception"] is None
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    text = outputs_text(nb)
    assert "SMOKE MODE: 4 prompts" in text and "model=tiny-gpt2" in text

    data = json.loads((results / "tiny-gpt2" / "behaviour.json").read_text())
    assert data["model"] == "tiny-gpt2" and data["n_prompts"] == 4 and data["smoke"] is True
    assert data["rows"] and {row["n"] for row in data["rows"]} <= {0, 4}
    assert any(row["n"] == 4 for row in data["rows"])
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("seqcirc-chart" in o["data"]["text/html"] and "vegaEmbed" in o["data"]["text/html"] for o in html)


def test_failing_notebook_keeps_traceback_and_keep_going(tmp_path):
    notebooks, out_dir = tmp_path / "notebooks", tmp_path / "executed"
    notebooks.mkdir()
    write_notebook(notebooks / "01_bad.py", 'raise RuntimeError(f"boom {x * 42}")\n')
    write_notebook(notebooks / "02_good.py", 'print(f"fine {x}")\n')

    res = seqcirc("run", "--all", "--notebooks-dir", str(notebooks), "--out-dir", str(out_dir), "-p", "x", "2")
    assert res.returncode == 1
    assert not (out_dir / "02_good.ipynb").exists()  # stopped at the failure

    res = seqcirc("run", "--all", "--keep-going", "--notebooks-dir", str(notebooks), "--out-dir", str(out_dir))
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"^01_bad +FAILED .*RuntimeError: boom 42", res.stdout, re.M)
    assert re.search(r"^02_good +ok ", res.stdout, re.M)
    bad = nbformat.read(out_dir / "01_bad.ipynb", as_version=4)
    errors = [o for c in bad.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError" and "boom 42" in errors[0].evalue
    assert any("Traceback" in line or "RuntimeError" in line for line in errors[0].traceback)
    assert bad.metadata.papermill["exception"] is True
    good = nbformat.read(out_dir / "02_good.ipynb", as_version=4)
    assert "fine 1" in outputs_text(good)
    assert sorted(p.name for p in out_dir.iterdir()) == ["01_bad.ipynb", "02_good.ipynb"]
