"""Local storage: immutable masters, quarantine keeps bytes, publish is one atomic step."""

import json
from pathlib import Path

import pytest

from tonearm.core.storage import DESCRIPTOR, LocalStorage, publish_order


def test_publish_is_atomic_and_idempotent(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "data")
    aid = "d" * 64
    staged = st.new_staging(aid, "host:1")
    (staged / "a").mkdir()
    (staged / "a" / "seg-00001.m4s").write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="asset.json"):
        st.publish(aid, staged)  # no descriptor, no publish
    assert not st.is_published(aid)
    (staged / DESCRIPTOR).write_text("{}")
    st.publish(aid, staged)
    assert st.is_published(aid) and not staged.exists()
    final = st.published_root / aid
    assert final.stat().st_mode & 0o777 == 0o755  # readable by an nginx edge running as another user
    again = st.new_staging(aid, "host:1")
    (again / DESCRIPTOR).write_text('{"second": true}')
    st.publish(aid, again)  # a racing second publish of the same bytes is a no-op
    assert st.read_descriptor(aid) == {}
    assert not again.exists()


def test_masters_and_quarantine_keep_bytes(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "data")
    src = tmp_path / "in.flac"
    src.write_bytes(b"abc")
    sink, received = st.receive_master()
    with sink:
        sink.write(src.read_bytes())
    p = st.keep_master(received, "e" * 64, ".flac")
    assert p == st.master_path("e" * 64, ".flac") and p.read_bytes() == b"abc" and not received.exists()
    sink, again = st.receive_master()
    sink.close()
    assert st.keep_master(again, "e" * 64, ".flac") == p and p.read_bytes() == b"abc"  # the first copy stays
    q = st.quarantine(src, "f" * 64, {"code": "decode_error"})
    assert (q / "master.bin").read_bytes() == b"abc"
    assert json.loads((q / "reason.json").read_text())["code"] == "decode_error"
    missing = st.quarantine(tmp_path / "gone.wav", "0" * 64, {"code": "unreadable"})
    assert "copy_error" in json.loads((missing / "reason.json").read_text())
    none = st.quarantine(None, "1" * 64, {"code": "unreadable"})
    assert json.loads((none / "reason.json").read_text())["bytes_kept"] is False


def test_stale_staging_is_cleaned_but_a_live_owners_is_not(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "data")
    aid = "a" * 64
    live, dead = st.new_staging(aid, "here.example.org:1"), st.new_staging(aid, "gone.example.org:2")
    old = st.root / "staging" / f"{aid}.abc123"  # a folder without an owner: an older version's leftover
    old.mkdir()
    st.clean_stale_staging(aid, lambda owner: owner == "here.example.org:1")
    assert live.is_dir() and not dead.exists() and not old.exists()


def test_publish_order_puts_manifests_then_descriptor_last() -> None:
    files = ["x/asset.json", "master.m3u8", "a/seg-00001.m4s", "manifest.mpd", "a/init.mp4", "a/index.m3u8"]
    order = publish_order(files)
    assert order[-1] == "x/asset.json"
    assert set(order[:2]) == {"a/init.mp4", "a/seg-00001.m4s"}
    assert set(order[2:5]) == {"master.m3u8", "manifest.mpd", "a/index.m3u8"}
