"""Fixtures shared by several test modules, all of them here (test modules import only helpers).

The expensive ones are session-scoped, so each is built once per run whichever modules use it:
the packaged test masters (``pk``), the two ffmpeg builds (``ffmpeg_bin``), the players' origin
(``player_origin``) and a real Swift S3 store (``swift_server``).  Nothing is cached in module globals.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest
from fixtures_packager import MASTER_IDS, MASTER_KEYS, RUNGS, SMALL_RUNGS
from fixtures_transcode import BINARIES

if TYPE_CHECKING:
    from fixtures_packager import Packaged
    from fixtures_pg import PgCluster
    from fixtures_players import Origin
    from fixtures_protection import Protected
    from fixtures_swift import Swift

    from tonearm.core.ffmpeg import FfmpegInfo


def mount_tmpfs(where: Path, options: str) -> bool:
    """Mount a tmpfs of its own at ``where`` (root only): a real filesystem that can really fill up."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs(options)`` mounts a filesystem of its own (a tmpfs with those mount options) under
    tmp_path and returns its path; every one is unmounted afterwards.  Mounting needs root with
    CAP_SYS_ADMIN: without it the test is skipped, saying so (the disk-full behaviour is then still
    covered without a mount by test_sqlite_full_from_max_page_count_is_a_typed_error)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        fs = tmp_path / f"fs{len(mounted) or ''}"
        if not mount_tmpfs(fs, options):
            pytest.skip("cannot mount a tmpfs here: mount(8) needs root with CAP_SYS_ADMIN, which this user or "
                        "container lacks; test_sqlite_full_from_max_page_count_is_a_typed_error covers SQLITE_FULL "
                        "without a mount")
        mounted.append(fs)
        return fs

    yield mount
    for fs in reversed(mounted):
        subprocess.run(["umount", "-l", str(fs)], check=True)


@pytest.fixture
def small_fs(tmpfs: Callable[[str], Path]) -> Path:
    """A 1 MiB filesystem of its own (tmpfs), unmounted afterwards."""
    return tmpfs("size=1m,mode=0755")


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.slow) if n == "imageio" else n for n in sorted(BINARIES)],
                scope="session")
def ffmpeg_bin(request: pytest.FixtureRequest) -> FfmpegInfo:
    """Every transcode test runs against Debian's ffmpeg 5.1 and imageio-ffmpeg's 9.0; the second build's
    run of the same matrix is marked slow (``make test`` runs both, ``make test-fast`` Debian's only)."""
    from tonearm.core.ffmpeg import locate

    return locate(BINARIES[request.param]())


# make test-fast packages three of them: shorter than a segment, several segments, and 5.1.
PK_PARAMS = [pytest.param(key, id=name, marks=[pytest.mark.slow] if name in ("6.4s-stereo", "3.0s-mono") else [])
             for key, name in zip(MASTER_KEYS, MASTER_IDS)]


@pytest.fixture(scope="session", params=PK_PARAMS)
def pk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """Each test master encoded, packaged in both layouts and given manifests once per session, shared
    by the packager and manifest tests: shorter than one segment, exactly one, a few; mono and 5.1."""
    from fixtures_packager import package_master

    seconds, channels = request.param
    root = tmp_path_factory.mktemp(f"packager-{seconds}s-{channels}ch")
    return package_master(root, seconds=seconds, channels=channels, rungs=RUNGS if channels == 2 else SMALL_RUNGS)


@pytest.fixture(scope="session")
def player_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """The demo-like catalog the browser tests play: the default ladder (AAC + Opus, segmented and
    single-file layouts) and the same ladder with the lossless FLAC rung, both published by the real
    pipeline, served by ``tonearm --data DIR serve`` on a free loopback port."""
    from fixtures_players import Origin, ingest, make_tone_master, running_origin

    from tonearm.core.config import Config, LadderConfig, StorageConfig

    root = tmp_path_factory.mktemp("players")
    data = root / "data"
    assets = {
        "tones": ingest(Config(storage=StorageConfig(root=data)),
                        make_tone_master(root / "tones.flac", title="Tone sections")),
        "lossless": ingest(Config(storage=StorageConfig(root=data), ladder=LadderConfig(lossless=True)),
                           make_tone_master(root / "tones-lossless.flac", title="Tone sections (lossless)")),
    }
    with running_origin(data, root / "origin.log") as base:
        yield Origin(base=base, data=data, assets=assets)


@pytest.fixture(scope="session")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    """One small asset per protection scheme (none, cbcs, cenc, aes-128), published by the real pipeline
    and served by ``tonearm serve`` with a signing key (tests/fixtures_protection.py)."""
    from fixtures_protection import Protected, build, serving

    root = tmp_path_factory.mktemp("protection")
    data, assets = build(root)
    with serving(data, root / "origin.log") as base:
        yield Protected(data=data, assets=assets, base=base)


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swift]:
    """A real OpenStack Swift with s3api on loopback (tests/fixtures_swift.py), started once (~2 s).
    Its S3 credentials are in the environment while it runs, so boto3 clients and ``tonearm serve``
    subprocesses find them.  Each module makes its own bucket, so modules never see each other's
    objects (the request log, ``log()``, is shared: read it from an offset taken before)."""
    from fixtures_swift import start_swift

    server = start_swift(tmp_path_factory.mktemp("swift"))
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["PgCluster"]:
    """A real PostgreSQL 15 on 127.0.0.1 and a free port (tests/fixtures_pg.py), once per session."""
    from fixtures_pg import pg_available, remove_cluster, start_cluster

    if (why := pg_available()) is not None:  # scripts/test-deps.sh installs it: missing is a failure
        pytest.fail(f"PostgreSQL 15 is needed: {why} (run scripts/test-deps.sh)", pytrace=False)
    # not under pytest's basetemp: its parents are root-only (0700) and other pytest runs prune them
    import tempfile

    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="tonearm-pg-")) / "cluster")
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture
def pg_url(pg_cluster: "PgCluster") -> Iterator[str]:
    """A fresh, empty database on the session's cluster for one test (dropped afterwards)."""
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)
