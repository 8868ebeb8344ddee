"""Ingest: identify, validate and describe audio masters.

``content_id`` names a master by the SHA-256 of its bytes; ``inspect``
checks it (container, full decode, duration, channels, rate), measures EBU
R128 loudness in the same decode pass and reads tags and artwork, or raises
``Rejected`` carrying a ``JobError`` whose code is listed in
:mod:`ingest.errors`.  ``ingest.discover`` expands command-line paths.
"""

from ingest.errors import ERROR_CODES, Rejected
from ingest.identity import content_id
from ingest.inspect import inspect

__all__ = ("ERROR_CODES", "Rejected", "content_id", "inspect")
