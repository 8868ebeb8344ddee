"""The base of every section of the one config schema (:mod:`tonearm.core.config` and the section modules
beside it): frozen, keyword-only, and an unknown key is an error rather than silently ignored."""

from __future__ import annotations

import msgspec

__all__ = ("Section",)


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Same rules as every section: frozen, keyword-only, no unknown key."""
