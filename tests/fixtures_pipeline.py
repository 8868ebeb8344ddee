"""End-to-end helpers: run the real pipeline into a temporary data dir, serve the
published tree with the real origin on 127.0.0.1, fetch over HTTP, measure bit
rates from the served bytes, and decode with ffmpeg as an HLS/DASH client.
Import explicitly."""

from __future__ import annotations

import asyncio
import math
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urljoin

import m3u8
import msgspec
from fixtures_packager import average_rate, dash_rate, elst_entries, rfc8216_peak
from fixtures_transcode import default_sample_duration, fragment_durations, parse_sidx
from mpegdash.parser import MPEGDASHParser

from tonearm.app.pipeline import Context, JobResult, Outcome, process
from tonearm.core.config import Config, load
from tonearm.core.layouts import LAYOUTS

# Every multivariant manifest a published asset has, from the layout table.
MANIFESTS = tuple(name for lay in LAYOUTS.values() for name in (lay.hls_master, lay.dash_manifest))


def pipeline_config(data: Path, *, ffmpeg: str = "", **ladder: Any) -> Config:
    """A validated config for a data dir; no environment leaks in."""
    return load(None, env={}, overrides={"storage": {"root": str(data)}, "ffmpeg": {"path": ffmpeg},
                                         "ladder": ladder})


def publish(master: Path, cfg: Config) -> JobResult:
    result = process(Context.from_config(cfg), master)
    assert result.outcome is Outcome.PUBLISHED, (result.outcome, result.error)
    return result


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime_ns."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


