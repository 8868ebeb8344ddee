"""The public catalog of an origin on object storage, read from the published descriptors.

An origin on S3 keeps no local state: any number of them, on any hosts, serve the same bucket.  So
the catalog API cannot read a SQLite file on the origin's disk; it reads what every origin sees, the
``asset.json`` of each published asset (the catalog is derived data: ``tonearm catalog rebuild``
restores its rows from the same files).  The view is rebuilt at most every ``ttl`` seconds: a
refresh lists the published folders and fetches only descriptors it has not seen.  It has the
catalog's read interface (``list``, ``count``, ``get``) for published assets; other states live only
in the ingest side's catalog.  With a shared catalog database (PostgreSQL) the API can read that instead.

Cost per origin, and only while the API is being asked: one LIST per 1,000 assets every ``ttl``, one
GET per new asset, and a HEAD of every known descriptor every ``recheck`` (a taken-down asset, whose
descriptor goes first, leaves the listing then; its playback stops within the origin's one-second
gate whatever the catalog says).  An asset folder without a descriptor (an upload in progress or
stopped) is looked at again at each refresh.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tonearm.core.catalog import AssetRecord, fold, search_keys
from tonearm.core.model import AssetState

__all__ = ("DescriptorCatalog",)

DEFAULT_TTL_S = 10.0
DEFAULT_RECHECK_S = 60.0


class DescriptorCatalog:
    """Published assets from ``storage.list_published()`` + ``read_descriptor()``, cached ``ttl`` seconds."""

    def __init__(self, storage: Any, ttl: float = DEFAULT_TTL_S, recheck: float = DEFAULT_RECHECK_S,
                 clock: Any = time.monotonic) -> None:
        self.storage = storage
        self.ttl = ttl
        self.recheck = recheck
        self._checked_until = float("-inf")
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, AssetRecord] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._order: list[AssetRecord] = []
        self._fresh_until = float("-inf")

    def _refresh(self) -> None:
        with self._lock:
            if self._clock() < self._fresh_until:
                return
            now = self._clock()
            lister = getattr(self.storage, "list_folders", None)  # S3: no HEAD per folder
            if lister is None or now >= self._checked_until:
                names = set(self.storage.list_published())  # every descriptor checked
                self._checked_until = now + self.recheck
            else:
                names = set(lister())
            records = {k: v for k, v in self._records.items() if k in names}  # taken down: gone
            for name in names - records.keys():
                d = self.storage.read_descriptor(name)
                if not isinstance(d, dict) or d.get("asset_id") != name:
                    continue  # removed since listed, or not a descriptor of this folder
                at = d.get("published_at")
                created = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0
                records[name] = AssetRecord(id=name, state=AssetState.PUBLISHED,
                                            source_name=str(d.get("source_name") or ""), info=d, error=None,
                                            created_at=created, updated_at=created)
                self._keys[name] = search_keys(d)
            self._records = records
            self._keys = {k: v for k, v in self._keys.items() if k in records}
            self._order = sorted(records.values(), key=lambda r: (r.created_at, r.id))
            self._fresh_until = self._clock() + self.ttl

    def _matching(self, state: AssetState | None, q: str | None) -> list[AssetRecord]:
        self._refresh()
        if state is not None and state is not AssetState.PUBLISHED:
            return []
        if not q:
            return self._order
        needle = fold(q)
        return [r for r in self._order if any(needle in key for key in self._keys.get(r.id, ("", "")))]

    def list(self, *, limit: int = 50, offset: int = 0, state: AssetState | None = None,
             q: str | None = None) -> list[AssetRecord]:
        return self._matching(state, q)[offset:offset + limit]

    def count(self, *, state: AssetState | None = None, q: str | None = None) -> int:
        return len(self._matching(state, q))

    def get(self, asset_id: str) -> AssetRecord | None:
        self._refresh()
        return self._records.get(asset_id)
