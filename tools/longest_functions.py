"""Print the N longest functions (lines from `def` to the last line of the body) in the library and the CLIs.

Usage: python tools/longest_functions.py [ROOT] [N]   (ROOT: a checkout, default: this one; N: default 10)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def function_lengths(path: Path, root: Path) -> list[tuple[int, str]]:
    """(lines, 'file:line name') of every function and method in one file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.lineno} {node.name}")
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent)
    count = int(argv[1]) if len(argv) > 1 else 10
    files = [p for p in ("stylefusion.py", "fast_style_transfer.py", "cli_common.py") if (root / p).is_file()]
    packages = [d for d in ("stylefusion", "stylefusion_cli") if (root / d).is_dir()]  # the CLIs moved here
    paths = [root / p for p in files] + sorted(p for d in packages for p in (root / d).rglob("*.py"))
    found = sorted((f for p in paths for f in function_lengths(p, root)), reverse=True)
    print("| lines | function |\n|---:|---|")
    for lines, name in found[:count]:
        print(f"| {lines} | {name} |")


if __name__ == "__main__":
    main(sys.argv[1:])
