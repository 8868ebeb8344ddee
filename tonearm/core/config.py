"""Configuration: one TOML file, then environment variables, then CLI flags.

Precedence, lowest first: built-in defaults < TOML file (``--config`` or
``TONEARM_CONFIG``) < ``TONEARM_<SECTION>_<KEY>`` environment variables <
CLI flags.  The sections are msgspec schemas: the file is converted strictly
(``port = true`` or ``bitrate = "96000"`` is an error, not a guess), the
environment's strings are parsed by the same schema in non-strict mode, flags
are Python values.  Whatever is wrong becomes one line that names the key and
says what is allowed; the rules that span several keys (segment grid, rung
names, codecs and bit rates, layouts, keys) follow in :func:`validate`.
Codecs, the segment grid and layouts come from their tables
(:mod:`tonearm.core.codecs`, :mod:`tonearm.core.layouts`), never from here.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect as mi

from tonearm.core.codecs import ALIGNMENT_SAMPLES, CODECS
from tonearm.core.config_intake import ApiConfig, WatchConfig, WebhooksConfig, intake_problems
from tonearm.core.config_jobs import CatalogConfig, JobsConfig, catalog_problems
from tonearm.core.config_protection import PROTECTION_SCHEMES, ProtectionConfig
from tonearm.core.config_section import Section
from tonearm.core.errors import TonearmError
from tonearm.core.layouts import LAYOUTS, RESERVED_RUNG_NAMES
from tonearm.core.model import Rung

__all__ = ("Config", "CatalogConfig", "JobsConfig", "StorageConfig", "IngestConfig", "LadderConfig", "FfmpegConfig",
           "OriginConfig", "ApiConfig", "ProtectionConfig", "PROTECTION_SCHEMES", "ConfigError",
           "load", "validate", "DEFAULT_RUNGS", "LOSSLESS_RUNG", "MIN_SECRET_LENGTH", "DEFAULT_LOUDNESS_TARGET")


class ConfigError(TonearmError, ValueError):
    """A configuration value a person must fix; the message is one line naming the setting."""

    code = "config_invalid"


DEFAULT_RUNGS: tuple[Rung, ...] = (
    Rung(name="aac_256k", codec="aac", bitrate=256_000),
    Rung(name="aac_128k", codec="aac", bitrate=128_000),
    Rung(name="aac_64k", codec="aac", bitrate=64_000),
    Rung(name="opus_96k", codec="opus", bitrate=96_000),
)
LOSSLESS_RUNG = Rung(name="flac", codec="flac", bitrate=None)

LADDER_RATE = 48000  # the codec table's frame sizes, and so the segment grid, are counted at this rate
DEFAULT_LOUDNESS_TARGET = -14.0  # LUFS: the streaming services' common playback level
MIN_SECRET_LENGTH = 32  # characters of a signing or catalog key: a short secret is guessed offline from one token

# Ranges the schema enforces (msgspec.Meta); an error message prints them from the schema itself.
Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
ConnectionSeconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]  # up to a day, as nginx allows
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: any free port
Lufs = Annotated[float, msgspec.Meta(ge=-40, le=0)]  # a playback loudness target (EBU R128: -23)
DrainSeconds = Annotated[float, msgspec.Meta(ge=0, le=300)]
StoreSeconds = Annotated[float, msgspec.Meta(gt=0, le=120)]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=10)]


_Section = Section


class StorageConfig(_Section):
    backend: Literal["local", "s3"] = "local"
    root: Path = Path("data")  # local data dir: masters, quarantine, staging, published
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""  # empty: AWS default
    s3_region: str = "us-east-1"


class IngestConfig(_Section):
    max_bytes: Positive = 32 << 30  # larger masters are too_large (an hour of 8ch/192k/24-bit is ~16.6 GB)
    max_duration: PositiveSeconds = 4 * 3600.0  # longer masters are too_long (header checked, decode stopped)
    # channels x rate x seconds: what decoding costs; 4 h of stereo 192 kHz, or 1 h of 8 channels at 192 kHz
    max_samples: Positive = 4 * 3600 * 192_000 * 2
    max_tag_bytes: Positive = 64 << 20  # bytes the tag reader may read; past it a master is published without tags
    max_artwork_bytes: Positive = 16 << 20  # a bigger embedded picture is not taken as artwork
    lease_s: PositiveSeconds = 60.0  # catalog lease of a job, renewed every third of it while the job runs


class LadderConfig(_Section):
    rungs: tuple[Rung, ...] = DEFAULT_RUNGS
    lossless: bool = False
    sample_rate: int = LADDER_RATE
    segment_duration: float = 6.4  # seconds; a multiple of the alignment grid (0.32 s at 48 kHz)
    layouts: tuple[str, ...] = ("segmented", "single")  # names in tonearm.core.layouts.LAYOUTS
    # LUFS a player normalises to: the gain the manifests and asset.json carry is target - integrated loudness,
    # lowered so the true peak stays at or below -1 dBTP
    loudness_target: Lufs = DEFAULT_LOUDNESS_TARGET

    @property
    def segment_samples(self) -> int:
        return int(Fraction(str(self.segment_duration)) * self.sample_rate)

    @property
    def all_rungs(self) -> tuple[Rung, ...]:
        return self.rungs + ((LOSSLESS_RUNG,) if self.lossless else ())


class FfmpegConfig(_Section):
    path: str = ""  # empty: TONEARM_FFMPEG, system ffmpeg, then imageio-ffmpeg
    timeout: PositiveSeconds = 3600.0  # seconds for one ffmpeg run
    threads: NonNegative = 0  # 0: let ffmpeg decide


class OriginConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    workers: AtLeastOne = 1
    manifest_ttl: NonNegative = 10  # seconds of Cache-Control max-age for manifests
    signing_key: str = ""  # empty: signed URLs disabled
    require_signed: bool = False
    cache_mb: NonNegative = 256  # in-process LRU of file bytes; 0 streams every body from disk
    cors_origins: tuple[str, ...] = ("*",)  # media and manifests: Access-Control-Allow-Origin "*" or these origins
    access_log: str = "-"  # JSON lines: "-" stderr, "" off, else a file path
    catalog: Literal["public", "key", "off"] = "public"  # /api/*: published assets, bearer key, or 404
    catalog_key: str = ""  # catalog = "key": the secret sent as "Authorization: Bearer <key>"
    api_cors_origins: tuple[str, ...] = ()  # /api/*: CORS origins of their own; empty: no CORS headers there
    allow_private_network: bool = False  # answer Private Network Access preflights with Allow-Private-Network
    keepalive_timeout: ConnectionSeconds = 75.0  # seconds an idle keep-alive connection stays open
    header_timeout: ConnectionSeconds = 60.0  # seconds a new connection has to send its request headers
    max_connections: AtLeastOne = 4096  # per worker; past it the rest wait in the kernel's backlog
    # Cached GET/HEAD of media, init segments and manifests answered by origin.fastpath, ahead of aiohttp's
    # request layer (same bytes; anything else goes to aiohttp).  false: every request goes through aiohttp.
    fast_path: bool = True
    # Scale-out (deploy/): after SIGTERM, /readyz answers 503 and the origin keeps serving this long, so a
    # load balancer's health check takes it out of the pool before it stops accepting (2 s behind
    # deploy/haproxy.cfg's fall 2 x inter 250ms); in-flight requests then finish.  0: stop accepting at once.
    drain_s: DrainSeconds = 0.0
    # The origin's object-store calls (storage backend "s3"): connect and read timeout each, and attempts in
    # all.  Short, and one attempt: a player or the load balancer retries elsewhere sooner than botocore's
    # backoff would, and a store that is down is told (502, /readyz 503) instead of kept waiting on.
    s3_timeout: StoreSeconds = 2.0
    s3_attempts: Attempts = 1


class Config(_Section):
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    catalog: CatalogConfig = msgspec.field(default_factory=CatalogConfig)
    jobs: JobsConfig = msgspec.field(default_factory=JobsConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    ladder: LadderConfig = msgspec.field(default_factory=LadderConfig)
    ffmpeg: FfmpegConfig = msgspec.field(default_factory=FfmpegConfig)
    origin: OriginConfig = msgspec.field(default_factory=OriginConfig)
    protection: ProtectionConfig = msgspec.field(default_factory=ProtectionConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    watch: WatchConfig = msgspec.field(default_factory=WatchConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)

    @property
    def data_dir(self) -> Path:
        return self.storage.root

    @property
    def catalog_path(self) -> Path:
        """The SQLite catalog file (``[catalog] url`` sqlite:///path, else under the data dir)."""
        if self.catalog.url.startswith("sqlite:///"):
            return Path(self.catalog.url[len("sqlite:///"):] or "catalog.sqlite3")
        return self.storage.root / "catalog.sqlite3"

    @property
    def upload_dir(self) -> Path:
        return Path(self.api.upload_dir) if self.api.upload_dir else self.storage.root / "uploads"


_SECTIONS: dict[str, type[_Section]] = {"storage": StorageConfig, "ingest": IngestConfig, "ladder": LadderConfig,
                                        "ffmpeg": FfmpegConfig, "origin": OriginConfig, "api": ApiConfig,
                                        "catalog": CatalogConfig, "jobs": JobsConfig,
                                        "protection": ProtectionConfig}
_SECTIONS.update(watch=WatchConfig, webhooks=WebhooksConfig)
_SHORTCUTS = {"TONEARM_FFMPEG": ("ffmpeg", "path"), "TONEARM_SIGNING_KEY": ("origin", "signing_key"),
              "TONEARM_DATA": ("storage", "root")}  # applied first: TONEARM_<SECTION>_<KEY> beats them
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_MISSING = object()


# -- schema errors, in words ---------------------------------------------------------------------------------------


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Path and isinstance(obj, (str, os.PathLike)):
        return Path(obj)
    raise TypeError(f"expected {typ.__name__}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(type(obj).__name__)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _range(t: mi.IntType | mi.FloatType) -> str:
    if isinstance(t, mi.IntType) and t.ge is not None and t.le is not None:
        return f" {t.ge}..{t.le}"
    bounds = [f"{op} {_num(v)}" for op, v in ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le)) if v is not None]
    return (" " + " and ".join(bounds)) if bounds else ""


