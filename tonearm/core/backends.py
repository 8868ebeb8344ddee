"""The one place that picks the storage backend from the configuration."""

from __future__ import annotations

from tonearm.core.config import Config
from tonearm.core.s3storage import S3Storage
from tonearm.core.storage import LocalStorage, Storage

__all__ = ("open_storage",)


def open_storage(cfg: Config, *, create: bool = True) -> Storage:
    """``[storage] backend``: "local" (everything under ``root``) or "s3" (published tree in a bucket).

    ``create=False`` for processes that only read published assets (the origin): no local folders.
    """
    if cfg.storage.backend == "s3":
        return S3Storage(cfg, create=create)
    return LocalStorage(cfg.storage.root, create=create)
