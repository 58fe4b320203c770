#!/usr/bin/env python3
"""Time to quality of iterative runs: seconds until a result is at least as good as the reference's on every number.

    python bench/gatys_reference.py --out bench_out/reference                 # the reference, once
    python stylefusion.py --content_image bench_out/reference/content.png \
        --style_image bench_out/reference/style.png --output_format png \
        --epochs 30 --steps_per_epoch 10 --output_dir bench_out/default        # a run, an image every 10 steps
    python bench/time_to_quality.py --reference bench_out/reference bench_out/default [more run folders]
    python bench/time_to_quality.py --all            # ttq_pairs.PAIRS + HELD_OUT + FRESH: the table of bench/RESULTS.md
    python bench/time_to_quality.py --all --variant arbitrary=init:arbitrary content=init:content   # compare starts

--all makes each pair's reference when missing (about 12 min each on 2 quiet cores), runs each variant ("default":
the library's own default run, stopping rule included) on the reference's inputs with an image every 10 steps,
and prints per pair and variant: the first step at parity (#26: content error and mean style error no worse than
the reference's 500-step result, no layer more than 10 % worse), where the run stopped, and the numbers there.
Seconds are steps x per-step times given with --ref_step_seconds/--run_step_seconds, plus a variant's stroke steps
(stroke_steps:N) x --stroke_step_seconds (all measured on a quiet machine with --time_steps), so load beside the
runs does not matter.

The runs take the reference's own resized inputs (content.png, style.png), and the scorer scores against them
by default: a run given the original files would resize the painting with another filter and be scored
against a slightly different style (see gatys_reference.py).

"At least as good" is bench/score.py's criterion: content error at relu4_2 and the Gram error of each of
relu1_1 ... relu5_1 all no higher than the reference's final image's. A run's times are its loss_log.csv
`seconds` column at the last step of each epoch (start-up before the first step, i.e. loading the images and
VGG, is not counted, as the reference's times.json does not count it either). Runs made beside other jobs
can be retimed with per-step times measured on a quiet machine (--ref_step_seconds, --run_step_seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score import STYLE_LAYERS, Score, Scorer, load  # noqa: E402


def run_points(folder: Path) -> list[tuple[int, float, Path]]:
    """(step, seconds, image) after each epoch of a stylefusion.py run folder."""
    with open(folder / "loss_log.csv") as f:
        rows = list(csv.DictReader(f))
    last: dict[int, tuple[int, float]] = {}
    for row in rows:
        last[int(row["epoch"])] = (int(row["step"]), float(row["seconds"]))
    points = []
    for epoch, (step, seconds) in sorted(last.items()):
        image = next(iter(sorted(folder.glob(f"epoch_{epoch:03d}.*"))), None)
        if image is not None:
            points.append((step, seconds, image))
    return points


def tol_stops(folder: Path, tols: list[float]) -> dict[float, int | None]:
    """Where --tol would have stopped a single-size run (the run is the same up to the stop, so its own loss
    log tells): {tol: step}, None when it would have run every step."""
    from stylefusion.iterative.gatys import Convergence

    with open(folder / "loss_log.csv") as f:
        totals = [float(row["total"]) for row in csv.DictReader(f)]
    stops: dict[float, int | None] = {}
    for tol in tols:
        convergence = Convergence(tol)
        stops[tol] = next((i + 1 for i, loss in enumerate(totals) if convergence.update(loss)), None)
    return stops


def reference_points(folder: Path) -> list[tuple[int, float, Path]]:
    """(step, seconds, image) of each snapshot of a gatys_reference.py folder."""
    times = json.loads((folder / "times.json").read_text())["seconds"]
    return [(int(p.stem.split("_")[1]), times[int(p.stem.split("_")[1]) - 1], p)
            for p in sorted(folder.glob("step_*.png"))]


def retimed(points: list[tuple[int, float, Path]], step_seconds: float | None) -> list[tuple[int, float, Path]]:
    """The points with seconds = step x step_seconds when that is given."""
    return points if step_seconds is None else [(step, step * step_seconds, image) for step, _, image in points]


def row(name: str, step: int, seconds: float, s: Score, ok: bool) -> str:
    grams = " | ".join(f"{s.grams[k]:.3f}" for k in STYLE_LAYERS)
    return f"| {name} | {step} | {seconds:.0f} | {s.content:.3f} | {grams} | {'yes' if ok else ''} |"


def parse_variant(text: str) -> tuple[str, dict]:
    """'name=init:arbitrary,pyramid_levels:4' -> ('name', {'init': 'arbitrary', 'pyramid_levels': 4}); a value
    holding commas writes them as ';' ('style_layers:relu1_1;relu3_1:2' -> 'relu1_1,relu3_1:2')."""
    name, _, spec = text.partition("=")
    options = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        options[key] = int(value) if value.isdigit() else float(value) if value.replace(".", "", 1).replace(
            "e-", "", 1).isdigit() else value.replace(";", ",")
    return name, options


def time_steps(args: argparse.Namespace) -> int:
    """--time_steps: seconds per step of the reference loop and of stylefusion in fp32 and bf16 (where the CPU
    has it), at 384 px on the first pair's inputs, median of steps 3-12 (on a quiet machine; give them to --all).
    Needs no 500-step reference: the timed 12-step reference run writes the resized inputs both loops use."""
    import statistics
    import subprocess
    import tempfile

    from ttq_pairs import PAIRS, SHARED

    content, painting = PAIRS[0]
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "ref"
        subprocess.run([sys.executable, str(Path(__file__).with_name("gatys_reference.py")), "--content",
                        str(SHARED / "content" / f"{content}.jpg"),
                        "--style", str(SHARED / "style" / f"{painting}.jpg"),
                        "--steps", "12", "--snapshots", "12", "--size", "384", "--out", str(reference)], check=True,
                       capture_output=True)
        times = json.loads((reference / "times.json").read_text())["seconds"]
        rows = [("reference loop", statistics.median(b - a for a, b in zip(times[1:], times[2:])))]
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from stylefusion.core.device import cpu_supports_bf16
        from stylefusion.iterative.gatys import IterativeConfig, stylize

        for precision in ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",):
            folder = Path(tmp) / precision
            # The library's default start (init auto: the rendering, on the pyramid): the steps --all's table counts;
            # 12 stroke steps before them (--stroke_steps), timed from their progress reports.
            stamps: list[float] = []
            stylize(IterativeConfig(reference / "content.png", [reference / "style.png"], folder, epochs=1,
                                    steps_per_epoch=12, precision=precision, tol=None, image_size=384,
                                    stroke_steps=12),
                    lambda p: stamps.append(time.perf_counter()) if p.strokes is not None else None)
            with open(folder / "loss_log.csv") as f:
                seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
            step = statistics.median(b - a for a, b in zip(seconds[1:], seconds[2:]))
            rows.append((f"stylefusion {precision}", step))
            rows.append((f"stylefusion {precision}, stroke step",
                         statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))))
    for name, value in rows:
        print(f"{name}: {value:.3f} s/step")
    return 0


def all_pairs(args: argparse.Namespace) -> int:
    """--all: every pair's reference and runs, one table (see the module's docstring)."""
    from ttq_pairs import FRESH, HELD_OUT, PAIRS, ensure_reference, logged_stop, pair_name, run_variant

    from stylefusion.iterative.gatys import IterativeConfig

    variants = [parse_variant(v) for v in (args.variant or ["default="])]
    print("| pair | variant | first step at parity | stopped at | at the stop: content | style (mean) | "
          + " | ".join(STYLE_LAYERS) + " | at parity at the stop | share of the reference's time, fp32 | bf16 |")
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(STYLE_LAYERS) + "---|---:|---:|")
    for content, painting in PAIRS + HELD_OUT + FRESH:
        try:
            reference = ensure_reference(args.out, content, painting)
        except FileNotFoundError as e:
            print(f"| {pair_name(content, painting)} | skipped: no reference and no photo ({e}) |", flush=True)
            continue
        scorer = Scorer(load(reference / "content.png"), load(reference / "style.png"))
        target = scorer.score(load(sorted(reference.glob("step_*.png"))[-1]))
        for name, options in variants:
            folder = run_variant(reference, args.out / "runs" / pair_name(content, painting) / name, options,
                                 None if name == "default" else args.every, args.most, args.precision)
            points = run_points(folder)
            scores = [(step, scorer.score(load(image))) for step, _, image in points]
            parity = next((step for step, s in scores if s.at_parity_with(target)), None)
            stop = logged_stop(folder)
            last_step, last = scores[-1]
            strokes = options.get("stroke_steps", IterativeConfig.stroke_steps)  # each at its own, lower cost
            shares = [(stop * run + strokes * (stroke or 0)) / (500 * args.ref_step_seconds)
                      if run and args.ref_step_seconds and (stroke or not strokes) else float("nan")
                      for run, stroke in ((args.run_step_seconds, args.stroke_step_seconds),
                                          (args.bf16_step_seconds, args.bf16_stroke_step_seconds))]
            grams = " | ".join(f"{last.grams[k]:.3f}" for k in STYLE_LAYERS)
            print(f"| {pair_name(content, painting)} | {name} | {parity or 'not reached'} | {stop} | "
                  f"{last.content:.3f} | {last.style:.3f} | {grams} | "
                  f"{'yes' if last.at_parity_with(target) else 'no'} | {shares[0]:.2f} | {shares[1]:.2f} |", flush=True)
        print(f"| {pair_name(content, painting)} | reference, 500 steps | | | {target.content:.3f} | "
              f"{target.style:.3f} | " + " | ".join(f"{target.grams[k]:.3f}" for k in STYLE_LAYERS) + " | | 1 | |",
              flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(__file__).resolve().parents[2] / "shared" / "images"
    p.add_argument("--content", default=None, help="default: the reference's content.png (else tubingen.jpg)")
    p.add_argument("--style", default=None, help="default: the reference's style.png (else starry_night.jpg)")
    p.add_argument("--size", type=int, default=512, help="longest side the content and style are scored at")
    p.add_argument("--reference", type=Path, default=None, help="a bench/gatys_reference.py output folder")
    p.add_argument("--ref_step_seconds", type=float, default=None,
                   help="time the reference as steps x this (a per-step time measured on a quiet machine) instead "
                        "of its times.json, e.g. when it ran beside other jobs")
    p.add_argument("--run_step_seconds", type=float, default=None,
                   help="the same for the runs (L-BFGS steps at one size cost the same each)")
    p.add_argument("--stroke_step_seconds", type=float, default=None,
                   help="--all: seconds per stroke step (--stroke_steps), fp32, from --time_steps")
    p.add_argument("--bf16_stroke_step_seconds", type=float, default=None,
                   help="--all: seconds per stroke step in bf16, from --time_steps")
    p.add_argument("--bf16_step_seconds", type=float, default=None,
                   help="--all: stylefusion's per-step time in bf16, for the bf16 share of the reference's time")
    p.add_argument("--tol", type=float, nargs="*", default=[3e-3, 1e-3, 3e-4, 1e-4],
                   help="also say where each of these --tol values would have stopped each run")
    p.add_argument("runs", nargs="*", type=Path, help="stylefusion.py output folders")
    p.add_argument("--all", action="store_true", help="every pair of bench/ttq_pairs.py (see above)")
    p.add_argument("--variant", nargs="*", default=None, metavar="NAME=KEY:VALUE,...",
                   help="--all: the runs per pair (default: the library's default run only)")
    p.add_argument("--every", type=int, default=10, help="--all: steps between a run's images")
    p.add_argument("--most", type=int, default=200, help="--all: at most this many steps per run")
    p.add_argument("--precision", default="fp32", help="--all: the runs' precision (fp32: what AVX2 CPUs run)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench_out",
                   help="--all: where references and runs go (reused when there)")
    p.add_argument("--time_steps", action="store_true", help="per-step times at 384 px (see time_steps)")
    args = p.parse_args()
    if (args.time_steps or args.all) and not shared.is_dir():
        p.error(f"--time_steps and --all need the photos and paintings of {shared} (see its README)")
    if args.time_steps:
        return time_steps(args)
    if args.all:
        return all_pairs(args)
    fallbacks = {"content": shared / "content" / "tubingen.jpg", "style": shared / "style" / "starry_night.jpg"}
    for name, fallback in fallbacks.items():
        if getattr(args, name) is None:
            own = args.reference / f"{name}.png"
            setattr(args, name, own if own.exists() else fallback)

    scorer = Scorer(load(args.content, args.size), load(args.style, args.size))
    ref = retimed(reference_points(args.reference), args.ref_step_seconds)
    ref_step, ref_seconds, ref_image = ref[-1]
    target = scorer.score(load(ref_image))
    print("| run | step | seconds | content | " + " | ".join(STYLE_LAYERS) + " | as good as the reference |")
    print("|---|---:|---:|---:|" + "---:|" * len(STYLE_LAYERS) + "---|")
    summary = [f"reference: {ref_step} steps in {ref_seconds:.0f} s"]
    runs = [(r.name, retimed(run_points(r), args.run_step_seconds)) for r in args.runs]
    for name, points in [("reference", ref), *runs]:
        reached = None
        for step, seconds, image in points:
            s = scorer.score(load(image))
            ok = s.at_least_as_good_as(target)
            print(row(name, step, seconds, s, ok))
            if ok and reached is None:
                reached = (step, seconds)
        if name != "reference":
            summary.append(f"{name}: " + (f"reference quality at step {reached[0]}, {reached[1]:.0f} s = "
                                          f"{reached[1] / ref_seconds:.2f} of the reference's time" if reached
                                          else "never reached the reference quality"))
    for folder in args.runs:
        for tol, stop in tol_stops(folder, args.tol).items():
            summary.append(f"{folder.name} with --tol {tol:g}: " + (f"stops after step {stop}" if stop else
                                                                    "runs every step"))
    print("\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
