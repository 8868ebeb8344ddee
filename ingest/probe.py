"""What the container says: format, first audio stream, header duration, video.

PyAV (``av.open``) probes in-process; if PyAV is not installed the same facts
are parsed from ``ffmpeg -i`` (which prints the stream summary and exits 1
for want of an output).  Cover art is a video stream with the
``attached_pic`` disposition and does not count as video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import FFMPEG_TIMEOUT, NO_AUDIO_STREAM, NOT_AUDIO, TRUNCATED, reject
from ingest.formats import Container
from tonearm.core.ffmpeg import FfmpegError, FfmpegInfo, FfmpegTimeout, master_input, master_open_options, run


@dataclass(frozen=True, kw_only=True)
class Probe:
    container: str
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None
    bits_per_sample: int | None
    header_duration_s: float | None
    has_video: bool


def probe(path: Path, container: Container, *, ffmpeg: FfmpegInfo, timeout: float) -> Probe:
    """Open ``path`` with the demuxer ``container`` names (never a probed one) and describe it."""
    try:
        import av  # noqa: F401
    except ImportError:
        return probe_with_ffmpeg(path, container, ffmpeg=ffmpeg, timeout=timeout)
    return probe_with_pyav(path, container)


def probe_with_pyav(path: Path, allowed: Container) -> Probe:
    import av

    try:
        container = av.open(str(Path(path).absolute()), mode="r", format=allowed.demuxer,
                            options=master_open_options())
    except av.error.EOFError as exc:  # a real container whose bytes end before its headers do
        raise reject(TRUNCATED, "the file ends inside its container headers; it looks cut off",
                     ffmpeg_error=str(exc)) from None
    except (av.FFmpegError, UnicodeDecodeError) as exc:  # e.g. an MP4 cut before its moov index
        raise reject(NOT_AUDIO, f"the {allowed.name} container is unreadable (damaged, or cut off before "
                     "its index)", ffmpeg_error=str(exc)) from None
    with container:
        audio = list(container.streams.audio)
        has_video = any(not (v.disposition & av.stream.Disposition.attached_pic) for v in container.streams.video)
        if not audio:
            kinds = sorted({s.type for s in container.streams})
            raise reject(NO_AUDIO_STREAM, f"{allowed.reported} container has no audio stream",
                         container=allowed.reported, streams=kinds)
        st = audio[0]
        ctx = st.codec_context
        header = None
        if st.duration is not None and st.time_base:
            header = float(st.duration * st.time_base)
        elif container.duration is not None:
            header = container.duration / 1_000_000
        # PyAV does not expose bits_per_raw_sample (a 24-bit FLAC decodes to s32): the decode
        # pass reads the real depth from ffmpeg's stream summary; this is the container's guess.
        lossless = ctx.codec.name.startswith("pcm_") or ctx.codec.name in ("flac", "alac")
        bits = (ctx.format.bits or None) if lossless and ctx.format else None
        layout = _named_layout(ctx.layout.name if ctx.layout else None)
        return Probe(
            container=allowed.reported,  # PyAV names a forced format by the name it was given ("mov")
            codec=ctx.codec.canonical_name,  # "mp3", not the decoder's name "mp3float"
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            channel_layout=layout,
            bits_per_sample=bits,
            header_duration_s=header,
            has_video=has_video,
        )


def _named_layout(name: str | None) -> str | None:
    """ffmpeg's "2 channels" (no channel mask, e.g. a plain WAV) means mono/stereo by convention."""
    if name and (m := re.fullmatch(r"(\d+) channels", name)):
        return {1: "mono", 2: "stereo"}.get(int(m.group(1)))
    return name


_LAYOUT_CHANNELS = {
    "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4, "quad(side)": 4,
    "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6, "6.0(front)": 6,
    "hexagonal": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7, "7.0": 7, "7.0(front)": 7, "7.1": 8,
    "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8, "downmix": 2,
}
_LEVEL_PREFIX_RE = re.compile(r"^\[(?:info|warning|error|verbose)\] ", re.M)
_INPUT_RE = re.compile(r"^Input #0, (?P<fmt>[^,]+(?:,[^,\s]+)*), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)")
_STREAM_RE = re.compile(r"Stream #0:\d+(?:\[\w+\])?(?:\(\w+\))?: (?P<kind>Audio|Video|Data|Subtitle): (?P<rest>.*)")


def probe_with_ffmpeg(path: Path, allowed: Container, *, ffmpeg: FfmpegInfo, timeout: float) -> Probe:
    """Parse ``ffmpeg -i``'s stream summary (the fallback when PyAV is missing)."""
    argv = [ffmpeg.path, "-nostdin", "-hide_banner", *master_input(allowed.demuxer, path)]
    try:
        text = run(argv, timeout=timeout).stderr.decode(errors="replace")
    except FfmpegTimeout as exc:
        raise reject(FFMPEG_TIMEOUT, str(exc)) from None
    except FfmpegError as exc:
        text = exc.stderr  # exit 1 is expected: no output file was given
    return parse_summary(text)


def parse_summary(text: str) -> Probe:
    """The ``Input #0`` block ffmpeg prints to stderr, as a :class:`Probe`."""
    text = _LEVEL_PREFIX_RE.sub("", text)  # "[info] " when run with -loglevel level+...
    m = _INPUT_RE.search(text)
    if not m:
        last = text.strip().splitlines()[-1] if text.strip() else ""
        raise reject(NOT_AUDIO, "not a recognised audio container", ffmpeg_error=last)
    container = m.group("fmt")
    audio: str | None = None
    has_video = False
    for sm in _STREAM_RE.finditer(text):
        if sm.group("kind") == "Audio" and audio is None:
            audio = sm.group("rest")
        elif sm.group("kind") == "Video" and "(attached pic)" not in sm.group("rest"):
            has_video = True
    if audio is None:
        raise reject(NO_AUDIO_STREAM, f"{container} container has no audio stream", container=container)
    parts = [p.strip() for p in re.sub(r"\([^)]*\)", lambda x: x.group(0).replace(",", ";"), audio).split(",")]
    codec = parts[0].split()[0]
    rate = int(parts[1].split()[0]) if len(parts) > 1 and parts[1].endswith("Hz") else 0
    layout = parts[2].replace(";", ",") if len(parts) > 2 else None
    if layout and (cm := re.match(r"(\d+) channels", layout)):
        channels, layout = int(cm.group(1)), _named_layout(layout)
    else:
        channels = _LAYOUT_CHANNELS.get(layout or "", 0)
    bits = None
    if len(parts) > 3 and (bm := re.search(r"\((\d+) bit\)", parts[3].replace(";", ","))):
        bits = int(bm.group(1))
    elif len(parts) > 3 and codec.startswith("pcm_"):
        bm = re.match(r"[su](\d+)|flt|dbl", parts[3])
        bits = int(bm.group(1)) if bm and bm.group(1) else {"flt": 32, "dbl": 64}.get(parts[3].split()[0][:3])
    header = None
    if dm := _DURATION_RE.search(text):
        header = int(dm.group("h")) * 3600 + int(dm.group("m")) * 60 + float(dm.group("s"))
    return Probe(container=container, codec=codec, sample_rate=rate, channels=channels, channel_layout=layout,
                 bits_per_sample=bits, header_duration_s=header, has_video=has_video)
