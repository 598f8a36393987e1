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

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.results import RESULTS_ROOT_ENV
from seqcirc_utils.workflow.runner import find_notebooks, parse_value, resolve_notebook

ROOT = Path(__file__).resolve().parents[1]


def seqcirc(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the ``seqcirc`` CLI in a fresh interpreter (as ``make`` does)."""
    return subprocess.run(
        [sys.executable, "-m", "seqcirc_utils.workflow.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


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
    path.write_text(
        textwrap.dedent("""\
        # %% [markdown]
        # # A test notebook

        # %% tags=["parameters"]
        x = 1  # a number
        """)
        + "\n# %%\n"
        + textwrap.dedent(body)
    )


@pytest.mark.parametrize(
    "text, value",
    [
        ("4", 4),
        ("0.5", 0.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ("smollm2-135m", "smollm2-135m"),
        ("cuda:0", "cuda:0"),
        ("True", True),
        ("False", False),
        ("None", None),
        ("L9.H1", "L9.H1"),
    ],
)
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
    res = seqcirc(
        "run",
        "01_behaviour",
        "-p",
        "model",
        "tiny-gpt2",
        "-p",
        "n_prompts",
        "4",
        "-p",
        "smoke",
        "true",
        "--out-dir",
        str(out_dir),
        env={RESULTS_ROOT_ENV: str(results)},
    )
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
    assert "Smoke mode** (4 prompts per combination" in text  # the smoke note states the effective size

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

    res = seqcirc(
        "run", "--all", "--workers", "1", "--notebooks-dir", str(notebooks), "--out-dir", str(out_dir), "-p", "x", "2"
    )
    assert res.returncode == 1
    assert not (out_dir / "02_good.ipynb").exists()  # one after another: stopped at the failure

    # in parallel (2 workers): the failure is listed, the other notebook still runs
    res = seqcirc(
        "run", "--all", "--keep-going", "--workers", "2", "--notebooks-dir", str(notebooks), "--out-dir", str(out_dir)
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"^01_bad +FAILED .*RuntimeError: boom 42", res.stdout, re.M)
    assert re.search(r"^02_good +ok +[0-9.]+ +[01] ", res.stdout, re.M)  # the worker that ran it
    bad = nbformat.read(out_dir / "01_bad.ipynb", as_version=4)
    errors = [o for c in bad.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError" and "boom 42" in errors[0].evalue
    assert any("Traceback" in line or "RuntimeError" in line for line in errors[0].traceback)
    assert bad.metadata.papermill["exception"] is True
    good = nbformat.read(out_dir / "02_good.ipynb", as_version=4)
    assert "fine 1" in outputs_text(good)
    assert sorted(p.name for p in out_dir.iterdir()) == ["01_bad.ipynb", "02_good.ipynb"]


# --------------------------------------------------------------------------- execution cache (issue 11)

CACHE_BODY = """\
import time
from seqcirc_utils.core.results import results_dir, write_json_atomic
write_json_atomic(results_dir("m") / "probe.json", {"x": x, "squared": x * x, "t": time.time()})
"""


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
    assert meta.seqcirc["result_files"] == [
        {"path": "m/probe.json", "sha256": __import__("hashlib").sha256(probe.read_bytes()).hexdigest()}
    ]

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
    args = [
        "run",
        "01_probe",
        "-p",
        "x",
        "4",
        "--notebooks-dir",
        str(nb.path.parent),
        "--out-dir",
        str(out_dir),
        "--no-progress",
    ]
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
    from seqcirc_utils.workflow.runner import NotebookSource, results_root_for, reuse_problem, run_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_bad.py", 'raise RuntimeError(f"boom {x}")\n')
    nb = NotebookSource(notebooks / "01_bad.py")
    runs = [run_notebook(nb, {}, out_dir=tmp_path / "executed", cwd=tmp_path, progress=False) for _ in range(2)]
    assert [(r.ok, r.reused) for r in runs] == [(False, False), (False, False)]
    meta = nbformat.read(runs[1].output, as_version=4).metadata
    assert meta.seqcirc["status"] == "error" and meta.papermill["exception"] is True
    assert reuse_problem(runs[1].output, runs[1].cache_key, results_root_for(tmp_path)) == "the cached run failed"


# --------------------------------------------------------------------------- parameters checked before a run (issue 16.8)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("n_prompts", "abc", "takes an integer"),
        ("n_prompts", "2.5", "takes an integer"),
        ("smoke", "1", "takes a boolean"),
        ("model", "[1]", "takes a string"),
    ],
)
def test_mistyped_parameter_is_refused_before_execution(tmp_path, capsys, key, value, expected):
    from seqcirc_utils.workflow import cli

    out_dir = tmp_path / "executed"
    start = __import__("time").perf_counter()
    assert cli.main(["run", "behaviour", "-p", key, value, "--out-dir", str(out_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqcirc run: error: 01_behaviour: parameter " + key), err
    assert expected in err and value.strip('"') in err
    assert not out_dir.exists()  # nothing executed, no notebook written
    assert __import__("time").perf_counter() - start < 10  # refused, not run (a run takes 20 s and more)


def test_mistyped_parameter_loads_no_model():
    """The refusal comes before torch (and so any model) is imported, also for the whole book."""
    code = textwrap.dedent("""\
        import sys
        from seqcirc_utils.core.errors import ParameterError
        from seqcirc_utils.workflow.runner import find_notebooks, run_notebooks
        try:
            run_notebooks(find_notebooks(), {"n_prompts": "abc"}, workers=2)
        except ParameterError as err:
            print("refused", "torch" in sys.modules, "distributed" in sys.modules, err)
        """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith(
        "refused False False 01_behaviour: parameter n_prompts takes an integer; its default is 32, got 'abc'"
    ), res.stdout + res.stderr


def test_parameter_types_follow_the_defaults(tmp_path):
    from seqcirc_utils.core.errors import ParameterError
    from seqcirc_utils.workflow.runner import NotebookSource, check_parameter_types, run_notebooks

    path = tmp_path / "01_typed.py"
    path.write_text(
        '# %% tags=["parameters"]\nn = 3\nrate = 0.5\nname = "a"\nflag = False\nsizes = [1, 2]\n'
        'ratios = [0.5, 0.25]\npairs = [["a", "b"]]\nanything = None\nexpr = 2 ** 3\n\n# %%\nprint(n)\n'
    )
    nb = NotebookSource(path)
    good = {
        "n": 4,
        "rate": 1,
        "name": "b",
        "flag": True,
        "sizes": [3],
        "ratios": [1, 0.5],
        "pairs": [["c", 1]],
        "anything": [1, "x"],
        "expr": "text",
    }
    check_parameter_types(nb, good)  # an int fits a float, items of non-scalar lists are not checked
    for key, value, words in [
        ("n", True, "an integer"),
        ("n", 1.5, "an integer"),
        ("rate", "x", "a number"),
        ("name", 3, "a string"),
        ("flag", 0, "a boolean"),
        ("sizes", 3, "a list of integers"),
        ("sizes", [1, "x"], "a list of integers"),
        ("ratios", ["x"], "a list of numbers"),
        ("pairs", "ab", "a list"),
    ]:
        with pytest.raises(ParameterError, match=f"parameter {key} takes {words}"):
            check_parameter_types(nb, {key: value})
    with pytest.raises(ParameterError, match="has no parameter nn; its parameters: "):
        run_notebooks([nb], {"nn": 1})
    with pytest.raises(ParameterError, match="parameter n takes an integer"):
        run_notebooks([nb, NotebookSource(path)], {"n": "x"}, workers=2)  # before any cluster starts


# --------------------------------------------------------------------------- the cache key covers library versions (16.6)


def test_cache_key_covers_the_library_versions(tmp_path, frozen_package, monkeypatch):
    import importlib.metadata

    from seqcirc_utils.workflow import runner

    nb, _, _ = _cache_setup(tmp_path)
    versions = runner.dependency_versions()
    assert set(versions) == {"torch", "transformers", "transformer-lens", "papermill"}
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["transformer-lens"] == importlib.metadata.version("transformer-lens")
    key = runner.cache_key(nb, {})
    real = importlib.metadata.version
    for name in runner.KEY_DEPENDENCIES:
        monkeypatch.setattr(
            importlib.metadata, "version", lambda dist, name=name: "0.0.1" if dist == name else real(dist)
        )
        assert runner.dependency_versions()[name] == "0.0.1"
        assert runner.cache_key(nb, {}) != key, f"an upgrade of {name} must change the key"
    monkeypatch.setattr(importlib.metadata, "version", real)
    assert runner.cache_key(nb, {}) == key
    assert runner.CACHE_FORMAT >= 2  # executed notebooks cached with the old recipe (format 1) rerun


# --------------------------------------------------------------------------- the parallel book (issue 19): scheduling

HEADER = "# ---\n# jupyter:\n#   seqcirc_run:\n{}# ---\n\n"


def _scheduled_notebook(folder: Path, stem: str, estimate=None, after=None):
    from seqcirc_utils.workflow.runner import NotebookSource

    lines = (f"#     estimate_s: {estimate}\n" if estimate is not None else "") + (
        f"#     after: {json.dumps(after)}\n" if after is not None else ""
    )
    header = HEADER.format(lines) if lines else ""
    (folder / f"{stem}.py").write_text(header + '# %% tags=["parameters"]\nx = 1\n\n# %%\nprint(x)\n')
    return NotebookSource(folder / f"{stem}.py")


def test_dependencies_appendix_after_chapters_and_declared_after(tmp_path):
    from seqcirc_utils.workflow.runner import dependencies

    a = _scheduled_notebook(tmp_path, "01_a", estimate=5)
    b = _scheduled_notebook(tmp_path, "02_b", after=["a"])  # by name, with or without NN_
    c = _scheduled_notebook(tmp_path, "03_c", estimate=2.5, after=["01_a", "02_b"])
    appendix = _scheduled_notebook(tmp_path, "90_app")
    assert a.schedule() == {"estimate_s": 5, "after": []} and c.schedule()["estimate_s"] == 2.5
    assert dependencies([a, b, c, appendix]) == {
        "01_a": [],
        "02_b": ["01_a"],
        "03_c": ["01_a", "02_b"],
        "90_app": ["01_a", "02_b", "03_c"],
    }
    assert dependencies([b, c]) == {"02_b": [], "03_c": ["02_b"]}  # a notebook not in the run is not waited for
    _scheduled_notebook(tmp_path, "01_a", after=["03_c"])
    with pytest.raises(BadFileError, match="wait for each other: 01_a -> 03_c -> 01_a"):
        dependencies([a, b, c])
    _scheduled_notebook(tmp_path, "01_a", after=["nope"])
    with pytest.raises(ParameterError, match="unknown notebook 'nope'"):
        dependencies([a])
    _scheduled_notebook(tmp_path, "01_a", estimate=-1)
    with pytest.raises(BadFileError, match="estimate_s must be a positive number"):
        a.schedule()


def test_every_chapter_declares_an_estimate_and_what_it_waits_for():
    from seqcirc_utils.workflow.runner import dependencies, find_notebooks

    notebooks = find_notebooks()
    assert all(nb.schedule()["estimate_s"] for nb in notebooks)
    deps = dependencies(notebooks)
    chapters = [nb.stem for nb in notebooks if nb.number < 90]
    # a chapter that reads another's results says so: 03 takes 02's numbers circuit (reusable_circuit)
    readers = {nb.stem for nb in notebooks if "reusable_circuit(" in nb.path.read_text()}
    assert readers == {"03_greater_than_overlap"}
    assert deps["03_greater_than_overlap"] == ["02_shared_circuits"]
    assert all(deps[stem] == [] for stem in chapters if stem not in readers)
    assert all(deps[nb.stem] == chapters for nb in notebooks if nb.number >= 90)


def test_expected_seconds_prefer_the_previous_run_of_the_same_parameters(tmp_path):
    from seqcirc_utils.workflow.runner import DEFAULT_ESTIMATE_S, expected_seconds

    a = _scheduled_notebook(tmp_path, "01_a", estimate=40)
    b = _scheduled_notebook(tmp_path, "02_b")
    out_dir = tmp_path / "executed"
    out_dir.mkdir()
    assert expected_seconds(a, out_dir, {}) == 40 and expected_seconds(b, out_dir, {}) == DEFAULT_ESTIMATE_S
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {
        "default_parameters": {"x": 1},
        "parameters": {"x": 3},
        "duration": 7.5,
        "exception": None,
    }
    nbformat.write(nb, out_dir / "01_a.ipynb")
    assert expected_seconds(a, out_dir, {"x": 3}) == 7.5  # papermill's duration when no wall time is recorded
    nb.metadata["seqcirc"] = {"wall_seconds": 9.25}
    nbformat.write(nb, out_dir / "01_a.ipynb")
    assert expected_seconds(a, out_dir, {"x": 3}) == 9.25
    assert expected_seconds(a, out_dir, {}) == 40  # other parameters (x=1): the declared estimate


class _Pool:
    """A thread pool that records which jobs ran at the same time (for run_scheduled)."""

    def __init__(self, slots: int):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(slots)
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.started: list[str] = []
        self.overlaps: list[set[str]] = []

    def run(self, nb, seconds: float, ok: bool):
        from seqcirc_utils.workflow.runner import RunResult

        with self.lock:
            self.running.add(nb.stem)
            self.started.append(nb.stem)
            self.overlaps.append(set(self.running))
        __import__("time").sleep(seconds)
        with self.lock:
            self.running.discard(nb.stem)
        return RunResult(nb, None, ok=ok, seconds=seconds, error="" if ok else "boom")


def test_scheduler_runs_longest_first_within_slots_after_dependencies(tmp_path):
    from seqcirc_utils.workflow.runner import NotebookSource, RunResult, run_scheduled

    nbs = [NotebookSource(tmp_path / f"{s}.py") for s in ("01_short", "02_long", "03_mid", "04_needs_short", "90_app")]
    expected = {"01_short": 1, "02_long": 30, "03_mid": 10, "04_needs_short": 100, "90_app": 50}
    deps = {"04_needs_short": ["01_short"], "90_app": ["01_short", "02_long", "03_mid", "04_needs_short"]}
    pool = _Pool(2)
    finished = []
    results = run_scheduled(
        nbs,
        deps,
        expected,
        2,
        start=lambda nb: pool.executor.submit(pool.run, nb, 0.05, True),
        finish=lambda nb, f: f.result(),
        on_done=lambda r: finished.append(r.notebook.stem),
    )
    assert [r.notebook.stem for r in results] == [nb.stem for nb in nbs]  # NN order, whatever the run order
    assert pool.started[:2] == ["02_long", "03_mid"]  # longest first; 04 (longer) must wait for 01
    assert pool.started.index("04_needs_short") > finished.index("01_short")
    assert pool.started[-1] == "90_app" and finished[-1] == "90_app"
    assert max(len(o) for o in pool.overlaps) == 2  # two at a time, never more

    reused = run_scheduled(
        nbs[:2],
        {},
        expected,
        2,
        start=lambda nb: pytest.fail("nothing to start"),
        finish=lambda nb, f: f.result(),
        ready_now=lambda nb: RunResult(nb, None, ok=True, seconds=0.0, reused=True),
    )
    assert [r.reused for r in reused] == [True, True]


def test_scheduler_stops_after_a_failure_unless_keep_going(tmp_path):
    from seqcirc_utils.workflow.runner import NotebookSource, run_scheduled

    nbs = [NotebookSource(tmp_path / f"{s}.py") for s in ("01_bad", "02_a", "03_b")]
    expected = {"01_bad": 3, "02_a": 2, "03_b": 1}

    def go(keep_going: bool):
        pool = _Pool(1)
        results = run_scheduled(
            nbs,
            {},
            expected,
            1,
            start=lambda nb: pool.executor.submit(pool.run, nb, 0.01, nb.stem != "01_bad"),
            finish=lambda nb, f: f.result(),
            keep_going=keep_going,
        )
        return [(r.notebook.stem, r.ok) for r in results]

    assert go(False) == [("01_bad", False)]
    assert go(True) == [("01_bad", False), ("02_a", True), ("03_b", True)]


# --------------------------------------------------------------------------- the parallel book: real runs

BOOK_FIXTURES = ROOT / "tests" / "fixtures" / "book"


def _book_results(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.json"))}


@pytest.mark.slow  # 8 small notebooks in Jupyter kernels (~1 min on 2 cores)
def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    """The fixture book (two tiny-model chapters, a chapter that reads one of them, an appendix) run with
    1 and with 2 workers writes the same results: byte-identical, except each file's `seconds` timing."""
    from seqcirc_utils.workflow import book as book_assets

    runs = {}
    for workers in (1, 2):
        results, out_dir = tmp_path / f"results{workers}", tmp_path / f"executed{workers}"
        res = seqcirc(
            "run",
            "--all",
            "--keep-going",
            "--no-progress",
            "--workers",
            str(workers),
            "--notebooks-dir",
            str(BOOK_FIXTURES),
            "--out-dir",
            str(out_dir),
            env={RESULTS_ROOT_ENV: str(results)},
        )
        assert res.returncode == 0, res.stdout + res.stderr
        runs[workers] = book_assets.executed_runs(out_dir).set_index("notebook")
    one, two = _book_results(tmp_path / "results1"), _book_results(tmp_path / "results2")
    assert (
        sorted(one)
        == sorted(two)
        == ["tiny-gpt2/beta.json", "tiny-llama/alpha.json", "tiny-llama/collect.json", "tiny-llama/gamma.json"]
    )
    # one torch thread in every kernel, one worker or two: the same float sums, so the same results
    assert json.loads(one["tiny-llama/alpha.json"])["omp_num_threads"] == "1"
    assert json.loads(two["tiny-llama/alpha.json"])["omp_num_threads"] == "1"
    for name in one:
        if one[name] != two[name]:  # only a timing may differ
            a, b = json.loads(one[name]), json.loads(two[name])
            assert a.pop("seconds", 1) > 0 and b.pop("seconds", 1) > 0, name  # a timing, where a file has one
            assert a == b, (name, a, b)
    assert json.loads(one["tiny-llama/collect.json"])["files"]["tiny-llama/gamma.json"] == ["alpha_logit_sum_doubled"]
    # the run table: wall time and worker per notebook; one worker in sequence, two in parallel
    assert set(runs[1]["worker"]) == {"main"} and set(runs[2]["worker"]) == {"0", "1"}
    assert (runs[2]["wall_seconds"] > 0).all() and (runs[1]["wall_seconds"] > 0).all()
    assert runs[2].loc["01_alpha", "worker"] != runs[2].loc["02_beta", "worker"]  # the two chapters side by side
    # ordering: gamma started after alpha finished, the appendix after every chapter
    table = {
        stem: nbformat.read(tmp_path / "executed2" / f"{stem}.ipynb", as_version=4).metadata.seqcirc
        for stem in runs[2].index
    }
    assert table["03_gamma"]["started_at"] >= table["01_alpha"]["executed_at"]
    assert all(
        table["90_collect"]["started_at"] >= table[s]["executed_at"] for s in ("01_alpha", "02_beta", "03_gamma")
    )
    # each result file is recorded by the chapter that wrote it (not by the one running beside it)
    assert [f["path"] for f in table["01_alpha"]["result_files"]] == ["tiny-llama/alpha.json"]
    assert [f["path"] for f in table["02_beta"]["result_files"]] == ["tiny-gpt2/beta.json"]

    # a warm rerun reuses everything and starts no cluster
    res = seqcirc(
        "run",
        "--all",
        "--no-progress",
        "--workers",
        "2",
        "--notebooks-dir",
        str(BOOK_FIXTURES),
        "--out-dir",
        str(tmp_path / "executed2"),
        env={RESULTS_ROOT_ENV: str(tmp_path / "results2")},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(re.findall(r"^\S+ +reused ", res.stdout, re.M)) == 4 and "LocalCluster" not in res.stdout


def test_run_table_shows_wall_time_and_worker(tmp_path):
    """The book's run table (intro, "this build") has each notebook's wall time and worker when recorded."""
    from seqcirc_utils.workflow import book as book_assets

    for stem, record in (
        ("01_a", {"run": "executed", "wall_seconds": 12.4, "worker": "1"}),
        ("02_b", {"run": "reused", "wall_seconds": 3.5, "worker": "0"}),
    ):
        nb = nbformat.v4.new_notebook()
        nb.metadata["papermill"] = {
            "default_parameters": {"model": "m"},
            "parameters": {},
            "duration": 10.0,
            "exception": None,
            "end_time": "2026-01-01T00:00:00",
        }
        nb.metadata["seqcirc"] = record
        nbformat.write(nb, tmp_path / f"{stem}.ipynb")
    runs = book_assets.executed_runs(tmp_path)
    assert runs[["notebook", "wall_seconds", "worker"]].values.tolist() == [["01_a", 12.4, "1"], ["02_b", 3.5, "0"]]
    text = book_assets.runs_markdown(runs)
    assert "| notebook | status | run | model | duration (s) | wall time (s) | worker | finished |" in text
    assert (
        "| 01_a | ok | executed | m | 10.0 | 12.4 | 1 |" in text
        and "| 02_b | ok | reused | m | 10.0 | 3.5 | 0 |" in text
    )


def test_without_distributed_the_notebooks_run_one_after_another(tmp_path, monkeypatch, capsys):
    import importlib.util

    from seqcirc_utils.workflow import runner

    nbs = [_scheduled_notebook(tmp_path, "01_a"), _scheduled_notebook(tmp_path, "02_b")]
    calls = []
    monkeypatch.setattr(runner, "_run_sequential", lambda notebooks, *a: calls.append("sequential") or [])
    monkeypatch.setattr(runner, "_run_parallel", lambda notebooks, *a: calls.append("parallel") or [])
    assert runner.run_notebooks(nbs, workers=2) == [] and calls == ["parallel"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    assert runner.run_notebooks(nbs, workers=2) == [] and calls == ["parallel", "sequential"]
    assert "dask distributed is not installed" in capsys.readouterr().err
    assert runner.run_notebooks(nbs[:1], workers=4) == [] and calls[-1] == "sequential"  # one notebook: no cluster


def test_a_model_converted_meanwhile_by_another_chapter_is_kept(tmp_path, monkeypatch):
    """Two chapters starting at once on a fresh cache both convert the embedded GGUF: the second
    keeps the first one's folder (which the first may be loading) and leaves no temporary folder."""
    import transformers

    from seqcirc_utils.models import loading

    out_dir = tmp_path / "cache" / "model"

    class Saved:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, folder):
            Path(folder, f"{self.name}.json").write_text("{}")
            if self.name == "config":  # meanwhile the other chapter finished its conversion
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "config.json").write_text('{"by": "the other chapter"}')

    class Quantised:
        config = type("C", (), {"to_dict": staticmethod(lambda: {"model_type": "llama"})})()

        @staticmethod
        def state_dict():
            return {}

    class Plain(Saved):
        def load_state_dict(self, state, strict=False):
            return [], []

    monkeypatch.setattr(
        transformers,
        "AutoTokenizer",
        type("T", (), {"from_pretrained": staticmethod(lambda *a, **k: Saved("tokenizer"))}),
    )
    monkeypatch.setattr(
        transformers,
        "AutoModelForCausalLM",
        type(
            "M",
            (),
            {
                "from_pretrained": staticmethod(lambda *a, **k: Quantised()),
                "from_config": staticmethod(lambda *a, **k: Plain("config")),
            },
        ),
    )
    monkeypatch.setattr(transformers, "AutoConfig", type("A", (), {"for_model": staticmethod(lambda **k: k)}))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")
    assert loading.convert_gguf(gguf, out_dir) == out_dir
    assert json.loads((out_dir / "config.json").read_text()) == {"by": "the other chapter"}
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["model"]  # the temporary copy is gone
