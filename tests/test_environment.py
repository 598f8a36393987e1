"""environment.yml must list the same dependencies as pyproject.toml."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip = {_norm(l.strip()[2:]) for l in lines if l.startswith("      - ") and not l.strip().startswith("- -e")}
    assert pip == wanted
    assert any("python=3.11" in l for l in lines)


def test_packaging_metadata_is_consistent():
    """requires-python matches environment.yml; the SPDX license has its file and a backend that reads it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    env_python = re.search(r"python=(\d+\.\d+)", (ROOT / "environment.yml").read_text()).group(1)
    assert project["requires-python"] == f">={env_python}"
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    backend = next(r for r in data["build-system"]["requires"] if r.startswith("setuptools"))
    assert tuple(int(x) for x in backend.split(">=")[1].split(".")[:1]) >= (77,)  # SPDX `license` + `license-files`


def test_pytest_markers_are_registered():
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert {m.split(":")[0] for m in markers} >= {"embedded", "slow", "book", "gpu"}
