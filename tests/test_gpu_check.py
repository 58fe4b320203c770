"""bench/gpu_check.py run on the CPU as the suite runs it (`--device cpu --quick --skip_tests`), so the check cannot
rot while no GPU is around: the report has every row, each a figure or an explicit "skipped: ..." (an "error: ..."
only in the arbitrary network's hook, which follows another module's API), then the targets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stylefusion.core.device import cpu_supports_bf16

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
# One compute thread: tiny sizes, and idle OpenMP threads spin on a busy shared machine.
ENV = dict(os.environ, OMP_NUM_THREADS="1")
PRECISIONS = ("fp32", "fp16", "bf16")
SIZES = ("640×360", "1920×1080", "3840×2160")
ARBITRARY = "fast image mode, arbitrary network"
ROWS = ["CUDA tests (`pytest -m cuda`)",
        *(f"iterative 512 px, L-BFGS, {p}" for p in PRECISIONS),
        "iterative 2048 px, L-BFGS, --precision auto", "iterative 4096 px, L-BFGS, --precision auto",
        *(f"fast image mode, {arch} network, {size}, {p}" for arch in ("standard", "compact") for size in SIZES
          for p in PRECISIONS),
        ARBITRARY,  # one "not available" row, or one per size and precision once the network exists
        "`--mode video` end to end, 1920×1080",
        "training step, 256 px, batch 4, fp32", "training step, 256 px, batch 16, fp32",
        "training step, 256 px, batch 4, fp16 + grad scaler",
        "NCCL training smoke run, 2 processes (torchrun)"]
FIGURE = re.compile(r"(passed: )?\d+(\.\d+)? ")


def run(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def table(text: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with `first_header`, as cells (escaped pipes kept)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check") / "report" / "gpu.md"
    return run("--device", "cpu", "--quick", "--skip_tests", "--out", str(out)), out


def test_quick_cpu_run_has_every_row(quick):
    proc, out = quick
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu.md"]  # written by rename, no temporary left
    text = out.read_text(encoding="utf-8")
    assert text in proc.stdout  # the same report is printed
    rows = table(text, "section")
    names = [r[1] for r in rows]
    arbitrary = [n for n in names if n.startswith(ARBITRARY)]
    assert arbitrary in ([ARBITRARY], [f"{ARBITRARY}, {s}, {p}" for s in SIZES for p in PRECISIONS])
    assert [n for n in names if not n.startswith(ARBITRARY)] == [n for n in ROWS if n != ARBITRARY]
    results = {r[1]: r[3] for r in rows}
    for name, result in results.items():
        assert FIGURE.match(result) or result.startswith(("skipped: ", "error: ")), (name, result)
        if not name.startswith(ARBITRARY):  # another module's API: the hook may lag behind it
            assert not result.startswith("error: "), (name, result)
    assert (proc.returncode == 1) == any(r.startswith("error: ") for r in results.values())
    # What the CPU can run, it runs; what it cannot, it says.
    assert results["CUDA tests (`pytest -m cuda`)"] == "skipped: --skip_tests"
    assert results["NCCL training smoke run, 2 processes (torchrun)"] == "skipped: 0 GPUs"
    for name, result in results.items():
        if name.startswith(ARBITRARY) and result.startswith(("skipped: not available", "error: ")):
            continue
        if name.endswith(("fp32", "auto", "1920×1080")):
            assert FIGURE.match(result), (name, result)
        elif name.endswith(("fp16", "grad scaler")):
            assert result.startswith("skipped: fp16 is not supported on the CPU"), (name, result)
        elif name.endswith("bf16"):
            assert bool(FIGURE.match(result)) == cpu_supports_bf16(), (name, result)


def test_quick_cpu_report_header_and_targets(quick):
    proc, out = quick
    text = out.read_text(encoding="utf-8")
    assert f"torch {torch.__version__}" in text and "- date: " in text
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split()) & {"avx2", "avx512_bf16"}
    assert f"flags: {' '.join(sorted(flags)) or 'neither avx2 nor avx512_bf16'}" in text
    elapsed = re.search(r"run time: (\d+) s of a 540 s budget", text)
    assert elapsed and int(elapsed.group(1)) < 540
    targets = table(text, "target")
    assert len(targets) == 5
    for target, _, verdict in targets:
        assert verdict in ("not measured", "not judged (--quick: tiny sizes)"), (target, verdict)


def test_a_spent_budget_skips_every_row_and_still_writes_the_report(tmp_path):
    proc = run("--device", "cpu", "--quick", "--skip_tests", "--budget_s", "0", "--out", str(tmp_path / "r.md"),
               timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table((tmp_path / "r.md").read_text(encoding="utf-8"), "section")
    assert [r[1] for r in rows if not r[1].startswith(ARBITRARY)] == [n for n in ROWS if n != ARBITRARY]
    assert all(r[3].startswith("skipped: time budget") for r in rows), rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_without_cuda_it_says_so_in_one_line(tmp_path):
    proc = run("--out", str(tmp_path / "r.md"), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--device cpu" in lines[0], proc.stderr
    assert not (tmp_path / "r.md").exists()


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_pytest_output_is_read_into_counts_and_failures():
    gpu_check = _gpu_check()
    output = ("..F.s                                                                    [ 40%]\n"
              "sE.                                                                      [100%]\n"
              "=========================== short test summary info ============================\n"
              "SKIPPED [1] tests/test_cuda.py:90: needs a CUDA device\n"
              "FAILED tests/test_cuda.py::test_image_mode_on_cuda[auto] - ValueError: Expected a torch.device\n"
              "ERROR tests/test_cuda.py::test_video_mode_on_cuda - RuntimeError: boom\n"
              "1 failed, 4 passed, 2 skipped, 1 error in 12.34s (0:00:12)\n")
    counts = gpu_check.summary_counts(output)
    assert counts == {"failed": 1, "passed": 4, "skipped": 2, "error": 1}
    assert gpu_check.format_counts(counts) == "4 passed, 1 failed, 1 error, 2 skipped"
    assert gpu_check.progress_counts(output) == {"passed": 4, "failed": 1, "skipped": 2, "error": 1}
    assert [line.split()[0] for line in gpu_check.failure_lines(output)] == ["FAILED", "ERROR"]
    assert gpu_check.summary_counts("no summary here") == {}
    assert gpu_check.one_line("a | b\nsecond line") == "a \\| b"
