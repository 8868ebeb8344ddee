"""``tonearm catalog rebuild``: the catalog recreated from the published descriptors.

Masters go through the real pipeline (local disk, and a real Swift S3 store); then the
catalog is deleted or corrupted, rebuilt, and must list the same assets with the same
descriptors as before.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_ingest import make
from fixtures_pipeline import pipeline_config, publish
from fixtures_swift import s3_requests

from tonearm.core.catalog import Catalog
from tonearm.core.catalog_errors import CatalogError
from tonearm.core.config import load
from tonearm.core.model import AssetState
from tonearm.core.storage import LocalStorage

ROOT = Path(__file__).resolve().parent.parent
TONEARM = Path(sys.executable).with_name("tonearm")
BUCKET = "tonearm-rebuild"

# Slow (make test, not make test-fast): masters published by the real pipeline (to disk and to S3), then
# `tonearm catalog rebuild` in subprocesses, about 15 s.
pytestmark = pytest.mark.slow


def tonearm(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    return subprocess.run([str(TONEARM), "--data", str(data), *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=240)


def records(catalog: Path) -> dict[str, tuple[AssetState, str, dict[str, Any], Any]]:
    cat = Catalog(catalog)
    return {r.id: (r.state, r.source_name, r.info, r.error) for r in cat.list(limit=1000)}


def drop(catalog: Path) -> None:
    for p in (catalog, catalog.with_name(catalog.name + "-wal"), catalog.with_name(catalog.name + "-shm")):
        p.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data dir with two assets published by the real pipeline, and what the catalog said."""
    tmp = tmp_path_factory.mktemp("ingested")
    data = tmp / "data"
    cfg = pipeline_config(data)
    first = publish(make(tmp, "first", "flac", seconds=2, extra=["-metadata", "title=Rebuilt Song"]), cfg)
    second = publish(make(tmp, "second take", "wav", seconds=2), cfg)
    listing = tonearm(data, "assets")
    assert listing.returncode == 0, listing.stderr
    return {"data": data, "ids": sorted([first.asset_id, second.asset_id]), "listing": listing.stdout,
            "records": records(data / "catalog.sqlite3")}


@pytest.fixture
def data(ingested, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(ingested["data"], copy)
    return copy


def assert_same_as_before(data: Path, ingested: dict[str, Any]) -> None:
    listing = tonearm(data, "assets")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == ingested["listing"]
    assert "Rebuilt Song" in listing.stdout
    assert records(data / "catalog.sqlite3") == ingested["records"]
    cat = Catalog(data / "catalog.sqlite3")
    for aid in ingested["ids"]:
        rec = cat.get(aid)
        assert rec is not None and rec.state is AssetState.PUBLISHED
        assert rec.info == LocalStorage(data).read_descriptor(aid)  # info is the descriptor itself


def test_rebuild_recreates_a_missing_catalog(data, ingested):
    drop(data / "catalog.sqlite3")
    proc = tonearm(data, "catalog", "rebuild")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [f"restored 2 published assets into {data / 'catalog.sqlite3'}"]
    assert_same_as_before(data, ingested)
    again = tonearm(data, "ingest", "--json", *[str(p) for p in sorted((data / "masters").rglob("*.*"))])
    assert again.returncode == 0, again.stderr
    assert {json.loads(line)["outcome"] for line in again.stdout.splitlines()} == {"already_published"}


def test_rebuild_moves_a_corrupt_catalog_aside(data, ingested):
    catalog = data / "catalog.sqlite3"
    junk = random.Random(5).randbytes(10_000)
    catalog.write_bytes(junk)
    assert tonearm(data, "assets").returncode == 2
    proc = tonearm(data, "catalog", "rebuild")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (aside,) = sorted(data.glob("catalog.sqlite3.corrupt-*"))
    assert aside.read_bytes() == junk
    assert proc.stdout.splitlines() == [
        f"moved the unreadable catalog {catalog} aside to {aside} (file is not a database)",
        f"restored 2 published assets into {catalog}",
    ]
    assert_same_as_before(data, ingested)


def test_rebuild_replaces_a_directory_and_a_wrong_schema(data, ingested):
    catalog = data / "catalog.sqlite3"
    drop(catalog)
    catalog.mkdir()
    first = tonearm(data, "catalog", "rebuild")
    assert first.returncode == 0, first.stderr
    assert "is a directory" in first.stdout.splitlines()[0]
    drop(catalog)
    import sqlite3

    with sqlite3.connect(catalog) as db:
        db.execute("CREATE TABLE assets (name TEXT)")
    second = tonearm(data, "catalog", "rebuild")
    assert second.returncode == 0, second.stderr
    assert "schema" in second.stdout.splitlines()[0]
    assert len(list(data.glob("catalog.sqlite3.corrupt-*"))) == 2  # never overwrites an earlier one
    assert_same_as_before(data, ingested)


def test_rebuild_reports_and_skips_bad_descriptors(data, ingested):
    published = data / "published"
    good, other = ingested["ids"]
    (published / ("1" * 64)).mkdir()
    (published / ("1" * 64) / "asset.json").write_text('{"asset_id": "1111", broken')
    (published / ("2" * 64)).mkdir()
    shutil.copy(published / good / "asset.json", published / ("2" * 64) / "asset.json")  # id of another folder
    (published / ("3" * 64)).mkdir()
    (published / ("3" * 64) / "asset.json").write_text('["a list"]')
    (published / ("4" * 64) / "aac_128k").mkdir(parents=True)  # half-uploaded: no descriptor, not an asset
    (published / "not-an-id").mkdir()
    (published / "not-an-id" / "asset.json").write_text('{"asset_id": "not-an-id", "source_name": "x"}')
    drop(data / "catalog.sqlite3")
    proc = tonearm(data, "catalog", "rebuild")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = sorted(proc.stderr.splitlines())
    assert len(lines) == 4, proc.stderr
    p = published
    assert lines[0].startswith(f"tonearm: skipped {p / ('1' * 64) / 'asset.json'}: not valid JSON (")
    assert lines[1] == (f"tonearm: skipped {p / ('2' * 64) / 'asset.json'}: its asset_id {good} does not match "
                        f"its folder {'2' * 64}")
    assert lines[2] == f"tonearm: skipped {p / ('3' * 64) / 'asset.json'}: not a JSON object"
    assert lines[3] == f"tonearm: skipped {p / 'not-an-id' / 'asset.json'}: its folder is not an asset id"
    assert proc.stdout.splitlines() == [f"restored 2 published assets into {data / 'catalog.sqlite3'}"]
    assert_same_as_before(data, ingested)


def test_rebuild_of_a_readable_catalog_keeps_its_other_rows(data, ingested):
    catalog = data / "catalog.sqlite3"
    good, other = ingested["ids"]
    cat = Catalog(catalog)
    cat.claim("f" * 64, "bad.wav")
    cat.set_state("f" * 64, AssetState.QUARANTINED, error={"code": "not_audio", "message": "no audio"})
    import sqlite3

    with sqlite3.connect(catalog) as db:  # one published row lost, the other damaged
        db.execute("DELETE FROM assets WHERE id=?", (good,))
        db.execute("UPDATE assets SET state='failed', info=NULL WHERE id=?", (other,))
    proc = tonearm(data, "catalog", "rebuild")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"restored 2 published assets into {catalog}"]
    assert not list(data.glob("catalog.sqlite3.corrupt-*"))
    after = records(catalog)
    assert after.pop("f" * 64)[0] is AssetState.QUARANTINED
    assert after == ingested["records"]


