"""`seqcirc grid` / `grid-summary` (issue 12): parameter grids of a notebook on Dask distributed.

The cheap notebook is ``tests/fixtures/notebooks/01_grid_probe.py`` (a tiny random model on seeded
random tokens). The slow tests run it on a 2-worker LocalCluster and on a real scheduler + 2 workers
started as separate ``dask`` processes on 127.0.0.1, and compare the cells' results with running the
same notebook directly (``run_notebook``, the engine of ``seqcirc run``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from record_fixtures import circuit

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.result_records import CircuitFile
from seqcirc_utils.core.results import RESULTS_ROOT_ENV, write_json_atomic
from seqcirc_utils.workflow.grid import (
    CellResult,
    GridSpec,
    cell_id,
    grid_table,
    load_grid_file,
    parse_axes,
    parse_resources,
    plan_cells,
    runs_root,
    split_values,
    summary_chart,
    summary_frame,
    write_summary,
)
from seqcirc_utils.workflow.runner import NotebookSource, cache_key, package_files, parse_value, run_notebook

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"
PROBE = NotebookSource(FIXTURES / "01_grid_probe.py")
VENV_BIN = Path(sys.executable).parent


def seqcirc(*args: str, results: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, RESULTS_ROOT_ENV: str(results), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "seqcirc_utils.workflow.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def probe_result(directory: Path) -> dict:
    """A cell's (or a direct run's) probe.json without the thread fields (they depend on the caller)."""
    data = json.loads((directory / "probe.json").read_text())
    return {k: v for k, v in data.items() if k not in ("torch_threads", "omp_num_threads")}


def assert_same_result(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["logit_sum"] == pytest.approx(b["logit_sum"], rel=1e-9, abs=1e-9)
    assert {k: v for k, v in a.items() if k != "logit_sum"} == {k: v for k, v in b.items() if k != "logit_sum"}


# --------------------------------------------------------------------------- fast: the grid's specification


def test_values_split_at_top_level_commas_and_parse_like_run():
    assert split_values("smollm2-135m,tiny-llama") == ["smollm2-135m", "tiny-llama"]
    assert split_values("[0.9,0.8],[0.7]") == ["[0.9,0.8]", "[0.7]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    axes = parse_axes(
        [
            ("model", "smollm2-135m,tiny-llama"),
            ("seed", "0,1,2"),
            ("thresholds", "[0.9,0.8]"),
            ("smoke", "true"),
            ("device", "null"),
        ]
    )
    assert axes == {
        "model": ["smollm2-135m", "tiny-llama"],
        "seed": [0, 1, 2],
        "thresholds": [[0.9, 0.8]],
        "smoke": [True],
        "device": [None],
    }
    for text in ("0", "0.5", "true", "null", "[1, 2]", "cuda:0", "gpt2-small"):
        assert parse_axes([("k", text)])["k"] == [parse_value(text)]
    with pytest.raises(ParameterError, match="empty value"):
        split_values("0,,1")
    with pytest.raises(ParameterError, match="given twice"):
        parse_axes([("seed", "0"), ("seed", "1")])


def test_cells_are_the_cartesian_product():
    spec = GridSpec("x", {"smoke": True}, {"model": ["a", "b"], "seed": [0, 1, 2]})
    cells = spec.cells()
    assert len(cells) == 6 and cells[0] == {"smoke": True, "model": "a", "seed": 0}
    assert {(c["model"], c["seed"]) for c in cells} == {(m, s) for m in "ab" for s in range(3)}
    with pytest.raises(ParameterError, match="both fixed and a grid axis"):
        GridSpec("x", {"seed": 0}, {"seed": [1]}).cells()


def test_grid_file_types_values_like_the_command_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "notebook: 02_shared_circuits\nparameters:\n  smoke: true\n  n_prompts: 8\n"
        "grid:\n  model: [smollm2-135m, tiny-llama]\n  seed: [0, 1]\n  thresholds: [[0.9, 0.8], [0.7]]\n"
        "  device: null\n  tag: 'yes'\n"
    )
    spec = load_grid_file(path)
    assert spec.notebook == "02_shared_circuits"
    assert spec.fixed == {"smoke": True, "n_prompts": 8}
    assert spec.axes == {
        "model": ["smollm2-135m", "tiny-llama"],
        "seed": [0, 1],
        "thresholds": [[0.9, 0.8], [0.7]],
        "device": [None],
        "tag": ["yes"],
    }  # YAML 1.1 would read 'yes' as True; -p reads a string
    assert len(spec.cells()) == 8
    (tmp_path / "bad.yaml").write_text("notebok: x\n")
    with pytest.raises(BadFileError, match="unknown key.*notebok.*valid keys: notebook, parameters, grid"):
        load_grid_file(tmp_path / "bad.yaml")
    with pytest.raises(BadFileError, match="not found"):
        load_grid_file(tmp_path / "missing.yaml")


def test_cell_ids_are_stable_readable_and_distinct(tmp_path):
    a = cell_id(PROBE, {"model": "tiny-llama", "seed": 0})
    assert a == cell_id(PROBE, {"seed": 0, "model": "tiny-llama"})
    assert a.startswith("01_grid_probe__model=tiny-llama_seed=0-")
    ids = {
        cell_id(PROBE, {"model": m, "seed": s})
        for m in ("tiny-llama", "tiny-gpt2", "models/My Model")
        for s in (0, 1, "0")
    }
    assert len(ids) == 9 and all(re.fullmatch(r"[A-Za-z0-9_.=+-]+", i) for i in ids)
    specs = plan_cells(PROBE, [{"model": "tiny-llama", "seed": 0}, {"seed": 1}], results_root=tmp_path)
    assert Path(specs[0].directory) == tmp_path / "tiny-llama" / "runs" / a
    assert Path(specs[1].directory).parent == tmp_path / "tiny-llama" / "runs"  # the notebook's default model


def test_bad_grid_input_fails_before_any_work(tmp_path):
    with pytest.raises(
        ParameterError, match="01_grid_probe has no parameter sed; its parameters: fail, model, n_tokens"
    ):
        plan_cells(PROBE, [{"sed": 0}])
    with pytest.raises(
        ParameterError, match="01_grid_probe: parameter seed takes an integer; its default is 0, got 'x'"
    ):
        plan_cells(PROBE, [{"seed": 0}, {"seed": "x"}])  # a value of the wrong type, in any cell
    with pytest.raises(ParameterError, match="bad resource 'GPU'"):
        parse_resources("GPU")
    assert parse_resources("GPU=1,MEMORY=8e9") == {"GPU": 1.0, "MEMORY": 8e9}
    start = time.perf_counter()
    res = seqcirc("grid", "grid_probe", "--notebooks-dir", str(FIXTURES), "-p", "sed", "0,1", results=tmp_path)
    assert res.returncode == 2 and "no parameter sed" in res.stderr and "Traceback" not in res.stderr
    assert time.perf_counter() - start < 30
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_summary_reads_circuit_records_into_one_table(tmp_path):
    """grid-summary on hand-made cells: one row per circuit record with its size and score; a chart."""
    for seed, heads, score in ((0, [[0, 1], [1, 0]], 0.91), (1, [[1, 1]], 0.85)):
        cell = tmp_path / "runs" / f"c{seed}"
        cell.mkdir(parents=True)
        (cell / "params.json").write_text(
            json.dumps({"cell_id": cell.name, "notebook": "02_x", "parameters": {"model": "m", "seed": seed}})
        )
        write_json_atomic(
            cell / "circuit_digits.json",
            CircuitFile(
                circuits=[
                    circuit(task="digits", threshold=0.8, heads=heads, mlps=[0], score=score),
                    circuit(task="digits", threshold=0.9, heads=heads + [[0, 0]], mlps=[0, 1], score=score + 0.05),
                ]
            ),
        )
    (tmp_path / "runs" / "c1" / "error.txt").write_text("boom")
    df = summary_frame([tmp_path / "runs"])
    assert len(df) == 4
    row = df[(df["seed"] == 0) & (df["threshold"] == 0.8)].iloc[0]
    assert (row["n_heads"], row["n_mlps"], row["n_components"], row["score"]) == (2, 1, 3, 0.91)
    assert set(df[df["seed"] == 1]["status"]) == {"failed"}
    chart = summary_chart(df)
    spec = chart.to_dict()
    assert spec["encoding"]["x"]["field"] == "n_components" and spec["encoding"]["y"]["field"] == "score"
    written = write_summary(df, chart, tmp_path / "summary")
    html = written["html"].read_text()
    assert (
        "seqcirc-chart" in html
        and "vegaEmbed" in html
        and "<table" in html
        and "http" not in html.split("<body>")[1][:200]
    )
    assert json.loads(written["chart"].read_text())["encoding"]["x"]["field"] == "n_components"
    assert len(json.loads(written["json"].read_text())) == 4


def test_grid_table_lists_failures_with_their_error_file():
    text = grid_table(
        [
            CellResult("a", {}, "/r/a", ok=True, seconds=1.0),
            CellResult("b", {}, "/r/b", ok=True, reused=True),
            CellResult("c", {}, "/r/c", ok=False, error="RuntimeError: boom\nmore"),
        ]
    )
    assert re.search(r"^a +ok ", text, re.M) and re.search(r"^b +reused ", text, re.M)
    assert re.search(r"^c +FAILED .*RuntimeError: boom \(see /r/c/error.txt\)", text, re.M)


# --------------------------------------------------------------------------- slow: real grids on Dask

GRID_ARGS = (
    "grid",
    "grid_probe",
    "--notebooks-dir",
    str(FIXTURES),
    "-p",
    "model",
    "tiny-llama,tiny-gpt2",
    "-p",
    "seed",
    "0,1",
    "--no-progress",
)
CELLS = [{"model": m, "seed": s} for m in ("tiny-llama", "tiny-gpt2") for s in (0, 1)]


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """A 4-cell grid on the embedded LocalCluster with 2 workers."""
    results = tmp_path_factory.mktemp("grid") / "results"
    started_ns = time.time_ns()
    start = time.perf_counter()
    res = seqcirc(*GRID_ARGS, "--workers", "2", results=results)
    return results, res, time.perf_counter() - start, started_ns


def skip_if_package_edited(since_ns: int) -> None:
    """The cache key covers the package: an edit to it during the test (a shared checkout) changes every key."""
    if max(p.stat().st_mtime_ns for p in package_files()) > since_ns:
        pytest.skip("seqcirc_utils was edited while the test ran: every cache key changed")


@pytest.mark.slow
def test_grid_completes_and_equals_direct_runs(local_grid, tmp_path):
    results, res, *_ = local_grid
    assert res.returncode == 0, res.stdout + res.stderr
    for params in CELLS:
        cell = runs_root(params["model"], results) / cell_id(PROBE, params)
        assert re.search(rf"^{re.escape(cell.name)} +ok ", res.stdout, re.M)
        assert {p.name for p in cell.iterdir()} == {"params.json", "01_grid_probe.ipynb", "probe.json"}
        assert json.loads((cell / "params.json").read_text())["parameters"] == params
        data = json.loads((cell / "probe.json").read_text())
        assert data["torch_threads"] == 1 and data["omp_num_threads"] == "1"  # one torch thread per worker
    # the same notebook run directly (the engine of `seqcirc run`) gives the same results
    for params in (CELLS[0], CELLS[3]):
        direct = tmp_path / "direct"
        run = run_notebook(
            PROBE,
            params,
            out_dir=direct / "executed",
            cwd=ROOT,
            progress=False,
            env={RESULTS_ROOT_ENV: str(direct / "results")},
            force=True,
        )
        assert run.ok, run.error
        cell = runs_root(params["model"], results) / cell_id(PROBE, params)
        assert_same_result(probe_result(cell), probe_result(direct / "results" / params["model"]))


@pytest.mark.slow
def test_grid_rerun_skips_every_completed_cell(local_grid):
    results, first, seconds, started_ns = local_grid
    assert first.returncode == 0, first.stdout + first.stderr
    before = {p: p.stat().st_mtime_ns for p in results.rglob("probe.json")}
    start = time.perf_counter()
    res = seqcirc(*GRID_ARGS, "--workers", "2", results=results)
    elapsed = time.perf_counter() - start
    assert res.returncode == 0, res.stdout + res.stderr
    skip_if_package_edited(started_ns)
    for params in CELLS:  # the key stored by the worker's process is the one computed here
        stored = json.loads((runs_root(params["model"], results) / cell_id(PROBE, params) / "params.json").read_text())
        assert stored["cache_key"] == cache_key(PROBE, params)
    assert len(re.findall(r" reused ", res.stdout)) == 4 and not re.search(r" ok ", res.stdout)
    assert {p: p.stat().st_mtime_ns for p in results.rglob("probe.json")} == before
    assert elapsed < seconds  # no cluster started, nothing executed
    summary = seqcirc(
        "grid-summary",
        str(results / "tiny-llama" / "runs"),
        str(results / "tiny-gpt2" / "runs"),
        "--format",
        "json",
        results=results,
    )
    assert summary.returncode == 0, summary.stderr
    rows = json.loads(summary.stdout)
    assert len(rows) == 4 and {(r["model"], r["seed"]) for r in rows} == {(c["model"], c["seed"]) for c in CELLS}
    for r in rows:
        probe = json.loads((runs_root(r["model"], results) / r["cell"] / "probe.json").read_text())["circuits"][0]
        assert (r["n_heads"], r["n_mlps"]) == (len(probe["heads"]), len(probe["mlps"]))
        assert r["score"] == pytest.approx(probe["score"], rel=1e-6)  # the printed JSON keeps 10 digits
    assert (results / "tiny-llama" / "runs" / "grid_summary.html").is_file()


@pytest.mark.slow
def test_failing_cell_keeps_traceback_and_others_finish(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "notebook: grid_probe\nparameters:\n  model: tiny-llama\ngrid:\n  seed: [5]\n  fail: [false, true]\n"
    )
    results = tmp_path / "results"
    res = seqcirc(
        "grid",
        "--file",
        str(grid),
        "--notebooks-dir",
        str(FIXTURES),
        "--workers",
        "2",
        "--no-progress",
        results=results,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    bad = runs_root("tiny-llama", results) / cell_id(PROBE, {"model": "tiny-llama", "seed": 5, "fail": True})
    good = runs_root("tiny-llama", results) / cell_id(PROBE, {"model": "tiny-llama", "seed": 5, "fail": False})
    assert f"1 of 2 cells failed: {bad.name}" in res.stderr
    assert re.search(rf"^{re.escape(bad.name)} +FAILED .*failing on purpose", res.stdout, re.M)
    error = (bad / "error.txt").read_text()
    assert "RuntimeError: failing on purpose: model=tiny-llama seed=5" in error and "Traceback" in error
    assert (bad / "01_grid_probe.ipynb").is_file() and not (bad / "probe.json").exists()
    assert json.loads((good / "probe.json").read_text())["seed"] == 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_grid_on_a_separate_scheduler_and_workers(local_grid, tmp_path):
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1, reached with --scheduler."""
    from distributed import Client

    local_results = local_grid[0]
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dask = str(VENV_BIN / "dask")
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                        "--local-directory",
                        str(tmp_path / f"w{i}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=tmp_path,
                )
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        results = tmp_path / "results"
        res = seqcirc(
            "grid",
            "grid_probe",
            "--notebooks-dir",
            str(FIXTURES),
            "-p",
            "model",
            "tiny-llama",
            "-p",
            "seed",
            "0,1",
            "--scheduler",
            address,
            "--no-progress",
            "--json",
            results=results,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        cells = json.loads(res.stdout)
        assert len(cells) == 2 and all(c["ok"] and not c["reused"] for c in cells)
        assert all(c["worker"].startswith("tcp://127.0.0.1:") for c in cells)  # ran on the separate workers
        for params in CELLS[:2]:
            rel = runs_root(params["model"], results).relative_to(results) / cell_id(PROBE, params)
            assert rel == runs_root(params["model"], local_results).relative_to(local_results) / cell_id(PROBE, params)
            assert_same_result(probe_result(results / rel), probe_result(local_results / rel))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_unreachable_scheduler_is_a_one_line_error(tmp_path):
    res = seqcirc(
        "grid",
        "grid_probe",
        "--notebooks-dir",
        str(FIXTURES),
        "-p",
        "seed",
        "0",
        "--no-progress",
        "--scheduler",
        f"tcp://127.0.0.1:{_free_port()}",
        results=tmp_path,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "cannot reach the Dask scheduler" in res.stderr and "Traceback" not in res.stderr


def test_cluster_workers_run_one_thread_without_dasks_memory_trim(monkeypatch):
    """The embedded cluster's workers (whose environment the notebook kernels inherit) get one BLAS/torch thread
    and not Dask's ``MALLOC_TRIM_THRESHOLD_=65536``, which made torch's passes fault their memory in anew (a third
    of the kernels' CPU time was system time)."""
    from distributed import Client

    from seqcirc_utils.workflow.cluster import DASK_MALLOC_TRIM, THREAD_ENV_VARS, local_cluster

    monkeypatch.delenv(DASK_MALLOC_TRIM, raising=False)  # an explicit setting in the shell would win, as in Dask
    with local_cluster(1) as cluster, Client(cluster) as client:
        env = next(iter(client.run(lambda: dict(os.environ)).values()))
    assert DASK_MALLOC_TRIM not in env
    assert all(env[name] == "1" for name in THREAD_ENV_VARS)
