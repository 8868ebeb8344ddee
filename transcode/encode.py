"""Encode every rung of the ladder from one decode of the master.

One ffmpeg process per master: the master is decoded once, resampled once to
the ladder rate with the best resampler available (see ``transcode.resampler``),
its timestamps are rebuilt from the sample count, the channel rule of
``transcode.channels`` is applied once per distinct channel count, and
``asplit`` feeds one encoder output per rung::

    [0:a] -> aresample(48 kHz) -> asetpts -> asplit ----------------> flac  (master layout)
                                          \\-> aresample(downmix) -> asplit -> aac, aac, opus (stereo)

Each output is a plain (non-fragmented) MP4 at ``out_dir/<rung.name>.mp4``
with no metadata, chapters, artwork or video: the packager cuts CMAF segments
from these files itself.  Outputs are written with ``-bitexact`` so the same
master and ladder give the same bytes.

Threads: the audio encoders are single-threaded.  ffmpeg >= 7 runs each output
in its own thread, so the rungs of one master overlap on two cores; ffmpeg 5.1
encodes them one after another on one core.  We do not pass ``-threads``
(nothing here would use it); parallelism across masters is the caller's, and a master
with a core to spare can have its ladder split across two runs (``rungs=``, ``transcode.split``).
Ingest's measuring filters can ride in the same run (``taps=``): one decode per master.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import ffmpeg as ffmpeg_python

from tonearm.core.codecs import codec
from tonearm.core.config import LadderConfig
from tonearm.core.ffmpeg import MASTER_PROTOCOLS, FfmpegError, FfmpegInfo, run, run_async
from tonearm.core.model import EncodedRendition, MasterInfo, MeasureBranch, Rung
from transcode.channels import remix_options, target_channels
from transcode.resampler import resample_options

log = logging.getLogger("tonearm.transcode")



class MissingEncoder(FfmpegError):
    """The ffmpeg binary lacks an encoder the ladder needs."""

    code = "ffmpeg_missing_encoder"


def _codec_options(rung: Rung, channels: int) -> dict[str, object]:
    """Encoder and options from the codec table (``tonearm.core.codecs``)."""
    entry = codec(rung.codec)
    opts: dict[str, object] = {"c:a": entry.encoder}
    if not entry.lossless:
        opts["b:a"] = str(rung.bitrate)
    return {**opts, **entry.options(rung.bitrate, channels)}


def _flac_format(info: MasterInfo) -> dict[str, object]:
    """Sample format of the lossless rung: 16-bit masters stay 16-bit (with TPDF dither
    after the float resampler), deeper masters are stored as 24-bit (s32 -> 24 bps)."""
    if info.bits_per_sample and info.bits_per_sample <= 16:
        return {"osf": "s16", "dither_method": "triangular"}
    return {"osf": "s32"}


def build_command(
    master: Path,
    info: MasterInfo,
    ladder: LadderConfig,
    out_dir: Path,
    *,
    ffmpeg: FfmpegInfo,
    resampler: str | None = None,
    taps: Sequence[MeasureBranch] = (),
    rungs: Sequence[Rung] | None = None,
) -> tuple[list[str], list[EncodedRendition]]:
    """The ffmpeg argv encoding every rung, and the renditions it will write.

    ``taps`` are measurement branches (``MeasureBranch``) split off the decoded master before
    resampling, each into the null muxer: the master is then decoded once for both.  With taps the
    input is read up to the taps' ``read_limit_s`` (the master is not validated yet) and the run
    logs at the taps' level; the encoder outputs are the same bytes either way.  ``rungs`` encodes
    only part of the ladder (``transcode.split``): each rung's bytes do not depend on its company.
    """
    if rungs is None:
        rungs = ladder.all_rungs
    elif not set(rungs) <= set(ladder.all_rungs):
        raise ValueError("rungs: every rung must be one of the ladder's")
    for rung in rungs:
        if rung.sample_rate != ladder.sample_rate:
            raise ValueError(f"rung {rung.name}: sample_rate {rung.sample_rate} differs from the ladder's "
                             f"{ladder.sample_rate}; one master is resampled once, to one rate")
    missing = sorted({codec(r.codec).encoder for r in rungs} - ffmpeg.encoders)
    if missing:
        raise MissingEncoder(
            f"{ffmpeg.path} ({ffmpeg.source}, {ffmpeg.version}) has no {', '.join(missing)} encoder; "
            "install an ffmpeg that has it or set TONEARM_FFMPEG"
        )

    # Timestamps are rebuilt from the sample count after resampling, in 1/48000 ticks: the
    # resampler rescales the master's timestamps with rounding, which otherwise reaches the
    # encoders as +-1 tick jitter (1023/1025-tick AAC frames in stts) and moves segment
    # boundaries; a master with offset or gappy timestamps also becomes one run from 0.
    # The master's demuxer is forced and only file: is allowed (tonearm.core.ffmpeg.master_input's rule), and
    # reading stops at the validated duration: the encoders never run past what ingest measured.
    read_s = max([t.read_limit_s for t in taps], default=info.duration_s + 1.0)
    decoded = ffmpeg_python.input("file:" + str(Path(master).absolute()), f=info.demuxer,
                                  protocol_whitelist=MASTER_PROTOCOLS, t=f"{read_s:.6f}").audio
    tapped = decoded.filter_multi_output("asplit", len(taps) + 1) if taps else None
    resampled = (
        (tapped.stream(0) if tapped is not None else decoded)
        .filter("aresample", **resample_options(ffmpeg.path, ladder.sample_rate, prefer=resampler))
        .filter("asetpts", "N/SR/TB")
    )

    by_count: dict[int, list[Rung]] = {}
    for rung in rungs:
        by_count.setdefault(target_channels(rung, info.channels), []).append(rung)
    sources = resampled.filter_multi_output("asplit", len(by_count)) if len(by_count) > 1 else None

    outputs = []
    renditions = []
    for i, (channels, group) in enumerate(by_count.items()):
        branch = sources.stream(i) if sources is not None else resampled
        if channels != info.channels:
            branch = branch.filter("aresample", **remix_options(channels))
        split = branch.filter_multi_output("asplit", len(group)) if len(group) > 1 else None
        for j, rung in enumerate(group):
            stream = split.stream(j) if split is not None else branch
            if codec(rung.codec).lossless:
                stream = stream.filter("aresample", **_flac_format(info))
            path = out_dir / f"{rung.name}.mp4"
            outputs.append(
                ffmpeg_python.output(
                    stream, str(path), format="mp4", vn=None, sn=None, dn=None,
                    map_metadata=-1, map_chapters=-1, fflags="+bitexact", **{"flags:a": "+bitexact"},
                    **_codec_options(rung, channels),
                )
            )
            renditions.append(EncodedRendition(rung=rung, path=path, channels=channels))

    for k, tap in enumerate(taps, start=1):
        assert tapped is not None
        branch = tapped.stream(k)
        for name, options in tap.filters:
            branch = branch.filter(name, **options)
        outputs.append(ffmpeg_python.output(branch, "-", format="null", **{"c:a": tap.codec}))
    loglevel = taps[0].loglevel if taps else "warning"
    graph = ffmpeg_python.merge_outputs(*outputs).global_args(
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel
    )
    argv = graph.compile(cmd=ffmpeg.path, overwrite_output=True)
    order = {r.path: r for r in renditions}  # keep the ladder's order in the result
    return argv, [order[out_dir / f"{r.name}.mp4"] for r in rungs]


def encode_ladder(
    master: Path,
    info: MasterInfo,
    ladder: LadderConfig,
    out_dir: Path,
    *,
    ffmpeg: FfmpegInfo,
    timeout: float,
) -> list[EncodedRendition]:
    """Encode all rungs of ``ladder`` from ``master`` in one ffmpeg run."""
    return encode_measured(master, info, ladder, out_dir, ffmpeg=ffmpeg, timeout=timeout)[0]


def encode_measured(
    master: Path,
    info: MasterInfo,
    ladder: LadderConfig,
    out_dir: Path,
    *,
    ffmpeg: FfmpegInfo,
    timeout: float,
    taps: Sequence[MeasureBranch] = (),
    rungs: Sequence[Rung] | None = None,
) -> tuple[list[EncodedRendition], str]:
    """``encode_ladder`` with measurement branches (and optionally part of the ladder); also returns
    the run's stderr for the branches' parser."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv, renditions = build_command(master, info, ladder, out_dir, ffmpeg=ffmpeg, taps=taps, rungs=rungs)
    log.info("encoding %s (%d ch, %d Hz) into %s", info.asset_id[:12], info.channels, info.sample_rate,
             ", ".join(f"{r.rung.name}/{r.channels}ch" for r in renditions))
    done = run(argv, timeout=timeout)  # logs the exact argv; kills ffmpeg on timeout or cancel
    _check_outputs(renditions, argv)
    return renditions, done.stderr.decode(errors="replace")


async def encode_measured_async(
    master: Path,
    info: MasterInfo,
    ladder: LadderConfig,
    out_dir: Path,
    *,
    ffmpeg: FfmpegInfo,
    timeout: float,
    taps: Sequence[MeasureBranch] = (),
    rungs: Sequence[Rung] | None = None,
) -> tuple[list[EncodedRendition], str]:
    """``encode_measured`` on the event loop, so several runs of one master can overlap (and all be
    killed together on a failure or a cancel: ``tonearm.core.ffmpeg.run_async``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv, renditions = build_command(master, info, ladder, out_dir, ffmpeg=ffmpeg, taps=taps, rungs=rungs)
    log.info("encoding part of %s's ladder: %s", info.asset_id[:12], ", ".join(r.rung.name for r in renditions))
    _, stderr = await run_async(argv, timeout=timeout)
    _check_outputs(renditions, argv)
    return renditions, stderr


def _check_outputs(renditions: list[EncodedRendition], argv: list[str]) -> None:
    for r in renditions:
        if not r.path.is_file() or r.path.stat().st_size == 0:
            raise FfmpegError(f"ffmpeg reported success but wrote no {r.path.name}", argv=argv)
