"""A small ISO/IEC 14496-12 (ISOBMFF) box reader and writer.

Only what the packager needs: walk boxes in a byte buffer or a file without
loading media data, and build boxes from payload bytes.  Box sizes follow
14496-12 4.2: a 32-bit size, ``1`` for a 64-bit largesize, ``0`` for "to the
end of the enclosing container".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from packager.errors import BoxError


@dataclass(frozen=True)
class Box:
    type: str
    offset: int  # of the box header, relative to the buffer or file it was read from
    size: int  # whole box, header included
    header: int  # header length: 8, or 16 with a largesize
    data: bytes | memoryview  # the payload (empty when read from a file header only)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def children(self) -> list["Box"]:
        return list(iter_boxes(self.data, base=self.offset + self.header))

    def child(self, *path: str) -> "Box | None":
        """The first descendant along ``path``, e.g. ``moov.child("trak", "mdia")``."""
        box: Box | None = self
        for name in path:
            box = next((c for c in box.children() if c.type == name), None) if box else None
        return box

    def full(self) -> tuple[int, int, memoryview]:
        """(version, flags, rest) of a FullBox payload."""
        view = memoryview(self.data)
        if len(view) < 4:
            raise BoxError(f"{self.type} at {self.offset}: too short for a full box")
        return view[0], int.from_bytes(view[1:4], "big"), view[4:]


def _header(head: bytes | memoryview, at: int, room: int) -> tuple[int, str, int]:
    """Parse the header at the start of ``head``; ``room`` is what is left of the container."""
    if room < 8 or len(head) < 8:
        raise BoxError(f"truncated box header at {at}")
    size, typ = struct.unpack_from(">I4s", head, 0)
    header = 8
    if size == 1:
        if room < 16 or len(head) < 16:
            raise BoxError(f"truncated largesize at {at}")
        (size,) = struct.unpack_from(">Q", head, 8)
        header = 16
    elif size == 0:  # 14496-12 4.2: the box extends to the end of its container
        size = room
    if size < header or size > room:
        raise BoxError(f"box {typ!r} at {at}: size {size} runs past its container ({room} bytes left)")
    return size, typ.decode("latin-1"), header


def iter_boxes(buf: bytes | memoryview, *, base: int = 0) -> Iterator[Box]:
    """Boxes laid end to end in ``buf``; offsets are reported relative to ``base``."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        size, typ, header = _header(view[pos:pos + 16], base + pos, end - pos)
        yield Box(typ, base + pos, size, header, view[pos + header:pos + size])
        pos += size


def iter_file_boxes(f: BinaryIO, *, load: frozenset[str] = frozenset()) -> Iterator[Box]:
    """Top-level boxes of a file; payloads are read only for the types in ``load``.

    ``mdat`` can be gigabytes, so it is never read here: the demuxer reads samples by offset.
    """
    f.seek(0, 2)
    end = f.tell()
    pos = 0
    while pos < end:
        f.seek(pos)
        head = f.read(16)
        size, typ, header = _header(head, pos, end - pos)
        data = b""
        if typ in load:
            f.seek(pos + header)
            data = f.read(size - header)
        yield Box(typ, pos, size, header, data)
        pos += size


# ---- writing -------------------------------------------------------------------------------

def box(typ: str, *payload: bytes) -> bytes:
    body = b"".join(payload)
    size = 8 + len(body)
    if size > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, typ.encode("latin-1"), size + 8) + body
    return struct.pack(">I4s", size, typ.encode("latin-1")) + body


def full_box(typ: str, version: int, flags: int, *payload: bytes) -> bytes:
    return box(typ, struct.pack(">I", (version << 24) | flags), *payload)
