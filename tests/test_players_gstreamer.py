"""GStreamer 1.22 (Debian 12) as a native HLS/DASH client of ``tonearm serve``: the client of
set-top boxes and Linux desktops.  ``gst-launch-1.0`` runs in a subprocess, so the venv needs
nothing; ``scripts/test-deps.sh`` installs it.  Two clients, both in Debian's 1.22:

- ``playbin``: decodebin2 with the legacy adaptive demuxers ``hlsdemux`` / ``dashdemux`` (the 1.22
  default; ``hlsdemux2``/``dashdemux2`` refuse to run outside a streams-aware bin);
- ``playbin3``: decodebin3 with the adaptivedemux2 elements ``hlsdemux2`` / ``dashdemux2``.

Each run decodes the whole stream from the origin over HTTP (souphttpsrc, qtdemux, avdec_aac or
opusdec) to raw 48 kHz stereo S16LE in a file, which is checked against the master itself (the
FLAC the pipeline kept, decoded by ffmpeg): its length in samples, the tone of each section by
FFT (the ``player_origin`` master, see fixtures_players.py), and the sample alignment with the
master, by correlation, after every segment boundary.

What GStreamer does with the priming (the init segment's edit list: media_time 1024 for AAC, 312
for Opus, the same as the Opus ``dOps`` pre-skip): through the adaptive demuxers (HLS and DASH,
both layouts, both generations) neither the edit list nor the pre-skip is applied.  Every coded
frame is decoded in full, so the output is the master delayed by exactly the priming, plus the
unused rest of the last frame: length = coded frames x frame size, that is master + priming + less
than one frame.  qtdemux itself applies the edit list exactly when it reads the same fMP4 from a
local file (pull mode), and applies it twice when it reads it progressively over HTTP (push mode).
See docs/players.md, "GStreamer".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_players import TONE_TOLERANCE_HZ, TONES, Origin
from test_players_negative import FAULTS

from packager.boxes import iter_boxes
from tonearm.core.ffmpeg import locate

# Slow (make test, not make test-fast): gst-launch-1.0 plays and decodes every whole stream, about a minute.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RATE = 48000
FRAME = {"aac": 1024, "opus": 960}  # samples per coded frame at 48 kHz
SEGMENT = 307200  # 6.4 s in samples: the packager's segment grid
GST_LAUNCH = shutil.which("gst-launch-1.0") or "/usr/bin/gst-launch-1.0"
GST_INSPECT = shutil.which("gst-inspect-1.0") or "/usr/bin/gst-inspect-1.0"
NEEDED = ("playbin", "playbin3", "souphttpsrc", "hlsdemux", "dashdemux", "hlsdemux2", "dashdemux2", "qtdemux",
          "avdec_aac", "opusdec", "filesink")
DEMUXER = {("playbin", "hls"): "hlsdemux", ("playbin", "dash"): "dashdemux",
           ("playbin3", "hls"): "hlsdemux2", ("playbin3", "dash"): "dashdemux2"}
CLIENTS = ("playbin", "playbin3")
LAYOUTS = ("segmented", "single")
PROTOCOLS = ("hls", "dash")
# Where the audio is compared with the master (seconds of the master's timeline): the start, just after each
# segment boundary (where a dropped or repeated frame, or a rendition switch, would shift it) and the end.
ALIGN_AT = (0.05, 3.0, 6.45, 12.85, 19.25, 19.9)
ALIGN_WINDOW = 2048
ALIGN_SEARCH = 32  # +- samples: less than half the shortest tone period (1320 Hz: 36.4 samples), one peak only
# How long a broken asset may take to fail: the legacy demuxers report a 404 after their retries (about 7 s),
# a corrupt init fails within 0.2 s; past this a run that has neither failed nor played is a hang.
ERROR_WAIT_S = {"missing_segment": 30.0, "corrupt_init": 8.0}


class KnownGstDefect(AssertionError):
    """A failure one of the GStreamer 1.22 defects below explains; only it makes their xfails expected."""


DASHDEMUX2_LAST_SUBSEGMENT = (
    "GStreamer 1.22 dashdemux2 (adaptivedemux2) never requests the last sidx subsegment of a SegmentBase "
    "representation: after the next-to-last one it advances the stream position twice (12.8 s + 2 x 6.4 s = "
    "25.6 s, past the 20 s period) and ends the stream, so the last 0.82 s are missing. The legacy dashdemux, "
    "ffmpeg, dash.js and Shaka play the same MPD to the end (also reported against 1.22 in Rafostar/gtuber#36)")
ADAPTIVEDEMUX2_SWALLOWS_ERROR = (
    "GStreamer 1.22 adaptivedemux2 turns a corrupt init segment into a hang, not an error: dashdemux2 swallows its "
    "qtdemux's error ('Source posted error: This file contains no playable streams', a warning) and hlsdemux2 stops "
    "at its own ISOBMFF probe ('Received moof with moov in iso-ff stream', a warning); both then wait forever, "
    "prerolling, and post no error. The legacy hlsdemux/dashdemux, hls.js, dash.js and Shaka all report an error")
PUSH_MODE_DOUBLE_EDIT = (
    "GStreamer 1.22 qtdemux in push mode (the fMP4 read progressively over HTTP by souphttpsrc) applies the edit "
    "list twice: the priming is skipped and so is the same length of real audio after it (1024 samples of AAC, "
    "312 of Opus lost at the start); from a local file (pull mode) the same bytes decode exactly")


# ---- running GStreamer -------------------------------------------------------------------------


@dataclass
class Run:
    """One gst-launch-1.0 run: exit code (None: still running at the timeout, killed), stderr, decoded PCM."""

    argv: list[str]
    rc: int | None
    stderr: str
    pcm: np.ndarray  # float, frames x 2
    elements: set[str] = field(default_factory=set)  # element factories instantiated
    requests: list[dict[str, Any]] = field(default_factory=list)  # origin access log lines of this run's asset

    @property
    def errors(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith(("ERROR:", "Not Found"))]

    def explain(self) -> str:
        reqs = [f"{r['status']} {r['path'].split('/', 3)[-1]} {r.get('range', '')}".rstrip() for r in self.requests]
        tail = "\n".join(ln for ln in self.stderr.splitlines() if "creating element" not in ln)[-3000:]
        return f"argv: {self.argv}\nrc: {self.rc}\nframes: {len(self.pcm)}\nrequests: {reqs}\nstderr:\n{tail}"


def sink(out: Path) -> str:
    """Raw 48 kHz stereo S16LE into a file; no audioresample, so a decoder at another rate is an error."""
    return f"audioconvert ! audio/x-raw,format=S16LE,rate={RATE},channels=2 ! filesink sync=false location={out}"


def launch(args: list[str], out: Path, *, timeout: float = 60.0) -> Run:
    """``gst-launch-1.0 -q ARGS``.  GST_ELEMENT_FACTORY:4 logs every element created (which demuxer, which
    decoder); adaptivedemux2:2 and hlsdemux2:2 their warnings (the errors they swallow)."""
    argv = [GST_LAUNCH, "-q", *args]
    env = {**os.environ, "GST_DEBUG": "GST_ELEMENT_FACTORY:4,adaptivedemux2:2,hlsdemux2:2", "GST_DEBUG_NO_COLOR": "1"}
    out.unlink(missing_ok=True)
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=env)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        rc, stderr = None, (exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or "")
    pcm = np.fromfile(out, dtype="<i2").reshape(-1, 2).astype(np.float64) / 32768 if out.exists() else np.zeros((0, 2))
    elements = set(re.findall(r'creating element "([^"]+)"', stderr))
    return Run(argv, rc, stderr, pcm, elements)


def play(url: str, client: str, out: Path, *props: str, timeout: float = 60.0) -> Run:
    return launch([client, f"uri={url}", "flags=audio", *props, f"audio-sink={sink(out)}"], out, timeout=timeout)


def play_adaptive(url: str, client: str, out: Path, *props: str) -> tuple[Run, float]:
    """``play`` of an adaptive stream, and when it started (for ``served``).

    GStreamer 1.22's adaptivedemux2 sometimes gives up on fragments the origin served with 200/206 ("Can't
    push EOS on non-exposed pad", then "Couldn't download fragments") when the cores are busy, before a
    single sample is decoded: a player would retry, and so does this, once, on a fresh pipeline; the second
    run is the one judged."""
    for attempt in range(2):
        since = time.time()
        run = play(url, client, out, *props)
        if attempt or "Can't push EOS on non-exposed pad" not in run.stderr or len(run.pcm):
            break
    return run, since


def served(origin: Origin, asset_id: str, since: float) -> list[dict[str, Any]]:
    """The origin's access log lines for ``asset_id`` since ``since`` (epoch s).  The origin hands its lines
    to the log at most every 0.5 s, on the next request: two marker requests 0.55 s apart flush all of ours."""
    log = origin.data.parent / "origin.log"  # where the player_origin fixture's running_origin writes
    assert log.exists(), f"no origin log at {log}"
    mark = uuid.uuid4().hex
    for i in range(2):
        if i:
            time.sleep(0.55)
        urllib.request.urlopen(f"{origin.base}/healthz?gst-mark={mark}-{i}", timeout=5).read()
    deadline = time.monotonic() + 10
    while mark + "-0" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith('{"ts"')]
    return [r for r in lines if r["ts"] >= since - 0.001 and f"/assets/{asset_id}/" in r["path"]]


def media_rungs(ref: Reference, requests: list[dict[str, Any]]) -> set[str]:
    """Rungs whose media were requested: segments, or bytes of a single file past its init and sidx."""
    rungs = set()
    for r in requests:
        rel = r["path"].split("/", 3)[-1]
        if m := re.fullmatch(r"([a-z0-9_]+)/seg-\d+\.m4s", rel):
            rungs.add(m.group(1))
        elif m := re.fullmatch(r"single/([a-z0-9_]+)\.mp4", rel):
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", r.get("range", ""))
            if not rng or not rng.group(2) or int(rng.group(2)) >= ref.byte_ranges(m.group(1))[0][1]:
                rungs.add(m.group(1))
    return rungs


# ---- the audio against the master --------------------------------------------------------------


def dominant_hz(x: np.ndarray, start: int, n: int = 8192) -> float:
    """Dominant frequency of ``n`` samples from ``start`` (Hann window, parabolic peak interpolation)."""
    spec = np.abs(np.fft.rfft(x[start:start + n] * np.hanning(n)))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * RATE / n


def first_tone_change(x: np.ndarray) -> int:
    """Sample index of the 440 -> 660 Hz change near 4 s: the first half-period shorter than 45 samples
    (440 Hz: 54.5, 660 Hz: 36.4) in 4 +- 0.1 s.  Unambiguous where a correlation with a pure tone is not."""
    start = int(3.9 * RATE)
    seg = x[start:start + int(0.2 * RATE)]
    crossings = np.nonzero(np.diff(np.signbit(seg)))[0]
    short = np.nonzero(np.diff(crossings) < 45)[0]
    assert len(short), "no 440 -> 660 Hz change within 4 +- 0.1 s of the decoded audio"
    return start + int(crossings[short[0]])


@dataclass(frozen=True)
class Alignment:
    lag: int  # decoded sample index minus master sample index (the delay of the decoded audio)
    worst: float  # lowest normalised correlation with the master over ALIGN_AT
    lags: tuple[int, ...]  # the best lag at each ALIGN_AT position


def align(decoded: np.ndarray, master: np.ndarray) -> Alignment:
    """The delay of ``decoded`` against ``master``: coarse from the first tone change, then, at each
    ALIGN_AT position, the lag within +-ALIGN_SEARCH samples with the highest correlation."""
    coarse = first_tone_change(decoded) - first_tone_change(master)
    lags, corrs = [], []
    for t in ALIGN_AT:
        p = int(t * RATE)
        a = master[p:p + ALIGN_WINDOW]
        best, best_c = coarse, -2.0
        for lag in range(coarse - ALIGN_SEARCH, coarse + ALIGN_SEARCH + 1):
            b = decoded[p + lag:p + lag + ALIGN_WINDOW] if p + lag >= 0 else np.zeros(0)
            if len(b) < ALIGN_WINDOW:
                continue
            c = float(np.dot(a, b) / (np.sqrt(np.dot(a, a) * np.dot(b, b)) + 1e-12))
            if c > best_c:
                best, best_c = lag, c
        lags.append(best)
        corrs.append(best_c)
    return Alignment(lag=max(set(lags), key=lags.count), worst=min(corrs), lags=tuple(lags))


def check_tones(decoded: np.ndarray, lag: int) -> list[tuple[float, float, float]]:
    """(position s, expected Hz, measured Hz) for the middle of every section, outside the tolerance."""
    wrong = []
    for start, end, hz in TONES:
        mid = (start + min(end, 20.0)) / 2
        got = dominant_hz(decoded, int(mid * RATE) + lag - 4096)
        if abs(got - hz) > TONE_TOLERANCE_HZ:
            wrong.append((mid, hz, round(got, 1)))
    return wrong


@dataclass(frozen=True)
class Rung:
    name: str
    codec: str
    priming: int  # samples: the init segment's edit list media_time
    frames: int  # coded frames in the track

    @property
    def decoded_by_gstreamer(self) -> int:
        """What the adaptive demuxers produce: every coded frame in full, edit list not applied."""
        return self.frames * FRAME[self.codec]


@dataclass(frozen=True)
class Reference:
    origin: Origin
    asset_id: str
    master: np.ndarray  # channel 0 of the master, float, at 48 kHz
    rungs: dict[str, Rung]

    def byte_ranges(self, rung: str) -> list[tuple[int, int]]:
        """(length, offset) of each media segment of a rung's single file: its HLS playlist's EXT-X-BYTERANGEs,
        the same ranges as its sidx entries."""
        playlist = self.origin.published(self.asset_id) / "single" / f"{rung}.m3u8"
        return [(int(n), int(o)) for n, o in re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", playlist.read_text())]

    def url(self, protocol: str, layout: str, asset_id: str | None = None) -> str:
        rel = {"hls": "master.m3u8", "dash": "manifest.mpd"}[protocol]
        return f"{self.origin.base}/assets/{asset_id or self.asset_id}/{'single/' if layout == 'single' else ''}{rel}"


@pytest.fixture(scope="module")
def ref(player_origin: Origin) -> Reference:
    _check_tools()
    asset = player_origin.assets["tones"]
    published = player_origin.published(asset["id"])
    master_file = next(player_origin.data.glob(f"masters/**/{asset['id']}.*"))
    pcm = subprocess.run([locate().path, "-v", "error", "-nostdin", "-i", str(master_file), "-f", "s16le",
                          "-ac", "2", "-ar", str(RATE), "-"], capture_output=True, check=True, timeout=60).stdout
    master = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64) / 32768
    assert len(master) == round(asset["duration_s"] * RATE) == 20 * RATE
    rungs = {}
    for r in asset["renditions"]:
        rungs[r["name"]] = Rung(r["name"], r["codec"], *priming_and_frames(published / "single" / f"{r['name']}.mp4"))
    return Reference(player_origin, asset["id"], master, rungs)


def priming_and_frames(path: Path) -> tuple[int, int]:
    """(edit list media_time, coded frames) of a single-file rendition, read with the packager's box reader:
    moov/trak/edts/elst and the sample counts of every moof/traf/trun.  The media timescale is 48 kHz."""
    top = list(iter_boxes(path.read_bytes()))
    trak = next(b for b in top if b.type == "moov").child("trak")
    assert trak is not None
    mdhd, elst = trak.child("mdia", "mdhd"), trak.child("edts", "elst")
    assert mdhd is not None and elst is not None, path
    version, _, rest = mdhd.full()
    assert struct.unpack_from(">I", rest, 16 if version == 1 else 8)[0] == RATE, path
    version, _, rest = elst.full()
    assert struct.unpack_from(">I", rest, 0)[0] == 1, path  # one edit
    media_time = struct.unpack_from(">q" if version == 1 else ">i", rest, 12 if version == 1 else 8)[0]
    frames = 0
    for moof in (b for b in top if b.type == "moof"):
        for traf in (c for c in moof.children() if c.type == "traf"):
            trun = traf.child("trun")
            assert trun is not None, path
            frames += struct.unpack_from(">I", trun.full()[2], 0)[0]
    return media_time, frames


def _check_tools() -> None:
    if not Path(GST_LAUNCH).exists():
        pytest.fail("GStreamer tests need gst-launch-1.0: run scripts/test-deps.sh", pytrace=False)
    missing = [e for e in NEEDED
               if subprocess.run([GST_INSPECT, "--exists", e], check=False, capture_output=True).returncode]
    if missing:
        pytest.fail(f"GStreamer elements missing: {missing}: run scripts/test-deps.sh", pytrace=False)


def assert_plays_master(ref: Reference, run: Run, rung: Rung) -> Alignment:
    """The whole stream decoded, cleanly: the master delayed by ``rung``'s priming to the sample, every
    section's tone, and exactly ``rung``'s coded frames (master + priming + less than one frame)."""
    why = run.explain()
    assert run.rc == 0 and not run.errors, why
    x = run.pcm[:, 0]
    assert len(x) > RATE, why
    al = align(x, ref.master)
    extra = len(x) - len(ref.master) - rung.priming
    assert len(x) == rung.decoded_by_gstreamer and 0 <= extra < FRAME[rung.codec], (
        f"decoded {len(x)} samples: master {len(ref.master)} + priming {rung.priming} + {extra}; "
        f"expected {rung.frames} {rung.codec} frames of {FRAME[rung.codec]}\n{why}")
    assert all(abs(lag - rung.priming) <= 1 for lag in al.lags), (al, why)
    assert al.worst > 0.99, (al, why)
    assert not check_tones(x, al.lag), (check_tones(x, al.lag), why)
    assert float(np.sqrt(np.mean(x[al.lag:al.lag + len(ref.master)] ** 2))) > 0.1, why  # -20 dBFS: the tones are -9
    # The master has the same tone on both channels: stereo kept, within the codecs' error (at most 0.012 seen)
    assert float(np.max(np.abs(run.pcm[:, 0] - run.pcm[:, 1]))) < 0.05, why
    return al


# ---- every manifest, whole stream --------------------------------------------------------------


def _whole_cases() -> list:
    cases = []
    for client in CLIENTS:
        for protocol in PROTOCOLS:
            for layout in LAYOUTS:
                marks = []
                if (client, protocol, layout) == ("playbin3", "dash", "single"):
                    marks = [pytest.mark.xfail(strict=True, raises=KnownGstDefect, reason=DASHDEMUX2_LAST_SUBSEGMENT)]
                cases.append(pytest.param(client, protocol, layout, id=f"{client}-{protocol}-{layout}", marks=marks))
    return cases


@pytest.mark.parametrize(("client", "protocol", "layout"), _whole_cases())
def test_gstreamer_plays_the_whole_stream(ref: Reference, tmp_path: Path, client: str, protocol: str,
                                          layout: str) -> None:
    """Adaptive playback as a box would do it: GStreamer picks the renditions (it starts on the first variant
    or AdaptationSet, AAC, and climbs to aac_256k over loopback), and the whole stream is the master's."""
    run, since = play_adaptive(ref.url(protocol, layout), client, tmp_path / "out.raw")
    run.requests = served(ref.origin, ref.asset_id, since)
    assert DEMUXER[client, protocol] in run.elements and "qtdemux" in run.elements, run.explain()
    aac = media_rungs(ref, run.requests) - {"opus_96k"}  # the legacy dashdemux also downloads the Opus AdaptationSet
    assert aac and all(ref.rungs[r].codec == "aac" for r in aac) and "avdec_aac" in run.elements, run.explain()
    assert all(r["status"] in (200, 206) for r in run.requests), run.explain()
    rung = ref.rungs[min(aac)]  # every AAC rung has the same priming and frame count
    if (client, protocol, layout) == ("playbin3", "dash", "single"):
        _raise_if_last_subsegment_missing(ref, run, rung)
    assert_plays_master(ref, run, rung)


