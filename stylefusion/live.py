"""A local web page that shows a run as it happens: the current image, loss curves and progress.

`LiveServer` serves on 127.0.0.1 (an OS-chosen free port by default) from a daemon thread with the standard
library's ThreadingHTTPServer. The run's progress callback calls `update(...)`, which only stores the latest
values under a lock (no encoding, no I/O): images are read or encoded lazily when the page asks for them.
The page (inline HTML + JS + SVG, no external assets) polls `/state` (JSON) and reloads `/image` only when
the image changed.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import math
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .core.errors import ConfigError

MAX_PORT = 65535
MAX_POINTS = 2000            # history points kept per curve; older ones are thinned 2:1 beyond that
POLL_MS = 1000               # how often the page asks for the state
# Connections served at once, and how long one may sit without sending its request: idle connections each held a
# thread and a file descriptor until the run ended, and enough of them made the run's own writes fail (EMFILE).
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_S = 10.0
_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                ".bmp": "image/bmp"}


def _own_addresses(ipv6: bool) -> list[str]:
    """This machine's non-loopback addresses (the one with the default route first), for a wildcard bind."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    found = []
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        # connect() on UDP sends nothing: it only asks the kernel which local address would route there.
        probe.connect(("2001:db8::1" if ipv6 else "192.0.2.1", 9))
        found.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, family)]
    return [a for a in dict.fromkeys(found) if not ipaddress.ip_address(a.split("%")[0]).is_loopback]


def _finite(value: Any) -> Any:
    """JSON-safe number: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer serving at most MAX_CONNECTIONS connections at once; the ones beyond are closed."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedServer6(_BoundedServer):
    """The same on IPv6 (a host such as :: or ::1)."""

    address_family = socket.AF_INET6


class LiveServer:
    """Serves the live page; `update` stores the latest state, `close` stops the server."""

    def __init__(self, title: str, host: str = "127.0.0.1", port: int = 0, max_points: int = MAX_POINTS) -> None:
        self.title = title
        self.max_points = max(2, max_points)
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = {}
        self._steps: list[int] = []
        self._series: dict[str, list[float | None]] = {}
        self._image: Path | np.ndarray | torch.Tensor | None = None
        self._image_version = 0
        self._encoded: tuple[int, bytes, str] | None = None  # (version, bytes, content type)
        self._started = time.monotonic()
        self._done = False
        self._last_poll: float | None = None
        self._done_seen = threading.Event()
        if not isinstance(port, int) or not 0 <= port <= MAX_PORT:
            raise ConfigError(f"the live page's port must be 0-{MAX_PORT} (0: any free one), got {port}")
        if not host.strip():  # the socket's "" is every interface: said, not implied
            raise ConfigError("the live page's host is empty: give 127.0.0.1 (this machine) or 0.0.0.0 (the network)")
        server = _BoundedServer6 if ":" in host else _BoundedServer
        try:
            self._server = server((host, port), _make_handler(self))
        except (OSError, OverflowError, UnicodeError) as exc:  # OverflowError, UnicodeError: odd host names
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot serve the live page on {host}:{port}: {reason}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server is bound to."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The page's address (for a wildcard address such as 0.0.0.0: the first of `urls`)."""
        return self.urls[0]

    @property
    def is_public(self) -> bool:
        """True when the page listens on every interface (0.0.0.0, ::) or another non-loopback address."""
        host = self.address[0]
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

    @property
    def urls(self) -> list[str]:
        """Addresses a browser can open: loopback first, then this machine's own addresses for a wildcard."""
        host, port = self.address
        hosts = [host]
        if host in ("0.0.0.0", "::"):
            hosts = ["127.0.0.1" if host == "0.0.0.0" else "::1", *_own_addresses(ipv6=host == "::")]
        return [f"http://{'[' + h + ']' if ':' in h else h}:{port}/" for h in dict.fromkeys(hosts)]

    def update(self, step: int | None = None, total_steps: int | None = None,
               losses: Mapping[str, float] | None = None, image: Path | str | np.ndarray | torch.Tensor | None = None,
               info: Mapping[str, Any] | None = None, done: bool = False) -> None:
        """Record the latest progress (cheap: no encoding or I/O; an image is encoded when the page asks).

        `image` is a file written by the run (read on request), an (H, W, 3) uint8 array or a (3, H, W) float
        tensor in [0, 1] (kept by reference: pass one the run will not modify in place).
        """
        with self._lock:
            if step is not None:
                self._fields["step"] = int(step)
            if total_steps is not None:
                self._fields["total_steps"] = int(total_steps)
            if info:
                self._fields.update(info)
            if losses:
                self._fields["losses"] = {k: float(v) for k, v in losses.items()}
                self._append(self._fields.get("step", len(self._steps)), losses)
            if image is not None:
                self._image = Path(image) if isinstance(image, (str, os.PathLike)) else image
                self._image_version += 1
            self._done = self._done or done

    def _append(self, step: int, losses: Mapping[str, float]) -> None:
        """Add one point to the curves (lock held), thinning old points 2:1 when there are too many."""
        for name in losses:
            if name not in self._series:  # a new curve: no values at the earlier steps
                self._series[name] = [None] * len(self._steps)
        self._steps.append(int(step))
        for name, values in self._series.items():
            values.append(float(losses[name]) if name in losses else None)
        if len(self._steps) > self.max_points:
            keep = slice(None, None, 2)
            tail = len(self._steps) // 2  # thin the older half, keep the recent half dense
            self._steps = self._steps[:tail][keep] + self._steps[tail:]
            for name, values in self._series.items():
                self._series[name] = values[:tail][keep] + values[tail:]

    def state(self) -> dict[str, Any]:
        """The JSON the page polls: latest values, curves, image version."""
        with self._lock:
            self._last_poll = time.monotonic()
            if self._done:
                self._done_seen.set()
            fields = dict(self._fields)
            losses = {k: _finite(v) for k, v in fields.pop("losses", {}).items()}
            return {"title": self.title, **{k: _finite(v) for k, v in fields.items()}, "losses": losses,
                    "history": {"steps": list(self._steps),
                                "series": {k: [_finite(v) for v in vals] for k, vals in self._series.items()}},
                    "image_version": self._image_version if self._image is not None else 0,
                    "uptime_s": round(time.monotonic() - self._started, 3), "done": self._done}

    def image(self) -> tuple[bytes, str] | None:
        """The latest image as (bytes, content type), encoded at most once per version; None when there is none."""
        with self._lock:
            source, version, cached = self._image, self._image_version, self._encoded
        if source is None:
            return None
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        data, kind = _encode(source)
        with self._lock:
            self._encoded = (version, data, kind)
        return data, kind

    def finish(self) -> None:
        """Mark the run finished; a page polling now gets one more poll (up to two intervals) to show it."""
        self.update(done=True)
        with self._lock:
            watched = self._last_poll is not None and time.monotonic() - self._last_poll < 3 * POLL_MS / 1000
        if watched:
            self._done_seen.wait(2 * POLL_MS / 1000)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _encode(source: Path | np.ndarray | torch.Tensor) -> tuple[bytes, str]:
    """Image bytes for the page: a file as it is, an array or tensor as JPEG."""
    from PIL import Image

    if isinstance(source, Path):
        return source.read_bytes(), _IMAGE_TYPES.get(source.suffix.lower(), "application/octet-stream")
    if isinstance(source, torch.Tensor):
        array = source.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        source = array.permute(1, 2, 0).numpy() if array.dim() == 3 and array.shape[0] in (1, 3) else array.numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(source).squeeze()).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"


