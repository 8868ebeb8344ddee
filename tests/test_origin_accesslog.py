"""The access log never blocks the event loop, even when nobody reads its pipe."""

import json
import os
import threading
import time
from types import SimpleNamespace

from origin.observe import AccessLog


def _request(i: int) -> SimpleNamespace:
    return SimpleNamespace(method="GET", raw_path=f"/assets/{i:064x}/a/seg-00001.m4s", remote="127.0.0.1",
                           headers={"Range": "bytes=0-99"})


def _sleeping(tid: int) -> bool:
    return open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()[0] == "S"


def test_a_stuck_log_pipe_drops_lines_instead_of_blocking(tmp_path) -> None:
    r, w = os.pipe()  # nobody reads r
    log = AccessLog(f"/proc/self/fd/{w}", flush_s=0.0, max_batches=4)  # its own (blocking) open file description
    os.set_blocking(w, False)
    try:
        while True:  # fill the pipe first: the writer thread's very first write blocks
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    done = threading.Event()

    def hammer() -> None:
        for i in range(20_000):  # ~4 MB of lines: far beyond the pipe's buffer
            log.write(_request(i), f"id-{i}", 206, 100, 0.001, "media", None)
        done.set()

    threading.Thread(target=hammer, daemon=True).start()
    assert done.wait(60), "AccessLog.write blocked on a full pipe"
    assert log.dropped > 0
    # A fixed order from here: first the writer thread is stuck inside a write (the queue is full, so it
    # cannot be waiting for a batch, and it stays asleep), then the reader goes away, then close().
    assert log._writer is not None
    tid = log._writer.native_id
    quiet = 0
    for _ in range(1000):
        quiet = quiet + 1 if log._queue.full() and _sleeping(tid) else 0
        if quiet >= 20:
            break
        time.sleep(0.01)
    assert quiet >= 20, "the writer thread never blocked on the full pipe"
    os.close(r)  # the blocked write fails now (EPIPE) and its tail stays buffered in the stream
    log.close()  # drains the queued batches into the broken pipe, flushes the tail: must return, not raise
    assert not log._writer.is_alive()
    os.close(w)


def test_lines_are_json_with_the_request_fields(tmp_path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), flush_s=0.0)
    log.write(_request(1), "rid-1", 206, 100, 0.0015, "media", None)
    log.write(_request(2), "rid-2", 500, 0, 0.002, "media", 'boom "quoted"')
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == ["rid-1", "rid-2"]
    assert records[0]["status"] == 206 and records[0]["range"] == "bytes=0-99" and records[0]["bytes"] == 100
    assert records[1]["error"] == 'boom "quoted"'