class OriginServer:
    """The real origin (``origin.app.make_app``) on 127.0.0.1:<free port>, in a thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = msgspec.structs.replace(cfg, origin=msgspec.structs.replace(cfg.origin, access_log=""))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.base = ""

    def __enter__(self) -> "OriginServer":
        from aiohttp import web

        from origin.app import make_app

        self.thread.start()

        async def start() -> tuple[Any, int]:
            runner = web.AppRunner(make_app(self.cfg), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, site._server.sockets[0].getsockname()[1]

        self.runner, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.base = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def url(self, asset_id: str, rel: str) -> str:
        return f"{self.base}/assets/{asset_id}/{rel}"


def get(url: str, byterange: tuple[int, int] | None = None) -> bytes:
    """GET a URL (optionally bytes first..last inclusive) and insist on the exact answer."""
    req = urllib.request.Request(url)
    if byterange:
        req.add_header("Range", f"bytes={byterange[0]}-{byterange[1]}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        assert resp.status == (206 if byterange else 200), (url, resp.status)
    if byterange:
        assert len(body) == byterange[1] - byterange[0] + 1, (url, byterange, len(body))
    return body


# -- bit rates, measured exactly from the served bytes (the manifests declare them rounded up) ---------------


@dataclass(frozen=True)
class Measured:
    sizes: tuple[int, ...]  # bytes of each media segment as served
    ticks: tuple[int, ...]  # duration of each segment from its trun boxes (HLS: the last ends with the master)
    timescale: int

    @property
    def seconds(self) -> list[float]:
        return [t / self.timescale for t in self.ticks]

    def average(self) -> Fraction:
        """RFC 8216 4.3.4.2 AVERAGE-BANDWIDTH, exact: all media segment bits over the total duration."""
        return average_rate(self.sizes, self.ticks, self.timescale)

    def hls_peak(self, target_duration: int) -> Fraction:
        """RFC 8216 4.3.4.2 BANDWIDTH, exact: the largest rate of any contiguous run of segments
        lasting 0.5 to 1.5 times the target duration; a presentation shorter than any such run
        can only be fetched whole, so its whole rate."""
        return rfc8216_peak(self.sizes, self.ticks, self.timescale, target_duration)

    def dash_bandwidth(self, min_buffer: Fraction) -> Fraction:
        """ISO/IEC 23009-1 5.3.5.2 @bandwidth, exact: the smallest rate at which a client starting at
        any segment, playing after min_buffer seconds, has each segment whole before it plays."""
        return dash_rate(self.sizes, self.ticks, self.timescale, min_buffer)


def _timescale(init: bytes) -> int:
    from fixtures_transcode import iter_boxes

    def find(kind_path: Sequence[str], start: int, end: int) -> int | None:
        for kind, pos, size, hdr in iter_boxes(init, start, end):
            if kind == kind_path[0]:
                if len(kind_path) == 1:
                    return pos + hdr
                return find(kind_path[1:], pos + hdr, pos + size)
        return None

    mdhd = find(["moov", "trak", "mdia", "mdhd"], 0, len(init))
    assert mdhd is not None
    version = init[mdhd]
    return int.from_bytes(init[mdhd + (20 if version == 1 else 12):][:4], "big")


def measure_hls_media(url: str) -> tuple[m3u8.M3U8, Measured]:
    """Fetch a media playlist, its init section and every segment; measure them.  The ticks are each
    segment's EXTINF exactly: its trun durations, the last one ending where the init segment's edit list
    ends the presentation (the edit's duration, 14496-12 8.6.6: the master's length)."""
    pl = m3u8.loads(get(url).decode(), uri=url)
    assert pl.is_endlist and pl.playlist_type == "vod" and pl.target_duration
    sizes, ticks = [], []
    init_cache: dict[str, bytes] = {}
    offset = 0
    for seg in pl.segments:
        init = seg.init_section
        key = f"{init.uri}@{init.byterange}"
        if key not in init_cache:
            init_cache[key] = get(urljoin(url, init.uri), _range(init.byterange, 0)[0] if init.byterange else None)
        if seg.byterange:
            rng, offset = _range(seg.byterange, offset)
            body = get(urljoin(url, seg.uri), rng)
        else:
            body = get(urljoin(url, seg.uri))
        init_bytes = init_cache[key]
        durs = fragment_durations(body, default_sample_duration(init_bytes))
        assert durs, f"no moof in {seg.uri} {seg.byterange}"
        sizes.append(len(body))
        ticks.append(sum(durs))
    _, ((shown, _),) = elst_entries(init_bytes)
    ticks[-1] = shown - sum(ticks[:-1])
    for seg, t in zip(pl.segments, ticks):
        assert abs(seg.duration - t / _timescale(init_bytes)) < 1e-6, (seg.uri, seg.duration, t)
    return pl, Measured(tuple(sizes), tuple(ticks), _timescale(init_bytes))


def _range(spec: str, previous_end: int) -> tuple[tuple[int, int], int]:
    """RFC 8216 4.3.2.2 EXT-X-BYTERANGE: n[@o]; without @o it follows the previous range."""
    length, _, start = spec.partition("@")
    first = int(start) if start else previous_end
    return (first, first + int(length) - 1), first + int(length)


@dataclass(frozen=True)
class DashRep:
    id: str
    bandwidth: int
    codecs: str
    channels: int
    measured: Measured


def measure_dash(url: str) -> tuple[Any, list[DashRep]]:
    """Fetch an MPD and every representation's media (SegmentTemplate+SegmentTimeline or
    SegmentBase+sidx); measure them."""
    mpd = MPEGDASHParser.parse(get(url).decode())
    reps = []
    for aset in mpd.periods[0].adaptation_sets:
        channels = int(aset.audio_channel_configurations[0].value)
        for rep in aset.representations:
            if rep.segment_templates:
                reps.append(DashRep(rep.id, rep.bandwidth, rep.codecs, channels,
                                    _measure_template(url, rep.segment_templates[0])))
            else:
                base = urljoin(url, rep.base_urls[0].base_url_value)
                reps.append(DashRep(rep.id, rep.bandwidth, rep.codecs, channels,
                                    _measure_segment_base(base, rep.segment_bases[0])))
    return mpd, reps


def _measure_template(url: str, st: Any) -> Measured:
    init = get(urljoin(url, st.initialization.replace("$RepresentationID$", "")))
    default = default_sample_duration(init)
    times: list[int] = []
    for s in st.segment_timelines[0].Ss:
        times += [s.d] * (1 + (s.r or 0))
    sizes, ticks = [], []
    for n, declared in enumerate(times, start=st.start_number or 1):
        uri = st.media.replace("$Number%05d$", f"{n:05d}").replace("$Number$", str(n))
        body = get(urljoin(url, uri))
        durs = fragment_durations(body, default)
        assert sum(durs) == declared, (uri, durs, declared)
        sizes.append(len(body))
        ticks.append(declared)
    assert st.timescale == _timescale(init)
    return Measured(tuple(sizes), tuple(ticks), st.timescale)


def _measure_segment_base(url: str, sb: Any) -> Measured:
    first, last = (int(x) for x in sb.index_range.split("-"))
    ifirst, ilast = (int(x) for x in sb.initializations[0].range.split("-"))
    init = get(url, (ifirst, ilast))
    timescale, first_offset, refs = parse_sidx(get(url, (first, last)))
    offset = last + 1 + first_offset  # 8.16.3: offsets count from the first byte after the sidx
    sizes, ticks = [], []
    default = default_sample_duration(init)
    for size, duration in refs:
        body = get(url, (offset, offset + size - 1))
        assert sum(fragment_durations(body, default)) == duration
        sizes.append(size)
        ticks.append(duration)
        offset += size
    return Measured(tuple(sizes), tuple(ticks), timescale)


def xs_seconds(iso: str) -> Fraction:
    """xs:duration of the simple PT..S form the MPD uses, exactly (decimal seconds)."""
    assert iso.startswith("PT") and iso.endswith("S"), iso
    body, total = iso[2:-1], Fraction(0)
    for unit, factor in (("H", 3600), ("M", 60)):
        if unit in body:
            head, body = body.split(unit)
            total += Fraction(head) * factor
    return total + Fraction(body or 0)


# -- ffmpeg as an HLS / DASH client ------------------------------------------------------------------------

# Decoded length minus master length, in 48 kHz samples: AAC leaves up to 1024 priming + one
# frame of padding when the client ignores the fMP4 edit list, Opus up to 312 + 960; FLAC is exact.
SLACK = {"aac": (0, 2400), "opus": (0, 2400), "flac": (-1, 1)}


def stream_rungs(url: str) -> list[str]:
    """Rung name of each audio stream of a master playlist or MPD, in the order ffmpeg
    numbers them (document order)."""
    if url.endswith(".m3u8"):
        names = []
        for p in m3u8.loads(get(url).decode(), uri=url).playlists:
            names.append(Path(p.uri).parent.name if p.uri.endswith("index.m3u8") else Path(p.uri).stem)
        return names
    mpd = MPEGDASHParser.parse(get(url).decode())
    return [r.id for a in mpd.periods[0].adaptation_sets for r in a.representations]


def decode_every_rung(client: str, url: str, rungs: list[str], renditions: dict[str, dict], expected: int,
                      only: set[str] | None = None) -> dict[str, int]:
    """Decode each stream with ``client``; check it decodes cleanly with the rendition's channel
    count; return {rung: decoded - expected frames} for the rungs outside ``SLACK``."""
    assert len(probe_streams(client, url)) == len(rungs)
    off = {}
    for index, rung in enumerate(rungs):
        if only is not None and rung not in only:
            continue
        frames, channels, stderr = client_decode(client, url, index)
        assert stderr == "" and channels == renditions[rung]["channels"], (rung, channels, stderr)
        lo, hi = SLACK[renditions[rung]["codec"]]
        if not lo <= frames - expected <= hi:
            off[rung] = frames - expected
    return off


def client_decode(client: str, url: str, index: int, *, timeout: float = 300) -> tuple[int, int, str]:
    """Decode audio stream ``index`` of an HLS/DASH URL with ffmpeg; return (frames, channels, stderr).
    Samples are streamed and counted, never held, so long masters cost no memory."""
    channels = probe_channels(client, url, index)
    argv = [client, "-nostdin", "-v", "error", "-xerror", "-i", url, "-map", f"0:a:{index}",
            "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    total = 0
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            total += len(chunk)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (argv, stderr)
    return total // (2 * channels), channels, stderr


def probe_channels(client: str, url: str, index: int) -> int:
    """Channel count of stream ``index`` as the client sees it (from its own log)."""
    return len(probe_streams(client, url)[index])


def probe_streams(client: str, url: str) -> list[str]:
    """One 'xx' string per audio stream, of length = channel count, read from the
    client's stream dump (ffprobe may not be the same build as the client)."""
    out = subprocess.run([client, "-hide_banner", "-nostdin", "-i", url], capture_output=True, text=True,
                         timeout=120).stderr
    streams = []
    for line in out.splitlines():
        if "Stream #" in line and "Audio:" in line:
            layout = line.split("Audio:")[1].split(",")[2].strip()
            streams.append("x" * _layout_channels(layout))
    return streams