def _raise_if_last_subsegment_missing(ref: Reference, run: Run, rung: Rung) -> None:
    """KnownGstDefect when dashdemux2 stopped exactly one subsegment short, without an error, never asking
    for the last one, while ffmpeg decodes the same MPD from the same origin to the end."""
    n = len(run.pcm)
    segments = -(-(len(ref.master) + rung.priming) // SEGMENT)
    if run.rc == 0 and not run.errors and n == (segments - 1) * SEGMENT and not _last_subsegment_requested(ref, run):
        ffmpeg = subprocess.run([locate().path, "-v", "error", "-nostdin", "-i", ref.url("dash", "single"),
                                 "-map", "0:a:0", "-f", "s16le", "-ac", "2", "-"],
                                check=False, capture_output=True, timeout=60)
        ffmpeg_frames = len(ffmpeg.stdout) // 4
        assert ffmpeg.returncode == 0 and ffmpeg_frames >= len(ref.master), ("ffmpeg fails too", ffmpeg.stderr[-2000:])
        raise KnownGstDefect(f"{DASHDEMUX2_LAST_SUBSEGMENT}: decoded {n} samples ({segments - 1} of {segments} "
                             f"subsegments, the last never requested), ffmpeg {ffmpeg_frames}\n{run.explain()}")


def _last_subsegment_requested(ref: Reference, run: Run) -> bool:
    """Whether any request reached the last sidx entry of a rung's single file."""
    for r in run.requests:
        m = re.fullmatch(r"single/([a-z0-9_]+)\.mp4", r["path"].split("/", 3)[-1])
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", r.get("range", ""))
        if m and (not rng or not rng.group(2) or int(rng.group(2)) >= ref.byte_ranges(m.group(1))[-1][1]):
            return True
    return False


# ---- a rendition of our choosing ---------------------------------------------------------------

# playbin's connection-speed (kb/s) is handed to the adaptive demuxers, which then pick the highest
# BANDWIDTH under 0.8 x that speed and keep it: 1 -> the lowest, 125 (100 kb/s) -> opus_96k (98.6 kb/s, above
# aac_64k's 67 kb/s: the HLS choice is by BANDWIDTH alone, across codecs), 100000 -> the highest.  Both DASH
# demuxers start every AdaptationSet on its lowest representation whatever the speed, so the first segment
# is aac_64k's.  (protocol, connection-speed, rung of the first segment, rung of the others)
FORCED = [("hls", 1, "aac_64k", "aac_64k"), ("hls", 125, "opus_96k", "opus_96k"),
          ("hls", 100000, "aac_256k", "aac_256k"), ("dash", 1, "aac_64k", "aac_64k"),
          ("dash", 100000, "aac_64k", "aac_256k")]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("protocol", "speed", "first", "rest"), FORCED, ids=[f"{p}-{s}kbps" for p, s, _, _ in FORCED])
