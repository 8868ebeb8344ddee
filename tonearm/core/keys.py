"""Content keys: one per protected asset, stored wrapped under a master key, never in public storage.

A key record is ``<data>/keys/<asset id>.json`` (0600, outside ``published/``): the scheme, the key
id (public: it is in every init segment and manifest), the content key wrapped with AES key wrap
(RFC 3394) under the master key, and for ``cbcs`` the constant IV.  The master key is a
``KeyWrapper``: a local 32-byte file by default (``[protection] master_key_file``, created 0600 on
first use), and anything with ``wrap``/``unwrap`` (a KMS client) can replace it.  Keys and KIDs
come from ``secrets``.  The origin reads this store to answer licence requests; nothing here is
ever written under ``published/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from tonearm.core.errors import TonearmError

__all__ = ("ContentKey", "KeyWrapper", "LocalKeyFile", "KeyStore", "KeyStoreError", "ENCRYPTED_SCHEMES", "open_keystore")

ENCRYPTED_SCHEMES = ("cbcs", "cenc", "aes-128")
MASTER_KEY_BYTES = 32  # AES-256 key-encryption key
MAX_RECORD_BYTES = 4096  # a key record is ~300 bytes: anything bigger is not ours
_ASSET_RE = re.compile(r"[0-9a-f]{64}")


class KeyStoreError(TonearmError):
    """The key store or the master key cannot be used (missing, unreadable, wrong master key)."""

    code = "key_store_error"


@dataclass(frozen=True)
class ContentKey:
    """One asset's key: ``key`` is secret; ``kid`` and ``iv`` are public (they travel in the media)."""

    asset_id: str
    scheme: str
    kid: bytes  # 16 bytes
    key: bytes  # 16 bytes, AES-128
    iv: bytes  # 16 bytes: cbcs constant IV; unused by cenc (per-sample IVs) and aes-128 (per-segment IVs)

    @property
    def kid_hex(self) -> str:
        return self.kid.hex()

    @property
    def kid_uuid(self) -> str:
        h = self.kid.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def __repr__(self) -> str:  # never print the key (logs, tracebacks)
        return f"ContentKey(asset_id={self.asset_id!r}, scheme={self.scheme!r}, kid={self.kid_hex!r}, key=<secret>)"


class KeyWrapper(Protocol):
    """Wraps and unwraps content keys under a key-encryption key: a local file here, a KMS elsewhere."""

    name: str

    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKeyFile:
    """A 32-byte master key in a local file (0600), created on first use; AES key wrap (RFC 3394)."""

    name = "local-file"

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self._kek: bytes | None = None
        self._create = create

    def _load(self) -> bytes:
        if self._kek is not None:
            return self._kek
        try:
            if self._create and not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    pass  # another process made it first: read theirs
                else:
                    with os.fdopen(fd, "wb") as f:
                        f.write(secrets.token_bytes(MASTER_KEY_BYTES))
                        f.flush()
                        os.fsync(f.fileno())
            data = self.path.read_bytes()[:MASTER_KEY_BYTES + 1]
        except OSError as exc:
            raise KeyStoreError(f"master key file {self.path}: {exc.strerror or exc}") from None
        if len(data) != MASTER_KEY_BYTES:
            raise KeyStoreError(f"master key file {self.path}: expected {MASTER_KEY_BYTES} bytes, found {len(data)}")
        self._kek = data
        return data

    def wrap(self, key: bytes) -> bytes:
        return aes_key_wrap(self._load(), key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._load(), wrapped)
        except InvalidUnwrap:
            raise KeyStoreError(f"a content key does not unwrap under the master key {self.path} (wrong master key?)") \
                from None


class KeyStore:
    """``<root>/<asset id>.json`` records, written atomically (0600); the directory is 0700."""

    def __init__(self, root: Path, wrapper: KeyWrapper) -> None:
        self.root = Path(root)
        self.wrapper = wrapper

    def _path(self, asset_id: str) -> Path:
        if not _ASSET_RE.fullmatch(asset_id or ""):
            raise KeyStoreError(f"{asset_id!r} is not an asset id")
        return self.root / f"{asset_id}.json"

    def get(self, asset_id: str) -> ContentKey | None:
        """The asset's key, or None if it has none (clear, or unknown)."""
        path = self._path(asset_id)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"key record {path.name}: {exc.strerror or exc}") from None
        try:
            rec = json.loads(raw) if len(raw) <= MAX_RECORD_BYTES else None
            scheme, kid, iv = rec["scheme"], bytes.fromhex(rec["kid"]), bytes.fromhex(rec["iv"])
            wrapped = bytes.fromhex(rec["wrapped_key"])
        except (TypeError, KeyError, ValueError):
            raise KeyStoreError(f"key record {path.name} is not a key record") from None
        if scheme not in ENCRYPTED_SCHEMES or len(kid) != 16 or len(iv) != 16:
            raise KeyStoreError(f"key record {path.name} is not a key record")
        key = self.wrapper.unwrap(wrapped)
        if len(key) != 16:
            raise KeyStoreError(f"key record {path.name}: the unwrapped key is not 16 bytes")
        return ContentKey(asset_id, scheme, kid, key, iv)

    def key_for(self, asset_id: str, scheme: str) -> ContentKey:
        """The asset's key for ``scheme``: the stored one (a retried job keeps its key), else a new one."""
        if scheme not in ENCRYPTED_SCHEMES:
            raise KeyStoreError(f"scheme {scheme!r} has no key (one of {', '.join(ENCRYPTED_SCHEMES)})")
        existing = self.get(asset_id)
        if existing is not None and existing.scheme == scheme:
            return existing
        key = ContentKey(asset_id, scheme, secrets.token_bytes(16), secrets.token_bytes(16), secrets.token_bytes(16))
        record = {"asset_id": asset_id, "scheme": scheme, "kid": key.kid.hex(), "iv": key.iv.hex(),
                  "wrapped_key": self.wrapper.wrap(key.key).hex(), "wrapper": self.wrapper.name,
                  "created_at": time.time()}
        self._write(self._path(asset_id), record)
        return key

    def _write(self, path: Path, record: dict) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise KeyStoreError(f"cannot write key record {path.name}: {exc.strerror or exc}") from None


def open_keystore(data_dir: Path, master_key_file: str = "", *, create: bool = True) -> KeyStore:
    """The configured store: ``<data>/keys/`` with the master key file (default ``<data>/keys/master.key``).

    ``create=False`` (the origin) never makes a master key: without one there is nothing to unwrap.
    """
    root = Path(data_dir) / "keys"
    master = Path(master_key_file) if master_key_file else root / "master.key"
    return KeyStore(root, LocalKeyFile(master, create=create))
