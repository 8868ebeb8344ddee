"""Simulated listeners: a bounded asyncio load generator that plays HLS like a player.

Each listener fetches the master playlist, the first variant's media playlist
(players start on the first listed variant), the init segment, then media
segments in order: the first ``buffer`` back to back, the rest one every
``pace`` seconds (a player at ``6.4 / pace`` times real time).  Every fetch
is recorded with its latency and outcome; nothing is retried, so a failure is
counted, not hidden.  Loopback only; each run is bounded by its schedule and
a per-request timeout.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
import m3u8


@dataclass(frozen=True, slots=True)
class Fetch:
    listener: int
    kind: str  # master | media | init | segment
    url: str
    start: float  # seconds since the run began
    latency: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    size: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (200, 206) and not self.error


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit: one socket per listener."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _byteranges(playlist: m3u8.M3U8) -> list[tuple[str, str | None]]:
    """(absolute URI, Range header or None) per segment; EXT-X-BYTERANGE offsets follow
    the previous sub-range when omitted (RFC 8216 4.3.2.2)."""
    out = []
    prev_end: dict[str, int] = {}
    for seg in playlist.segments:
        uri = seg.absolute_uri
        rng = None
        if seg.byterange:
            length, _, offset = seg.byterange.partition("@")
            start = int(offset) if offset else prev_end.get(uri, 0)
            rng = f"bytes={start}-{start + int(length) - 1}"
            prev_end[uri] = start + int(length)
        out.append((uri, rng))
    return out


class Run:
    def __init__(self, master_url: str, *, segments: int | None, buffer: int, pace: float,
                 timeout: float) -> None:
        if urlsplit(master_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"load tests target loopback only, not {master_url}")
        self.master_url = master_url
        self.segments = segments
        self.buffer = buffer
        self.pace = pace
        self.timeout = timeout
        self.fetches: list[Fetch] = []
        self.active: list[tuple[float, int]] = []  # (time, listeners running) at each change
        self._running = 0
        self._t0 = 0.0

    def _mark(self, delta: int) -> None:
        self._running += delta
        self.active.append((time.monotonic() - self._t0, self._running))

    async def _get(self, session: aiohttp.ClientSession, who: int, kind: str, url: str,
                   rng: str | None = None) -> bytes | None:
        t = time.monotonic()
        try:
            async with session.get(url, headers={"Range": rng} if rng else None) as resp:
                body = await resp.read()
                status = resp.status
            self.fetches.append(Fetch(who, kind, url, t - self._t0, time.monotonic() - t, status, len(body)))
            return body if status in (200, 206) else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.fetches.append(Fetch(who, kind, url, t - self._t0, time.monotonic() - t, 0, 0,
                                      f"{type(exc).__name__}: {exc}"))
            return None

    async def _listener(self, session: aiohttp.ClientSession, who: int, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - (time.monotonic() - self._t0)))
        self._mark(+1)
        try:
            body = await self._get(session, who, "master", self.master_url)
            if body is None:
                return
            master = m3u8.loads(body.decode(), uri=self.master_url)
            variants = [p.absolute_uri for p in master.playlists] or [m.absolute_uri for m in master.media if m.uri]
            if not variants:
                self.fetches.append(Fetch(who, "master", self.master_url, 0, 0, 0, 0, "no variant in master"))
                return
            body = await self._get(session, who, "media", variants[0])
            if body is None:
                return
            media = m3u8.loads(body.decode(), uri=variants[0])
            if media.segment_map:
                init = media.segment_map[0]
                rng = None
                if init.byterange:
                    length, _, offset = init.byterange.partition("@")
                    rng = f"bytes={int(offset or 0)}-{int(offset or 0) + int(length) - 1}"
                if await self._get(session, who, "init", urljoin(variants[0], init.uri), rng) is None:
                    return
            for i, (uri, rng) in enumerate(_byteranges(media)[: self.segments]):
                if i >= self.buffer and self.pace:
                    await asyncio.sleep(self.pace)
                await self._get(session, who, "segment", uri, rng)
        finally:
            self._mark(-1)

    async def run(self, start_times: Sequence[float]) -> None:
        raise_fd_limit()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._t0 = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._listener(session, i, t) for i, t in enumerate(start_times)))


def run_listeners(master_url: str, start_times: Sequence[float], *, segments: int | None = None,
                  buffer: int = 3, pace: float = 0.0, timeout: float = 30.0) -> Run:
    """Run one listener per start time (seconds from now) to completion; returns the records."""
    r = Run(master_url, segments=segments, buffer=buffer, pace=pace, timeout=timeout)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # the `fast` extra is optional
        runner = asyncio.run
    runner(r.run(start_times))
    return r


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[k]


def summarize(fetches: Sequence[Fetch], kind: str | None = "segment") -> dict[str, Any]:
    sel = [f for f in fetches if kind is None or f.kind == kind]
    lat = [f.latency * 1000 for f in sel if f.ok]
    return {
        "requests": len(sel),
        "failed": sum(1 for f in sel if not f.ok),
        "bytes": sum(f.size for f in sel),
        "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3),
                       "max": round(max(lat, default=0.0), 3)},
        "errors": sorted({f.error or f"HTTP {f.status}" for f in sel if not f.ok})[:5],
    }