def _make_handler(live: LiveServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one LiveServer."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "StyleFusionLive"
        timeout = REQUEST_TIMEOUT_S  # on the socket: a client that sends nothing is dropped

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()  # _send writes no body for HEAD (send_error neither)

        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(PAGE.replace("__TITLE__", _html_escape(live.title)).replace("__POLL_MS__", str(POLL_MS))
                           .encode(), "text/html; charset=utf-8")
            elif path == "/state":
                self._send(json.dumps(live.state()).encode(), "application/json")
            elif path == "/image":
                try:
                    found = live.image()
                except OSError:
                    found = None  # the file is being replaced: the page asks again at its next poll
                if found is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "no image yet")
                else:
                    self._send(*found)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command == "HEAD":
                return
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the library never prints

    return Handler


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# ------------------------------------------------------------------------------------- progress adapters
def report_iterative(live: LiveServer, progress: Any) -> None:
    """Feed an iterative.IterativeProgress: losses every step, the image after each epoch."""
    if progress.saved is not None:
        live.update(image=progress.saved, info={"image": f"epoch {progress.epoch} ({progress.saved.name})"})
        return
    height, width = progress.size
    if getattr(progress, "strokes", None) is not None:  # stroke steps: another objective, no step or losses yet
        live.update(info={"stroke steps": f"{progress.strokes[0]}/{progress.strokes[1]}", "size": f"{width}x{height}",
                          "elapsed_s": round(progress.elapsed, 1)})
        return
    live.update(step=progress.step, total_steps=progress.total_steps,
                losses={"content": progress.content_loss, "style": progress.style_loss, "tv": progress.tv_loss,
                        "total": progress.total_loss},
                info={"epoch": f"{progress.epoch}/{progress.epochs}", "size": f"{width}x{height}",
                      "elapsed_s": round(progress.elapsed, 1)})