def _layout_channels(layout: str) -> int:
    named = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "5.1(side)": 6, "6.1": 7,
             "7.1": 8, "5.0(side)": 5}
    if layout in named:
        return named[layout]
    if layout.endswith(" channels"):
        return int(layout.split()[0])
    raise ValueError(f"unknown layout {layout!r}")


def frames_of(seconds: float, rate: int = 48000) -> int:
    return math.floor(seconds * rate + 0.5)


def iter_media_playlists(master_url: str) -> Iterator[tuple[m3u8.Playlist, str]]:
    master = m3u8.loads(get(master_url).decode(), uri=master_url)
    assert master.is_variant
    for p in master.playlists:
        yield p, urljoin(master_url, p.uri)


def make_varied_master(path: Path, *, seconds: float, rate: int = 44100) -> Path:
    """A stereo 16-bit FLAC master whose content changes halfway (quiet tones, then loud pink
    noise over the tones) so segment sizes, and so peak and average bit rates, differ."""
    s = seconds
    graph = (f"[0]volume='if(lt(t,{s / 2}),0.02,0.5)':eval=frame,pan=stereo|c0=c0|c1=c0[noise];"
             "[noise][1]amix=inputs=2:duration=shortest,volume=2[out]")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"anoisesrc=d={s}:c=pink:r={rate}:a=0.5:seed=7",
         "-f", "lavfi", "-i", f"aevalsrc=0.25*sin(2*PI*440*t)|0.25*sin(2*PI*554*t):s={rate}:d={s}",
         "-filter_complex", graph, "-map", "[out]", "-c:a", "flac", "-sample_fmt", "s16", str(path)],
        check=True, timeout=300,
    )
    return path
