"""The package's shape: each sub-package imports only the folders below it (core imports nothing else), and the
public names load from the package root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stylefusion

PACKAGE = Path(stylefusion.__file__).parent
# folder -> the folders of the package it may import from (its own included); "" is the package root.
MAY_IMPORT = {"core": {"core"}, "iterative": {"core", "networks", "iterative"}, "networks": {"core", "networks"},
              "training": {"core", "networks", "training"}, "run": {"core", "networks", "run"}, "": {"core"}}


def _imported_folders(path: Path) -> set[str]:
    """The package folders a module imports from, relative or absolute."""
    folder = path.parent.name if path.parent != PACKAGE else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and folder:
            found.add(folder)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stylefusion."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_folder_it_may_not(path: Path) -> None:
    folder = path.parent.name if path.parent != PACKAGE else ""
    assert folder in MAY_IMPORT, f"{folder}/ is not a known sub-package: add it to MAY_IMPORT"
    assert _imported_folders(path) <= MAY_IMPORT[folder]


def test_every_sub_package_says_what_lives_there() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        assert init.parent.name in MAY_IMPORT
        assert "May import" in (ast.get_docstring(ast.parse(init.read_text())) or ""), init


def test_public_names_come_from_the_root() -> None:
    from stylefusion import IterativeConfig, load_model, stylize
    from stylefusion.iterative.gatys import stylize as deep_stylize

    assert stylize is deep_stylize and callable(load_model) and "content_image" in IterativeConfig.__dataclass_fields__
    for name in stylefusion.__all__:
        assert getattr(stylefusion, name) is not None
    with pytest.raises(AttributeError):
        stylefusion.no_such_name  # noqa: B018
