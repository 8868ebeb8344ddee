"""Configuration: one TOML file, then environment variables, then CLI flags.

Precedence, lowest first: built-in defaults < TOML file (``--config`` or
``TONEARM_CONFIG``) < ``TONEARM_<SECTION>_<KEY>`` environment variables <
CLI flags.  Everything is validated once, up front, with messages written for
the person who typed the value.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from tonearm.core.model import Rung

# AAC frames are 1024 samples and Opus frames 960 at 48 kHz; both tile 15360 samples.
ALIGNMENT_SAMPLES = 15360


# Rung names that would collide with layout paths: single/ (the single-file folder) and
# single/master.m3u8 (its multivariant playlist next to single/<rung>.m3u8).
RESERVED_RUNG_NAMES = frozenset({"single", "master"})


class ConfigError(ValueError):
    """A configuration value a person must fix."""


DEFAULT_RUNGS: tuple[Rung, ...] = (
    Rung(name="aac_256k", codec="aac", bitrate=256_000),
    Rung(name="aac_128k", codec="aac", bitrate=128_000),
    Rung(name="aac_64k", codec="aac", bitrate=64_000),
    Rung(name="opus_96k", codec="opus", bitrate=96_000),
)
LOSSLESS_RUNG = Rung(name="flac", codec="flac", bitrate=None)


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    backend: str = "local"  # "local" | "s3"
    root: Path = Path("data")  # local data dir: masters, quarantine, staging, published
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""  # empty: AWS default
    s3_region: str = "us-east-1"


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    max_bytes: int = 32 << 30  # larger masters are rejected as too_large (an hour of 8ch/192k/24-bit is ~16.6 GB)
    max_duration: float = 4 * 3600.0  # seconds; longer masters are too_long (header checked, decode stopped)
    # channels x rate x seconds: what decoding costs; 4 h of stereo 192 kHz, or 1 h of 8 channels at 192 kHz
    max_samples: int = 4 * 3600 * 192_000 * 2
    max_tag_bytes: int = 64 << 20  # bytes the tag reader may read; past it a master is published without tags
    max_artwork_bytes: int = 16 << 20  # a bigger embedded picture is not taken as artwork
    lease_s: float = 60.0  # catalog lease of a job, renewed every third of it while the job runs


@dataclass(frozen=True, kw_only=True)
class LadderConfig:
    rungs: tuple[Rung, ...] = DEFAULT_RUNGS
    lossless: bool = False
    sample_rate: int = 48000
    segment_duration: float = 6.4  # seconds; must be a multiple of 0.32 s at 48 kHz
    layouts: tuple[str, ...] = ("segmented", "single")

    @property
    def segment_samples(self) -> int:
        return int(Fraction(str(self.segment_duration)) * self.sample_rate)

    @property
    def all_rungs(self) -> tuple[Rung, ...]:
        return self.rungs + ((LOSSLESS_RUNG,) if self.lossless else ())


@dataclass(frozen=True, kw_only=True)
class FfmpegConfig:
    path: str = ""  # empty: TONEARM_FFMPEG, system ffmpeg, then imageio-ffmpeg
    timeout: float = 3600.0  # seconds for one ffmpeg run
    threads: int = 0  # 0: let ffmpeg decide


@dataclass(frozen=True, kw_only=True)
class OriginConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    manifest_ttl: int = 10  # seconds of Cache-Control max-age for manifests
    signing_key: str = ""  # empty: signed URLs disabled
    require_signed: bool = False
    cache_mb: int = 256  # in-process cache of file bytes (segments, init, manifests), LRU by bytes
    cors_origins: tuple[str, ...] = ("*",)  # media and manifests: Access-Control-Allow-Origin "*" or these origins
    access_log: str = "-"  # JSON lines: "-" stderr, "" off, else a file path
    catalog: str = "public"  # /api/*: "public" (published assets, never a token), "key" (bearer key), "off" (404)
    catalog_key: str = ""  # catalog = "key": the secret sent as "Authorization: Bearer <key>"
    api_cors_origins: tuple[str, ...] = ()  # /api/*: CORS origins of their own; empty: no CORS headers there
    allow_private_network: bool = False  # answer Private Network Access preflights with Allow-Private-Network
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive connection stays open (nginx keepalive_timeout)
    header_timeout: float = 60.0  # seconds a new connection has to send its request headers (client_header_timeout)
    max_connections: int = 4096  # per worker; past it the rest wait in the kernel's backlog


@dataclass(frozen=True, kw_only=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    ffmpeg: FfmpegConfig = field(default_factory=FfmpegConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)

    @property
    def data_dir(self) -> Path:
        return self.storage.root

    @property
    def catalog_path(self) -> Path:
        return self.storage.root / "catalog.sqlite3"


_SECTIONS = {"storage": StorageConfig, "ingest": IngestConfig, "ladder": LadderConfig, "ffmpeg": FfmpegConfig, "origin": OriginConfig}


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {name}"
    try:
        if name == "rungs":
            return tuple(_rung(r) for r in value)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, Path):
            return Path(value)
        if isinstance(default, tuple):
            if isinstance(value, str):  # "a, b" from the environment; "" is the empty list
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} ({exc})") from None


def _rung(raw: Mapping[str, Any]) -> Rung:
    if isinstance(raw, Rung):
        return raw
    unknown = set(raw) - {"name", "codec", "bitrate", "sample_rate", "channels"}
    if unknown:
        raise ConfigError(f"[ladder] rungs: unknown keys {sorted(unknown)}")
    return Rung(**raw)


def _apply(cfg: Config, section: str, values: Mapping[str, Any]) -> Config:
    cls = _SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"unknown config section [{section}]; known: {sorted(_SECTIONS)}")
    current = getattr(cfg, section)
    known = {f.name: getattr(current, f.name) for f in fields(cls)}
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown key [{section}] {name}; known: {sorted(known)}")
        changes[name] = _coerce(section, name, value, known[name])
    return replace(cfg, **{section: replace(current, **changes)})


def _from_env(cfg: Config, env: Mapping[str, str]) -> Config:
    if env.get("TONEARM_FFMPEG"):
        cfg = _apply(cfg, "ffmpeg", {"path": env["TONEARM_FFMPEG"]})
    if env.get("TONEARM_SIGNING_KEY"):
        cfg = _apply(cfg, "origin", {"signing_key": env["TONEARM_SIGNING_KEY"]})
    if env.get("TONEARM_DATA"):
        cfg = _apply(cfg, "storage", {"root": env["TONEARM_DATA"]})
    for section, cls in _SECTIONS.items():
        prefix = f"TONEARM_{section.upper()}_"
        values = {
            f.name: env[prefix + f.name.upper()]
            for f in fields(cls)
            if f.name != "rungs" and prefix + f.name.upper() in env
        }
        if values:
            cfg = _apply(cfg, section, values)
    return cfg


def validate(cfg: Config) -> Config:
    lad = cfg.ladder
    if lad.sample_rate != 48000:
        raise ConfigError("[ladder] sample_rate: only 48000 is supported (AAC and Opus frames align there)")
    samples = Fraction(str(lad.segment_duration)) * lad.sample_rate
    if samples.denominator != 1 or samples <= 0 or int(samples) % ALIGNMENT_SAMPLES:
        raise ConfigError(
            f"[ladder] segment_duration: {lad.segment_duration} s is not a positive multiple of 0.32 s; "
            "AAC (1024-sample) and Opus (960-sample) frames only share boundaries there (e.g. 6.4)"
        )
    names = [r.name for r in lad.all_rungs]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"[ladder] rungs: names must be unique and non-empty, got {names}")
    for r in lad.all_rungs:
        if not r.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"[ladder] rung name {r.name!r}: use letters, digits, '_' and '-' only")
        if r.name in RESERVED_RUNG_NAMES:
            raise ConfigError(f"[ladder] rung name {r.name!r} is reserved (it would overwrite a layout file)")
        if r.codec not in {"aac", "opus", "flac"}:
            raise ConfigError(f"[ladder] rung {r.name}: codec {r.codec!r} is not one of aac, opus, flac")
        if r.codec != "flac" and not (r.bitrate and 8_000 <= r.bitrate <= 512_000):
            raise ConfigError(f"[ladder] rung {r.name}: bitrate must be 8000..512000 bits/s")
    bad_layouts = set(lad.layouts) - {"segmented", "single"}
    if bad_layouts or not lad.layouts:
        raise ConfigError(f"[ladder] layouts: use 'segmented' and/or 'single', got {list(lad.layouts)}")
    if cfg.storage.backend not in {"local", "s3"}:
        raise ConfigError(f"[storage] backend: {cfg.storage.backend!r} is not 'local' or 's3'")
    if cfg.storage.backend == "s3" and not cfg.storage.s3_bucket:
        raise ConfigError("[storage] s3_bucket: required when backend = 's3'")
    if cfg.origin.require_signed and not cfg.origin.signing_key:
        raise ConfigError("[origin] require_signed needs signing_key (or TONEARM_SIGNING_KEY)")
    _validate_origin(cfg.origin)
    for name in ("max_bytes", "max_duration", "max_samples", "max_tag_bytes", "max_artwork_bytes", "lease_s"):
        if getattr(cfg.ingest, name) <= 0:
            raise ConfigError(f"[ingest] {name}: must be > 0")
    if cfg.ffmpeg.timeout <= 0:
        raise ConfigError("[ffmpeg] timeout: must be > 0 seconds")
    return cfg


MIN_SECRET_LENGTH = 32  # characters of a signing or catalog key: a short secret is guessed offline from one token


def _validate_origin(o: OriginConfig) -> None:
    if o.signing_key and len(o.signing_key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"[origin] signing_key (or TONEARM_SIGNING_KEY): use at least {MIN_SECRET_LENGTH} characters, got "
            f"{len(o.signing_key)}; e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if o.catalog not in {"public", "key", "off"}:
        raise ConfigError(f"[origin] catalog: {o.catalog!r} is not 'public', 'key' or 'off'")
    if o.catalog == "key" and len(o.catalog_key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"[origin] catalog_key: catalog = 'key' needs a key of at least {MIN_SECRET_LENGTH} characters, got "
            f"{len(o.catalog_key)}; e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    for name in ("cors_origins", "api_cors_origins"):
        for value in getattr(o, name):
            if value != "*" and not (value.startswith(("http://", "https://")) and value.count("/") == 2):
                raise ConfigError(f"[origin] {name}: {value!r} is not '*' or an origin like 'https://player.example'")
    for name in ("keepalive_timeout", "header_timeout"):
        if not 0 < getattr(o, name) <= 86400:
            raise ConfigError(f"[origin] {name}: must be > 0 and at most 86400 seconds")
    if o.max_connections < 1:
        raise ConfigError("[origin] max_connections: must be at least 1")


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the effective configuration from file, environment and flags."""
    env = os.environ if env is None else env
    cfg = Config()
    path = path or env.get("TONEARM_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config file {path}: {section} must be a [section]")
            cfg = _apply(cfg, section, values)
    cfg = _from_env(cfg, env)
    for section, values in (overrides or {}).items():
        cfg = _apply(cfg, section, {k: v for k, v in values.items() if v is not None})
    return validate(cfg)
