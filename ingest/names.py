"""File names as people and machines may see them: escaped, one line, valid UTF-8.

A name on disk is bytes.  It may not be UTF-8, and may hold newlines or
terminal escapes: printed raw it breaks ``--json`` output, SQLite text, log
lines and terminals.  :func:`printable` is the one spelling of a path used in
reports, messages, the catalog and ``reason.json``: undecodable bytes become
``\\xNN``, control and other non-printable characters ``\\n``, ``\\x1b``,
``\\u2028``, and a backslash is doubled, so the escaped form is unambiguous.
"""

from __future__ import annotations

import os

__all__ = ("printable",)


def _escape(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if "\udc80" <= ch <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(ch) - 0xDC00:02x}"
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def printable(path: "os.PathLike[str] | str") -> str:
    """``path`` escaped to one printable, valid UTF-8 line (see the module docstring)."""
    return "".join(map(_escape, os.fspath(path)))
