"""Publishing to S3-compatible object storage.

Masters, quarantine and staging stay on local disk under ``cfg.storage.root``
(they are work areas); ``publish`` uploads the staged tree.  An object store
has no rename, so the upload follows ``publish_order``: media and init
segments first, manifests next, ``asset.json`` last.  The origin serves an
asset only once its descriptor exists, so a reader never sees a playlist
whose segments are still missing.

Object keys: ``<s3_prefix>published/<asset_id>/<relative path>``, the same
relative layout as the local ``published/`` folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from tonearm.core.config import Config, StorageConfig
from tonearm.core.media_types import type_of
from tonearm.core.storage import DESCRIPTOR, LocalStorage, NotPublished, publish_order

__all__ = ("S3Storage", "make_client", "object_key", "published_prefix")



def make_client(scfg: StorageConfig, *, pool: int = 32, timeout: tuple[float, float] = (3, 20),
                attempts: int = 2) -> Any:
    """A boto3 S3 client for the configured endpoint (thread-safe; share one per process).

    ``timeout`` is (connect, read) seconds and ``attempts`` counts the first try: publishing keeps the
    defaults (a slow upload should still land), the origin passes its own short ones ([origin] s3_timeout).
    """
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=scfg.s3_endpoint_url or None,
        region_name=scfg.s3_region,
        # Short timeouts and one retry: a player waiting on a dead store is better told (502) than kept hanging.
        config=BotoConfig(max_pool_connections=pool, connect_timeout=timeout[0], read_timeout=timeout[1],
                          retries={"max_attempts": attempts, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def object_key(scfg: StorageConfig, asset_id: str, rel: str) -> str:
    prefix = scfg.s3_prefix.strip("/")
    return f"{prefix + '/' if prefix else ''}published/{asset_id}/{rel}"


def published_prefix(scfg: StorageConfig) -> str:
    """The key prefix under which every published asset has its ``<asset_id>/`` folder."""
    prefix = scfg.s3_prefix.strip("/")
    return f"{prefix + '/' if prefix else ''}published/"


class S3Storage:
    """``Storage`` whose published tree lives in a bucket."""

    def __init__(self, cfg: Config, *, client: Any | None = None, create: bool = True) -> None:
        self.scfg = cfg.storage
        self.local = LocalStorage(cfg.storage.root, create=create)
        self.root = self.local.root
        self.client = client or make_client(cfg.storage)

    def receive_master(self) -> tuple[BinaryIO, Path]:
        return self.local.receive_master()

    def keep_master(self, received: Path, asset_id: str, suffix: str) -> Path:
        return self.local.keep_master(received, asset_id, suffix)

    def quarantine(self, src: Path | None, asset_id: str, reason: dict[str, Any]) -> Path:
        return self.local.quarantine(src, asset_id, reason)

    def new_staging(self, asset_id: str, owner: str) -> Path:
        return self.local.new_staging(asset_id, owner)

    def clean_stale_staging(self, asset_id: str, is_alive: Callable[[str], bool]) -> None:
        self.local.clean_stale_staging(asset_id, is_alive)

    def publish(self, asset_id: str, staged: Path) -> None:
        if not (staged / DESCRIPTOR).is_file():
            raise ValueError(f"staged asset {staged} has no {DESCRIPTOR}; refusing to publish")
        files = [p.relative_to(staged).as_posix() for p in staged.rglob("*")
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(staged).parts)]
        for rel in publish_order(files):
            extra = {"ContentType": type_of(rel) or "application/octet-stream"}
            self.client.upload_file(str(staged / rel), self.scfg.s3_bucket, object_key(self.scfg, asset_id, rel),
                                    ExtraArgs=extra)
        shutil.rmtree(staged, ignore_errors=True)

    def is_published(self, asset_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.scfg.s3_bucket, Key=object_key(self.scfg, asset_id, DESCRIPTOR))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_descriptor(self, asset_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.scfg.s3_bucket, Key=object_key(self.scfg, asset_id, DESCRIPTOR))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return json.loads(obj["Body"].read())

    def list_folders(self, *, page_size: int = 1000) -> list[str]:
        """Every folder name under ``published/``, descriptor or not: one LIST per ``page_size`` folders."""
        base = published_prefix(self.scfg)
        names = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.scfg.s3_bucket, Prefix=base, Delimiter="/", PaginationConfig={"PageSize": page_size})
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(base):].rstrip("/")
                if name:
                    names.append(name)
        return names

    def list_published(self, *, page_size: int = 1000) -> list[str]:
        """Asset folders under ``published/`` whose ``asset.json`` exists (an upload that stopped
        before its descriptor is not an asset), listed page by page with a ``/`` delimiter."""
        return sorted(name for name in self.list_folders(page_size=page_size) if self.is_published(name))

    def unpublish(self, asset_id: str, *, grace_s: float = 0.0) -> bool:
        """Takedown: delete the descriptor first (the origin stops serving the asset on its next check),
        wait ``grace_s`` (an origin's recheck window: until then it may still stream a file whose metadata
        it had, and must find the bytes), then delete every other object under the asset's prefix, a
        listing page (at most 1,000 keys) at a time."""
        bucket, prefix = self.scfg.s3_bucket, object_key(self.scfg, asset_id, "")
        existed = self.is_published(asset_id)
        self.client.delete_object(Bucket=bucket, Key=object_key(self.scfg, asset_id, DESCRIPTOR))
        if grace_s > 0 and existed:  # nothing was served: nothing to wait for
            time.sleep(grace_s)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                existed = True
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        return existed

    def replace(self, asset_id: str, staged: Path) -> None:
        """A rebuilt version: uploaded over the live one in publish order (media, manifests, descriptor), then
        the old version's objects the new one does not have are deleted.  An object store has no atomic swap,
        so a player mid-stream may meet a segment of the new version under an old playlist's name."""
        bucket, prefix = self.scfg.s3_bucket, object_key(self.scfg, asset_id, "")
        if not self.is_published(asset_id):  # taken down meanwhile: a rebuild must not publish it again
            shutil.rmtree(staged, ignore_errors=True)
            raise NotPublished(f"asset {asset_id} is not published (taken down?): nothing to replace")
        before = {o["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])}
        now = {object_key(self.scfg, asset_id, p.relative_to(staged).as_posix())
               for p in staged.rglob("*") if p.is_file()}
        self.publish(asset_id, staged)
        stale = sorted(before - now)
        for i in range(0, len(stale), 1000):
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i:i + 1000]],
                                                              "Quiet": True})

    def descriptor_uri(self, asset_id: str) -> str:
        return f"s3://{self.scfg.s3_bucket}/{object_key(self.scfg, asset_id, DESCRIPTOR)}"
