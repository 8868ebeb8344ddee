"""Kept descriptors (origin.kept) and the gate refresher (LocalSource.keep_gates_fresh), on real files.

A cache smaller than the working set evicts segment bytes; the next request for
one is read from its kept descriptor on the loop (RWF_NOWAIT) when it is in the
page cache, and through the executor when it is not.  Neither path may outlive
a takedown: a gate that is gone or changed stops both within the window.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from fixtures_origin import make_ffmpeg_asset

from origin.cache import EntryCache
from origin.representation import Kind, Region
from origin.sources import LocalSource, Scope
from tonearm.core.storage import DESCRIPTOR


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, str, list[str]]:
    published = tmp_path / "published"
    asset = make_ffmpeg_asset(published, "kept")
    segs = sorted(p.relative_to(published / asset).as_posix() for p in (published / asset).rglob("seg-*.m4s"))
    assert len(segs) >= 3
    return published, asset, segs


def _source(published: Path, budget: int) -> LocalSource:
    return LocalSource(published, published / "static-none", EntryCache(budget), manifest_ttl=10)


async def test_an_evicted_segment_is_read_again_from_its_kept_descriptor(tree):
    published, asset, segs = tree
    scope = Scope(f"a/{asset}", asset)
    sizes = {s: (published / asset / s).stat().st_size for s in segs}
    src = _source(published, budget=max(sizes.values()) + 1024)  # room for one segment only
    loop = asyncio.get_running_loop()
    try:
        for s in segs:
            entry, body = await src.resolve(scope, s, Kind.MEDIA)
            assert body is None and bytes(entry.identity.body) == (published / asset / s).read_bytes()
        assert len(src.kept) == len(segs) and len(src.cache) == 1
        first = segs[0]
        revived = src.peek(scope, first, Kind.MEDIA, loop.time())  # evicted: no executor, same bytes
        assert revived is not None and bytes(revived.identity.body) == (published / asset / first).read_bytes()
        assert revived.identity.headers == (await src.resolve(scope, first, Kind.MEDIA))[0].identity.headers
        assert src.kept.reads >= 1

        # Not in the page cache: the loop must not read it (EAGAIN), the executor does.
        second = segs[1]
        fd = os.open(published / asset / second, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        reads = src.kept.reads
        if src.peek(scope, second, Kind.MEDIA, loop.time()) is None:  # (a kernel may keep it resident anyway)
            assert src.kept.reads == reads
        entry, _ = await src.resolve(scope, second, Kind.MEDIA)
        assert bytes(entry.identity.body) == (published / asset / second).read_bytes()
    finally:
        await src.close()
    assert len(src.kept) == 0


@pytest.mark.parametrize("sendable", [False, True], ids=["read", "sendfile"])
async def test_a_taken_down_or_republished_asset_is_not_served_from_kept_descriptors(tree, sendable):
    """Both ways out of a kept descriptor: read into memory (aiohttp's path) or a Region to sendfile (the fast
    path's)."""
    published, asset, segs = tree
    scope = Scope(f"a/{asset}", asset)
    src = _source(published, budget=1)  # nothing stays cached: every hit is a kept-descriptor read
    src.revalidate_s = 0.4
    refresher = asyncio.create_task(src.keep_gates_fresh())
    loop = asyncio.get_running_loop()

    def peek(rel: str):
        entry = src.peek(scope, rel, Kind.MEDIA, loop.time(), sendable=sendable)
        if entry is not None:
            assert isinstance(entry.identity.body, Region) == sendable
        return entry
    try:
        for s in segs:
            await src.resolve(scope, s, Kind.MEDIA)
        # The refresher keeps the gate fresh while requests use it: served past the window, no executor call.
        for _ in range(8):
            assert peek(segs[0]) is not None
            await asyncio.sleep(0.1)
        # Re-published (a new descriptor): the kept descriptors belong to the old version.
        desc = published / asset / DESCRIPTOR
        text = desc.read_text()
        desc.unlink()
        desc.write_text(text + " ")
        await asyncio.sleep(src.revalidate_s)
        assert peek(segs[0]) is None
        await src.resolve(scope, segs[0], Kind.MEDIA)  # loaded under the new gate
        assert peek(segs[0]) is not None
        # Taken down: gone from every path within the window, although its descriptors are still open.
        shutil.rmtree(published / asset)
        await asyncio.sleep(src.revalidate_s)
        assert peek(segs[0]) is None
        assert await src.resolve(scope, segs[0], Kind.MEDIA) is None
    finally:
        refresher.cancel()
        await src.close()


def test_kept_descriptors_are_bounded_and_closed_least_recent_first(tree):
    from origin.kept import KeptFiles
    from origin.representation import make_entry

    kept = KeptFiles(limit=2)
    fds = []
    for i in range(3):
        fd = os.open(os.devnull, os.O_RDONLY)
        fds.append(fd)
        entry = make_entry(key=f"a/x/seg-{i}.m4s", kind=Kind.MEDIA, content_type="audio/mp4", version=(i,), mtime=0,
                           size=0, etag=f'"{i}"', body=b"", path=None, manifest_ttl=10, compressible=False)
        kept.keep(entry, fd)
    assert len(kept) == 2
    with pytest.raises(OSError):
        os.fstat(fds[0])  # the least recently kept was closed
    os.fstat(fds[2])
    kept.close()
    with pytest.raises(OSError):
        os.fstat(fds[2])