def report_training(live: LiveServer, progress: Any) -> None:
    """Feed a training.TrainProgress: losses every step, the preview image whenever one is written."""
    live.update(step=progress.step, total_steps=progress.total_steps,
                losses={"content": progress.content, "style": progress.style, "tv": progress.tv,
                        "stability": progress.stability, "total": progress.total},
                image=progress.preview,
                info={"epoch": f"{progress.epoch + 1}/{progress.epochs}",
                      "images_per_s": round(progress.images_per_s, 2),
                      **({"image": f"preview at step {progress.step}"} if progress.preview is not None else {})})


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 8px}
#wrap{display:flex;flex-wrap:wrap;gap:16px;margin-top:12px}
#image{width:480px;height:auto;border:1px solid #ccc;background:#eee;min-height:90px}
progress{width:100%;max-width:1140px;height:14px}
table{border-collapse:collapse;margin-top:6px}td{padding:2px 10px 2px 0;font-variant-numeric:tabular-nums}
#status.lost{color:#b00}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
svg{background:#fff;border:1px solid #ddd}svg text{font:11px sans-serif;fill:#555}
</style></head><body>
<h1>__TITLE__</h1>
<div id="status">connecting...</div>
<progress id="progress" max="1" value="0"></progress>
<div id="wrap">
 <figure style="margin:0"><img id="image" alt="no image yet"><figcaption id="caption"></figcaption></figure>
 <div><svg id="curve" width="560" height="260" viewBox="0 0 560 260"></svg>
  <table id="losses"></table><div id="info"></div></div>
</div>
<script>
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const SKIP = new Set(["title", "losses", "history", "image_version", "uptime_s", "done", "step", "total_steps",
                      "image"]);
let shown = 0;
const $ = id => document.getElementById(id);
const fmt = v => (v === null || v === undefined) ? "-" : Number(v).toPrecision(5);
function drawCurve(h) {
  const svg = $("curve"), W = 560, H = 260, L = 48, R = 90, T = 10, B = 24;
  let lo = Infinity, hi = -Infinity;
  for (const vals of Object.values(h.series)) for (const v of vals)
    if (v > 0) { lo = Math.min(lo, Math.log10(v)); hi = Math.max(hi, Math.log10(v)); }
  if (!h.steps.length || lo === Infinity) { svg.innerHTML = '<text x="200" y="130">no losses yet</text>'; return; }
  lo = Math.floor(lo); hi = Math.max(Math.ceil(hi), lo + 1);
  const s0 = h.steps[0], s1 = Math.max(h.steps[h.steps.length - 1], s0 + 1);
  const x = s => L + (s - s0) / (s1 - s0) * (W - L - R), y = v => T + (hi - Math.log10(v)) / (hi - lo) * (H - T - B);
  const parts = [];
  for (let e = lo; e <= hi; e++) {
    const yy = y(Math.pow(10, e)).toFixed(1);
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#eee"/>`,
               `<text x="4" y="${yy}">1e${e}</text>`);
  }
  parts.push(`<text x="${L}" y="${H - 6}">step ${s0}</text><text x="${W - R - 60}" y="${H - 6}">step ${s1}</text>`);
  Object.entries(h.series).forEach(([name, vals], i) => {
    const pts = [];
    vals.forEach((v, j) => { if (v > 0) pts.push(x(h.steps[j]).toFixed(1) + "," + y(v).toFixed(1)); });
    const c = COLORS[i % COLORS.length];
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.join(" ")}"/>`);
    parts.push(`<text x="${W - R + 8}" y="${T + 14 * (i + 1)}" style="fill:${c}">${name}</text>`);
  });
  svg.innerHTML = parts.join("");
}
function render(s) {
  const total = s.total_steps || 0, step = s.step || 0;
  document.body.dataset.step = step;
  $("progress").max = Math.max(total, 1); $("progress").value = step;
  $("status").className = "";
  $("status").textContent = (s.done ? "finished: " : "") + `step ${step}` + (total ? ` of ${total}` : "")
    + (total ? ` (${(100 * step / total).toFixed(1)}%)` : "");
  $("losses").innerHTML = Object.entries(s.losses).map(([k, v], i) =>
    `<tr><td><span class="sw" style="background:${COLORS[i % COLORS.length]}"></span>${k}</td>` +
    `<td id="loss-${k}" data-value="${v}">${fmt(v)}</td></tr>`).join("");
  $("info").innerHTML = Object.entries(s).filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `<div>${k.replace(/_/g, " ")}: <span id="info-${k}">${v}</span></div>`).join("");
  if (s.image_version && s.image_version !== shown) {
    shown = s.image_version;
    const img = $("image"), version = shown;
    img.onload = () => { img.dataset.loadedVersion = version; };
    img.src = "/image?v=" + version;
    $("caption").textContent = s.image || "";
  }
  drawCurve(s.history);
}
async function poll() {
  try {
    const r = await fetch("/state", {cache: "no-store"}), s = await r.json();
    render(s);
    if (s.done) return;  // the run has finished and its server is closing: keep "finished" on the page
  }
  catch (e) { $("status").className = "lost"; $("status").textContent = "connection lost (the run has ended?)"; }
  setTimeout(poll, __POLL_MS__);
}
poll();
</script></body></html>
"""

__all__ = ["LiveServer", "MAX_POINTS", "report_iterative", "report_training"]
