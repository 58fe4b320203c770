"""The live page (stylefusion/live.py): the JSON and image endpoints against what was fed, the CLIs' --live,
and (when chromium is installed) a real headless browser watching an iterative run."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fast_train_data import IMAGE_SIZE, make_dataset, make_style
from helpers import scene, stripes
from stylefusion.core.errors import ConfigError
from stylefusion.live import LiveServer, report_iterative, report_training

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def get(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def state(server_url: str) -> dict:
    status, kind, body = get(server_url + "state")
    assert status == 200 and kind == "application/json"
    return json.loads(body)


@pytest.fixture
def live():
    server = LiveServer("unit <test>")
    yield server
    server.close()


def test_state_matches_what_was_fed(live: LiveServer) -> None:
    assert live.address[0] == "127.0.0.1" and live.address[1] > 0
    assert live.url == f"http://127.0.0.1:{live.address[1]}/"
    for step in (1, 2, 3):
        live.update(step=step, total_steps=10, losses={"content": 1.5 / step, "style": 0.25 * step},
                    info={"epoch": "1/2"})
    live.update(losses={"content": math.nan, "style": 1.0, "tv": 0.0}, step=4)
    data = state(live.url)
    assert data["step"] == 4 and data["total_steps"] == 10 and data["epoch"] == "1/2"
    assert data["losses"] == {"content": None, "style": 1.0, "tv": 0.0}  # NaN becomes null (valid JSON)
    assert data["history"]["steps"] == [1, 2, 3, 4]
    assert data["history"]["series"]["content"] == [1.5, 0.75, 0.5, None]
    assert data["history"]["series"]["style"] == [0.25, 0.5, 0.75, 1.0]
    assert data["history"]["series"]["tv"] == [None, None, None, 0.0]  # a curve that starts late
    assert data["image_version"] == 0 and data["done"] is False


def test_page_and_endpoints(live: LiveServer, tmp_path: Path) -> None:
    status, kind, body = get(live.url)
    assert status == 200 and kind.startswith("text/html")
    page = body.decode()
    assert "unit &lt;test&gt;" in page and "/state" in page and "/image" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no external assets
    assert get(live.url + "image")[0] == 404  # nothing yet
    assert get(live.url + "nothing")[0] == 404

    frame = np.zeros((20, 30, 3), np.uint8)
    frame[:, :15] = (255, 0, 0)
    live.update(image=frame)
    status, kind, body = get(live.url + "image?v=1")
    assert status == 200 and kind == "image/jpeg"
    decoded = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
    assert decoded.shape == (20, 30, 3)
    assert decoded[10, 5, 0] > 200 and decoded[10, 25].max() < 40  # the same picture, not any picture

    scene((40, 32)).save(tmp_path / "epoch_001.png")
    live.update(image=tmp_path / "epoch_001.png")
    status, kind, body = get(live.url + "image")
    assert (status, kind, body) == (200, "image/png", (tmp_path / "epoch_001.png").read_bytes())
    live.update(image=torch.full((3, 8, 12), 0.5))  # a (3, H, W) tensor in [0, 1]
    assert state(live.url)["image_version"] == 3
    image = Image.open(io.BytesIO(get(live.url + "image")[2]))
    assert image.size == (12, 8) and abs(np.asarray(image).mean() - 128) < 3


def test_history_stays_bounded_and_keeps_the_latest() -> None:
    with LiveServer("bounded", max_points=100) as server:
        for step in range(1, 5001):
            server.update(step=step, losses={"total": float(step)})
        history = server.state()["history"]
    assert len(history["steps"]) <= 100
    assert history["steps"][0] == 1 and history["steps"][-1] == 5000
    assert history["steps"] == sorted(history["steps"])
    assert history["series"]["total"] == [float(s) for s in history["steps"]]


def test_update_is_cheap() -> None:
    """The callback only stores values: far below a millisecond, so a run is not slowed measurably."""
    with LiveServer("cheap") as server:
        image = np.zeros((512, 512, 3), np.uint8)
        started = time.perf_counter()
        for step in range(2000):
            server.update(step=step, total_steps=2000, losses={"content": 1.0, "style": 2.0, "total": 3.0},
                          info={"epoch": "1/1"}, image=image if step % 100 == 0 else None)
        per_call = (time.perf_counter() - started) / 2000
    assert per_call < 200e-6, f"{per_call * 1e6:.0f} us per update"


def test_busy_port_is_a_one_line_error(live: LiveServer) -> None:
    with pytest.raises(ConfigError, match=r"cannot serve the live page on 127\.0\.0\.1:\d+"):
        LiveServer("second", port=live.address[1])


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_ports_outside_0_to_65535_are_one_line_errors(port: int) -> None:
    with pytest.raises(ConfigError, match="0-65535"):
        LiveServer("bad port", port=port)


def test_every_interface_is_said_and_usable_addresses_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from stylefusion_cli.common import start_live

    with LiveServer("local") as server:
        assert not server.is_public and server.urls == [server.url] and "127.0.0.1" in server.url
    server = start_live(SimpleNamespace(live=True, live_host="0.0.0.0", live_port=0), "open")
    try:
        lines = capsys.readouterr().err.splitlines()
        assert server.is_public and server.urls[0].startswith("http://127.0.0.1:")
        assert len(lines) == 2 and lines[0].startswith("warning: ") and "open to the network" in lines[0]
        assert lines[1] == "live view: " + " ".join(server.urls) and "0.0.0.0" not in lines[1]
        with urllib.request.urlopen(server.urls[0] + "state", timeout=10) as response:  # the printed address works
            assert json.load(response)["title"] == "open"
    finally:
        server.close()


def test_progress_adapters(live: LiveServer, tmp_path: Path) -> None:
    report_iterative(live, SimpleNamespace(step=7, total_steps=20, epoch=2, epochs=4, size=(36, 48),
                                           content_loss=0.5, style_loss=0.25, tv_loss=0.0, total_loss=0.75,
                                           elapsed=1.234, saved=None))
    report_iterative(live, SimpleNamespace(step=7, total_steps=20, epoch=2, epochs=4, size=(36, 48),
                                           content_loss=0.5, style_loss=0.25, tv_loss=0.0, total_loss=0.75,
                                           elapsed=1.3, saved=tmp_path / "epoch_002.jpg"))
    data = state(live.url)
    assert data["losses"] == {"content": 0.5, "style": 0.25, "tv": 0.0, "total": 0.75}
    assert data["size"] == "48x36" and data["epoch"] == "2/4" and data["image_version"] == 1
    assert data["history"]["steps"] == [7]  # the epoch's image report adds no point
    report_training(live, SimpleNamespace(step=8, total_steps=9, epoch=0, epochs=1, content=1.0, style=2.0, tv=0.0,
                                          stability=0.5, total=3.5, images_per_s=4.0, preview=None, checkpoint=None))
    data = state(live.url)
    assert data["losses"]["stability"] == 0.5 and data["images_per_s"] == 4.0 and data["image_version"] == 1


# ------------------------------------------------------------------------------------------- via the CLIs
def _read_url(proc: subprocess.Popen, deadline: float) -> str:
    """The URL from the first 'live view:' stderr line (other lines are collected in proc.lines)."""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        proc.lines.append(line)
        if match := re.search(r"live view: (http://127\.0\.0\.1:\d+/)", line):
            return match.group(1)
    raise AssertionError("no live view URL on stderr: " + "".join(proc.lines))


def test_iterative_cli_serves_the_run(tmp_path: Path) -> None:
    scene((48, 36)).save(tmp_path / "content.png")
    stripes((40, 40)).save(tmp_path / "style.png")
    proc = subprocess.Popen([sys.executable, "stylefusion.py", "--content_image", str(tmp_path / "content.png"),
                             "--style_image", str(tmp_path / "style.png"), "--output_dir", str(tmp_path / "out"),
                             "--image_size", "40", "--epochs", "3", "--steps_per_epoch", "2", "--device", "cpu",
                             "--quiet", "--live"], cwd=REPO, env=ENV, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    proc.lines = []
    try:
        url = _read_url(proc, time.monotonic() + 60)
        seen: dict[int, dict] = {}
        images, finished = 0, False
        while proc.poll() is None:
            try:
                data = state(url)
                finished = finished or data["done"]  # the server may close right after this answer
                if data["image_version"] and not data["done"]:
                    status, kind, body = get(url + "image")
                    assert status == 200 and kind == "image/jpeg"
                    width, height = Image.open(io.BytesIO(body)).size  # a whole image at the working size
                    assert f"{width}x{height}" == data["size"]
                    images += 1
            except (urllib.error.URLError, ConnectionError):
                proc.wait(timeout=60)  # only the end of the run closes the server (checked below)
                break
            if data.get("step") and not data["done"]:
                seen[data["step"]] = data
            time.sleep(0.05)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, "".join(proc.lines) + rest
    finally:
        proc.kill()
        proc.wait()
    assert seen and images, f"saw {len(seen)} steps and {images} images"
    assert finished  # a watching page is shown the end before the server closes (not "connection lost")
    assert "".join(proc.lines + [rest]).count("live view:") == 1
    with (tmp_path / "out" / "loss_log.csv").open() as f:
        log = {int(row["step"]): row for row in csv.DictReader(f)}
    for step, data in seen.items():  # every value the page showed is the run's logged value
        for name in ("content", "style", "total"):
            assert data["losses"][name] == pytest.approx(float(log[step][name]), rel=1e-5)
        assert data["history"]["steps"] == list(range(1, step + 1))


def test_train_cli_prints_the_url_once(tmp_path: Path) -> None:
    dataset, style = make_dataset(tmp_path / "dataset"), make_style(tmp_path / "style.png")
    proc = subprocess.run([sys.executable, "fast_style_transfer.py", "--mode", "train", "--style_image", str(style),
                           "--content_dataset", str(dataset), "--model_save_path", str(tmp_path / "m.pth"),
                           "--image_size", str(IMAGE_SIZE), "--batch_size", "2", "--max_steps", "2", "--device",
                           "cpu", "--num_workers", "0", "--preview_interval", "1", "--live", "--live_port", "0"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"live view: http://127\.0\.0\.1:\d+/", proc.stderr)) == 1, proc.stderr
    assert (tmp_path / "m.pth").exists()


# ---------------------------------------------------------------------------------------- a real browser
def _dump_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                               "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _attribute(dom: str, pattern: str) -> str:
    match = re.search(pattern, dom)
    assert match, f"{pattern!r} not in the page: {dom[:3000]}"
    return match.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_browser_watches_an_iterative_run(tmp_path: Path) -> None:
    from stylefusion.iterative.gatys import IterativeConfig, stylize

    scene((48, 36)).save(tmp_path / "content.png")
    stripes((40, 40)).save(tmp_path / "style.png")
    doms: list[tuple[int, str]] = []
    with LiveServer("browser test") as server:
        def on_progress(p) -> None:
            report_iterative(server, p)
            if p.saved is not None and p.epoch <= 2:  # look at the page after epochs 1 and 2
                doms.append((p.step, _dump_dom(server.url)))

        config = IterativeConfig(content_image=tmp_path / "content.png", style_images=[tmp_path / "style.png"],
                                 output_dir=tmp_path / "out", image_size=40, epochs=3, steps_per_epoch=2,
                                 device="cpu", output_format="png")
        stylize(config, on_progress)
    with (tmp_path / "out" / "loss_log.csv").open() as f:
        log = {int(row["step"]): row for row in csv.DictReader(f)}
    versions = []
    for step, dom in doms:
        assert int(_attribute(dom, r'<body[^>]*data-step="(\d+)"')) == step
        assert f"step {step} of 6" in dom
        versions.append(int(_attribute(dom, r'<img id="image"[^>]*data-loaded-version="(\d+)"')))
        for name in ("content", "style", "total"):
            shown = float(_attribute(dom, rf'id="loss-{name}" data-value="([^"]+)"'))
            assert shown == pytest.approx(float(log[step][name]), rel=1e-5)
        assert "<polyline" in dom  # the curve is drawn
    assert versions == [1, 2]  # the browser loaded (decoded) a new image after each epoch


def test_idle_connections_are_bounded_and_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that connect and send nothing: at most MAX_CONNECTIONS held (each a thread and a file descriptor;
    enough of them made the run's own writes fail with EMFILE), each dropped after the request timeout."""
    import socket

    from stylefusion import live as live_module

    monkeypatch.setattr(live_module, "REQUEST_TIMEOUT_S", 0.5)
    server = LiveServer("idle")
    clients = []
    try:
        before = len(os.listdir("/proc/self/fd"))
        clients = [socket.create_connection(server.address[:2], timeout=5) for _ in range(100)]
        time.sleep(0.5)
        held = len(os.listdir("/proc/self/fd")) - before - len(clients)  # the server's side of them
        assert held <= live_module.MAX_CONNECTIONS + 2, held
        time.sleep(1.0)  # past the timeout: the page serves again
        assert get(server.url)[0] == 200
    finally:
        for client in clients:
            client.close()
        server.close()


def test_head_requests_and_ipv6(live: LiveServer) -> None:
    request = urllib.request.Request(live.url + "state", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        assert int(response.headers["Content-Length"]) > 0 and response.read() == b""
    try:
        server = LiveServer("v6", host="::1")
    except ConfigError as exc:  # no IPv6 on this machine: the error says so in one line
        pytest.skip(str(exc))
    try:
        assert server.url.startswith("http://[::1]:") and state(server.url)["title"] == "v6"
    finally:
        server.close()


def test_an_empty_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="host is empty"):
        LiveServer("nowhere", host="")


def test_finish_lets_a_watching_page_see_it(live: LiveServer) -> None:
    started = time.monotonic()
    live.finish()  # nobody watching: no wait
    assert time.monotonic() - started < 0.5
    watched = LiveServer("watched")
    seen = []
    try:
        state(watched.url)  # a page has polled

        def poll() -> None:
            time.sleep(0.3)
            seen.append(state(watched.url)["done"])

        import threading

        poller = threading.Thread(target=poll)
        poller.start()
        watched.finish()  # waits for that poll
        poller.join()
        assert seen == [True]
    finally:
        watched.close()
