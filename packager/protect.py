"""Common encryption of CMAF audio (ISO/IEC 23001-7) and whole-segment AES-128 (RFC 8216 4.3.2.4).

What each scheme writes, per rendition, with the asset's one content key:

- ``cenc``: AES-128-CTR over every sample (full-sample encryption, no subsamples: audio has no
  clear headers to keep), a fresh random 8-byte IV per sample in ``senc``; ``tenc`` version 0
  with Per_Sample_IV_Size 8.
- ``cbcs``: AES-128-CBC over every whole 16-byte block of each sample, a trailing partial block
  left clear, the chain restarted at each sample from the constant IV of ``tenc`` (version 1,
  Per_Sample_IV_Size 0, crypt:skip 0:0, which 23001-7 10.4 gives for tracks other than video:
  no pattern, every whole block).  That is also Apple's SAMPLE-AES for AAC/fMP4: one set of
  files for HLS and DASH.
- both: the sample entry becomes ``enca`` with ``sinf`` (``frma`` = the original format,
  ``schm``, ``schi/tenc``), the init's ``moov`` gets a W3C common ``pssh`` (version 1, the KID:
  what the ClearKey CDM reads) and a Widevine ``pssh`` (its protobuf with the key id and the
  protection scheme); every ``traf`` gets ``saiz`` + ``saio`` + ``senc``, with ``saio`` pointing
  at senc's first per-sample record (offsets from the moof: default-base-is-moof) and trun's
  data_offset still the first mdat byte.
- ``aes-128``: the init segment stays clear (it holds no audio; EXT-X-MAP precedes the first
  EXT-X-KEY, so the key does not apply to it) and each media segment, moof and mdat, is
  AES-128-CBC with PKCS#7 padding under a random IV of its own, listed in the playlist.

Sample sizes do not change under cenc/cbcs, so trun is unchanged; aes-128 segments grow by the
padding and their sizes (and so the bit rates) are those of the bytes written.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable, Sequence

import numpy as np
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from packager.boxes import box, full_box, iter_boxes
from packager.errors import PackagerError
from tonearm.core.keys import ContentKey
from tonearm.core.model import Protection

__all__ = ("Encryptor", "COMMON_SYSTEM_ID", "WIDEVINE_SYSTEM_ID", "PLAYREADY_SYSTEM_ID", "pssh_box",
           "widevine_pssh_data")

COMMON_SYSTEM_ID = "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"  # W3C "cenc" initData format (ClearKey)
WIDEVINE_SYSTEM_ID = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
PLAYREADY_SYSTEM_ID = "9a04f079-9840-4286-ab92-e65be0885f95"
SCHEME_TYPES = {"cenc": b"cenc", "cbcs": b"cbcs"}
AudioAux = Callable[[int], bytes]


def _uuid(text: str) -> bytes:
    return bytes.fromhex(text.replace("-", ""))


def pssh_box(system_id: str, kids: Sequence[bytes] = (), data: bytes = b"") -> bytes:
    """A pssh box (23001-7 8.1): version 1 with KIDs when there are any, else version 0."""
    if kids:
        return full_box("pssh", 1, 0, _uuid(system_id), struct.pack(">I", len(kids)), *kids,
                        struct.pack(">I", len(data)), data)
    return full_box("pssh", 0, 0, _uuid(system_id), struct.pack(">I", len(data)), data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def widevine_pssh_data(kid: bytes, scheme: str) -> bytes:
    """WidevinePsshData (protobuf): key_id (field 2, bytes) and protection_scheme (field 9, fourcc)."""
    fourcc = int.from_bytes(SCHEME_TYPES[scheme], "big")
    return b"\x12" + _varint(len(kid)) + kid + b"\x48" + _varint(fourcc)


def _runs(keep: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """A boolean mask of ``keep[0]`` True, ``skip[0]`` False, ``keep[1]`` True, ... (one run pair per sample)."""
    lengths = np.empty(2 * len(keep), dtype=np.int64)
    lengths[0::2], lengths[1::2] = keep, skip
    return np.repeat(np.tile(np.array([True, False]), len(keep)), lengths)


class Encryptor:
    """Encrypts one asset's renditions with its content key (one instance per rendition or asset)."""

    def __init__(self, key: ContentKey) -> None:
        if key.scheme not in ("cbcs", "cenc", "aes-128"):
            raise PackagerError(f"protection scheme {key.scheme!r} is not cbcs, cenc or aes-128")
        self.key = key
        self.scheme = key.scheme
        self._aes = algorithms.AES(key.key)
        self._ecb = Cipher(self._aes, modes.ECB()).encryptor()  # stateless across update() calls

    @property
    def whole_segment(self) -> bool:
        return self.scheme == "aes-128"

    # -- init segment --------------------------------------------------------------------------

    def _tenc(self) -> bytes:
        if self.scheme == "cenc":
            return full_box("tenc", 0, 0, bytes([0, 0, 1, 8]), self.key.kid)
        # cbcs: version 1, crypt_byte_block 0 / skip_byte_block 0, protected, no per-sample IV, constant IV.
        return full_box("tenc", 1, 0, bytes([0, 0x00, 1, 0]), self.key.kid, bytes([16]), self.key.iv)

    def sample_entry(self, entry: bytes) -> bytes:
        """The encoder's sample entry as ``enca`` + ``sinf`` (23001-7 8.12), or unchanged for aes-128."""
        if self.whole_segment:
            return entry
        boxes = list(iter_boxes(entry))
        if len(boxes) != 1 or boxes[0].header != 8 or len(entry) < 36:
            raise PackagerError("the sample entry is not one audio sample entry box")
        fmt = entry[4:8]
        if fmt == b"enca":
            raise PackagerError("the sample entry is already encrypted")
        if struct.unpack_from(">H", entry, 16)[0] != 0:  # QuickTime sound description v1/v2: not CMAF
            raise PackagerError(f"{fmt!r} sample entry version is not 0")
        sinf = box("sinf", box("frma", fmt), full_box("schm", 0, 0, SCHEME_TYPES[self.scheme],
                                                      struct.pack(">I", 0x00010000)), box("schi", self._tenc()))
        body = entry[8:] + sinf
        return struct.pack(">I4s", 8 + len(body), b"enca") + body

    def pssh(self) -> bytes:
        """The init's pssh boxes: W3C common (ClearKey reads it) and Widevine; none for aes-128."""
        if self.whole_segment:
            return b""
        kid = self.key.kid
        return pssh_box(COMMON_SYSTEM_ID, [kid]) + pssh_box(WIDEVINE_SYSTEM_ID, data=widevine_pssh_data(kid, self.scheme))

    def info(self) -> Protection:
        """Public facts for the manifests: scheme, KID and the pssh boxes (base64, as DASH cenc:pssh)."""
        pssh = {}
        if not self.whole_segment:
            kid = self.key.kid
            pssh = {COMMON_SYSTEM_ID: base64.b64encode(pssh_box(COMMON_SYSTEM_ID, [kid])).decode(),
                    WIDEVINE_SYSTEM_ID: base64.b64encode(
                        pssh_box(WIDEVINE_SYSTEM_ID, data=widevine_pssh_data(kid, self.scheme))).decode()}
        return Protection(scheme=self.scheme, kid=self.key.kid_hex, pssh=pssh)

    # -- media segments ------------------------------------------------------------------------

    def samples(self, payload: bytes, sizes: Sequence[int]) -> tuple[bytes, AudioAux | None]:
        """Encrypt a fragment's samples (cenc/cbcs); returns the mdat payload and the traf's aux boxes.

        The second value is ``aux(at)``: ``saiz + saio + senc`` for a traf in which they start
        ``at`` bytes after the start of the moof (cmaf.fragment places them after trun).
        """
        if self.whole_segment:
            return payload, None
        n = len(sizes)
        size = np.asarray(sizes, dtype=np.int64)
        if int(size.sum()) != len(payload):
            raise PackagerError(f"sample sizes add up to {int(size.sum())} bytes, the payload has {len(payload)}")
        data = np.frombuffer(payload, dtype=np.uint8)
        starts = np.concatenate(([0], np.cumsum(size)[:-1])).astype(np.int64)
        if self.scheme == "cenc":
            block = os.urandom(8 * n)
            ivs = [block[8 * i:8 * i + 8] for i in range(n)]
            out = data ^ self._ctr_keystream(np.frombuffer(block, dtype=np.uint8).reshape(n, 8), size, starts)
        else:
            ivs = []
            out = self._cbc_whole_blocks(data, size, starts)
        return out.tobytes(), self._aux(n, ivs)

    def _ctr_keystream(self, ivs: np.ndarray, size: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """AES-CTR keystream for every sample at once (counter block = 8-byte IV || 64-bit block number).

        One ECB pass over all counter blocks of the fragment instead of a cipher per sample: the same
        bytes as ``Cipher(AES, CTR(iv + bytes(8)))`` sample by sample (checked in the tests).
        """
        blocks = (size + 15) // 16
        first_block = np.concatenate(([0], np.cumsum(blocks)[:-1]))
        counters = np.empty((int(blocks.sum()), 16), dtype=np.uint8)
        counters[:, :8] = np.repeat(ivs, blocks, axis=0)
        number = np.arange(len(counters), dtype=np.int64) - np.repeat(first_block, blocks)
        counters[:, 8:] = number.astype(">u8").view(np.uint8).reshape(-1, 8)
        stream = np.frombuffer(self._ecb.update(counters.tobytes()), dtype=np.uint8)
        return stream[_runs(size, blocks * 16 - size)]  # each sample's keystream without its last block's tail

    def _cbc_whole_blocks(self, data: np.ndarray, size: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """AES-CBC from the constant IV over each sample's whole blocks, all samples in step.

        The whole blocks are laid out as a (samples, longest, 16) array; block j of every sample is
        XORed with that sample's previous ciphertext block and encrypted in one ECB call: as many
        calls as the longest sample has blocks, the same bytes as a CBC encryptor per sample
        (checked in the tests); trailing partial blocks stay clear.
        """
        whole = size // 16
        longest = int(whole.max()) if len(whole) else 0
        if longest == 0:
            return data.copy()
        src = _runs(whole * 16, size - whole * 16)  # the bytes that are encrypted
        dst = _runs(whole * 16, (longest - whole) * 16)  # where they sit in the padded array
        grid = np.zeros(len(size) * longest * 16, dtype=np.uint8)
        grid[dst] = data[src]
        grid = grid.reshape(len(size), longest, 16)
        prev = np.tile(np.frombuffer(self.key.iv, dtype=np.uint8), (len(size), 1))
        for j in range(longest):
            prev = np.frombuffer(self._ecb.update((grid[:, j, :] ^ prev).tobytes()), dtype=np.uint8).reshape(-1, 16)
            grid[:, j, :] = prev
        out = data.copy()
        out[src] = grid.reshape(-1)[dst]
        return out

    def _aux(self, count: int, ivs: list[bytes]) -> AudioAux:
        info_size = 8 if self.scheme == "cenc" else 0
        # saiz (14496-12 8.7.8): a default size, or (default 0) one size byte per sample.
        saiz = full_box("saiz", 0, 0, struct.pack(">BI", info_size, count), b"" if info_size else bytes(count))
        senc = full_box("senc", 0, 0, struct.pack(">I", count), b"".join(ivs))

        def aux(at: int) -> bytes:
            saio_size = 20  # full box header 12 + entry_count 4 + one 32-bit offset
            senc_records = at + len(saiz) + saio_size + 16  # senc: header 8, version/flags 4, sample_count 4
            saio = full_box("saio", 0, 0, struct.pack(">II", 1, senc_records))
            return saiz + saio + senc

        return aux

    def segment(self, data: bytes) -> tuple[bytes, str | None]:
        """aes-128: the whole segment, AES-128-CBC + PKCS#7 under a fresh IV (returned as hex)."""
        if not self.whole_segment:
            return data, None
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        return enc.update(padder.update(data) + padder.finalize()) + enc.finalize(), iv.hex()