def _expected(t: mi.Type, plural: bool = False) -> str:
    """What a schema type allows, as a person reads it: 'an integer 0..65535', 'a list of strings'."""
    if isinstance(t, mi.Metadata):
        return _expected(t.type, plural)
    if isinstance(t, mi.UnionType):  # int | None: TOML has no null, so only the rest is worth saying
        return " or ".join(_expected(m, plural) for m in t.types if not isinstance(m, mi.NoneType))
    if isinstance(t, (mi.VarTupleType, mi.ListType)):
        return "a list of " + _expected(t.item_type, plural=True)
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.CustomType) and t.cls is Path:
        return "paths (strings)" if plural else "a path (a string)"
    words = {mi.IntType: ("an integer", "integers"), mi.FloatType: ("a number", "numbers"),
             mi.StrType: ("a string", "strings"), mi.StructType: ("a table", "tables")}
    one, many = words.get(type(t), ("a value", "values"))
    return (many if plural else one) + (_range(t) if isinstance(t, (mi.IntType, mi.FloatType)) else "")


def _quote(text: str, limit: int = 60) -> str:
    """JSON quoting keeps a hostile value on one line; long ones are cut."""
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _num(value) if isinstance(value, int) else repr(value)
    if isinstance(value, str):
        return "a string " + _quote(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (Mapping, msgspec.Struct)):
        return "a table"
    if isinstance(value, Path):
        return "a path " + _quote(str(value))
    return f"a {type(value).__name__} {_quote(str(value))}"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _quote(name)


