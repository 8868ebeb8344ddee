"""A broken catalog or a full disk: one line naming the file and what to do, exit 2, no traceback.

Every condition is made for real: files that are not databases, a truncated SQLite
file, a directory where the catalog should be, a database with another schema, and
full filesystems (a small tmpfs filled up: SQLite's SQLITE_FULL and I/O errors, and
ENOSPC from inode exhaustion).  Where this sandbox cannot mount, SQLite's
``max_page_count`` still makes a database really full.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_ingest import make

from tonearm.core.catalog import Catalog
from tonearm.core.catalog_errors import CatalogError
from tonearm.core.model import AssetState

ROOT = Path(__file__).resolve().parent.parent
TONEARM = Path(sys.executable).with_name("tonearm")  # the installed console script, as a user runs it
AID = "a" * 64


def tonearm(data: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONEARM_")}
    return subprocess.run([str(TONEARM), "--data", str(data), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exit 2 and said exactly one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- catalogs that cannot be read ---------------------------------------------------------------------------


def _healthy_bytes(folder: Path) -> bytes:
    """A real catalog with a few hundred rows, checkpointed into one file."""
    cat = Catalog(folder / "src.sqlite3")
    for i in range(300):
        cat.claim(f"{i:064x}", f"song {i}.flac" + "x" * 100)
    with sqlite3.connect(folder / "src.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (folder / "src.sqlite3").read_bytes()


def break_catalog(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random_bytes":
        path.write_bytes(random.Random(7).randbytes(8192))
    elif kind == "text":
        path.write_text("this is a shopping list, not a catalog\n")
    elif kind == "truncated":
        data = _healthy_bytes(path.parent)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "directory":  # unreadable even for root: a directory where the file should be
        path.mkdir()
        (path / "something").write_text("x")
    elif kind == "wrong_schema":  # an assets table, but not ours
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE assets (name TEXT, size INTEGER)")
            db.execute("INSERT INTO assets VALUES ('x', 1)")
    elif kind == "foreign_database":  # some other application's database
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    else:
        raise AssertionError(kind)


KINDS = ["random_bytes", "text", "truncated", "directory", "wrong_schema", "foreign_database"]
REASONS = {"random_bytes": "file is not a database", "text": "file is not a database",
           "truncated": "malformed", "directory": "directory", "wrong_schema": "schema",
           "foreign_database": "schema"}


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("masters")
    return [make(folder, "one", "flac", seconds=1), make(folder, "two", "wav", seconds=1)]


def _state(path: Path) -> object:
    if path.is_dir():
        return sorted(p.name for p in path.iterdir())
    return path.read_bytes()


@pytest.mark.slow  # `tonearm` runs in subprocesses, most of them ingest jobs (in process: the typed-error tests)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["assets", "ingest", "ingest --jobs 2"])
def test_every_command_says_one_line_for_an_unreadable_catalog(tmp_path, masters, kind, command):
    data = tmp_path / "data"
    catalog = data / "catalog.sqlite3"
    break_catalog(catalog, kind)
    before = _state(catalog)
    args = command.split() + ([str(m) for m in masters] if command.startswith("ingest") else [])
    line = one_line(tonearm(data, *args))
    assert line.startswith(f"tonearm: catalog {catalog} is unreadable ("), line
    assert REASONS[kind] in line and "tonearm catalog rebuild" in line, line
    assert _state(catalog) == before  # a broken catalog is left exactly as it was, for inspection
    assert not any((data / "published").glob("*")) if (data / "published").exists() else True
    assert not (data / "masters").exists() or not any((data / "masters").rglob("*.*"))


def test_relative_data_dir_is_named_as_given(tmp_path):
    break_catalog(tmp_path / "data" / "catalog.sqlite3", "random_bytes")
    line = one_line(tonearm(Path("data"), "assets", cwd=tmp_path))
    assert line == ("tonearm: catalog data/catalog.sqlite3 is unreadable (file is not a database): "
                    "run 'tonearm catalog rebuild' to move it aside and recreate it from the published assets")


@pytest.mark.parametrize("kind", KINDS)
def test_catalog_raises_a_typed_error(tmp_path, kind):
    path = tmp_path / "catalog.sqlite3"
    break_catalog(path, kind)
    with pytest.raises(CatalogError) as info:
        Catalog(path)
    err = info.value
    assert isinstance(err, ValueError) and err.code == "catalog_unreadable" and err.path == path
    assert str(path) in str(err) and REASONS[kind] in str(err)


def test_a_catalog_broken_while_open_raises_the_typed_error_on_use(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    cat = Catalog(path)
    cat.claim(AID, "x.flac")
    path.write_bytes(random.Random(3).randbytes(4096))
    for wal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        wal.unlink(missing_ok=True)
    for use in (cat.count, cat.list, lambda: cat.get(AID), lambda: cat.claim("b" * 64, "y.flac"),
                lambda: cat.set_state(AID, AssetState.FAILED)):
        with pytest.raises(CatalogError, match="file is not a database") as info:
            use()
        assert info.value.code == "catalog_unreadable"


def test_the_error_survives_pickling(tmp_path):
    """Worker processes hand exceptions to the parent by pickling them."""
    import pickle

    path = tmp_path / "catalog.sqlite3"
    break_catalog(path, "random_bytes")
    with pytest.raises(CatalogError) as info:
        Catalog(path)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value) and str(again) == str(info.value)
    assert again.code == info.value.code and again.path == info.value.path


# -- full disks ---------------------------------------------------------------------------------------------


def fill(fs: Path) -> None:
    """Write a filler file until the filesystem says ENOSPC."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc
    finally:
        os.close(fd)
    assert os.statvfs(fs).f_bavail == 0


