"""Logging never takes the server down: broken log pipes at every point of the writer's life, in a fixed order."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest
from fixtures_origin import make_ffmpeg_asset

from origin.app import ORIGIN, make_app
from origin.observe import AccessLog
from tonearm.core.config import Config, OriginConfig, StorageConfig


def _request(i: int) -> SimpleNamespace:
    return SimpleNamespace(method="GET", raw_path=f"/assets/{i:064x}/a/seg-00001.m4s", path="/assets/x",
                           remote="127.0.0.1", headers={})


class BrokenStream:
    """A log stream whose pipe broke: writes may or may not fail, ``close`` does (the buffered tail cannot go)."""

    def __init__(self, *, write_fails: bool) -> None:
        self.write_fails = write_fails
        self.lines = 0
        self.closed = False
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.written.set()
        if self.write_fails:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        if self.write_fails:
            raise BrokenPipeError(32, "Broken pipe")

    def close(self) -> None:
        self.closed = True
        raise BrokenPipeError(32, "Broken pipe")


def test_reader_gone_before_the_first_write_then_close():
    """Fixed order: the reader closes, a batch is written (it fails and stays buffered), then close() flushes it."""
    r, w = os.pipe()
    log = AccessLog(f"/proc/self/fd/{w}", flush_s=3600)
    os.close(r)  # 1. the pipe is broken before anything is written
    for i in range(10):
        log.write(_request(i), f"id-{i}", 200, 10, 0.001, "media", None)
    log.flush()  # 2. one batch handed to the writer thread: its write or flush meets EPIPE, the text stays buffered
    log.close()  # 3. the writer drains that batch, exits; close() flushes the buffered tail into the broken pipe
    assert log._stream is None
    assert log._writer is not None and not log._writer.is_alive()
    os.close(w)


@pytest.mark.parametrize("write_fails", [False, True])
def test_close_survives_a_stream_whose_close_raises(write_fails):
    stream = BrokenStream(write_fails=write_fails)
    log = AccessLog("", flush_s=3600, stream=stream)
    assert log.enabled
    log.write(_request(1), "id-1", 200, 10, 0.001, "media", None)
    log.flush()
    assert stream.written.wait(10)  # the writer thread has taken the batch
    log.close()  # the stream's close raises BrokenPipeError: shutdown carries on
    assert stream.closed
    assert stream.lines == (0 if write_fails else 1)
    log.write(_request(2), "id-2", 200, 10, 0.001, "media", None)  # a late line after close is dropped, no error
    log.flush()
    log.close()  # and a second close is harmless


async def test_app_shutdown_completes_when_the_log_pipe_is_broken(aiohttp_client, tmp_path):
    """Through the application: requests are logged, the stream breaks, cleanup (shutdown) still finishes."""
    data = tmp_path / "data"
    asset = make_ffmpeg_asset(data / "published", "broken-log")
    app = make_app(Config(storage=StorageConfig(root=data), origin=OriginConfig(access_log="")))
    stream = BrokenStream(write_fails=False)
    origin = app[ORIGIN]
    origin.access = AccessLog("", flush_s=0.0, stream=stream)
    closed: list[bool] = []
    real_close = origin.source.close

    async def source_close() -> None:  # the storage source is closed after the log: that must still happen
        closed.append(True)
        await real_close()

    origin.source.close = source_close
    client = await aiohttp_client(app)
    assert (await client.get(f"/assets/{asset}/master.m3u8")).status == 200
    assert stream.written.wait(10)
    stream.write_fails = True  # the reader goes away
    assert (await client.get(f"/assets/{asset}/manifest.mpd")).status == 200  # serving carries on
    await client.close()  # runs the app's cleanup: AccessLog.close() meets BrokenPipeError in the stream's close
    assert stream.closed and closed == [True]
