#!/usr/bin/env python3
"""One command that proves and times every CUDA path (issue #28): the CUDA tests, then a timing table.

    python bench/gpu_check.py                                  # on a CUDA machine: < 10 min on one GPU
    python bench/gpu_check.py --device cpu --quick --skip_tests   # smoke run on a CPU (tests/test_gpu_check.py)

(a) `python -m pytest -q -m cuda` in a subprocess: the tests marked `cuda` (tests/test_cuda.py and the CLI tests
    that pick CUDA when present); its pass/fail counts and failures go into the report.
(b) Timings, each a row of one Markdown table: iterative L-BFGS seconds per step at 512 px in fp32/bf16/fp16 with
    the time to 500 steps, and at 2048 and 4096 px; fast image mode frames/s of the standard and compact networks
    (and the arbitrary one when stylefusion.networks.arbitrary imports) at 640x360, 1920x1080 and 3840x2160 in
    fp32/fp16/bf16 through stylefusion.run.stylizer.Stylizer; `--mode video` end to end on a 1080p clip; a
    training step (stylefusion.training.loop.train_step, via bench/fast_train.py) at 256 px, batch 4 and 16;
    a 2-process NCCL training run under torchrun when two GPUs are present. Peak GPU memory is
    torch.cuda.max_memory_allocated, reset before each row; warm-up is excluded and every timing is bracketed
    by torch.cuda.synchronize. Then the issue's targets, each met / not met.

Every row is guarded: an exception becomes that row's one-line "error: ...", and the next row runs. A row that
would start with less of the time budget (--budget_s, default 540 s, counted from the process start) left than
it needs is "skipped: time budget ..."; a row still running when the budget runs out is stopped and marked so.
The report (GPU name, torch/CUDA versions, date, CPU flags, the table, the targets) is printed and written to
--out (default output/gpu_check.md; temporary name then rename, after every row). Exit status: 0, or 1 when a
row reports an error or a CUDA test failed, 2 when there is no CUDA device and --device cpu was not given.
"""

from __future__ import annotations

import time

_STARTED = time.monotonic()  # before the heavy imports: the budget counts the whole process

import argparse    # noqa: E402
import contextlib    # noqa: E402
import csv    # noqa: E402
import datetime    # noqa: E402
import gc    # noqa: E402
import importlib    # noqa: E402
import importlib.util  # noqa: E402
import os    # noqa: E402
import platform    # noqa: E402
import re    # noqa: E402
import signal    # noqa: E402
import subprocess    # noqa: E402
import sys    # noqa: E402
import tempfile    # noqa: E402
import threading    # noqa: E402
from dataclasses import dataclass, field    # noqa: E402
from pathlib import Path    # noqa: E402
from types import ModuleType, SimpleNamespace    # noqa: E402
from typing import Callable, Iterator    # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO))

import numpy as np    # noqa: E402
import torch    # noqa: E402
from torch import nn    # noqa: E402

from stylefusion.core.device import check_precision, resolve_precision    # noqa: E402
from stylefusion.core.errors import DeviceError    # noqa: E402
from stylefusion.core.memory import available_memory, default_budget    # noqa: E402
from stylefusion.iterative.gatys import IterativeConfig, stylize    # noqa: E402
from stylefusion.networks.model_files import build_network, load_model, save_model    # noqa: E402
from stylefusion.run.folder import ImageOptions  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402

CONTENT = REPO / "data" / "city.jpg"
STYLE = REPO / "data" / "udnie.jpg"
PRECISIONS = ("fp32", "fp16", "bf16")
# Fast image mode sizes (width, height) and, for --quick, what each stands for.
FAST_SIZES = ((640, 360), (1920, 1080), (3840, 2160))
QUICK_FAST_SIZES = ((32, 18), (48, 27), (64, 36))  # odd heights: the pad to a multiple of 4
ITERATIVE_STEPS_TO = 500                      # the "time to 500 steps"
GIB = 2 ** 30
ARBITRARY_MODULE = "stylefusion.networks.arbitrary"


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    """One line of the table. `result` is a figure, or starts with "skipped:" or "error:"."""
    section: str
    name: str
    run_at: str = ""
    result: str = ""
    peak: str = "–"
    note: str = ""
    value: float | None = None   # the figure the targets compare (frames/s, seconds, bytes ...)
    peak_bytes: int | None = None

    @property
    def failed(self) -> bool:
        return self.result.startswith("error:")


