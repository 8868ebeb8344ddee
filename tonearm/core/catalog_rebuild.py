"""``tonearm catalog rebuild``: the catalog recreated from the published descriptors.

The catalog is derived data: every published asset's ``asset.json`` holds what its row holds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tonearm.core.catalog import Catalog
from tonearm.core.catalog_errors import CatalogError, CatalogFull, translate_error
from tonearm.core.storage import DESCRIPTOR, is_asset_id

__all__ = ("rebuild", "RebuildReport")

SIDECARS = ("", "-wal", "-shm")  # SQLite's files of one WAL database: the file, its log, the log's index


@dataclass
class RebuildReport:
    path: Path
    restored: list[str]  # asset ids now published in the catalog, sorted
    skipped: list[tuple[str, str]]  # (descriptor location, why it was not used)
    moved_aside: Path | None = None  # where the unreadable catalog went
    moved_reason: str | None = None


def rebuild(path: Path | str, storage: Any) -> RebuildReport:
    """Recreate the catalog at ``path`` from the published descriptors of ``storage``.

    Every descriptor is read before anything is written, so a storage that cannot be listed
    changes nothing.  A readable catalog is kept, with its other rows (quarantined, failed),
    and each published asset's row is restored in it.  An unreadable one is moved aside to
    ``<name>.corrupt-<UTC time>`` (with its -wal and -shm files) and a new catalog is built
    beside it and renamed into place.  Descriptors that are not valid JSON objects, or whose
    ``asset_id`` is not their folder's name, are skipped and reported.
    """
    path = Path(path)
    descriptors, skipped = _published_descriptors(storage)
    report = RebuildReport(path=path, restored=sorted(d["asset_id"] for d in descriptors), skipped=skipped)
    present = [path.with_name(path.name + s) for s in SIDECARS if _exists(path.with_name(path.name + s))]
    if _exists(path):
        try:
            catalog = Catalog(path)
            catalog.verify()
        except CatalogFull:
            raise
        except CatalogError as exc:
            report.moved_reason = exc.reason
        else:
            catalog.restore_published(descriptors)
            return report
    elif present:
        report.moved_reason = "its -wal/-shm files were left without it"
    if present:
        report.moved_aside = _move_aside(path)
    tmp = path.with_name(f".{path.name}.rebuild-{os.getpid()}")
    _remove_database(tmp)
    try:
        fresh = Catalog(tmp)
        fresh.restore_published(descriptors)
        if _exists(tmp.with_name(tmp.name + "-wal")):  # the last connection normally folds the log in
            with closing(sqlite3.connect(tmp)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(tmp, path)
    except CatalogError as exc:
        raise type(exc)(path, exc.reason, exc.hint) from exc  # name the catalog, not the temporary file
    except OSError as exc:
        err = translate_error(path, exc)
        if err is None:
            raise
        raise err from exc
    finally:
        _remove_database(tmp)
    return report


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _remove_database(p: Path) -> None:
    for s in SIDECARS:
        p.with_name(p.name + s).unlink(missing_ok=True)


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(_exists(aside.with_name(aside.name + s)) for s in SIDECARS):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for s in SIDECARS:
        src = path.with_name(path.name + s)
        if _exists(src):
            os.rename(src, aside.with_name(aside.name + s))
    return aside


def _published_descriptors(storage: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    good: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for name in sorted(storage.list_published()):
        where = _descriptor_location(storage, name)
        if not is_asset_id(name):
            skipped.append((where, "its folder is not an asset id"))
            continue
        try:
            d = storage.read_descriptor(name)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            skipped.append((where, f"not valid JSON ({exc})"))
            continue
        except OSError as exc:
            skipped.append((where, f"cannot be read ({exc.strerror or exc})"))
            continue
        if d is None:  # removed since it was listed
            continue
        if not isinstance(d, dict):
            skipped.append((where, "not a JSON object"))
        elif d.get("asset_id") != name:
            skipped.append((where, f"its asset_id {d.get('asset_id')} does not match its folder {name}"))
        elif not isinstance(d.get("source_name"), str) or not d["source_name"]:
            skipped.append((where, "it has no source_name"))
        else:
            good.append(d)
    return good, skipped


def _descriptor_location(storage: Any, asset_id: str) -> str:
    uri = getattr(storage, "descriptor_uri", None)
    if callable(uri):
        return str(uri(asset_id))
    published = getattr(storage, "published_root", Path(storage.root) / "published")
    return str(Path(published) / asset_id / DESCRIPTOR)
