"""Storage for takedown and repackage: ``unpublish`` (descriptor first, then the media) and ``replace``
(a rebuilt version swapped in at once), on local disk and on a real S3 server (Swift with s3api)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import boto3
import pytest

from tonearm.core import storage as storage_mod
from tonearm.core.config import Config, StorageConfig
from tonearm.core.s3storage import S3Storage, object_key
from tonearm.core.storage import DESCRIPTOR, LocalStorage, NotPublished, exchange_paths

AID = "a" * 64
BUCKET = "api-storage"


def _stage(st: LocalStorage | S3Storage, version: str, rungs: tuple[str, ...] = ("aac_128k",)) -> Path:
    staged = st.new_staging(AID, "host:1")
    for rung in rungs:
        (staged / rung).mkdir()
        for i in range(1, 4):
            (staged / rung / f"seg-{i:05d}.m4s").write_bytes(f"{version}:{rung}:{i}".encode() * 100)
    (staged / "master.m3u8").write_text(f"#EXTM3U {version}\n")
    (staged / DESCRIPTOR).write_text(f'{{"version": "{version}"}}')
    return staged


def test_local_unpublish_removes_the_descriptor_before_anything_else(tmp_path: Path, monkeypatch) -> None:
    st = LocalStorage(tmp_path / "data")
    st.publish(AID, _stage(st, "v1"))
    folder = st.published_root / AID
    seen: list[tuple[bool, bool]] = []
    real_rename = os.rename

    def rename(src, dst):  # the media leave published/ in this rename: the descriptor must be gone by then
        if Path(src) == folder:
            seen.append(((folder / DESCRIPTOR).exists(), (folder / "aac_128k" / "seg-00001.m4s").exists()))
        return real_rename(src, dst)

    monkeypatch.setattr(storage_mod.os, "rename", rename)
    assert st.unpublish(AID) is True
    assert seen == [(False, True)]  # descriptor gone, media still there, at the moment the media went
    assert not folder.exists() and not st.is_published(AID)
    assert list((st.root / "staging").iterdir()) == []  # nothing left aside
    assert st.unpublish(AID) is False  # idempotent


def test_local_unpublish_of_a_half_published_folder_removes_it(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "data")
    (st.published_root / AID / "aac_128k").mkdir(parents=True)  # media without a descriptor (never served)
    assert st.unpublish(AID) is True and not (st.published_root / AID).exists()


def test_local_replace_is_one_atomic_exchange(tmp_path: Path) -> None:
    """Readers of the live files during 100 replacements never miss a file and never read a torn one."""
    st = LocalStorage(tmp_path / "data")
    st.publish(AID, _stage(st, "v0"))
    assert exchange_paths(tmp_path, tmp_path / "data") in (True, False)  # callable here
    final = st.published_root / AID
    misses: list[str] = []
    torn: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for rel in (DESCRIPTOR, "master.m3u8", "aac_128k/seg-00002.m4s"):
                try:
                    data = (final / rel).read_bytes()
                except FileNotFoundError:
                    misses.append(rel)
                    continue
                if rel.endswith(".m4s") and not re.fullmatch(rb"(?:(v\d+):aac_128k:2)+", data):
                    torn.append(data[:40])

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 101):
            st.replace(AID, _stage(st, f"v{n}"))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not misses, f"misses: {len(misses)}"
    assert torn == []
    assert st.read_descriptor(AID) == {"version": "v100"}
    assert [p.name for p in (st.root / "staging").iterdir()] == []  # every old version deleted


def test_replace_of_an_unpublished_asset_is_refused(tmp_path: Path) -> None:
    """A rebuild finishing after a takedown must not publish the asset again."""
    st = LocalStorage(tmp_path / "data")
    staged = _stage(st, "v1")
    with pytest.raises(NotPublished):
        st.replace(AID, staged)
    assert not st.is_published(AID) and not staged.exists()
    st.publish(AID, _stage(st, "v0"))
    st.unpublish(AID)
    with pytest.raises(NotPublished):
        st.replace(AID, _stage(st, "v2"))
    assert not (st.published_root / AID).exists()
    with pytest.raises(ValueError, match="asset.json"):
        st.replace(AID, st.new_staging(AID, "host:1"))


@pytest.fixture(scope="module")
def s3(swift_server, tmp_path_factory):
    boto3.client("s3", endpoint_url=swift_server.base_url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    root = tmp_path_factory.mktemp("s3root")
    cfg = Config(storage=StorageConfig(backend="s3", root=root, s3_bucket=BUCKET, s3_endpoint_url=swift_server.base_url,
                                       s3_prefix="media/"))
    return S3Storage(cfg), swift_server


def _writes_logged(server, before: int, *, until, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The DELETE and POST requests Swift's proxy logged after offset ``before``, in order (the access log
    arrives over UDP, so wait until ``until(calls)`` holds or the timeout passes)."""
    from fixtures_swift import s3_requests

    deadline = time.monotonic() + timeout
    while True:
        calls = [(m, path) for m, path, _ in s3_requests(server.log()[before:]) if m in ("DELETE", "POST")]
        if until(calls) or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


@pytest.mark.slow
def test_s3_unpublish_deletes_the_descriptor_first_then_every_object(s3) -> None:
    st, server = s3
    st.publish(AID, _stage(st, "v1", ("aac_128k", "opus_96k")))
    assert st.is_published(AID)
    before = len(server.log())
    assert st.unpublish(AID) is True
    calls = _writes_logged(server, before, until=lambda c: any(m == "POST" for m, _ in c[1:]))
    assert calls[0] == ("DELETE", f"/{BUCKET}/{object_key(st.scfg, AID, DESCRIPTOR)}"), calls  # the descriptor first
    assert any(method == "POST" and "delete" in path for method, path in calls[1:]), calls  # then the media
    left = st.client.list_objects_v2(Bucket=BUCKET, Prefix=object_key(st.scfg, AID, "")).get("KeyCount")
    assert left == 0 and not st.is_published(AID)
    assert st.unpublish(AID) is False


@pytest.mark.slow
def test_s3_replace_uploads_the_new_version_and_drops_what_it_no_longer_has(s3) -> None:
    st, _ = s3
    st.publish(AID, _stage(st, "v1", ("aac_128k", "opus_96k")))
    st.replace(AID, _stage(st, "v2", ("aac_128k",)))
    keys = sorted(o["Key"] for o in st.client.list_objects_v2(
        Bucket=BUCKET, Prefix=object_key(st.scfg, AID, ""))["Contents"])
    assert not any("opus_96k" in k for k in keys) and len(keys) == 5
    assert st.read_descriptor(AID) == {"version": "v2"}
    assert st.unpublish(AID)



@pytest.mark.slow
def test_s3_replace_of_a_taken_down_asset_is_refused(s3) -> None:
    st, _ = s3
    st.publish(AID, _stage(st, "v1"))
    st.unpublish(AID)
    with pytest.raises(NotPublished):
        st.replace(AID, _stage(st, "v2"))
    assert not st.is_published(AID)
    assert st.client.list_objects_v2(Bucket=BUCKET, Prefix=object_key(st.scfg, AID, ""))["KeyCount"] == 0