class Skip(Exception):
    """Raised by a row to record "skipped: <reason>" (a precision the device lacks, no second GPU ...)."""


class BudgetSpent(BaseException):
    """The time budget ran out while a row ran (a BaseException, so no library `except Exception` swallows it)."""


def one_line(text: str, limit: int = 240) -> str:
    """Text fit for one table cell: the first non-empty line, pipes escaped, shortened."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def error_text(exc: BaseException) -> str:
    message = one_line(str(exc)) or "(no message)"
    return f"error: {type(exc).__name__}: {message}"


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise BudgetSpent in this (main) thread after `seconds`; a no-op where SIGALRM is not available."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise BudgetSpent()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(command: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own process group, killing the whole group (torchrun's workers too) on timeout or on
    any interruption; raises subprocess.TimeoutExpired (with the output so far) when it runs too long."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout))
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from None
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def bench_module(name: str) -> ModuleType:
    """bench/<name>.py loaded as a module (bench/ is a folder of scripts, not a package)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before running it: dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def gib(count: float) -> str:
    return f"{count / GIB:.2f} GiB"


# ------------------------------------------------------------------------------------------------ the check
@dataclass
class Settings:
    """Sizes and step counts of a run (--quick shrinks them); the row labels always name the full sizes."""
    quick: bool
    iterative_512: int
    iterative_large: tuple[tuple[int, int, int], ...]   # (nominal px, run px, steps)
    iterative_steps: int
    fast_sizes: tuple[tuple[tuple[int, int], tuple[int, int]], ...]   # (nominal (w, h), run (w, h))
    fast_batch: int
    fast_min_s: float
    video: tuple[int, int, int]                        # width, height, frames
    train_size: int
    train_batches: tuple[tuple[int, int], ...]         # (nominal batch, run batch)
    train_warmup: int
    train_steps: int

    @staticmethod
    def make(quick: bool) -> "Settings":
        if quick:
            return Settings(True, 48, ((2048, 56, 3), (4096, 64, 3)), 3,
                            tuple(zip(FAST_SIZES, QUICK_FAST_SIZES)), 1, 0.0, (64, 36, 3), 32, ((4, 1), (16, 2)),
                            1, 1)
        return Settings(False, 512, ((2048, 2048, 5), (4096, 4096, 4)), 12,
                        tuple(zip(FAST_SIZES, FAST_SIZES)), ImageOptions.batch_size, 1.0, (1920, 1080, 48), 256,
                        ((4, 4), (16, 16)), 2, 5)


