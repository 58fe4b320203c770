"""README.md, README.zh-CN.md and docs/*.md: every relative link resolves (anchors stripped; http(s), mailto and
pure #anchors ignored), every command line they show parses with the CLIs' own argparse parsers (parsing only:
nothing runs), and both READMEs show the original design's four command lines verbatim.

Which lines count as commands, in fenced code blocks and in inline code spans: each `&&`-separated part that
starts with `python stylefusion.py` or `python fast_style_transfer.py`; with `stylefusion` or
`fast-style-transfer` followed by at least one word (alone, the name only names the installed command); or
with `torchrun`, whose words after the script are parsed. Continuation lines (a trailing backslash) are joined
and `# comments` dropped. A command passes when parse_args returns without exiting (`--help`/`--version`: when
it exits 0) and, for the fast CLI, when its mode reads every option given (else the run would warn).
The one skip: a command with a `...`, `…` or `<name>` placeholder word, which stands for options left out on
purpose (e.g. the second machine's `torchrun` line in docs/fast.md).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "README.zh-CN.md"]
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))
LINKED_FILES = READMES + DOC_PAGES
COMMAND_FILES = READMES + DOC_PAGES  # the Chinese README shows the same commands as the English one

FENCE = re.compile(r"^\s*```.*?^\s*```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, …

SCRIPTS = {"stylefusion.py": "iterative", "fast_style_transfer.py": "fast"}
COMMANDS = {"stylefusion": "iterative", "fast-style-transfer": "fast"}
PLACEHOLDER = re.compile(r"^(?:\.\.\.|…|<[^<>]+>)$")

# The original design's four command lines: README and its translation show them verbatim.
DESIGN_COMMANDS = [
    "python stylefusion.py --content_image ./data/city.jpg --style_image ./data/udnie.jpg --output_dir "
    "./output/iterative_style_transfer --epochs 20 --steps_per_epoch 100",
    "python fast_style_transfer.py --mode train --style_image ./data/udnie.jpg --content_dataset data/train2014 "
    "--model_save_path ./models/new_model.pth --pretrained_model_path ./models/udnie.pth --epochs 10",
    "python fast_style_transfer.py --mode image --input_images_dir ./data/train2014/default_class "
    "--output_images_dir ./output/images_generated --model_path ./models/udnie.pth",
    "python fast_style_transfer.py --mode video --video_input data/maigua.mp4 --video_output "
    "output/videos/maigua_udnie.mp4 --model_path ./models/udnie.pth --batch_size 4",
]


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def link_targets(text: str) -> list[str]:
    """Inline, image and reference-style link targets outside code (fences and inline spans)."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in LINKED_FILES:
        for target in link_targets(page.read_text(encoding="utf-8")):
            if EXTERNAL.match(target) or target.startswith("#"):
                continue
            links.append((page, target))
    return links


@pytest.mark.parametrize("page", LINKED_FILES, ids=_rel)
def test_pages_exist(page: Path) -> None:
    assert page.is_file()


def test_relative_links_resolve() -> None:
    links = relative_links()
    assert len(links) > 20, "the link scanner found almost nothing: is its pattern broken?"
    broken = [f"{_rel(page)}: {target}" for page, target in links
              if not (page.parent / target.split("#", 1)[0]).exists()]
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def command_lines(text: str) -> list[str]:
    """Logical lines of the fenced code blocks (continuations joined), then the inline code spans."""
    lines = []
    for block in FENCE.findall(text):
        body = block.strip().split("\n")[1:-1]  # drop the ``` lines
        current = ""
        for line in body:
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            lines.append(current + line)
            current = ""
        if current:
            lines.append(current)
    lines += INLINE_CODE.findall(FENCE.sub("", text))
    return lines


