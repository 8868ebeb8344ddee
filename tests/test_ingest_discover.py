"""Discovery: folders expand deterministically; unsafe or impossible inputs are rejected up front.

Unreadable files: tests run as root in CI, where ``chmod 000`` does not stop
reads (CAP_DAC_OVERRIDE).  The test therefore drops the *effective* uid to
``nobody`` around the read when it runs as root (``os.seteuid``; the real
uid stays 0 so it can switch back), which makes the kernel refuse the
``open`` with EACCES exactly as it would for an unprivileged service user.
The file sits in a world-traversable temporary folder so only the file's own
mode is in play.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from fixtures_ingest import make

from ingest import Rejected, content_id
from ingest.discover import discover
from ingest.identity import quarantine_id
from tonearm.app.pipeline import Context, Outcome, process, reject_unread
from tonearm.core.config import load

NOBODY = 65534


@contextlib.contextmanager
def unprivileged():
    """Run the body with an effective uid that file permissions apply to."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(NOBODY)
    except PermissionError:  # a root without CAP_SETUID (unusual container setups)
        pytest.skip("running as root without CAP_SETUID: cannot make a file unreadable to this process")
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def open_dir():
    """A temporary folder every uid can traverse and write (outside pytest's 0700 tmp tree)."""
    with tempfile.TemporaryDirectory(prefix="tonearm-ingest-") as d:
        os.chmod(d, 0o777)
        yield Path(d)


def ctx_for(data: Path) -> Context:
    return Context.from_config(load(None, env={}, overrides={"storage": {"root": str(data)}}))


def test_folders_expand_recursively_in_sorted_order(tmp_path):
    root = tmp_path / "in"
    for rel in ("b/2.flac", "b/1.wav", "a.mp3", "c/d/e.ogg", ".DS_Store", "b/._1.wav", ".git/x"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    loose = tmp_path / "loose.flac"
    loose.write_bytes(b"y")
    items = discover([loose, root, root / "a.mp3"])  # the repeat is listed once
    assert [str(i.path.relative_to(tmp_path)) for i in items] == [
        "loose.flac", "in/a.mp3", "in/b/1.wav", "in/b/2.flac", "in/c/d/e.ogg"]
    assert all(i.error is None for i in items)
    assert discover([loose, root, root / "a.mp3"]) == items  # deterministic


def test_missing_path(tmp_path):
    (item,) = discover([tmp_path / "nope.wav"])
    assert item.error.code == "not_found"
    assert item.error.details["quarantine_id"] == quarantine_id(tmp_path / "nope.wav")


def test_symlinks_inside_and_outside_the_input_folder(tmp_path):
    outside = tmp_path / "secret.flac"
    outside.write_bytes(b"private bytes")
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.flac").write_bytes(b"ok")
    (root / "escape.flac").symlink_to(outside)
    (root / "escape_rel.flac").symlink_to("../secret.flac")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "inside.flac").symlink_to("sub/real.flac")
    (root / "loop").symlink_to(".")
    (root / "dangling.flac").symlink_to("sub/missing.flac")
    items = {i.path.name: i for i in discover([root])}
    assert items["escape.flac"].error.code == "symlink_outside_input"
    assert items["escape_rel.flac"].error.code == "symlink_outside_input"
    assert items["escape_dir"].error.code == "symlink_outside_input"
    assert items["dangling.flac"].error.code == "not_found"
    assert items["inside.flac"].error is None and items["real.flac"].error is None
    assert "loop" not in items  # a folder symlink inside the input is already walked
    # named directly, a symlink is the user's choice and is followed
    (direct,) = discover([root / "escape.flac"])
    assert direct.error is None


def test_special_files_are_not_opened(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    os.mkfifo(root / "pipe.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.wav"))
    try:
        items = {i.path.name: i for i in discover([root, root / "pipe.wav"])}
        assert items["pipe.wav"].error.code == "not_a_file"
        assert items["sock.wav"].error.code == "not_a_file"
        # content_id on its own also refuses them without blocking on the FIFO
        with pytest.raises(Rejected) as exc:
            content_id(root / "pipe.wav")
        assert exc.value.error.code == "not_a_file"
    finally:
        sock.close()


def test_discovery_rejections_are_quarantined_as_reasons_only(tmp_path):
    outside = tmp_path / "secret.flac"
    outside.write_bytes(b"private bytes")
    root = tmp_path / "in"
    root.mkdir()
    (root / "escape.flac").symlink_to(outside)
    os.mkfifo(root / "pipe.wav")
    ctx = ctx_for(tmp_path / "data")
    results = [reject_unread(ctx, item.path, item.error) for item in discover([root, tmp_path / "missing.wav"]) if item.error]
    assert [(r.outcome, r.error.code) for r in results] == [
        (Outcome.QUARANTINED, "symlink_outside_input"), (Outcome.QUARANTINED, "not_a_file"),
        (Outcome.QUARANTINED, "not_found")]
    quarantine = tmp_path / "data" / "quarantine"
    folders = sorted(p.name for p in quarantine.iterdir())
    assert len(folders) == 3
    for r in results:
        folder = quarantine / r.error.details["quarantine_id"]
        reason = json.loads((folder / "reason.json").read_text())
        assert reason["code"] == r.error.code and reason["message"] and reason["bytes_kept"] is False
        assert list(folder.iterdir()) == [folder / "reason.json"]  # never copied, never followed
    # nothing in the data dir holds the symlink target's bytes; the input is untouched
    assert all(p.read_bytes() != b"private bytes" for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert (root / "escape.flac").is_symlink() and outside.read_bytes() == b"private bytes"
    # a second run rewrites the same records: still three
    for item in discover([root, tmp_path / "missing.wav"]):
        reject_unread(ctx, item.path, item.error)
    assert sorted(p.name for p in quarantine.iterdir()) == folders


def test_unreadable_file_content_id(open_dir):
    path = make(open_dir, "locked", "flac", seconds=1)
    os.chmod(path, 0)
    try:
        with unprivileged(), pytest.raises(Rejected) as exc:
            content_id(path)
    finally:
        os.chmod(path, 0o644)
    assert exc.value.error.code == "unreadable"
    assert exc.value.error.details["quarantine_id"] == quarantine_id(path)


def test_unreadable_file_through_the_pipeline(open_dir):
    """The reason is kept though there are no bytes to keep (none could be read); the input is untouched."""
    path = make(open_dir, "locked", "wav", seconds=1)
    data = open_dir / "data"
    ctx = ctx_for(data)
    for sub in data.iterdir():
        if sub.is_dir():
            os.chmod(sub, 0o777)
    before = path.read_bytes()
    os.chmod(path, 0)
    try:
        with unprivileged():
            result = process(ctx, path)
    finally:
        os.chmod(path, 0o644)
    assert result.outcome is Outcome.QUARANTINED and result.error.code == "unreadable"
    folder = data / "quarantine" / quarantine_id(path)
    reason = json.loads((folder / "reason.json").read_text())
    assert reason["code"] == "unreadable" and reason["bytes_kept"] is False
    assert not (folder / "master.bin").exists()
    assert path.read_bytes() == before


def test_directory_named_like_a_file_is_walked_not_read(tmp_path):
    (tmp_path / "album.flac").mkdir()
    assert discover([tmp_path / "album.flac"]) == []
    with pytest.raises(Rejected) as exc:
        content_id(tmp_path / "album.flac")
    assert exc.value.error.code == "not_a_file"
