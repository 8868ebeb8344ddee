"""Drop-folder listing and the settle rule, on a real file system (no queue): what is a candidate, and when."""

from __future__ import annotations

import os
from pathlib import Path

from tonearm.app.watch_folder import Seen, Settler, scan_folder

PATTERNS = ("*.part", ".*", "*.tmp", "*.crdownload")


def keys(root: Path, depth: int = 4) -> list[str]:
    return [s.key for s in scan_folder(root, patterns=PATTERNS, max_depth=depth)]


def test_temporary_names_hidden_files_and_policy_folders_are_not_candidates(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "album" / "done").mkdir(parents=True)
    (drop / "rejected").mkdir()
    for name in ("a.wav", "b.flac.part", ".hidden.wav", "c.tmp", "d.mp3.crdownload", "album/e.wav", "album/done/f.wav",
                 "rejected/g.wav"):
        (drop / name).write_bytes(b"x")
    assert keys(drop) == ["a.wav", "album/e.wav"]


def test_depth_is_bounded(tmp_path: Path) -> None:
    deep = tmp_path / "drop" / "1" / "2" / "3"
    deep.mkdir(parents=True)
    (deep / "x.wav").write_bytes(b"x")
    (tmp_path / "drop" / "1" / "y.wav").write_bytes(b"y")
    assert keys(tmp_path / "drop", depth=3) == ["1/2/3/x.wav", "1/y.wav"]
    assert keys(tmp_path / "drop", depth=1) == ["1/y.wav"]
    assert keys(tmp_path / "drop", depth=0) == []


def test_symlinks_are_followed_only_to_files_inside_the_folder(tmp_path: Path) -> None:
    drop, outside = tmp_path / "drop", tmp_path / "secret"
    drop.mkdir()
    outside.mkdir()
    (outside / "shadow.wav").write_bytes(b"private")
    (drop / "real.wav").write_bytes(b"mine")
    (drop / "inside.wav").symlink_to(drop / "real.wav")
    (drop / "escape.wav").symlink_to(outside / "shadow.wav")
    (drop / "escape_dir").symlink_to(outside)
    (drop / "loop").symlink_to(drop)
    (drop / "dangling.wav").symlink_to(tmp_path / "nothing")
    os.mkfifo(drop / "pipe.wav")  # opening a FIFO would block the watcher
    assert keys(drop) == ["inside.wav", "real.wav"]


def test_settler_takes_a_file_only_after_it_held_still(tmp_path: Path) -> None:
    s = Settler(2.0)
    wall = 1000.0

    def seen(size: int, mtime: float, tag: str = "t") -> list[Seen]:
        return [Seen(key="x.wav", size=size, tag=tag, mtime=mtime)]

    assert s.observe(seen(10, wall), now=0, wall=wall) == []
    assert s.observe(seen(20, wall + 1), now=1, wall=wall + 1) == []  # grew: the window restarts
    assert s.observe(seen(20, wall + 1), now=2.5, wall=wall + 2.5) == []  # 1.5 s still: not yet
    assert s.observe(seen(20, wall + 1), now=3.1, wall=wall + 3.1) == seen(20, wall + 1)
    assert s.observe(seen(20, wall + 1, tag="other inode"), now=4, wall=wall + 4) == []  # replaced: again
    # a file whose mtime is recent by the wall clock (a writer that touched it) is not taken either
    s2 = Settler(2.0)
    s2.observe(seen(5, wall + 9.5), now=0, wall=wall + 10)
    assert s2.observe(seen(5, wall + 9.5), now=2.1, wall=wall + 11) == []
    assert s2.observe(seen(5, wall + 9.5), now=2.2, wall=wall + 11.6) == seen(5, wall + 9.5)
    # gone from a complete listing: forgotten
    s.observe([], now=5, wall=wall + 5)
    assert s.pending == 0


def test_an_object_is_taken_after_two_listings_with_the_same_etag() -> None:
    s = Settler(0.001)
    obj = [Seen(key="k", size=3, tag='"etag"', mtime=0.0)]
    assert s.observe(obj, now=10, wall=10) == []  # one listing is never enough, however old the object
    assert s.observe([Seen(key="k", size=3, tag='"other"', mtime=0.0)], now=11, wall=11) == []  # overwritten
    assert s.observe(obj, now=12, wall=12) == []
    assert s.observe(obj, now=13, wall=13) == obj  # the same size and ETag twice in a row