def cli_args(line: str) -> list[tuple[str, list[str]]]:
    """(CLI, arguments) for each command of a line; [] for anything else."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # not shell (an unbalanced quote in prose or Python code)
        return []
    found = []
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            parts.append([])
        else:
            parts[-1].append(word)
    for part in parts:
        while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):  # VAR=value prefixes
            part = part[1:]
        if len(part) >= 2 and part[0] in ("python", "python3") and part[1] in SCRIPTS:
            found.append((SCRIPTS[part[1]], part[2:]))
        elif len(part) >= 2 and part[0] in COMMANDS:  # a bare `stylefusion` names the command, runs nothing
            found.append((COMMANDS[part[0]], part[1:]))
        elif part and part[0] == "torchrun":
            scripts = [i for i, word in enumerate(part) if word in SCRIPTS]
            if scripts:
                found.append((SCRIPTS[part[scripts[0]]], part[scripts[0] + 1:]))
    return found


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, CLI, arguments) for every command line in the READMEs and docs/, placeholders skipped."""
    commands = []
    for page in COMMAND_FILES:
        for line in command_lines(page.read_text(encoding="utf-8")):
            for cli, args in cli_args(line):
                if not any(PLACEHOLDER.match(word) for word in args):
                    commands.append((f"{_rel(page)}: {' '.join(args) or '(no options)'}", cli, args))
    return commands


def parse(cli: str, args: list[str]) -> tuple[int | None, str]:
    """Parse with the CLI's own parser: (exit code, or None when parse_args returned; what it printed)."""
    if cli == "iterative":
        from stylefusion_cli.iterative import build_parser
    else:
        from stylefusion_cli.fast import build_parser
    parser = build_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            parsed = parser.parse_args(args)
        except SystemExit as stop:
            return (stop.code if isinstance(stop.code, int) else 1), out.getvalue()
    if cli == "fast":  # an option the mode does not read would only get a warning at run time: flag it here
        from stylefusion_cli.fast import ignored_options
        ignored = ignored_options(parser, parsed)
        if ignored:
            return 1, f"ignored by --mode {parsed.mode}: {', '.join(ignored)}"
    return None, out.getvalue()


def test_documented_commands_parse() -> None:
    commands = documented_commands()
    assert len(commands) > 30, "the command scanner found almost nothing: is its pattern broken?"
    bad = []
    for where, cli, args in commands:
        code, said = parse(cli, args)
        if {"-h", "--help", "--version"} & set(args):
            ok = code == 0  # they print and exit 0 by design
        else:
            ok = code is None
        if not ok:
            bad.append(f"{where}\n    -> {said.strip() or f'exit {code}'}")
    assert not bad, "documented commands the CLIs reject:\n" + "\n".join(bad)


@pytest.mark.parametrize("readme", READMES, ids=_rel)
def test_design_commands_verbatim(readme: Path) -> None:
    lines = {line.strip() for line in readme.read_text(encoding="utf-8").splitlines()}
    missing = [command for command in DESIGN_COMMANDS if command not in lines]
    assert not missing, f"{_rel(readme)} lacks the original design's command lines:\n" + "\n".join(missing)



SNIPPET_PAGES = [*LINKED_FILES, REPO / "models" / "README.md"]
PYTHON_FENCE = re.compile(r"^\s*```python\n(.*?)^\s*```[ \t]*$", re.S | re.M)
IMPORT = re.compile(r"^\s*from\s+(stylefusion[\w.]*)\s+import\s+\(?([\w, ]+)\)?\s*$"
                    r"|^\s*import\s+(stylefusion[\w.]*)\s*$", re.M)


def _snippet_imports() -> list[tuple[str, str, str | None]]:
    """(where, module, name or None) for every `from stylefusion... import` / `import stylefusion...` line in the
    Python blocks of the READMEs, docs/ and models/README.md."""
    found = []
    for page in SNIPPET_PAGES:
        for block in PYTHON_FENCE.findall(page.read_text(encoding="utf-8")):
            for match in IMPORT.finditer(block):
                module, names, bare = match.groups()
                where = _rel(page)
                if bare:
                    found.append((where, bare, None))
                else:
                    found.extend((where, module, name.strip()) for name in names.split(",") if name.strip())
    return found


def test_python_snippets_import_what_exists() -> None:
    """What the pages' Python examples import exists (the examples are not run: they write files)."""
    import importlib

    imports = _snippet_imports()
    assert len(imports) >= 8  # the READMEs and models/README.md show library use
    missing = []
    for where, module, name in imports:
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            missing.append(f"{where}: {module}")
            continue
        if name is not None and not hasattr(loaded, name):
            missing.append(f"{where}: {module}.{name}")
    assert not missing, missing
