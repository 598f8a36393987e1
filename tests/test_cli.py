"""The ``seqcirc`` command line: every user error is one line on stderr naming what is valid, exit
status 2, no traceback, and no model is loaded before the arguments are checked; every option has help.

Fast: no test here loads a model (``load_model`` is replaced by a function that fails the test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from importlib.metadata import version

import pytest
from record_fixtures import circuit

from seqcirc_utils.core.records import CircuitRecord
from seqcirc_utils.workflow import cli
from seqcirc_utils.workflow.cli import build_parser, main, read_circuit_file


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything tries to load a model."""
    from seqcirc_utils.models import loading as models

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded before the arguments were checked: {args}")

    monkeypatch.setattr(models, "load_model", refuse)


def _one_line_error(capsys, expected: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    assert expected in err, f"{expected!r} not in {err!r}"
    return lines[0]


# --------------------------------------------------------------------------- the headline check


def test_unknown_task_fails_fast_naming_the_tasks():
    """``seqcirc circuit --task nosuch`` (the installed entry point's code path, in a fresh interpreter):
    exit 2, one line listing every task, in under 5 s, and neither torch nor transformer_lens imported
    (the parser's choices come from the torch-free ``options`` module)."""
    from seqcirc_utils.tasks.datasets import TASKS

    code = (
        "import sys; from seqcirc_utils.workflow.cli import main; rc = main(['circuit', '--task', 'nosuch']); "
        "print(rc, 'transformer_lens' in sys.modules, 'transformers' in sys.modules, 'torch' in sys.modules)"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    assert proc.stdout.split() == ["2", "False", "False", "False"], proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "nosuch" in lines[0] and all(t in lines[0] for t in TASKS)
    # CPU time is what the command costs; wall time equals it on an unloaded machine. On a machine
    # busier than its cores (shared CI runners, parallel jobs) only the CPU time is meaningful.
    assert cpu < 5.0, f"{cpu:.1f} s CPU"
    if os.getloadavg()[0] <= (os.cpu_count() or 1):
        assert wall < 5.0, f"{wall:.1f} s wall"


# --------------------------------------------------------------------------- bad arguments


BAD_ARGS = [
    (["circuit", "--task", "nosuch"], "greater_than"),
    (["circuit", "--template", "nosuch"], "among_words"),
    (["circuit", "--direction", "sideways"], "decreasing"),
    (["circuit", "--corruption", "nosuch"], "repeatFirstAll"),
    (["circuit", "--prefix", "chat"], "document"),
    (["circuit", "--method", "slow"], "fast"),
    (["circuit", "--order", "random"], "descending"),
    (["circuit", "--ablation", "noise"], "resample"),
    (["circuit", "--metric", "accuracy"], "prob_diff"),
    (["circuit", "--thresholds", "1.5"], "(0, 1]"),
    (["circuit", "--thresholds", "0.9,high"], "(0, 1]"),
    (["circuit", "--thresholds", ","], "(0, 1]"),
    (["circuit", "--n", "0"], ">= 1"),
    (["circuit", "--n", "many"], ">= 1"),
    (["circuit", "--seed", "-1"], ">= 0"),
    (["circuit", "--sequences", "48"], "two positive integers"),
    (["circuit", "--sequences", "48,24", "--n", "16"], "by distinct sequences; drop --n"),
    (["circuit", "--length", "1"], ">= 2"),
    (["circuit", "--step", "0"], ">= 1"),
    (["circuit", "--task", "greater_than", "--corruption", "permutation"], "leave corruption at its default"),
    (["circuit", "--task", "days", "--template", "mixed"], "digits"),
    (["circuit", "--device", "abacus"], "valid: cpu"),
    (["circuit", "--model", " "], "valid: smollm2-135m"),
    (["dataset", "--task", "nosuch"], "number_words"),
    (["dataset", "--n", "-3"], ">= 1"),
    (["behaviour", "--n", "0"], ">= 1"),
    (["behaviour", "--prefix", "x"], "bos"),
    (["scores", "--kind", "jump"], "copy, next, prev"),
    (["scores", "--family", "planets"], "letters"),
    (["scores", "--top", "0"], ">= 1"),
    (["scores", "--over", "world"], "vocab"),
    (["edges", "--circuit", "c.json", "--threshold", "0"], "(0, 1]"),
    (["edges", "--circuit", "c.json", "--method", "magic"], "eap-ig"),
    (["edges", "--circuit", "c.json", "--ig-steps", "0"], ">= 1"),
    (["edges"], "--circuit"),
    (["nosuch"], "circuit"),
    ([], "COMMAND"),
    (["run"], "--all"),
    (["run", "--all", "01_behaviour"], "not both"),
    (["run", "no_such_notebook"], "valid names"),
]


@pytest.mark.parametrize("argv,expected", BAD_ARGS, ids=[" ".join(a) or "(none)" for a, _ in BAD_ARGS])
def test_bad_argument_is_one_line_exit_2(argv, expected, capsys, no_model_load):
    assert main(argv) == 2
    _one_line_error(capsys, expected)


def test_a_bug_shows_its_traceback_not_a_usage_line(monkeypatch, capsys, no_model_load):
    """Only a :class:`SeqcircError` is a user error: a ``ValueError`` raised inside the package (a shape
    bug) propagates out of ``main`` with its traceback instead of becoming one line and exit 2."""
    from seqcirc_utils.tasks.datasets import TaskSpec

    def shape_bug(self):
        raise ValueError("expected [batch, pos, d_model], got [3, 4]")

    monkeypatch.setattr(TaskSpec, "validate", shape_bug)
    with pytest.raises(ValueError, match=r"expected \[batch, pos, d_model\]"):
        main(["circuit"])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_exits_non_2_with_a_traceback_from_the_entry_point():
    """The same in a fresh interpreter, as the installed ``seqcirc`` runs it: a traceback, exit status 1."""
    code = (
        "import sys\n"
        "from seqcirc_utils.tasks.datasets import TaskSpec\n"
        "def bug(self): raise ValueError('shape bug inside the package')\n"
        "TaskSpec.validate = bug\n"
        "from seqcirc_utils.workflow.cli import main\n"
        "sys.exit(main(['circuit']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "ValueError: shape bug inside the package" in proc.stderr


@pytest.mark.parametrize(
    "error",
    [
        "ParameterError",
        "TooFewPromptsError",
        "TokenizationError",
        "BaselineError",
        "BadFileError",
        "ModelUnavailableError",
    ],
)
def test_every_seqcirc_error_is_one_line_exit_2(error, monkeypatch, capsys, no_model_load):
    """Each user-facing class of the family, raised from inside the package, is one line and exit 2."""
    from seqcirc_utils.core import errors
    from seqcirc_utils.tasks.datasets import TaskSpec

    cls = getattr(errors, error)
    assert issubclass(cls, errors.SeqcircError) and not issubclass(cls, ValueError)

    def refuse(self):
        raise cls(f"{error} raised inside the package; valid: something else")

    monkeypatch.setattr(TaskSpec, "validate", refuse)
    assert main(["circuit"]) == 2
    _one_line_error(capsys, f"{error} raised inside the package; valid: something else")


def test_cuda_device_without_a_gpu(capsys, no_model_load):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["circuit", "--device", "cuda"]) == 2
    _one_line_error(capsys, "valid: cpu")


def test_bad_output_paths(tmp_path, capsys, no_model_load):
    assert main(["circuit", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory")
    (tmp_path / "file").write_text("x")
    assert main(["circuit", "--out", str(tmp_path / "file" / "c.json")]) == 2
    _one_line_error(capsys, "is not a directory")
    assert main(["edges", "--circuit", str(tmp_path / "c.json"), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory")


def test_unknown_model_is_one_line(capsys, monkeypatch):
    """An unknown hub id offline: models.load_model refuses before loading weights; one line, exit 2."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["dataset", "--model", "no-such-org/no-such-model", "--n", "2"]) == 2
    line = _one_line_error(capsys, "no-such-org/no-such-model")
    assert "smollm2-135m" in line  # what is valid instead
    assert main(["dataset", "--model", "./no/such/dir", "--n", "2"]) == 2
    _one_line_error(capsys, "no model at path")


# --------------------------------------------------------------------------- --circuit files


@pytest.fixture(scope="module")
def dataset_json() -> dict:
    from seqcirc_utils.models.loading import gpt2_tokenizer
    from seqcirc_utils.tasks.datasets import make_dataset

    return make_dataset(gpt2_tokenizer(), "digits", model_name="tiny-gpt2", n=2).to_json()


def _record(dataset_json: dict, threshold: float, **changes) -> dict:
    """A circuit record's JSON (built from the type), then ``changes`` written over it as they are."""
    rec = circuit(
        model="tiny-gpt2", task="digits", threshold=threshold, heads=[[0, 1], [1, 0]], mlps=[0], dataset=dataset_json
    ).to_json()
    return rec | changes


def test_read_circuit_file_picks_the_threshold(tmp_path, dataset_json):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"circuits": [_record(dataset_json, 0.9, mlps=[0, 1]), _record(dataset_json, 0.8)]}))
    assert read_circuit_file(str(path), 0.9)["mlps"] == [0, 1]
    assert read_circuit_file(str(path), 0.8)["mlps"] == [0]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(_record(dataset_json, 0.9)))
    assert read_circuit_file(str(single), 0.5)["threshold"] == 0.9  # one record: the edge threshold is free


BAD_FILES = [
    ("missing", None, "no such file"),
    ("not json", "{oops", "not a readable JSON file"),
    ("a list", "[1, 2]", "valid: a circuit file"),
    ("empty circuits", {"circuits": []}, "non-empty list"),
    ("no such threshold", "threshold", "no circuit at threshold 0.8; valid: 0.9"),
    ("edges record", "kind", "holds 'edge_circuit'; valid: a circuit file"),
    ("no kind", {"threshold": 0.8, "heads": []}, "holds a JSON object without 'kind'; valid: a circuit file"),
    ("missing keys", "missing", "circuit record lacks keys ['model', 'task'"),
    ("bad heads", "heads", "[[layer, head], ...]"),
    ("bad dataset", "dataset", "malformed 'dataset'"),
    ("bad metric", "metric", "valid: logit_diff"),
]


@pytest.mark.parametrize("name,content,expected", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_circuit_file_is_one_line_exit_2(name, content, expected, tmp_path, capsys, no_model_load, dataset_json):
    path = tmp_path / "circuit.json"
    if content == "threshold":
        content = {"circuits": [_record(dataset_json, 0.9)]}
    elif content == "kind":
        content = _record(dataset_json, 0.8, kind="edge_circuit")
    elif content == "heads":
        content = _record(dataset_json, 0.8, heads=[[0, "1"]])
    elif content == "missing":
        content = {"kind": "circuit", "schema_version": CircuitRecord.schema_version, "threshold": 0.8, "heads": []}
    elif content == "metric":
        content = _record(dataset_json, 0.8, metric="accuracy")
    elif content == "dataset":
        content = _record(dataset_json, 0.8, dataset={"prompts": "nope"})
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["edges", "--circuit", str(path), "--threshold", "0.8"]) == 2
    _one_line_error(capsys, expected)


# --------------------------------------------------------------------------- help, choices, version


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help():
    parser = build_parser()
    subs = _subparsers(parser)
    assert {"dataset", "behaviour", "circuit", "run", "list", "scores", "edges"} <= set(subs)
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(a.help and a.help.strip() for a in sub_action._choices_actions), "a command without help"
    for name, p in [("seqcirc", parser), *subs.items()]:
        p.format_help()  # every %(...)s in the help strings expands
        for action in p._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"


def test_choices_come_from_the_package_constants():
    from seqcirc_utils.core.options import METRICS, AblationMode
    from seqcirc_utils.discovery import pruning
    from seqcirc_utils.tasks.datasets import CORRUPTIONS, DIRECTIONS, PREFIX_MODES, TASKS, TEMPLATES

    circuit = {a.dest: a for a in _subparsers(build_parser())["circuit"]._actions}
    assert tuple(circuit["task"].choices) == tuple(TASKS)
    assert tuple(circuit["template"].choices) == tuple(TEMPLATES)
    assert tuple(circuit["direction"].choices) == tuple(DIRECTIONS)
    assert tuple(circuit["corruption"].choices) == tuple(CORRUPTIONS)
    assert tuple(circuit["prefix"].choices) == tuple(PREFIX_MODES) and circuit["prefix"].default == "document"
    assert tuple(circuit["metric"].choices) == tuple(METRICS) and circuit["metric"].default is None
    assert tuple(circuit["ablation"].choices) == tuple(m.value for m in AblationMode)
    assert tuple(circuit["sweep__order"].choices) == tuple(pruning.SWEEP_ORDERS)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"seqcirc {version('seqcirc')}"
    assert cli.package_version() == version("seqcirc")


def test_help_exits_0(capsys):
    assert main(["circuit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--prefix" in out and "--metric" in out and "--corruption" in out and "--order" in out


@pytest.mark.parametrize(
    "argv,extra,module",
    [(["run", "--all"], "book", "papermill"), (["grid", "01_behaviour", "-p", "seed", "0,1"], "grid", "distributed")],
)
def test_a_missing_extra_is_one_line_naming_the_pip_command(argv, extra, module, monkeypatch, capsys, no_model_load):
    """`seqcirc run` needs [book], `seqcirc grid` [grid]: without them, one line and exit 2 before any work."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real_find_spec(name, *a)
    )
    assert main(argv) == 2
    line = _one_line_error(capsys, f"pip install 'seqcirc[{extra}]'")
    assert module in line