def _where(segs: list[str | int]) -> str:
    """``["ladder", "rungs", 0, "bitrate"]`` -> ``[ladder] rungs[0].bitrate``."""
    if not segs:
        return ""
    rest = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in segs[1:]).lstrip(".")
    return f"[{segs[0]}]" + (f" {rest}" if rest else "")


def _step(t: mi.Type, value: Any, seg: str | int) -> tuple[mi.Type, Any]:
    """One step down a msgspec error path, in the schema and in the data that failed it."""
    while isinstance(t, (mi.Metadata, mi.UnionType)):
        t = t.type if isinstance(t, mi.Metadata) else next(m for m in t.types if not isinstance(m, mi.NoneType))
    if isinstance(seg, int):
        item = value[seg] if isinstance(value, (list, tuple)) and seg < len(value) else _MISSING
        return getattr(t, "item_type", t), item
    field = next((f for f in getattr(t, "fields", ()) if f.name == seg), None)
    if isinstance(value, Mapping):
        value = value.get(seg, _MISSING)
    else:
        value = getattr(value, seg, _MISSING)
    return (field.type if field else t), value


def _unknown(t: mi.Type, value: Any) -> str | None:
    """The first key of a table that its schema does not know."""
    known = {f.name for f in getattr(t, "fields", ())}
    return next((str(k) for k in value if k not in known), None) if isinstance(value, Mapping) else None


