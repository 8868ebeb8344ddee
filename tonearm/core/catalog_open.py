"""The one place that picks the catalog backend from ``[catalog] url``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from tonearm.core.catalog import Catalog
from tonearm.core.config import Config

if TYPE_CHECKING:
    from tonearm.core.catalog_pg import PgCatalog

__all__ = ("open_catalog", "AnyCatalog")

AnyCatalog = Union[Catalog, "PgCatalog"]  # one protocol: claim renew set_state get list count verify restore_published


def open_catalog(cfg: Config | str) -> AnyCatalog:
    """SQLite (the default, a file under the data dir, or ``sqlite:///path``) or ``postgresql://...``."""
    url = cfg if isinstance(cfg, str) else cfg.catalog.url
    if url.startswith(("postgresql://", "postgres://")):
        from tonearm.core.catalog_pg import PgCatalog

        return PgCatalog(url)
    if isinstance(cfg, str):
        return Catalog(cfg[len("sqlite:///"):] if cfg.startswith("sqlite:///") else cfg)
    return Catalog(cfg.catalog_path)