@dataclass
class Check:
    args: argparse.Namespace
    device: torch.device
    settings: Settings
    out: Path
    work: Path
    rows: list[Row] = field(default_factory=list)
    test_failures: list[str] = field(default_factory=list)
    budget_bytes: int = 0
    header: list[str] = field(default_factory=list)

    # -------------------------------------------------------------------------------------------- plumbing
    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - _STARTED)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def clean(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def start_peak(self) -> None:
        self.clean()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def record_peak(self, row: Row) -> None:
        if self.cuda:
            row.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            row.peak = gib(row.peak_bytes)

    def run_row(self, section: str, name: str, body: Callable[[Row], None], needs_s: float, cap_s: float) -> Row:
        """Run one guarded row: skipped when less than `needs_s` of the budget is left, stopped after `cap_s` or
        at the end of the budget, an exception recorded as its one-line error."""
        row = Row(section, name)
        self.rows.append(row)
        left = self.left()
        needs = min(needs_s, 1.0) if self.settings.quick else needs_s
        if left < needs:
            row.result = f"skipped: time budget ({self.args.budget_s:g} s) spent, {max(left, 0):.0f} s left"
        else:
            limit = min(cap_s, left)
            started = time.monotonic()
            try:
                with time_limit(limit):
                    body(row)
                if not row.result:
                    row.result = "error: the row produced no result"
            except Skip as exc:
                row.result = f"skipped: {one_line(str(exc))}"
            except (BudgetSpent, subprocess.TimeoutExpired):
                spent = time.monotonic() - started
                why = "time budget spent" if limit < cap_s else f"row limit of {cap_s:g} s reached"
                row.result = f"skipped: stopped after {spent:.0f} s ({why})"
            except Exception as exc:  # noqa: BLE001 - a failing row must not hide the rest
                row.result = error_text(exc)
            self.clean()
        with contextlib.suppress(OSError):  # progress only: a closed stderr must not stop the check
            print(f"[{time.monotonic() - _STARTED:5.0f} s] {name}: {row.result}", file=sys.stderr, flush=True)
        self.write()
        return row

    def need_precision(self, precision: str) -> str:
        """The precision checked for this device (Skip when it cannot run here), 'auto' resolved."""
        try:
            check_precision(precision, self.device)
        except DeviceError as exc:
            raise Skip(str(exc)) from None
        return resolve_precision(precision, self.device)

    # ------------------------------------------------------------------------------------------------ (a)
    def tests(self, row: Row) -> None:
        if self.args.skip_tests:
            raise Skip("--skip_tests")
        if not self.cuda:  # they would all skip, and the also_cpu ones are the plain suite's CPU tests
            raise Skip("--device cpu: the CUDA tests need a GPU")
        limit = min(self.args.tests_cap_s, self.left()) - 2  # before run_row's own alarm: keep the counts so far
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
        row.run_at = "`" + " ".join(["python", *command[1:]]) + "`"
        started = time.monotonic()
        try:
            proc = run_command(command, limit)
        except subprocess.TimeoutExpired as exc:
            done = progress_counts(exc.stdout or "")
            row.result = (f"skipped: stopped after {time.monotonic() - started:.0f} s (tests cap {limit:.0f} s); "
                          f"so far {format_counts(done)}")
            row.value = float(done.get("failed", 0) + done.get("error", 0))
            self.test_failures = failure_lines(exc.stdout or "")
            return
        counts = summary_counts(proc.stdout)
        if not counts and proc.returncode not in (0, 5):
            raise RuntimeError(f"pytest exited {proc.returncode}: {one_line(proc.stderr or proc.stdout[-500:])}")
        row.result = format_counts(counts) if counts else "0 passed (no tests collected)"
        row.value = float(counts.get("failed", 0) + counts.get("error", 0))
        row.note = f"{time.monotonic() - started:.0f} s"
        self.test_failures = failure_lines(proc.stdout)

    # ------------------------------------------------------------------------------------------------ (b)
    def iterative(self, row: Row, size: int, precision: str, steps: int) -> None:
        resolved = self.need_precision(precision)
        out = Path(tempfile.mkdtemp(prefix="iterative-", dir=self.work))
        config = IterativeConfig(content_image=CONTENT, style_images=[STYLE], output_dir=out, epochs=1,
                                 steps_per_epoch=steps, image_size=size, device=self.device.type,
                                 precision=precision)
        self.start_peak()
        started = time.perf_counter()
        result = stylize(config)
        wall = time.perf_counter() - started
        self.record_peak(row)
        with open(result.loss_log, newline="") as f:
            log = [{k: float(v) for k, v in line.items()} for line in csv.DictReader(f)]
        if len(log) < 3:
            raise RuntimeError(f"only {len(log)} steps logged (need 3: 2 warm-up, 1 timed)")
        per_step = (log[-1]["seconds"] - log[1]["seconds"]) / (len(log) - 2)  # the first two steps warm up
        timed = plural(len(log) - 2, "timed step")
        row.run_at = f"{int(log[-1]['width'])}×{int(log[-1]['height'])}, {resolved}, {timed}"
        row.result = f"{per_step:.3f} s/step; {ITERATIVE_STEPS_TO} steps ≈ {per_step * ITERATIVE_STEPS_TO:.1f} s"
        row.value = per_step * ITERATIVE_STEPS_TO
        row.note = f"loss {result.final_loss:.4g}; set-up {wall - log[-1]['seconds']:.1f} s not counted"

    def fast(self, row: Row, network: nn.Module, size: tuple[int, int], precision: str) -> None:
        resolved = self.need_precision(precision)
        width, height = size
        batch = self.settings.fast_batch
        self.start_peak()
        stylizer = Stylizer(network, self.device, precision)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, height, width, generator=generator).to(self.device)
        for _ in range(1 if self.settings.quick else 2):  # warm-up: cuDNN's choices, the allocator's pools
            stylizer(x)
        self.sync()
        calls, elapsed = 0, 0.0
        while calls < (1 if self.settings.quick else 3) or (elapsed < self.settings.fast_min_s and calls < 500):
            start = time.perf_counter()
            stylizer(x)
            self.sync()
            elapsed += time.perf_counter() - start
            calls += 1
        self.record_peak(row)
        fps = batch * calls / elapsed
        fits = stylizer.batch_limit(height, width)
        how = ("whole" if fits >= batch else f"in batches of {fits}" if fits >= 1
               else f"tiled, {stylizer.tile_plan(height, width).tile} px tiles")
        row.run_at = f"{width}×{height}, {resolved}, batch {batch}"
        row.result = f"{fps:.1f} frames/s"
        row.value = fps
        row.note = f"{how} (budget {gib(stylizer.max_memory)}); {plural(calls, 'timed call')}"

    def video(self, row: Row) -> None:
        width, height, frames = self.settings.video
        folder = Path(tempfile.mkdtemp(prefix="video-", dir=self.work))
        clip = bench_module("video").make_clip(folder / "clip.mp4", width, height, frames)
        torch.manual_seed(0)
        model = folder / "model.pth"
        save_model(build_network("standard"), model)
        command = [sys.executable, str(REPO / "fast_style_transfer.py"), "--mode", "video", "--video_input", str(clip),
                   "--video_output", str(folder / "out.mp4"), "--model_path", str(model), "--device",
                   self.device.type]
        row.run_at = f"{width}×{height}, {frames} frames, --precision auto"
        started = time.monotonic()
        proc = run_command(command, self.left() - 1)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"exit {proc.returncode}: {lines[-1] if lines else 'no message'}")
        found = re.search(r": (\d+) frames, .*?\(([\d.]+) frames/s\)", proc.stderr)
        if not found:
            raise RuntimeError(f"no 'frames/s' line in the CLI's output: {one_line(proc.stderr[-300:])}")
        done, fps = int(found.group(1)), float(found.group(2))
        if done != frames:
            raise RuntimeError(f"wrote {done} frames of {frames}")
        row.result = f"{fps:.1f} frames/s"
        row.value = fps
        row.note = f"the CLI's own figure (decode, network, encode, flicker score); whole process {wall:.1f} s"

    def training(self, row: Row, batch_size: int, precision: str) -> None:
        self.need_precision(precision)
        fast_train = bench_module("fast_train")
        size = self.settings.train_size
        generator = torch.Generator().manual_seed(0)
        batch = torch.rand(batch_size, 3, size, size, generator=generator).to(self.device)
        style = torch.rand(1, 3, size, size, generator=generator).to(self.device)
        options = SimpleNamespace(vgg_weights="caffe", warmup=self.settings.train_warmup,
                                  steps=self.settings.train_steps)
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cuda  # as training.loop._Run sets it on CUDA
        try:
            self.start_peak()
            seconds = fast_train.ours(self.device, batch, style, options, precision=precision)
            self.record_peak(row)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        row.run_at = f"{size} px, batch {batch_size}, {precision}"
        row.result = f"{1 / seconds:.2f} steps/s"
        row.value = 1 / seconds
        scaler = ", GradScaler" if precision == "fp16" and self.cuda else ""
        row.note = (f"{batch_size / seconds:.1f} images/s; median of {self.settings.train_steps} steps after "
                    f"{self.settings.train_warmup} warm-up{scaler}")

    def nccl(self, row: Row) -> None:
        gpus = torch.cuda.device_count() if self.cuda else 0
        if gpus < 2:
            row.note = "needs 2 GPUs" + ("" if self.cuda else " (--device cpu)")
            raise Skip(f"{gpus} GPU" + ("" if gpus == 1 else "s"))
        folder = Path(tempfile.mkdtemp(prefix="nccl-", dir=self.work))
        rng = np.random.default_rng(0)
        from PIL import Image  # only here: the rest of the check needs no image files of its own

        dataset = folder / "dataset" / "images"
        dataset.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(dataset / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "style.png")
        steps, size = (2, 32) if self.settings.quick else (4, 64)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(REPO / "fast_style_transfer.py"), "--mode", "train", "--style_image", str(folder / "style.png"),
                   "--content_dataset", str(folder / "dataset"), "--model_save_path", str(folder / "m.pth"),
                   "--image_size", str(size), "--batch_size", "2", "--max_steps", str(steps), "--device", "cuda",
                   "--precision", "fp16", "--num_workers", "0", "--preview_interval", "0"]
        row.run_at = f"torchrun 2 × cuda, {size} px, batch 2 each, fp16 + GradScaler, {steps} steps"
        started = time.monotonic()
        proc = run_command(command, self.left() - 1, env=dict(os.environ, OMP_NUM_THREADS="1"))
        wall = time.monotonic() - started
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip() and "Traceback" not in line]
            raise RuntimeError(f"torchrun exit {proc.returncode}: {lines[-1] if lines else 'no message'}")
        settings = load_model(folder / "m.pth")[1]
        if settings.get("world_size") != 2 or settings.get("steps") != steps:
            raise RuntimeError(f"the model says world_size={settings.get('world_size')}, steps={settings.get('steps')}")
        row.result = f"passed: {steps} steps × 2 processes in {wall:.1f} s"
        row.value = wall

    # ------------------------------------------------------------------------------------------------ plan
    def run(self) -> None:
        s = self.settings
        self.run_row("tests", "CUDA tests (`pytest -m cuda`)", self.tests, 20, self.args.tests_cap_s)
        for precision in PRECISIONS:
            self.run_row("iterative", f"iterative 512 px, L-BFGS, {precision}",
                         lambda row, p=precision: self.iterative(row, s.iterative_512, p, s.iterative_steps), 10, 90)
        for nominal, size, steps in s.iterative_large:
            self.run_row("iterative", f"iterative {nominal} px, L-BFGS, --precision auto",
                         lambda row, n=size, k=steps: self.iterative(row, n, "auto", k), nominal / 100, 180)
        for arch in ("standard", "compact"):
            for (w, h), run_size in s.fast_sizes:
                for precision in PRECISIONS:
                    self.run_row("fast", f"fast image mode, {arch} network, {w}×{h}, {precision}",
                                 lambda row, a=arch, z=run_size, p=precision: self.fast(row, network(a), z, p),
                                 3 if w < 3840 else 8, 60)
        self.arbitrary_rows()
        self.run_row("video", "`--mode video` end to end, 1920×1080", self.video, 30, 180)
        for nominal, run_batch in s.train_batches:
            self.run_row("training", f"training step, 256 px, batch {nominal}, fp32",
                         lambda row, b=run_batch: self.training(row, b, "fp32"), 10, 90)
        nominal, run_batch = s.train_batches[0]
        self.run_row("training", f"training step, 256 px, batch {nominal}, fp16 + grad scaler",
                     lambda row, b=run_batch: self.training(row, b, "fp16"), 10, 90)
        self.run_row("distributed", "NCCL training smoke run, 2 processes (torchrun)", self.nccl, 30, 180)

    # ---------------------------------------------------------------------- HOOK: the arbitrary network
    # The arbitrary-style network (issue #25) lives in stylefusion/networks/arbitrary.py. Where that module exists,
    # it is timed like the other networks (every size and precision, through Stylizer) with the network
    # `arbitrary_network()` returns: adapt that function if the module's API changes (a failure there is an
    # "error:" row, not a crash). Where the module does not exist: one row "skipped: not available".
    def arbitrary_rows(self) -> None:
        if importlib.util.find_spec(ARBITRARY_MODULE) is None:
            self.run_row("fast", "fast image mode, arbitrary network",
                         lambda row: _raise(Skip(f"not available ({ARBITRARY_MODULE} does not exist yet)")), 0, 1)
            return
        for (w, h), run_size in self.settings.fast_sizes:
            for precision in PRECISIONS:
                self.run_row("fast", f"fast image mode, arbitrary network, {w}×{h}, {precision}",
                             lambda row, z=run_size, p=precision: self.arbitrary(row, z, p), 3 if w < 3840 else 8, 60)

    def arbitrary(self, row: Row, size: tuple[int, int], precision: str) -> None:
        self.fast(row, arbitrary_network(), size, precision)
        row.note += "; random weights (the speed of any painting's), the style predictor's one-off pass not timed"

    # ------------------------------------------------------------------------------------------------ report
    def targets(self) -> list[tuple[str, str, str]]:
        """(target, measured, verdict) for the issue's item 4."""
        def row(name: str) -> Row | None:
            return next((r for r in self.rows if r.name == name), None)

        def judge(target: str, found: Row | None, ok: Callable[[float], bool], unit: str) -> tuple[str, str, str]:
            if found is None or found.value is None:
                return target, found.result if found is not None else "no such row", "not measured"
            measured = f"{found.value:.1f} {unit}".strip()
            if self.settings.quick:
                return target, measured, "not judged (--quick: tiny sizes)"
            return target, measured, "met" if ok(found.value) else "not met"

        auto = resolve_precision("auto", self.device)
        out = [judge("standard network ≥ 200 frames/s at 640×360 in fp16",
                     row("fast image mode, standard network, 640×360, fp16"), lambda v: v >= 200, "frames/s"),
               judge("standard network ≥ 30 frames/s at 3840×2160 in fp16",
                     row("fast image mode, standard network, 3840×2160, fp16"), lambda v: v >= 30, "frames/s"),
               judge(f"iterative: {ITERATIVE_STEPS_TO} steps at 512 px ≤ 20 s (--precision auto = {auto}; loop time)",
                     row(f"iterative 512 px, L-BFGS, {auto}"), lambda v: v <= 20, "s")]
        four_k = [r for r in self.rows if "3840×2160" in r.name and r.peak_bytes is not None]
        budget = f"default budget {gib(self.budget_bytes)}"
        target = f"peak memory at 4K within the default budget ({budget})"
        if not four_k:
            out.append((target, "no 4K row with a peak", "not measured"))
        else:
            worst = max(four_k, key=lambda r: r.peak_bytes)
            measured = f"{gib(worst.peak_bytes)} ({worst.name.split(', ', 1)[1]})"
            verdict = ("not judged (--quick: tiny sizes)" if self.settings.quick
                       else "met" if worst.peak_bytes <= self.budget_bytes else "not met")
            out.append((target, measured, verdict))
        need = 16 * 10 ** 9
        out.append(("no tiling below 16 GB of need (the default budget is at least 16 GB)", budget,
                    "not judged (--quick: tiny sizes)" if self.settings.quick or not self.cuda
                    else "met" if self.budget_bytes >= need else "not met"))
        return out

    def report(self, finished: bool) -> str:
        lines = list(self.header)
        elapsed = time.monotonic() - _STARTED
        state = "" if finished else " (unfinished: the rows so far)"
        lines.append(f"- run time: {elapsed:.0f} s of a {self.args.budget_s:g} s budget{state}")
        lines += ["", "| section | row | run at | result | peak GPU memory | note |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            cells = [r.section, r.name, r.run_at, r.result, r.peak, r.note]
            lines.append("| " + " | ".join(one_line(c, 400) if c else "" for c in cells) + " |")
        if self.test_failures:
            lines += ["", "CUDA test failures (pytest's short summary):", ""]
            lines += [f"- {one_line(line, 400)}" for line in self.test_failures]
        if finished:
            lines += ["", "Targets (issue #28, item 4; one H100-class GPU):", "", "| target | measured | verdict |",
                      "|---|---|---|"]
            lines += [f"| {t} | {one_line(m)} | {v} |" for t, m, v in self.targets()]
        return "\n".join(lines) + "\n"

    def write(self, finished: bool = False) -> str:
        text = self.report(finished)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.out)
        return text


