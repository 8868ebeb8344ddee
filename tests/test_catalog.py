"""Catalog leases: one worker per asset, takeover after a crash, final states stick.

Every test runs against both backends (``catalog_url``: SQLite and a real PostgreSQL), through the
one place that picks a backend from the URL (``open_catalog``).
"""

import multiprocessing
import time
from pathlib import Path

import pytest

from tonearm.core.catalog import Claim
from tonearm.core.catalog_open import open_catalog
from tonearm.core.model import AssetState

AID = "a" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.sqlite3'}"
    return request.getfixturevalue("pg_url")


def Catalog(url: str):  # noqa: N802 - the tests read as they did with the SQLite class
    return open_catalog(str(url))


def test_claim_is_exclusive_until_the_lease_expires(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    assert cat.claim(AID, "x.flac", owner="w1", lease_s=60) is Claim.CLAIMED
    assert cat.claim(AID, "x.flac", owner="w2", lease_s=60) is Claim.BUSY
    assert cat.claim(AID, "x.flac", owner="w1", lease_s=60) is Claim.CLAIMED  # re-entrant for the holder
    cat2 = Catalog(catalog_url)
    assert cat2.claim("b" * 64, "y.flac", owner="w3", lease_s=-1) is Claim.CLAIMED
    assert cat2.claim("b" * 64, "y.flac", owner="w4", lease_s=60) is Claim.CLAIMED  # expired lease: crash takeover


def test_final_states_are_done_and_failed_is_retried(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.claim(AID, "x.flac", owner="w1")
    cat.set_state(AID, AssetState.PUBLISHED, info={"k": 1})
    assert cat.claim(AID, "x.flac", owner="w2") is Claim.DONE
    rec = cat.get(AID)
    assert rec is not None and rec.state is AssetState.PUBLISHED and rec.info == {"k": 1}
    assert rec.updated_at >= rec.created_at

    cat.claim("c" * 64, "z.flac", owner="w1")
    cat.set_state("c" * 64, AssetState.FAILED, error={"code": "ffmpeg_failed"})
    assert cat.claim("c" * 64, "z.flac", owner="w2") is Claim.CLAIMED


def test_list_count_and_pagination(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
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
    q.put(Catalog(path).claim(AID, "x.flac", owner=owner, lease_s=60).value)


def test_concurrent_claims_from_processes_yield_one_owner(catalog_url: str) -> None:
    path = catalog_url
    Catalog(path)
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
        Catalog(path).claim(AID, "x.flac", lease_s=60)
        q.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test with it
        q.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_many_processes_creating_one_new_catalog_at_once(tmp_path: Path, backend: str,
                                                         request: pytest.FixtureRequest) -> None:
    """Two `tonearm ingest` started together both open a catalog that does not exist yet (for
    PostgreSQL: an empty database, whose schema they create at once)."""
    for round_ in range(5):
        if backend == "sqlite":
            path = str(tmp_path / f"new{round_}.sqlite3")
        else:
            path = request.getfixturevalue("pg_cluster").new_database()
        q: multiprocessing.Queue[str] = multiprocessing.Queue()
        start = multiprocessing.Barrier(6)
        procs = [multiprocessing.Process(target=_open, args=(path, q, start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(q.get(timeout=5) for _ in procs) == ["ok"] * 6


def test_search_restore_and_verify_answer_alike(catalog_url: str) -> None:
    """Search (folded substring of title or artist, LIKE wildcards literal), restore and verify."""
    cat = Catalog(catalog_url)
    d = [{"asset_id": f"{i:064x}", "source_name": f"m{i}.flac", "published_at": 1000.0 + i,
          "tags": {"title": t, "artist": a}} for i, (t, a) in enumerate([("Ärzte Live", "Die"), ("50% off", "x_y"),
                                                                           ("Other", "Someone")])]
    cat.restore_published(d)
    cat.restore_published(d[:1])  # again: overwritten, not duplicated
    assert cat.count() == 3 and cat.count(state=AssetState.PUBLISHED) == 3
    assert [r.id for r in cat.list(q="ärzte")] == [d[0]["asset_id"]]
    assert [r.id for r in cat.list(q="ÄRZTE")] == [d[0]["asset_id"]]
    assert [r.id for r in cat.list(q="%")] == [d[1]["asset_id"]]  # literal %, not a wildcard
    assert [r.id for r in cat.list(q="_")] == [d[1]["asset_id"]]
    assert cat.count(q="o") == 2 and cat.count(q="zzz") == 0
    assert [r.id for r in cat.list(limit=1, offset=1)] == [d[1]["asset_id"]]  # publishing order
    assert cat.get(d[2]["asset_id"]).info["tags"]["title"] == "Other"
    cat.verify()


def test_postgres_catalog_survives_a_server_restart_and_counts_claims(pg_cluster, pg_url: str) -> None:
    """The PostgreSQL catalog reconnects when the server comes back, and each new owner's claim
    increments the fencing token (a stale holder's renew fails)."""
    cat = Catalog(pg_url)
    assert cat.claim(AID, "x.flac", owner="w1", lease_s=-1) is Claim.CLAIMED
    assert cat.fence(AID) == 1
    pg_cluster.restart(down_s=1.0)  # every connection is cut
    assert cat.claim(AID, "x.flac", owner="w2", lease_s=60) is Claim.CLAIMED  # expired: taken over
    assert cat.fence(AID) == 2
    assert cat.renew(AID, owner="w1") is False and cat.renew(AID, owner="w2") is True
    assert cat.claim(AID, "x.flac", owner="w2", lease_s=60) is Claim.CLAIMED and cat.fence(AID) == 2