def _explain(exc: msgspec.ValidationError, schema: type, data: Any, prefix: tuple[str, ...] = (),
             env: Mapping[str, tuple[str, str]] | None = None) -> ConfigError:
    """Rewrite msgspec's error as one line from the schema and the offending value (msgspec's own words
    name neither what is allowed nor what was given)."""
    text, sep, at = str(exc).rpartition(" - at `")
    if not sep or not re.fullmatch(r"\$(\.\w+|\[\d+\])*`", at):  # no path: the error is about the whole file
        text, at = str(exc), ""
    segs: list[str | int] = [int(i) if i else k for k, i in re.findall(r"\.(\w+)|\[(\d+)\]", at)]
    t, value = mi.type_info(schema), data
    for seg in segs:
        t, value = _step(t, value, seg)
    if text.startswith("Object contains unknown field") and _unknown(t, value) is None:
        segs, t, value = [], mi.type_info(schema), data  # that "path" was part of an unknown top-level key
    segs = [*prefix, *segs]
    if text.startswith("Object contains unknown field") and (name := _unknown(t, value)) is not None:
        known = [f.name for f in t.fields]
        hint = difflib.get_close_matches(name, known, n=1)
        if not segs:
            return ConfigError(f"unknown config section [{_key(name)}]{f' (did you mean [{hint[0]}]?)' if hint else ''}"
                               "; known: " + ", ".join(f"[{k}]" for k in known))
        return ConfigError(f"{_where([*segs, _key(name)])}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}"
                           f"; known: {', '.join(known)}")
    if m := re.match(r"Object missing required field `(\w+)`", text):
        field = next(f for f in t.fields if f.name == m[1])
        return ConfigError(f"{_where([*segs, m[1]])}: missing; expected {_expected(field.type)}")
    if value is _MISSING:  # not expected: msgspec's own words, kept on one line
        return ConfigError(f"{_where(segs) or 'configuration'}: {' '.join(text.split())}")
    if env and segs[-1] in env:  # from the environment: name the variable, show the string it held
        var, raw = env[str(segs[-1])]
        return ConfigError(f"{_where(segs)} ({var}): expected {_expected(t)}, got {_quote(raw)}")
    return ConfigError(f"{_where(segs) or 'configuration'}: expected {_expected(t)}, got {_got(value)}")


def _convert(data: Any, schema: type, *, strict: bool = True, prefix: tuple[str, ...] = (),
             env: Mapping[str, tuple[str, str]] | None = None) -> Any:
    try:
        return msgspec.convert(data, schema, strict=strict, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, schema, data, prefix, env) from None