def _raise(exc: BaseException) -> None:
    raise exc


def network(arch: str) -> nn.Module:
    """A seeded network of the architecture (random weights: the speed is the same as a trained one's)."""
    torch.manual_seed(0)
    return build_network(arch).eval()


def arbitrary_network() -> nn.Module:
    """HOOK: the arbitrary-style network as a (B, 3, H, W) 0-255 -> 0-255 module for Stylizer (see arbitrary_rows).

    Tries, in order: the module's `bench_network()`, then build_network("arbitrary"). Any failure is that row's
    error, not the check's."""
    module = importlib.import_module(ARBITRARY_MODULE)
    make = getattr(module, "bench_network", None)
    torch.manual_seed(0)
    return (make() if callable(make) else build_network("arbitrary")).eval()


# ------------------------------------------------------------------------------------------------ pytest output
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed|warnings?)")


def summary_counts(output: str) -> dict[str, int]:
    """pytest's final counts ('3 passed, 1 failed, 2 skipped in 4.1s'), keys singular; {} when none."""
    for line in reversed(output.splitlines()):
        found = _COUNT.findall(line)
        if found and re.search(r"\bin [\d.]+s\b", line):
            return {kind.rstrip("s") if kind.startswith(("error", "warning")) else kind: int(n) for n, kind in found}
    return {}


