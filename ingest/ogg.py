"""Ogg has no length field; its end is marked instead.

RFC 3533 section 6: the last page of a logical bitstream carries the
end-of-stream flag (``header_type & 0x04``).  A file cut anywhere, even on a
page boundary, ends on a page without it, so "the last complete page is not
EOS" is the truncation test the header cannot give us.
"""

from __future__ import annotations

from pathlib import Path

CAPTURE = b"OggS"
EOS = 0x04
TAIL = 1 << 16  # a page is at most 65,307 bytes, so the last page header lies in the last 64 KiB


def ends_with_eos(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - TAIL - 27))
        tail = f.read()
    at = len(tail)
    while (at := tail.rfind(CAPTURE, 0, at)) != -1:
        header = tail[at: at + 27]
        if len(header) == 27 and header[4] == 0:  # stream_structure_version is 0 (RFC 3533 section 6)
            segments = header[26]
            table = tail[at + 27: at + 27 + segments]
            if len(table) == segments and at + 27 + segments + sum(table) <= len(tail):
                return bool(header[5] & EOS)  # the last page that is complete in the file
    return False
