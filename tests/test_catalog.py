"""Catalog leases: one worker per asset, takeover after a crash, final states stick."""

import multiprocessing
import time
from pathlib import Path

from tonearm.core.catalog import Catalog, Claim
from tonearm.core.model import AssetState

AID = "a" * 64


def test_claim_is_exclusive_until_the_lease_expires(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite3")
    assert cat.claim(AID, "x.flac", owner="w1", lease_s=60) is Claim.CLAIMED
    assert cat.claim(AID, "x.flac", owner="w2", lease_s=60) is Claim.BUSY
    assert cat.claim(AID, "x.flac", owner="w1", lease_s=60) is Claim.CLAIMED  # re-entrant for the holder
    cat2 = Catalog(tmp_path / "c.sqlite3")
    assert cat2.claim("b" * 64, "y.flac", owner="w3", lease_s=-1) is Claim.CLAIMED
    assert cat2.claim("b" * 64, "y.flac", owner="w4", lease_s=60) is Claim.CLAIMED  # expired lease: crash takeover


def test_final_states_are_done_and_failed_is_retried(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite3")
    cat.claim(AID, "x.flac", owner="w1")
    cat.set_state(AID, AssetState.PUBLISHED, info={"k": 1})
    assert cat.claim(AID, "x.flac", owner="w2") is Claim.DONE
    rec = cat.get(AID)
    assert rec is not None and rec.state is AssetState.PUBLISHED and rec.info == {"k": 1}
    assert rec.updated_at >= rec.created_at

    cat.claim("c" * 64, "z.flac", owner="w1")
    cat.set_state("c" * 64, AssetState.FAILED, error={"code": "ffmpeg_failed"})
    assert cat.claim("c" * 64, "z.flac", owner="w2") is Claim.CLAIMED


def test_list_count_and_pagination(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite3")
    ids = [f"{i:064x}" for i in range(5)]
    for i in ids:
        cat.claim(i, f"{i}.wav")
        time.sleep(0.001)
    cat.set_state(ids[1], AssetState.PUBLISHED)
    assert [r.id for r in cat.list(limit=2, offset=1)] == ids[1:3]
    assert cat.count() == 5
    assert cat.count(state=AssetState.PUBLISHED) == 1
    assert [r.id for r in cat.list(state=AssetState.PUBLISHED)] == [ids[1]]


def _race(path: str, owner: str, q: "multiprocessing.Queue[str]") -> None:
    q.put(Catalog(Path(path)).claim(AID, "x.flac", owner=owner, lease_s=60).value)


def test_concurrent_claims_from_processes_yield_one_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    Catalog(Path(path))
    q: multiprocessing.Queue[str] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_race, args=(path, f"w{i}", q)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results.count("claimed") == 1 and results.count("busy") == 5


def _open(path: str, q: "multiprocessing.Queue[str]", start: "multiprocessing.synchronize.Barrier") -> None:
    start.wait(30)  # all at once, like two CLI runs started together
    try:
        Catalog(Path(path)).claim(AID, "x.flac", lease_s=60)
        q.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test with it
        q.put(f"{type(exc).__name__}: {exc}")


def test_many_processes_creating_one_new_catalog_at_once(tmp_path: Path) -> None:
    """Two `tonearm ingest` started together both open a catalog that does not exist yet."""
    for round_ in range(5):
        path = str(tmp_path / f"new{round_}.sqlite3")
        q: multiprocessing.Queue[str] = multiprocessing.Queue()
        start = multiprocessing.Barrier(6)
        procs = [multiprocessing.Process(target=_open, args=(path, q, start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(q.get(timeout=5) for _ in procs) == ["ok"] * 6
