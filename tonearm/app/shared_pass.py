"""One decode per master: validation, loudness and every rung's encoder in the same ffmpeg run.

Before, a master was decoded twice: by ingest's validation pass (full decode through
``ebur128`` and ``astats``) and again by the encoder run.  Here ingest's cheap header checks
(``ingest.inspect.check_header``: allowlist, probe, channels, rate, WAV chunks, header length)
run first; then one ffmpeg run decodes the master once and feeds both the ladder's encoders and
ingest's measurement branch (``ingest.inspect.measurement_branch``, ``asplit`` before the
resampler, so the measured samples are exactly those the separate pass measured); ingest judges
that run's log (``judge_log``) with the same rules as before.

The verdict on a bad master stays the reference pass's: if the shared run rejects the master or
fails, its encoder outputs are discarded and ``ingest.inspect`` runs on its own, so a bad master
is quarantined with exactly the code and details it always got, and a good master whose encoder
failed is a failed job as before.  Bad masters are rare; good ones are decoded once.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Callable

from ingest import Rejected, inspect
from ingest.inspect import HeaderCheck, check_header, judge_log, measurement_branch
from tonearm.core.catalog import owner_alive
from tonearm.core.config import Config
from tonearm.core.ffmpeg import FfmpegError, FfmpegInfo, progress_to
from tonearm.core.model import EncodedRendition, MasterInfo
from tonearm.core.storage import Storage
from transcode import build_command, encode_ladder, encode_measured, encode_measured_async, split_rungs
from transcode.split import lightest

OnEncode = Callable[[MasterInfo], Callable[[float], None] | None]


@dataclass
class SharedPass:
    """An accepted master and its encoded rungs in a staging folder of its own (``None``: not encoded)."""

    info: MasterInfo
    encoded: list[EncodedRendition] | None
    staging: Path | None

    def __enter__(self) -> "SharedPass":
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self.staging is not None:  # normally the publish step moved or removed it already
            shutil.rmtree(self.staging, ignore_errors=True)


def validate_and_encode(cfg: Config, storage: Storage, master: Path, *, asset_id: str, source_name: str,
                        owner: str, ffmpeg: FfmpegInfo, encoders: int = 1,
                        on_encode: OnEncode | None = None) -> SharedPass:
    """Validate ``master`` and encode its ladder from one decode; raises ``Rejected`` for a bad master.

    ``encoders`` > 1 splits the ladder across that many concurrent ffmpeg runs (``transcode.split``),
    for a master that would otherwise leave cores idle; the measuring branch rides in the lightest.
    ``on_encode(info)`` is called as the encoders start (the job's stage) and returns the callback that
    receives ffmpeg's ``-progress`` seconds, or ``None``.
    """
    timeout, limits = cfg.ffmpeg.timeout, cfg.ingest
    if storage.is_published(asset_id):  # a crashed run published it already: validate only, encode nothing
        info = inspect(master, asset_id=asset_id, source_name=source_name, ffmpeg=ffmpeg, timeout=timeout,
                       limits=limits)
        return SharedPass(info=info, encoded=None, staging=None)
    head = check_header(master, ffmpeg=ffmpeg, timeout=timeout, limits=limits)  # cheap: no audio decoded
    storage.clean_stale_staging(asset_id, owner_alive)
    staging = storage.new_staging(asset_id, owner)
    try:
        with progress_to(on_encode(head.provisional(asset_id=asset_id, source_name=source_name))
                         if on_encode else None):
            info, encoded = _shared_run(cfg, master, head, staging / ".encode", asset_id=asset_id,
                                        source_name=source_name, ffmpeg=ffmpeg, encoders=encoders)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SharedPass(info=info, encoded=encoded, staging=staging)


def _shared_run(cfg: Config, master: Path, head: HeaderCheck, out_dir: Path, *, asset_id: str, source_name: str,
                ffmpeg: FfmpegInfo, encoders: int = 1) -> tuple[MasterInfo, list[EncodedRendition]]:
    timeout, limits = cfg.ffmpeg.timeout, cfg.ingest
    provisional = head.provisional(asset_id=asset_id, source_name=source_name)
    try:  # the run does the work of the two runs it replaces (decode pass, encode), so it has both budgets
        if encoders > 1 and len(cfg.ladder.all_rungs) > 1:
            encoded, log = asyncio.run(_split_runs(cfg, master, provisional, head, out_dir, ffmpeg, encoders))
        else:
            encoded, log = encode_measured(master, provisional, cfg.ladder, out_dir, ffmpeg=ffmpeg,
                                           timeout=2 * timeout, taps=(measurement_branch(head),))
        info = judge_log(head, log, asset_id=asset_id, source_name=source_name, limits=limits)
    except (Rejected, FfmpegError) as exc:
        shutil.rmtree(out_dir, ignore_errors=True)  # nothing of a rejected or failed run is kept
        # The reference pass decides: a bad master raises Rejected here, with its usual code.
        info = inspect(master, asset_id=asset_id, source_name=source_name, ffmpeg=ffmpeg, timeout=timeout,
                       limits=limits)
        if isinstance(exc, FfmpegError):
            raise  # the master is fine: the encoders failed (a job failure, not a quarantine)
        return info, encode_ladder(master, info, cfg.ladder, out_dir, ffmpeg=ffmpeg, timeout=timeout)
    if _command(master, provisional, cfg, out_dir, ffmpeg) != _command(master, info, cfg, out_dir, ffmpeg):
        # The decoded stream told more than the header (e.g. its real bit depth) and that changes an
        # encoder's settings: encode again exactly as the two-pass path would have.
        shutil.rmtree(out_dir, ignore_errors=True)
        encoded = encode_ladder(master, info, cfg.ladder, out_dir, ffmpeg=ffmpeg, timeout=timeout)
    return info, encoded


async def _split_runs(cfg: Config, master: Path, provisional: MasterInfo, head: HeaderCheck, out_dir: Path,
                      ffmpeg: FfmpegInfo, encoders: int) -> tuple[list[EncodedRendition], str]:
    """The ladder in ``encoders`` concurrent runs; the first failure kills the others (run_async)."""
    groups = split_rungs(cfg.ladder.all_rungs, encoders)
    tap_at = lightest(groups)
    tasks = [asyncio.ensure_future(encode_measured_async(
        master, provisional, cfg.ladder, out_dir, ffmpeg=ffmpeg, timeout=2 * cfg.ffmpeg.timeout,
        taps=(measurement_branch(head),) if i == tap_at else (), rungs=group)) for i, group in enumerate(groups)]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    by_name = {r.rung.name: r for part, _ in results for r in part}
    return [by_name[r.name] for r in cfg.ladder.all_rungs], results[tap_at][1]


def _command(master: Path, info: MasterInfo, cfg: Config, out_dir: Path, ffmpeg: FfmpegInfo) -> list[str]:
    """The encoder argv for ``info``, with the read limit left out (it differs by design)."""
    argv = build_command(master, info, cfg.ladder, out_dir, ffmpeg=ffmpeg)[0]
    i = argv.index("-t")
    return argv[:i] + argv[i + 2:]