def progress_counts(output: str) -> dict[str, int]:
    """Counts from pytest -q's progress characters, for a run cut short before its summary."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for line in output.splitlines():
        marks = re.fullmatch(r"([.FEsxX]+)\s*(\[\s*\d+%\])?", line.strip())
        if marks:
            for char, kind in ((".", "passed"), ("F", "failed"), ("s", "skipped"), ("E", "error")):
                counts[kind] += marks.group(1).count(char)
    return counts


def format_counts(counts: dict[str, int]) -> str:
    parts = [f"{counts.get('passed', 0)} passed", f"{counts.get('failed', 0)} failed"]
    parts += [f"{counts[k]} {k}" for k in ("error", "skipped", "xfailed", "xpassed") if counts.get(k)]
    return ", ".join(parts)


def failure_lines(output: str) -> list[str]:
    """pytest's short-summary lines for failures and errors ('FAILED tests/x.py::t - AssertionError: ...')."""
    return [line.strip() for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


# ------------------------------------------------------------------------------------------------ header
def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of avx2 / avx512_bf16 it has (as bench/RESULTS.md records machines)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags |= set(value.split())
    return model, sorted(flags & {"avx2", "avx512_bf16"})


def header(check: Check, argv: list[str]) -> list[str]:
    device = check.device
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if check.cuda:
        props = torch.cuda.get_device_properties(device)
        name = props.name
        free = available_memory(device)
        what = (f"{name} ({torch.cuda.device_count()} GPU(s) visible; {gib(props.total_memory)} total, "
                f"{gib(free) if free is not None else '?'} free at the start)")
    else:
        name = "CPU"
        what = f"the CPU ({os.cpu_count()} cores, {plural(torch.get_num_threads(), 'torch thread')}; no GPU used)"
    model, flags = cpu_description()
    cuda_build = torch.version.cuda or "none"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    quick = ", --quick: tiny sizes and step counts; row labels name the full-size rows they stand for" \
        if check.settings.quick else ""
    return [f"### GPU check: {name}, {date}", "",
            f"- device: {what}; default memory budget {gib(check.budget_bytes)} (half of the free memory)",
            f"- torch {torch.__version__}, CUDA {cuda_build}, cuDNN {cudnn or 'none'}, "
            f"Python {platform.python_version()}",
            f"- CPU: {model}, {os.cpu_count()} cores, flags: {' '.join(flags) or 'neither avx2 nor avx512_bf16'}",
            f"- date: {date}",
            f"- command: `python bench/gpu_check.py{' ' + ' '.join(argv) if argv else ''}`{quick}",
            "- timings: warm-up excluded, torch.cuda.synchronize around each; peak GPU memory = "
            "torch.cuda.max_memory_allocated, reset before each row"]


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda when available, else stop and say so (use --device cpu to run anyway)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and step counts (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("output") / "gpu_check.md",
                        help="the Markdown report (default output/gpu_check.md)")
    parser.add_argument("--budget_s", type=float, default=540.0,
                        help="total seconds, counted from the process start; rows past it are skipped (default 540)")
    parser.add_argument("--tests_cap_s", type=float, default=240.0,
                        help="most seconds the CUDA tests may take of the budget (default 240)")
    parser.add_argument("--skip_tests", action="store_true", help="do not run `pytest -m cuda`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --device cpu to run the "
              "check on the CPU", file=sys.stderr)
        return 2
    device = torch.device(args.device or "cuda")
    if args.quick and device.type == "cpu":  # a smoke run: tiny tensors gain nothing from more threads, and idle
        torch.set_num_threads(1)               # OpenMP threads spin on a busy machine (3x slower on 2 shared cores)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CLI run too
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        check = Check(args, device, Settings.make(args.quick), args.out, Path(work))
        check.budget_bytes = default_budget(device)
        check.header = header(check, argv)
        finished = False
        try:
            check.run()
            finished = True
        finally:
            text = check.write(finished)
    print(text)
    failed = any(r.failed for r in check.rows) or any((r.value or 0) > 0 for r in check.rows if r.section == "tests")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