def test_connection_speed_forces_one_rendition(ref: Reference, tmp_path: Path, client: str, protocol: str, speed: int,
                                              first: str, rest: str) -> None:
    run, since = play_adaptive(ref.url(protocol, "segmented"), client, tmp_path / "out.raw",
                               f"connection-speed={speed}")
    run.requests = served(ref.origin, ref.asset_id, since)
    rung = ref.rungs[rest]
    segments = [r["path"].split("/", 3)[-1] for r in run.requests if re.search(r"/seg-\d+\.m4s$", r["path"])]
    if client == "playbin" and protocol == "dash":  # the legacy dashdemux fetches every AdaptationSet, plays the first
        segments = [s for s in segments if not s.startswith("opus_96k/")]
    count = -(-(len(ref.master) + rung.priming) // SEGMENT)
    expected = [f"{first}/seg-00001.m4s"] + [f"{rest}/seg-{i:05d}.m4s" for i in range(2, count + 1)]
    assert segments == expected, run.explain()  # every segment once, in order, from the rung forced
    assert {"avdec_aac" if rung.codec == "aac" else "opusdec"} <= run.elements, run.explain()
    assert_plays_master(ref, run, rung)


def test_legacy_dashdemux_plays_the_opus_adaptation_set(ref: Reference, tmp_path: Path) -> None:
    """The legacy dashdemux exposes one pad per AdaptationSet (audio_00 AAC, audio_01 Opus): linking the second
    plays Opus over DASH.  (playbin3 chooses streams by a select-streams event, which gst-launch cannot send.)"""
    out = tmp_path / "out.raw"
    since = time.time()
    run = launch(["souphttpsrc", f"location={ref.url('dash', 'segmented')}", "!", "dashdemux", "name=d",
                  "d.audio_00", "!", "fakesink", "sync=false", "d.audio_01", "!", "decodebin", "!", *sink(out).split()],
                 out)
    run.requests = served(ref.origin, ref.asset_id, since)
    assert "opusdec" in run.elements and "avdec_aac" not in run.elements, run.explain()
    assert "opus_96k" in media_rungs(ref, run.requests), run.explain()
    assert_plays_master(ref, run, ref.rungs["opus_96k"])


# ---- what qtdemux does with the edit list outside the adaptive demuxers ------------------------


@pytest.mark.parametrize("rung_name", ["aac_256k", "opus_96k"])
def test_local_file_applies_the_edit_list(ref: Reference, tmp_path: Path, rung_name: str) -> None:
    """From a local file (qtdemux in pull mode) the single-file rendition decodes gaplessly: the edit list is
    applied, so the output is the master itself.  Tolerance one sample: qtdemux clips at the edit's start in
    nanoseconds (1024 / 48000 s = 21333333.3 ns, truncated), which may keep the last priming sample."""
    path = ref.origin.published(ref.asset_id) / "single" / f"{rung_name}.mp4"
    run = play(path.as_uri(), "playbin", tmp_path / "out.raw")
    assert run.rc == 0 and not run.errors, run.explain()
    x = run.pcm[:, 0]
    al = align(x, ref.master)
    assert abs(len(x) - len(ref.master)) <= 1 and abs(al.lag) <= 1 and al.worst > 0.99, (len(x), al, run.explain())
    assert not check_tones(x, al.lag), run.explain()


@pytest.mark.xfail(strict=True, raises=KnownGstDefect, reason=PUSH_MODE_DOUBLE_EDIT)
@pytest.mark.parametrize("rung_name", ["aac_256k", "opus_96k"])
def test_progressive_download_applies_the_edit_list(ref: Reference, tmp_path: Path, rung_name: str) -> None:
    """The same file fetched progressively over HTTP (not what the manifests do, but what a box given the
    file's URL does) should decode as from disk: the master from its first sample."""
    rung = ref.rungs[rung_name]
    run = play(f"{ref.origin.base}/assets/{ref.asset_id}/single/{rung_name}.mp4", "playbin", tmp_path / "out.raw")
    assert run.rc == 0 and not run.errors, run.explain()
    x = run.pcm[:, 0]
    al = align(x, ref.master)
    assert al.worst > 0.99 and not check_tones(x, al.lag), (al, run.explain())
    if abs(al.lag + rung.priming) <= 1 and abs(len(x) - (len(ref.master) - rung.priming)) <= 1:
        raise KnownGstDefect(f"{PUSH_MODE_DOUBLE_EDIT}: decoded {len(x)} samples starting {-al.lag} samples into "
                             f"the master (priming {rung.priming})")
    assert abs(len(x) - len(ref.master)) <= 1 and abs(al.lag) <= 1, (len(x), al, run.explain())


# ---- negative controls -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(player_origin: Origin) -> dict[str, str]:
    """fault -> id of a broken copy of the asset, served by the same origin: the faults of test_players_negative,
    except that the Opus rung keeps its segment 2.  Only the AAC streams GStreamer plays lose it; the legacy
    dashdemux also downloads the Opus AdaptationSet, and when both of its streams hit the 404 at once it hangs in
    about one run in three (9 of 29 here), a race a strict test cannot pin (docs/players.md, "GStreamer")."""
    out = {}
    for fault in ("missing_segment", "corrupt_init"):
        asset_id, folder = player_origin.broken_copy("tones", f"gstreamer-{fault}")
        FAULTS[fault](folder)
        if fault == "missing_segment":
            original = player_origin.published(player_origin.assets["tones"]["id"])
            shutil.copy2(original / "opus_96k" / "seg-00002.m4s", folder / "opus_96k" / "seg-00002.m4s")
        out[fault] = asset_id
    return out


def gst_error(client: str, fault: str, run: Run) -> bool:
    """GStreamer's own error for each fault, as gst-launch prints it."""
    text = "\n".join(run.errors)
    if fault == "missing_segment":
        if client == "playbin":  # souphttpsrc's error, forwarded by hlsdemux/dashdemux after its retries
            return bool(re.search(r"Not Found \(404\), URL: \S+/seg-00002\.m4s", text))
        return "Couldn't download fragments" in text  # adaptivedemux2, after its consecutive failures
    return "This file contains no playable streams" in text  # qtdemux on the garbage moov


def _negative_cases() -> list:
    cases = []
    for client in CLIENTS:
        for protocol in PROTOCOLS:
            for fault in ("missing_segment", "corrupt_init"):
                marks = []
                if client == "playbin3" and fault == "corrupt_init":
                    marks = [pytest.mark.xfail(strict=True, raises=KnownGstDefect,
                                               reason=ADAPTIVEDEMUX2_SWALLOWS_ERROR)]
                cases.append(pytest.param(client, protocol, fault, id=f"{client}-{protocol}-{fault}", marks=marks))
    return cases


@pytest.mark.parametrize(("client", "protocol", "fault"), _negative_cases())
def test_broken_asset_fails_with_gstreamers_error(ref: Reference, broken: dict[str, str], tmp_path: Path, client: str,
                                                  protocol: str, fault: str) -> None:
    """The player tests can fail: the broken copy must stop GStreamer with an error of its own, before the end."""
    since = time.time()
    run = play(ref.url(protocol, "segmented", broken[fault]), client, tmp_path / "out.raw",
               timeout=ERROR_WAIT_S[fault])
    run.requests = served(ref.origin, broken[fault], since)
    why = run.explain()
    swallowed = re.search(r"Source posted error: .*This file contains no playable streams"
                          r"|Received moof with moov in iso-ff stream", run.stderr)
    if client == "playbin3" and fault == "corrupt_init" and run.rc is None and not run.errors and swallowed:
        raise KnownGstDefect(f"{ADAPTIVEDEMUX2_SWALLOWS_ERROR}: no error and no sample after {ERROR_WAIT_S[fault]} s, "
                             f"{len(run.pcm)} samples\n{why}")
    assert run.rc not in (0, None) and run.errors, why
    assert gst_error(client, fault, run), why
    assert len(run.pcm) < len(ref.master), why  # it did not play through
    if fault == "missing_segment":
        assert any(r["status"] == 404 and r["path"].endswith("/seg-00002.m4s") for r in run.requests), why
