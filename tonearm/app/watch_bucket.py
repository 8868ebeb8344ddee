"""``tonearm watch s3://bucket/prefix``: a bucket watched by listing, since many S3-compatible stores
(Swift's s3api among them) have no event notifications.

Each pass lists ``ListObjectsV2(Prefix=prefix, StartAfter=cursor)``: keys come back in byte order, so
the cursor is the greatest key up to which every key was taken or is ignored; it is stored in the
watcher's ledger (:mod:`tonearm.app.watch_ledger`) after every pass, so a restart resumes the listing
there instead of walking the bucket again.  An object still settling holds the cursor before it.
Every tenth pass lists from the start of the prefix (keys sorting before the cursor, written late, are
found then; the ledger skips what was taken).  A pass reads at most ``MAX_PAGES`` pages of 1,000 keys.

An object is taken when the same size and ETag were listed twice, ``[watch] settle_s`` apart (an
overwrite in between changes the ETag and restarts the wait); it goes to ``JobQueue.submit`` as
``s3://bucket/key`` with ``origin="bucket"``, so a worker on any machine reads it.  After-take:
``move`` is a server-side copy to ``<prefix>done/`` (or ``rejected/``) and then a delete of the
original; ``delete`` removes a published object only.  The S3 endpoint and credentials are the
storage's (``[storage] s3_endpoint_url``, ``s3_region``, the usual AWS variables).
"""

from __future__ import annotations

import logging
from typing import Any

from tonearm.app.watch_folder import DONE_DIR, REJECTED_DIR, Seen, ignored
from tonearm.app.watch_ledger import Ledger, Taken
from tonearm.core.config import Config, ConfigError
from tonearm.core.s3storage import make_client

log = logging.getLogger("tonearm.watch")

__all__ = ("BucketSource", "parse_bucket_url")

MAX_PAGES = 10
MAX_KEY_BYTES = 1024  # S3's own limit; a longer key from a non-conforming store is ignored


def parse_bucket_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/"); the prefix always ends with '/' (or is empty)."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket or not all(c.isalnum() or c in ".-_" for c in bucket) or len(bucket) > 63:
        raise ConfigError(f"watch: {url[:80]!r}: expected s3://bucket/prefix with a valid bucket name")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


class BucketSource:
    """One bucket prefix; keys in the ledger are relative to the prefix."""

    origin = "bucket"

    def __init__(self, bucket: str, prefix: str, cfg: Config, client: Any | None = None) -> None:
        self.bucket, self.prefix, self.cfg = bucket, prefix, cfg
        self.name = f"s3://{bucket}/{prefix}"
        self.client = client or make_client(cfg.storage, pool=4)
        self._cursor: str | None = None  # what the last incremental listing started after
        self._objects: dict[str, Seen] = {}

    @classmethod
    def from_url(cls, url: str, cfg: Config) -> "BucketSource":
        return cls(*parse_bucket_url(url), cfg)

    def listing(self, full: bool) -> list[Seen]:
        """Candidates after the cursor (or from the start, ``full``), relative keys in byte order."""
        start = "" if full else (self._cursor or "")
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": 1000}
        if start:
            kw["StartAfter"] = self.prefix + start
        out: list[Seen] = []
        for _ in range(MAX_PAGES):
            page = self.client.list_objects_v2(**kw)
            for obj in page.get("Contents", ()):
                key = obj["Key"][len(self.prefix):]
                first = key.split("/", 1)[0]
                if (not key or len(obj["Key"].encode()) > MAX_KEY_BYTES or first in (DONE_DIR, REJECTED_DIR)
                        or key.endswith("/") or ignored(key.rsplit("/", 1)[-1], self.cfg.watch.ignore)
                        or key.count("/") > self.cfg.watch.max_depth):
                    continue
                out.append(Seen(key=key, size=int(obj["Size"]), tag=str(obj.get("ETag", "")),
                                mtime=obj["LastModified"].timestamp()))
            if not page.get("IsTruncated"):
                break
            kw["ContinuationToken"] = page["NextContinuationToken"]
            kw.pop("StartAfter", None)
        self._objects = {s.key: s for s in out}
        return out

    def advance(self, ledger: Ledger, listing: list[Seen]) -> None:
        """Move the persisted cursor past the leading run of keys that are taken."""
        if self._cursor is None:
            self._cursor = ledger.cursor(self.name)
        cursor = self._cursor
        for s in listing:  # byte order, as S3 lists
            if s.key <= cursor:
                continue
            if not ledger.seen(self.name, s.key, s.size, s.tag):
                break
            cursor = s.key
        if cursor != self._cursor:
            ledger.set_cursor(self.name, cursor)
            self._cursor = cursor

    def load_cursor(self, ledger: Ledger) -> None:
        self._cursor = ledger.cursor(self.name)

    def ref(self, seen: Seen | Taken) -> str:
        return f"s3://{self.bucket}/{self.prefix}{seen.key}"

    def still(self, seen: Seen | Taken) -> bool:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + seen.key)
        except Exception:  # botocore's ClientError (404) or a connection error: not now
            return False
        return int(head["ContentLength"]) == seen.size and str(head.get("ETag", "")) == seen.tag

    def move(self, seen: Seen | Taken, folder: str) -> None:
        src = self.prefix + seen.key
        self.client.copy_object(Bucket=self.bucket, Key=f"{self.prefix}{folder}/{seen.key}",
                                CopySource={"Bucket": self.bucket, "Key": src})
        self.client.delete_object(Bucket=self.bucket, Key=src)

    def delete(self, seen: Seen | Taken) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + seen.key)
