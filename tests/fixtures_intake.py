"""Helpers for the intake tests (drop folders, buckets, webhooks): short distinct masters, a watcher in a
thread, and a real HTTP receiver that fails its first N requests and checks signatures itself (its own
HMAC code, not tonearm's).  Import explicitly."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from fixtures_queue import Workers as QueueWorkers
from fixtures_queue import wait_for as wait_until  # noqa: F401 - one polling helper for both

from tonearm.core.config import Config, load
from tonearm.core.ffmpeg import locate

SECRET = "webhook-test-secret-" + "k" * 24


def make_master(path: Path, *, freq: float, seconds: float = 2.0) -> Path:
    """A 48 kHz stereo 16-bit WAV whose bytes depend on ``freq`` (so each master is its own asset)."""
    subprocess.run([locate().path, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:sample_rate=48000:duration={seconds}", "-ac", "2", "-c:a", "pcm_s16le", "-f", "wav",
                    str(path)], check=True, timeout=60)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layers(data: Path, catalog_url: str, sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    over: dict[str, dict[str, Any]] = {"storage": {"root": str(data)}, "catalog": {"url": catalog_url},
                                       "ladder": {"rungs": [{"name": "aac_64k", "codec": "aac", "bitrate": 64000}],
                                                  "layouts": ["segmented"]}}
    for name, values in sections.items():
        over.setdefault(name, {}).update(values)
    return over


def intake_config(data: Path, *, catalog_url: str = "", **sections: dict[str, Any]) -> Config:
    """A validated config for a data dir, a small ladder (one AAC rung: fast), no environment."""
    return load(None, env={}, overrides=_layers(data, catalog_url, sections))


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # strings, numbers and booleans are spelled the same in JSON and TOML


def intake_toml(path: Path, data: Path, *, catalog_url: str = "", **sections: dict[str, Any]) -> Path:
    """The same configuration as :func:`intake_config`, as a TOML file for child processes (workers, senders)."""
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
                   for name, values in _layers(data, catalog_url, sections).items())
    path.write_text(text)
    load(path, env={})  # the file says what intake_config says, or this fails here
    return path


class Workers:
    """``n`` real ``tonearm worker`` processes on the config file's catalog (fixtures_queue.Workers), stopped on
    exit; their logs are beside the config file."""

    def __init__(self, toml: Path, n: int = 2) -> None:
        self.workers = QueueWorkers({"TONEARM_CONFIG": str(toml)}, toml.parent)
        self.n = n

    def __enter__(self) -> "Workers":
        for _ in range(self.n):
            self.workers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers.stop_all()


class WatchThread:
    """``run_watch`` in a thread, stopped (and joined) on exit; lines it reports are kept."""

    def __init__(self, cfg: Config, targets: Sequence[str], **kw: Any) -> None:
        from tonearm.app.watch import run_watch

        self.stop = threading.Event()
        self.lines: list[str] = []
        self.error: BaseException | None = None

        def main() -> None:
            try:
                run_watch(cfg, targets, stop=self.stop, report=self.lines.append, **kw)
            except BaseException as exc:  # surfaced by __exit__
                self.error = exc

        self.thread = threading.Thread(target=main, daemon=True)

    def __enter__(self) -> "WatchThread":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the watcher did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error


@dataclass
class Hit:
    body: bytes
    headers: dict[str, str]
    status: int
    signature_ok: bool
    at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: answers ``fail_first`` requests with 500, then 200."""

    fail_first: int = 0
    secret: str = SECRET
    delay: float = 0.0  # seconds before answering (lets concurrent senders overlap)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                time.sleep(rx.delay)
                status = 500 if len(rx.hits) < rx.fail_first else 200
                rx.hits.append(Hit(body, dict(self.headers), status, rx.check(self.headers.get("Tonearm-Signature", ""),
                                                                               body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tonearm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check(self, header: str, body: bytes) -> bool:
        """Stripe-style: t=<ts>,v1=<hex HMAC-SHA256(secret, ts + '.' + body)>, ts within 5 minutes."""
        try:
            fields = dict(kv.split("=", 1) for kv in header.split(","))
            ts = int(fields["t"])
        except (ValueError, KeyError):
            return False
        want = hmac.new(self.secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        return abs(time.time() - ts) < 300 and hmac.compare_digest(want, fields.get("v1", ""))

    def delivered_ids(self) -> set[str]:
        return {json.loads(h.body)["id"] for h in self.hits if h.status == 200 and h.signature_ok}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
