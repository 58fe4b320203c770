#!/usr/bin/env python3
"""Make docs/live.png: a short iterative run on the sample images, its --live page shot by headless chromium.

    python docs/screenshot_live.py            # needs chromium on PATH; about a minute on a laptop CPU
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from stylefusion.iterative.gatys import IterativeConfig, IterativeProgress, stylize  # noqa: E402
from stylefusion.live import LiveServer, report_iterative  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
EPOCHS = 3


def screenshot(url: str, target: Path, browser: str) -> None:
    """Load the page in a fresh headless profile, let it poll once, and save a PNG of the window."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1100,620",
                        "--virtual-time-budget=3000", f"--screenshot={target}", url],
                       check=True, capture_output=True, timeout=120)


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed", file=sys.stderr)
        return 1
    target = REPO / "docs" / "live.png"
    with tempfile.TemporaryDirectory() as tmp, LiveServer("StyleFusion: city.jpg (iterative)") as live:
        raw = Path(tmp) / "shot.png"

        def on_progress(p: IterativeProgress) -> None:
            report_iterative(live, p)
            if p.saved is not None and p.epoch == EPOCHS - 1:  # mid-run: the progress bar is not full
                screenshot(live.url, raw, browser)

        config = IterativeConfig(content_image=REPO / "data" / "city.jpg", style_images=[REPO / "data" / "udnie.jpg"],
                                 output_dir=Path(tmp) / "out", image_size=256, epochs=EPOCHS, steps_per_epoch=6)
        stylize(config, on_progress)
        # A 256-colour palette keeps the PNG small (the page is flat colours, the image is small).
        Image.open(raw).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
