"""The ``[watch]`` and ``[webhooks]`` sections of the one config schema (:mod:`tonearm.core.config`).

Kept in their own module so the schema's main file stays readable; :mod:`tonearm.core.config` lists
them in ``Config`` and calls :func:`intake_problems` from ``validate``, which turns each problem into
a ``ConfigError``.  A webhook secret is never echoed in a message, only its length.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from tonearm.core.config_section import Section

__all__ = ("ApiConfig", "WatchConfig", "WebhooksConfig", "intake_problems", "check_webhook_url", "WEBHOOK_EVENTS")

# The events of a job's outbox, one list (tonearm.app.job_types re-exports it as EVENT_TYPES).
WEBHOOK_EVENTS = ("published", "quarantined", "failed", "taken_down")
Window = Annotated[float, msgspec.Meta(gt=0, le=3600)]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=120)]


_Section = Section


class WatchConfig(_Section):
    """``tonearm watch``: drop folders and buckets (``tonearm/app/watch.py``)."""

    settle_s: Window = 5.0  # a file is taken once its size and mtime (an object's size and ETag) held this long
    rescan_s: Window = 30.0  # full listing this often, inotify or not: nothing is missed across restarts
    ignore: tuple[str, ...] = ("*.part", ".*", "*.tmp", "*.crdownload")  # temporary names (fnmatch), never taken
    after: Literal["leave", "move", "delete"] = "leave"  # move: to done/ beside it; delete: once published
    max_depth: Annotated[int, msgspec.Meta(ge=0, le=32)] = 4  # sub folders walked below a watched folder
    priority: Annotated[int, msgspec.Meta(ge=-100, le=100)] = 0  # of the jobs a watcher submits
    state_file: str = ""  # what was taken, and bucket cursors; empty: <data dir>/watch.sqlite3


class WebhooksConfig(_Section):
    """Signed event POSTs (``tonearm/app/webhooks.py``); none when ``urls`` is empty."""

    urls: tuple[str, ...] = ()  # http(s)://host[:port]/path; no credentials in the URL
    secret: str = ""  # HMAC-SHA256 key (at least 32 characters); env TONEARM_WEBHOOKS_SECRET
    events: tuple[str, ...] = WEBHOOK_EVENTS
    timeout_s: Timeout = 10.0  # connect + whole response, per attempt
    retry_for_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] = 86400.0  # then given up, and recorded
    backoff_s: Window = 10.0  # delay before the first retry; doubles each time
    max_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 3600.0
    poll_s: Window = 1.0  # how often the sender looks for new events and due retries


def check_webhook_url(url: str) -> str | None:
    """Why ``url`` is not an acceptable webhook target, or None."""
    if len(url) > 2048 or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        return "too long, or has spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "use an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed (the payload is signed with [webhooks] secret)"
    if parts.fragment:
        return "a fragment (#...) is not sent to a server"
    return None


def intake_problems(watch: WatchConfig, hooks: WebhooksConfig, min_secret: int) -> list[str]:
    """The cross-key rules of both sections, as one-line messages."""
    out = []
    for pat in watch.ignore:
        if not pat or "/" in pat:
            out.append(f"[watch] ignore: {pat!r}: a file name pattern (fnmatch), without '/'")
    for url in hooks.urls:
        why = check_webhook_url(url)
        if why:
            out.append(f"[webhooks] urls: {url[:60]!r}: {why}" if "@" not in url else f"[webhooks] urls: {why}")
    if hooks.urls and len(hooks.secret) < min_secret:
        out.append(f"[webhooks] secret (or TONEARM_WEBHOOKS_SECRET): use at least {min_secret} characters, "
                   f"got {len(hooks.secret)}")
    for ev in hooks.events:
        if ev not in WEBHOOK_EVENTS:
            out.append(f"[webhooks] events: {ev!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
    if hooks.max_backoff_s < hooks.backoff_s:
        out.append("[webhooks] max_backoff_s: must be at least backoff_s")
    return out


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: any free port


class ApiConfig(_Section):
    """``tonearm api``: the management API (uploads, jobs, takedown), never served by the origin."""

    host: str = "127.0.0.1"
    port: Port = 8081
    max_body: Annotated[int, msgspec.Meta(ge=1024, le=16 << 20)] = 64 << 10  # bytes of a JSON request body
    max_header: Annotated[int, msgspec.Meta(ge=1024, le=65536)] = 8190  # bytes of the request line and of a header
    read_chunk: Annotated[int, msgspec.Meta(ge=4096, le=64 << 20)] = 1 << 20  # bytes an upload is read and written by
    upload_dir: str = ""  # empty: <storage root>/uploads; received bytes wait there until queued
    tus_expiry: Annotated[float, msgspec.Meta(ge=60, le=30 * 86400)] = 86400.0  # seconds an idle tus upload is kept