# -- the layers ----------------------------------------------------------------------------------------------------


def _env_value(t: mi.Type, text: str) -> Any:
    """An environment string shaped for non-strict conversion: 'a, b' lists, yes/no/on/off booleans."""
    if isinstance(t, (mi.VarTupleType, mi.ListType)):
        return [v.strip() for v in text.split(",") if v.strip()]  # "" is the empty list
    if isinstance(t, mi.BoolType):
        word = text.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else text
    return text if isinstance(t, (mi.StrType, mi.LiteralType)) else text.strip()


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``TONEARM_*`` variables as typed values per section; a value that does not parse names its variable."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, (section, key) in _SHORTCUTS.items():
        if env.get(var):
            found.setdefault(section, {})[key] = (var, env[var])
    for section, cls in _SECTIONS.items():
        for key in cls.__struct_fields__:
            var = f"TONEARM_{section.upper()}_{key.upper()}"
            if key != "rungs" and var in env:  # a ladder does not fit in a variable
                found.setdefault(section, {})[key] = (var, env[var])
    typed: dict[str, dict[str, Any]] = {}
    for section, items in found.items():
        fields = {f.name: f.type for f in mi.type_info(_SECTIONS[section]).fields}
        raw = {key: _env_value(fields[key], text) for key, (_, text) in items.items()}
        parsed = _convert(raw, _SECTIONS[section], strict=False, prefix=(section,), env=items)
        typed[section] = {key: getattr(parsed, key) for key in raw}
    return typed


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    for section, values in layer.items():
        if isinstance(values, Mapping) and isinstance(base.get(section, {}), Mapping):
            base[section] = {**base.get(section, {}), **values}
        else:  # not a table: left for the schema to reject with its name
            base[section] = values
    return base


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the effective configuration from file, environment and flags (``None`` flags are unset)."""
    env = os.environ if env is None else env
    path = path or env.get("TONEARM_CONFIG")
    data: dict[str, Any] = _read_toml(path) if path else {}
    _convert(data, Config)  # the file on its own, strictly: a bad value is an error even where a variable wins
    merged = _merge(_merge(data, _from_env(env)), {
        section: {k: v for k, v in values.items() if v is not None} if isinstance(values, Mapping) else values
        for section, values in (overrides or {}).items()
    })
    return validate(_convert(merged, Config))


# -- the rules across keys -----------------------------------------------------------------------------------------


def validate(cfg: Config) -> Config:
    """Check a whole configuration, also one built in code: the schema again, then the cross-key rules."""
    try:
        builtins = msgspec.to_builtins(cfg, enc_hook=_enc_hook)
    except (TypeError, NotImplementedError) as exc:
        raise ConfigError(f"configuration: a value of an unsupported type ({exc})") from None
    cfg = _convert(builtins, Config)
    _validate_ladder(cfg.ladder)
    if cfg.storage.backend == "s3" and not cfg.storage.s3_bucket:
        raise ConfigError("[storage] s3_bucket: required when backend = 's3'")
    if cfg.origin.require_signed and not cfg.origin.signing_key:
        raise ConfigError("[origin] require_signed needs signing_key (or TONEARM_SIGNING_KEY)")
    _validate_origin(cfg.origin)
    if cfg.protection.master_key_file and "\x00" in cfg.protection.master_key_file:
        raise ConfigError("[protection] master_key_file: a path without NUL characters")
    for problem in catalog_problems(cfg.catalog, cfg.jobs):
        raise ConfigError(problem)
    for problem in intake_problems(cfg.watch, cfg.webhooks, MIN_SECRET_LENGTH):
        raise ConfigError(problem)
    return cfg


def _validate_ladder(lad: LadderConfig) -> None:
    if lad.sample_rate != LADDER_RATE:
        raise ConfigError(f"[ladder] sample_rate: only {LADDER_RATE} is supported (the codecs' frames align there), "
                          f"got {lad.sample_rate}")
    grid = Fraction(ALIGNMENT_SAMPLES, lad.sample_rate)
    ok = math.isfinite(lad.segment_duration) and lad.segment_duration > 0
    samples = Fraction(str(lad.segment_duration)) * lad.sample_rate if ok else Fraction(0)
    if not ok or samples.denominator != 1 or int(samples) % ALIGNMENT_SAMPLES:
        frames = ", ".join(f"{c.name} {c.frame_samples}" for c in CODECS.values())
        raise ConfigError(
            f"[ladder] segment_duration: {lad.segment_duration} s is not a positive multiple of {float(grid):g} s; "
            f"the frames of every codec (samples: {frames}) only share boundaries there (e.g. {float(grid * 20):g})"
        )
    names = [r.name for r in lad.all_rungs]
    if not names:
        raise ConfigError("[ladder] rungs: the ladder needs at least one rung")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        extra = f" (lossless = true adds a rung named {LOSSLESS_RUNG.name!r})" if LOSSLESS_RUNG.name in dups else ""
        raise ConfigError(f"[ladder] rungs: duplicate rung names {dups}; names must be unique{extra}")
    for i, r in enumerate(lad.all_rungs):
        _validate_rung(r, f"[ladder] rungs[{i}]." if i < len(lad.rungs) else f"[ladder] lossless (rung {r.name!r}) ",
                       lad.sample_rate)
    if not lad.layouts or any(name not in LAYOUTS for name in lad.layouts):
        raise ConfigError(f"[ladder] layouts: use {' and/or '.join(map(repr, LAYOUTS))}, got {list(lad.layouts)}")


def _validate_rung(r: Rung, at: str, sample_rate: int) -> None:
    """One rung against the codec table (name, bit rate range or none) and the layout table (reserved names)."""
    if not r.name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{at}name: rung name {r.name!r}: use letters, digits, '_' and '-' only")
    if r.name in RESERVED_RUNG_NAMES:
        raise ConfigError(f"{at}name: rung name {r.name!r} is reserved (it would overwrite a layout file; "
                          f"reserved: {', '.join(sorted(RESERVED_RUNG_NAMES))})")
    c = CODECS.get(r.codec)
    if c is None:
        raise ConfigError(f"{at}codec: {r.codec!r} is not one of {', '.join(CODECS)}")
    if c.lossless and r.bitrate is not None:
        raise ConfigError(f"{at}bitrate: {r.codec} is lossless and has no bit rate; leave bitrate out, got {r.bitrate}")
    lo, hi = c.bitrates or (1, None)
    if not c.lossless and (r.bitrate is None or r.bitrate < lo or (hi is not None and r.bitrate > hi)):
        what = f"expected an integer {f'{lo}..{hi}' if hi is not None else f'>= {lo}'} (bits/s for {r.codec})"
        got = f"{what}, got {r.bitrate}" if r.bitrate is not None else f"missing; {what}"
        raise ConfigError(f"{at}bitrate: {got}")
    if r.sample_rate != sample_rate:
        raise ConfigError(f"{at}sample_rate: expected {sample_rate} (the ladder's rate: a master is resampled once), "
                          f"got {r.sample_rate}")


def _validate_origin(o: OriginConfig) -> None:
    if o.signing_key and len(o.signing_key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"[origin] signing_key (or TONEARM_SIGNING_KEY): use at least {MIN_SECRET_LENGTH} characters, got "
            f"{len(o.signing_key)}; e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if o.catalog == "key" and len(o.catalog_key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"[origin] catalog_key: catalog = 'key' needs a key of at least {MIN_SECRET_LENGTH} characters, got "
            f"{len(o.catalog_key)}; e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    for name in ("cors_origins", "api_cors_origins"):
        for value in getattr(o, name):
            if value != "*" and not (value.startswith(("http://", "https://")) and value.count("/") == 2):
                raise ConfigError(f"[origin] {name}: {_quote(value)} is not \"*\" or an origin like "
                                  "\"https://player.example\"")