def test_sqlite_full_on_a_full_filesystem_is_a_typed_error(small_fs):
    path = small_fs / "catalog.sqlite3"
    cat = Catalog(path)
    cat.claim(AID, "x.flac")
    keep = sqlite3.connect(path)  # another process has it open: the WAL and its index stay on disk
    keep.execute("SELECT COUNT(*) FROM assets").fetchall()
    try:
        fill(small_fs)
        with pytest.raises(CatalogError) as info:
            cat.set_state(AID, AssetState.PUBLISHED, info={"descriptor": "x" * 200_000})
    finally:
        keep.close()
    err = info.value
    assert err.code == "disk_full" and err.path == path
    assert isinstance(err.__cause__, sqlite3.OperationalError)
    assert err.__cause__.sqlite_errorname == "SQLITE_FULL"  # the real condition, not an imitation
    assert str(err) == (f"catalog {path} cannot be written: the disk is full (database or disk is full): "
                        f"free space on {small_fs} and run again")
    (small_fs / "filler").unlink()
    rec = Catalog(path).get(AID)  # the failed write left nothing behind, the lease row is intact
    assert rec is not None and rec.state is AssetState.RECEIVED


@pytest.mark.slow  # `tonearm ingest` jobs in subprocesses
@pytest.mark.parametrize("holder", [False, True], ids=["closed", "held-open-elsewhere"])
def test_ingest_with_the_catalog_on_a_full_disk_says_one_line(tmp_path, small_fs, masters, holder):
    """The catalog lives on a full filesystem (a symlink to it: SQLite follows it, as it would a
    catalog on its own volume) while the data folder has room, so the job gets as far as its first
    catalog write.  Whatever SQLite reports there (SQLITE_FULL growing the WAL, or an I/O error
    growing its index), the user reads one line naming the catalog and the filesystem to free."""
    data = tmp_path / "data"
    data.mkdir()
    Catalog(small_fs / "catalog.sqlite3").claim(AID, "earlier.flac")
    (data / "catalog.sqlite3").symlink_to(small_fs / "catalog.sqlite3")
    keep = None
    if holder:
        keep = sqlite3.connect(data / "catalog.sqlite3")
        keep.execute("SELECT COUNT(*) FROM assets").fetchall()
    try:
        fill(small_fs)
        line = one_line(tonearm(data, "ingest", str(masters[0])))
        assets = tonearm(data, "assets")
    finally:
        if keep is not None:
            keep.close()
    reason = line.split(" the disk is full (", 1)[-1].split("):", 1)[0]
    assert reason in ("database or disk is full", "disk I/O error"), line
    assert line == (f"tonearm: catalog {data / 'catalog.sqlite3'} cannot be written: the disk is full "
                    f"({reason}): free space on {small_fs} and run again"), line
    if assets.returncode != 0:  # reading may need to create the WAL index: then the same kind of line
        assert "the disk is full" in one_line(assets) and f"free space on {small_fs} " in assets.stderr
    (small_fs / "filler").unlink()
    assert [r.source_name for r in Catalog(data / "catalog.sqlite3").list()] == ["earlier.flac"]


@pytest.mark.slow  # `tonearm` runs in subprocesses, one of them an ingest
def test_out_of_inodes_is_a_full_disk_too(tmpfs, masters):
    """ENOSPC from the OS (no inode left to create the catalog's folder or the file)."""
    fs = tmpfs("size=1m,nr_inodes=2")
    (fs / "d").mkdir()  # the root took one inode, this the last one
    with pytest.raises(OSError):
        (fs / "e").mkdir()
    line = one_line(tonearm(fs / "data", "assets"))  # the folder for the catalog cannot be made
    assert line == (f"tonearm: catalog {fs / 'data' / 'catalog.sqlite3'} cannot be written: the disk is full "
                    f"(No space left on device): free space on {fs} and run again")
    line = one_line(tonearm(fs / "d", "assets"))  # the catalog file itself cannot be created
    assert line.startswith(f"tonearm: catalog {fs / 'd' / 'catalog.sqlite3'} cannot be written: the disk is full")
    assert line.endswith(f"free space on {fs} and run again")
    line = one_line(tonearm(fs / "data", "ingest", str(masters[0])))  # storage folders cannot be made
    assert line.startswith("tonearm: no space left on device writing ") and str(fs / "data") in line
    assert line.endswith(f"free space on {fs} and run again")


class _Capped(Catalog):
    """A catalog whose database may not grow beyond a few pages (SQLite's own limit): writes past
    it fail with the real SQLITE_FULL, on any machine, no mount needed."""

    def _connect(self) -> sqlite3.Connection:
        db = super()._connect()
        db.execute("PRAGMA max_page_count = 8")
        return db


def test_sqlite_full_from_max_page_count_is_a_typed_error(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    cat = _Capped(path)
    cat.claim(AID, "x.flac")
    with pytest.raises(CatalogError) as info:
        cat.set_state(AID, AssetState.PUBLISHED, info={"descriptor": "x" * 100_000})
    assert info.value.code == "disk_full"
    assert info.value.__cause__.sqlite_errorname == "SQLITE_FULL"
    assert f"catalog {path} cannot be written: the disk is full" in str(info.value)
    assert Catalog(path).get(AID).state is AssetState.RECEIVED  # rolled back cleanly
