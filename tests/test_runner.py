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

from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.results import RESULTS_ROOT_ENV
from seqcirc_utils.workflow.runner import find_notebooks, parse_value, resolve_notebook

ROOT = Path(__file__).resolve().parents[1]


def seqcirc(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the ``seqcirc`` CLI in a fresh interpreter (as ``make`` does)."""
    return subprocess.run([sys.executable, "-m", "seqcirc_utils.workflow.cli", *args], cwd=ROOT, capture_output=True,
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
                                         ("[1, 2]", [1, 2]), ("smollm2-135m", "smollm2-135m"), ("cuda:0", "cuda:0"),
                                         ("True", True), ("False", False), ("None", None), ("L9.H1", "L9.H1")])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_names_resolve_with_or_without_prefix():
    assert resolve_notebook("behaviour").stem == "01_behaviour"
    assert resolve_notebook("01_behaviour").stem == "01_behaviour"
    assert resolve_notebook("notebooks/01_behaviour.py").stem == "01_behaviour"
    with pytest.raises(ParameterError, match="valid names: .*01_behaviour"):
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


@pytest.mark.slow  # executes notebooks in Jupyter kernels (20-40 s)
def test_run_behaviour_uses_the_given_parameters(tmp_path):
    """The acceptance command: the changed parameters are recorded and used (metadata, smoke notice, JSON)."""
    out_dir, results = tmp_path / "executed", tmp_path / "results"
    res = seqcirc("run", "01_behaviour", "-p", "model", "tiny-gpt2", "-p", "n_prompts", "4", "-p", "smoke", "true",
                  "--out-dir", str(out_dir), env={RESULTS_ROOT_ENV: str(results)})
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
    assert "SMOKE MODE: 4 prompts" in text  # the smoke notice prints the effective size

    data = json.loads((results / "tiny-gpt2" / "behaviour.json").read_text())
    assert data["model"] == "tiny-gpt2" and data["n_prompts"] == 4 and data["smoke"] is True
    assert data["rows"] and {row["n"] for row in data["rows"]} <= {0, 4}
    assert any(row["n"] == 4 for row in data["rows"])
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("seqcirc-chart" in o["data"]["text/html"] and "vegaEmbed" in o["data"]["text/html"] for o in html)


@pytest.mark.slow  # executes notebooks in Jupyter kernels (20-40 s)
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


# --------------------------------------------------------------------------- execution cache (issue 11)

CACHE_BODY = '''\
import time
from seqcirc_utils.core.results import results_dir, write_json_atomic
write_json_atomic(results_dir("m") / "probe.json", {"x": x, "squared": x * x, "t": time.time()})
'''


@pytest.fixture
def frozen_package(tmp_path, monkeypatch):
    """Hash a snapshot of the package (other edits to the checkout must not change the key mid-test)."""
    import shutil

    from seqcirc_utils.workflow import runner

    snapshot = tmp_path / "package_snapshot"
    shutil.copytree(runner.PACKAGE_DIR, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "PACKAGE_DIR", snapshot)
    return snapshot


def _cache_setup(tmp_path):
    from seqcirc_utils.workflow.runner import NotebookSource

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_probe.py", CACHE_BODY)
    return NotebookSource(notebooks / "01_probe.py"), tmp_path / "executed", tmp_path / "results"


def test_cache_key_covers_source_parameters_package_and_model(tmp_path, frozen_package):
    from seqcirc_utils.workflow.runner import cache_key

    nb, _, _ = _cache_setup(tmp_path)
    key = cache_key(nb, {})
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert cache_key(nb, {}) == key and cache_key(nb, {"x": 1}) == key  # the default given explicitly: same run
    assert cache_key(nb, {"x": 2}) != key
    (frozen_package / "__pycache__").mkdir(exist_ok=True)
    (frozen_package / "__pycache__" / "junk.py").write_text("# not package source\n")
    (frozen_package / "notes.txt").write_text("not covered\n")
    assert cache_key(nb, {}) == key
    module = frozen_package / "core" / "results.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert cache_key(nb, {}) != key
    key = cache_key(nb, {})
    data = frozen_package / "data" / "extra.json"
    data.write_text("{}")
    assert cache_key(nb, {}) != key
    key = cache_key(nb, {})
    nb.path.write_text(nb.path.read_text() + "\n# %%\nprint('more')\n")
    assert cache_key(nb, {}) != key
    # the model spec: a local model file is fingerprinted by its size and mtime
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"abc")
    nb.path.write_text(f'# %% tags=["parameters"]\nmodel = {str(weights)!r}\n\n# %%\nprint(model)\n')
    key = cache_key(nb, {})
    assert cache_key(nb, {}) == key
    weights.write_bytes(b"abcd")
    assert cache_key(nb, {}) != key


def test_rerun_reuses_unless_inputs_change_or_force(tmp_path, frozen_package, capsys, monkeypatch):
    import time

    from seqcirc_utils.workflow import book as book_assets

    from seqcirc_utils.workflow import cli
    from seqcirc_utils.workflow.runner import run_notebook

    nb, out_dir, results = _cache_setup(tmp_path)
    env = {RESULTS_ROOT_ENV: str(results)}
    probe = results / "m" / "probe.json"

    first = run_notebook(nb, {"x": 3}, out_dir=out_dir, cwd=tmp_path, progress=False, env=env)
    assert first.ok and not first.reused
    data = json.loads(probe.read_text())
    assert data["squared"] == 9
    meta = nbformat.read(first.output, as_version=4).metadata
    assert meta.seqcirc["cache_key"] == first.cache_key and meta.seqcirc["run"] == "executed"
    assert meta.seqcirc["result_files"] == [{"path": "m/probe.json", "sha256": __import__("hashlib").sha256(
        probe.read_bytes()).hexdigest()}]

    start = time.perf_counter()
    again = run_notebook(nb, {"x": 3}, out_dir=out_dir, cwd=tmp_path, progress=False, env=env)
    assert again.ok and again.reused and time.perf_counter() - start < 2.0
    assert json.loads(probe.read_text())["t"] == data["t"]  # nothing ran
    assert nbformat.read(again.output, as_version=4).metadata.seqcirc["run"] == "reused"
    runs = book_assets.executed_runs(out_dir)
    assert runs.loc[0, "run"] == "reused" and "01_probe" in book_assets.runs_markdown(runs).split("Reused")[1]

    changed = run_notebook(nb, {"x": 4}, out_dir=out_dir, cwd=tmp_path, progress=False, env=env)
    assert changed.ok and not changed.reused and json.loads(probe.read_text())["squared"] == 16

    probe.unlink()  # a result file it wrote is gone: rerun
    gone = run_notebook(nb, {"x": 4}, out_dir=out_dir, cwd=tmp_path, progress=False, env=env)
    assert not gone.reused and json.loads(probe.read_text())["squared"] == 16
    t_before = json.loads(probe.read_text())["t"]

    # `seqcirc run --force` (in-process, so the frozen package snapshot applies)
    args = ["run", "01_probe", "-p", "x", "4", "--notebooks-dir", str(nb.path.parent), "--out-dir", str(out_dir),
            "--no-progress"]
    monkeypatch.setenv(RESULTS_ROOT_ENV, str(results))
    monkeypatch.setattr("seqcirc_utils.workflow.runner.REPO_ROOT", tmp_path)  # the CLI runs notebooks there
    capsys.readouterr()
    assert cli.main(args) == 0
    assert re.search(r"^01_probe +reused ", capsys.readouterr().out, re.M)
    assert json.loads(probe.read_text())["t"] == t_before
    assert cli.main(args + ["--force"]) == 0
    assert re.search(r"^01_probe +ok ", capsys.readouterr().out, re.M)
    assert json.loads(probe.read_text())["t"] > t_before


def test_failed_notebook_is_not_cached(tmp_path, frozen_package):
    from seqcirc_utils.workflow.runner import NotebookSource, reuse_problem, results_root_for, run_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_bad.py", 'raise RuntimeError(f"boom {x}")\n')
    nb = NotebookSource(notebooks / "01_bad.py")
    runs = [run_notebook(nb, {}, out_dir=tmp_path / "executed", cwd=tmp_path, progress=False) for _ in range(2)]
    assert [(r.ok, r.reused) for r in runs] == [(False, False), (False, False)]
    meta = nbformat.read(runs[1].output, as_version=4).metadata
    assert meta.seqcirc["status"] == "error" and meta.papermill["exception"] is True
    assert reuse_problem(runs[1].output, runs[1].cache_key, results_root_for(tmp_path)) == "the cached run failed"