def test_rebuild_api_returns_what_it_did(data, ingested):
    from tonearm.core.catalog_rebuild import rebuild

    catalog = data / "catalog.sqlite3"
    catalog.write_bytes(b"SQLite format 3\0" + b"\xff" * 200)
    with pytest.raises(CatalogError):
        Catalog(catalog)
    report = rebuild(catalog, LocalStorage(data))
    assert report.restored == ingested["ids"] and report.skipped == []
    assert report.moved_aside is not None and report.moved_aside.name.startswith("catalog.sqlite3.corrupt-")
    assert records(catalog) == ingested["records"]


# -- S3 ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swift(swift_server):
    """The session's Swift (conftest.py), with this module's own bucket."""
    swift_server.client().create_bucket(Bucket=BUCKET)
    return swift_server


def test_rebuild_from_s3(swift, tmp_path):
    from tonearm.app.pipeline import Context, Outcome, process
    from tonearm.core.s3storage import S3Storage

    root = tmp_path / "root"
    storage = {"backend": "s3", "root": str(root), "s3_bucket": BUCKET, "s3_endpoint_url": swift.endpoint,
               "s3_prefix": "media/"}
    cfg = load(None, env={}, overrides={"storage": storage})
    ctx = Context.from_config(cfg)
    ids = []
    for name in ("s3 one", "s3 two"):
        result = process(ctx, make(tmp_path, name, "flac", seconds=2, extra=["-metadata", f"title={name}"]))
        assert result.outcome is Outcome.PUBLISHED, result.error
        ids.append(result.asset_id)
    ids.sort()
    assert not (root / "published").exists() or not any((root / "published").iterdir())  # nothing local
    client = swift.client()
    client.put_object(Bucket=BUCKET, Key=f"media/published/{'9' * 64}/aac_128k/seg-00001.m4s", Body=b"x")
    client.put_object(Bucket=BUCKET, Key=f"other/published/{'8' * 64}/asset.json", Body=b"{}")  # another prefix
    s3 = S3Storage(cfg)
    assert sorted(s3.list_published()) == ids
    log_before = len(swift.log())
    assert sorted(s3.list_published(page_size=1)) == ids  # one prefix per page: pagination is followed
    deadline = time.monotonic() + 5
    while True:  # the store's access log arrives over UDP, just after the responses
        lists = [path for method, path, _ in s3_requests(swift.log()[log_before:]) if "list-type=2" in path]
        if len(lists) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(lists) == 3 and all("delimiter=/" in path for path in lists)  # 3 prefixes, 3 pages
    assert sum("continuation-token=" in path for path in lists) == 2
    before = records(cfg.catalog_path)

    drop(cfg.catalog_path)
    env = {"TONEARM_STORAGE_BACKEND": "s3", "TONEARM_STORAGE_S3_BUCKET": BUCKET,
           "TONEARM_STORAGE_S3_ENDPOINT_URL": swift.endpoint, "TONEARM_STORAGE_S3_PREFIX": "media/", **swift.env}
    proc = tonearm(root, "catalog", "rebuild", env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [f"restored 2 published assets into {cfg.catalog_path}"]
    assert records(cfg.catalog_path) == before
    for aid in ids:
        assert Catalog(cfg.catalog_path).get(aid).info == s3.read_descriptor(aid)
