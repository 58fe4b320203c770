#!/usr/bin/env python3
"""Benchmark of fast style transfer inference (Johnson et al.): network forward, image mode, whole runs.

    python bench/fast.py                 # 512² and 1080² forwards, 20 images, a whole run on one 1080² image
    python bench/fast.py --quick         # smoke run: tiny sizes, one repetition
    python bench/fast.py --model_path models/udnie.pth   # default: models/udnie.pth if present, else a proxy

Targets (2-core CPU with AVX512-BF16): forward at 1080² within 1.3 s in bf16 with PSNR >= 40 dB against fp32;
a whole `--mode image` run on one 1080² image in at most half the time of a plain per-image fp32 eager loop.
Timings are the minimum over --reps interleaved repetitions (the variants take turns, so a busy machine
slows all of them alike). Content image: ../shared/images/content/amber.jpg when present, else a synthetic one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np    # noqa: E402
import torch    # noqa: E402

from stylefusion.core.device import cpu_supports_bf16  # noqa: E402
from stylefusion.networks.inference import retain_freed_memory    # noqa: E402
from stylefusion.core.images import load_pil, pil_to_tensor, resize_to, save_image    # noqa: E402
from stylefusion.run.folder import ImageOptions, plan_images, stylize_images  # noqa: E402
from stylefusion.run.stylizer import Stylizer  # noqa: E402
from stylefusion.networks.transformer import TransformerNet    # noqa: E402
from stylefusion.networks.model_files import load_model, save_model

SECTIONS = ["forward", "images", "whole", "reference"]
SHARED = REPO.parent / "shared" / "images"
AMBER = SHARED / "content" / "amber.jpg"
REFERENCE = SHARED / "reference"

# The per-image loop a user would write without StyleFusion: load the model for every image, fp32, eager.
PLAIN_IMPORTS = """
import sys, time, torch, numpy as np
from PIL import Image
sys.path.insert(0, {repo!r})
from stylefusion.networks.transformer import TransformerNet, clean_state_dict
"""
PLAIN_LOOP = """
for src, dst in {pairs!r}:
    net = TransformerNet()
    data = torch.load({model!r}, weights_only=True)
    net.load_state_dict(clean_state_dict(data.get("state_dict", data)))
    net.eval()
    x = torch.from_numpy(np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)
    Image.fromarray(y[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()).save(dst)
"""
# `--mode image` through the script's own main(), its modules imported first like the plain loop's.
CLI_IMPORTS = """
import sys, time
sys.path.insert(0, {repo!r})
import fast_style_transfer, tqdm, stylefusion.run.stylizer, stylefusion.networks.transformer
"""
CLI_RUN = """
assert fast_style_transfer.main({argv!r}) == 0
"""
# Timed from inside the fresh process, after the imports: prints the run's own seconds.
TIMED = """{imports}
_start = time.perf_counter()
{run}
print("RUN_SECONDS", time.perf_counter() - _start)
"""


def proxy_model(path: Path, steps: int) -> Path:
    """A stand-in for a trained model: a network fitted for a few steps to a fixed smooth colour mapping.

    Random weights are no stand-in for PSNR: a random deep network is chaotic and blows rounding errors up
    (bf16 vs fp32 is about 35 dB there, against about 61 dB for this proxy or a briefly trained network).
    """
    torch.manual_seed(0)
    net = TransformerNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    source = content_image(256)
    for _ in range(steps):
        i, j = torch.randint(0, 256 - 128, (2,)).tolist()
        x = resize_to(source[:, i:i + 128, j:j + 128], (64, 64))[None]
        target = torch.nn.functional.avg_pool2d(torch.stack([x[:, 1] * 0.8 + 0.2, x[:, 2] * 0.6 + x[:, 0] * 0.3,
                                                             1 - x[:, 0]], 1), 5, 1, 2)
        loss = torch.nn.functional.mse_loss(net(x * 255) / 255, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model(net, path, {"note": f"benchmark proxy, {steps} steps"})
    return path


def content_image(size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: amber.jpg when available, else smooth gradients with a few blocks."""
    if AMBER.exists():
        return resize_to(pil_to_tensor(load_pil(AMBER)), (size, size))
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    for _ in range(12):
        x0, y0, w, h = (rng.integers(0, size // 2) for _ in range(4))
        img[y0:y0 + h + 2, x0:x0 + w + 2] = rng.uniform(0.1, 0.9, 3)
    img += rng.normal(0, 0.02, img.shape)
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)).permute(2, 0, 1)


def conv_flops(net: torch.nn.Module, size: int) -> float:
    """Multiply-adds x 2 of every convolution for one size x size image."""
    total = [0.0]

    def hook(module: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2.0 * output.numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0]


def interleaved(variants: dict[str, Callable[[], torch.Tensor]], reps: int) -> tuple[dict[str, float],
                                                                                     dict[str, torch.Tensor]]:
    """Warm each variant up once, then time `reps` rounds taking turns; minimum seconds per variant."""
    outputs = {name: fn() for name, fn in variants.items()}
    best = {name: float("inf") for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def bench_forward(net: TransformerNet, sizes: list[int], reps: int) -> None:
    bf16 = cpu_supports_bf16()
    rows = []
    for size in sizes:
        x = content_image(size)[None]
        gflop = conv_flops(net, size) / 1e9

        def plain(precision: str, channels_last: bool) -> Callable[[], torch.Tensor]:
            model = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            inp = (x * 255).contiguous(memory_format=torch.channels_last if channels_last else
                                       torch.contiguous_format)

            def run() -> torch.Tensor:
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    return model(inp).float() / 255
            return run

        variants = {"fp32 eager (plain)": plain("fp32", False)}
        stylizers = {"fp32 Stylizer (channels_last)": Stylizer(net, "cpu", "fp32")}
        if bf16:
            variants["bf16 autocast"] = plain("bf16", False)
            variants["bf16 autocast, channels_last"] = plain("bf16", True)
            stylizers["bf16 Stylizer (bf16 net, channels_last)"] = Stylizer(net, "cpu", "bf16")
        variants.update({name: (lambda s=s: s(x)) for name, s in stylizers.items()})
        best, outputs = interleaved(variants, reps)
        net.to(memory_format=torch.contiguous_format)
        reference = outputs["fp32 eager (plain)"]
        for name in variants:
            rows.append([f"{size}²", name, f"{best[name]:.3f}", f"{gflop / best[name]:.0f}",
                         "-" if name.startswith("fp32 eager") else f"{psnr(outputs[name], reference):.1f}"])
        rows.append([f"{size}²", f"({gflop:.1f} GFLOP per image)", "", "", ""])
    table("Network forward, batch 1 (PSNR against fp32 eager, images in [0, 1])",
          ["size", "variant", "seconds", "GFLOP/s", "PSNR dB"], rows)


def bench_image_mode(net: TransformerNet, model_path: Path, work: Path, count: int, size: tuple[int, int],
                     reps: int) -> None:
    src = work / "images"
    src.mkdir()
    for i in range(count):
        img = content_image(max(size))[:, : size[1], : size[0]]
        save_image(img.roll(shifts=17 * i, dims=-1), src / f"{i:03d}.jpg")
    rows = []
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    for precision in precisions:
        stylizer = Stylizer(net, "cpu", precision)
        best = float("inf")
        for rep in range(reps):
            plan = plan_images(src, work / f"out-{precision}-{rep}")
            start = time.perf_counter()
            stylize_images(plan, stylizer, ImageOptions(batch_size=4))
            best = min(best, time.perf_counter() - start)
        rows.append([f"stylize_images, {precision}, batch 4", f"{best:.2f}", f"{count / best:.2f}"])
    start = time.perf_counter()
    pairs = [(str(p), str(work / f"plain-{p.name}")) for p in sorted(src.iterdir())]
    exec(PLAIN_IMPORTS.format(repo=str(REPO)) + PLAIN_LOOP.format(pairs=pairs, model=str(model_path)), {})  # noqa: S102
    plain = time.perf_counter() - start
    rows.append(["plain loop: load model + fp32 eager per image", f"{plain:.2f}", f"{count / plain:.2f}"])
    table(f"Image mode over {count} images of {size[0]}x{size[1]} (in-process)",
          ["run", "seconds", "images/s"], rows)


def bench_whole_run(model_path: Path, work: Path, size: int, reps: int) -> None:
    src = work / "one"
    src.mkdir()
    save_image(content_image(size), src / "image.jpg")
    fmt = {"repo": str(REPO)}
    plain = PLAIN_LOOP.format(pairs=[(str(src / "image.jpg"), str(work / "plain-one.jpg"))], model=str(model_path))
    commands = {"plain loop (fp32 eager, loads the model)": TIMED.format(imports=PLAIN_IMPORTS.format(**fmt),
                                                                         run=plain)}
    for precision in ["fp32"] + (["bf16"] if cpu_supports_bf16() else []):
        argv = ["--mode", "image", "--input_images_dir", str(src), "--output_images_dir",
                str(work / f"whole-{precision}"), "--model_path", str(model_path), "--precision", precision]
        commands[f"--mode image --precision {precision}"] = TIMED.format(imports=CLI_IMPORTS.format(**fmt),
                                                                          run=CLI_RUN.format(argv=argv))
    total = {name: float("inf") for name in commands}
    inside = dict(total)
    for _ in range(reps):
        for name, code in commands.items():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
            total[name] = min(total[name], time.perf_counter() - start)
            seconds = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN_SECONDS")]
            inside[name] = min(inside[name], float(seconds[-1]))
    base = "plain loop (fp32 eager, loads the model)"
    rows = [[name, f"{total[name]:.2f}", f"{total[name] / total[base]:.2f}", f"{inside[name]:.2f}",
             f"{inside[name] / inside[base]:.2f}"] for name in commands]
    table(f"Whole run on one {size}x{size} image, each in a fresh process; 'run' excludes the interpreter "
          f"start and imports (torch alone takes 1-2 s)",
          ["command", "total s", "x plain", "run s", "x plain"], rows)


def bench_reference(model_path: Path) -> None:
    """PSNR of our output on amber.jpg against pytorch/examples' own output, for a released model."""
    style = model_path.stem.replace("_", "-")
    ref = REFERENCE / f"amber-{style}.jpg"
    if not (AMBER.exists() and ref.exists()):
        return
    net, _ = load_model(model_path)
    x = pil_to_tensor(load_pil(AMBER))[None]
    want = pil_to_tensor(load_pil(ref))[None]
    rows = [[precision, f"{psnr(Stylizer(net, 'cpu', precision)(x), want):.1f}"]
            for precision in ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])]
    table(f"{model_path.name} on amber.jpg against pytorch/examples' {ref.name} (JPEG, so not exact)",
          ["precision", "PSNR dB"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repetition")
    parser.add_argument("--model_path", default=None, help="model to time (default: models/udnie.pth, else a proxy)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, quick 1)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="forward sizes (default 512 1080; quick 64)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="tables to produce")
    parser.add_argument("--whole_size", type=int, default=None, help="image side of the whole-run table "
                        "(default 1080; quick 64)")
    parser.add_argument("--proxy_steps", type=int, default=80,
                        help="training steps of the proxy model used when there is no --model_path")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    warnings.simplefilter("ignore")
    retain_freed_memory()  # as fast_style_transfer.py --mode image does (every variant here benefits)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: {cpu_supports_bf16()}")
    with tempfile.TemporaryDirectory(prefix="bench-fast-") as tmp:
        work = Path(tmp)
        default = REPO / "models" / "udnie.pth"
        model_path = Path(args.model_path) if args.model_path else (default if default.exists() else None)
        if model_path is None:
            steps = 5 if args.quick else args.proxy_steps
            model_path = proxy_model(work / "proxy.pth", steps)
            print(f"model: proxy (no models/udnie.pth): fitted {steps} steps to a smooth colour mapping")
        else:
            print(f"model: {model_path}")
        net, _ = load_model(model_path)
        if "forward" in args.only:
            bench_forward(net, args.sizes or ([64] if args.quick else [512, 1080]), reps)
        if "images" in args.only:
            bench_image_mode(net, model_path, work, 20, (48, 32) if args.quick else (640, 480), reps)
        if "whole" in args.only:
            bench_whole_run(model_path, work, args.whole_size or (64 if args.quick else 1080), reps)
        if "reference" in args.only and not args.quick:
            bench_reference(model_path)


if __name__ == "__main__":
    main()
