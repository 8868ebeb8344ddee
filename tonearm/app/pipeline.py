"""The whole pipeline, assembled in one readable function.

    master file -> ingest header checks -> one ffmpeg run: transcode's ladder + ingest's measurements
                (tonearm.app.shared_pass) -> packager.package -> manifests.write_manifests -> storage.publish

Each stage is a package of its own and speaks only the plain types in
``tonearm.core.model``.  The catalog lease makes the job idempotent: the same bytes
ingested twice, or at once from two processes, become one asset and are
encoded once; a crashed job's lease expires and the next run starts over from
a fresh staging directory (nothing was visible, so nothing is half-published).
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ingest import Rejected, content_id, inspect
from ingest.names import printable
from manifests import average_bandwidth, normalisation, peak_bandwidth, write_manifests
from packager import package
from tonearm.app.shared_pass import SharedPass, validate_and_encode
from tonearm.core.backends import open_storage
from tonearm.core.catalog import Catalog, Claim, LeaseKeeper, LeaseLost, default_owner, owner_alive
from tonearm.core.catalog_errors import CatalogError, filesystem_of
from tonearm.core.catalog_open import open_catalog
from tonearm.core.config import PROTECTION_SCHEMES, Config, ConfigError
from tonearm.core.errors import TonearmError
from tonearm.core.ffmpeg import locate, progress_to
from tonearm.core.keys import open_keystore
from tonearm.core.model import AssetState, JobError, MasterInfo
from tonearm.core.storage import DESCRIPTOR, Storage, write_json_atomic
from transcode import encode_ladder

log = logging.getLogger("tonearm.app.pipeline")


class Outcome(str, enum.Enum):
    PUBLISHED = "published"  # this run published it
    ALREADY_PUBLISHED = "already_published"  # same bytes were published before: no work done
    QUARANTINED = "quarantined"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class JobResult:
    source: str
    outcome: Outcome
    asset_id: str | None = None
    error: JobError | None = None
    info: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.PUBLISHED, Outcome.ALREADY_PUBLISHED)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "outcome": self.outcome.value,
            "asset_id": self.asset_id,
            "error": dataclasses.asdict(self.error) if self.error else None,
            "info": self.info,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Context:
    """What a job needs, built once per process."""

    cfg: Config
    storage: Storage
    catalog: Catalog
    # a job's observer (tonearm.app.tasks): stage names (validating, transcoding, packaging, publishing) and
    # progress per rendition (0..1); the batch leaves them unset
    on_stage: Callable[[str], None] | None = None
    on_progress: Callable[[dict[str, float]], None] | None = None

    def stage(self, name: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name)

    @classmethod
    def from_config(cls, cfg: Config) -> "Context":
        storage = open_storage(cfg)
        return cls(cfg=cfg, storage=storage, catalog=open_catalog(cfg))  # type: ignore[arg-type]


def process(ctx: Context, path: Path, *, wait_busy: float = 3600.0, protection: str | None = None,
            encoders: int = 1) -> JobResult:
    """Ingest one master and publish it, or quarantine it with a reason.

    ``protection`` overrides ``[protection] scheme`` for this master ("none", "cbcs", "cenc", "aes-128").

    The master is copied into storage as it is hashed (one read of one open file), and every later
    stage reads only that copy: what is published is always the audio of the bytes that were hashed.
    ``encoders`` > 1 splits the ladder across that many ffmpeg runs (a master with cores to spare).
    """

    if protection is not None and protection not in PROTECTION_SCHEMES:
        raise ConfigError(f"protection {protection!r}: use one of {', '.join(PROTECTION_SCHEMES)}")
    t0 = time.monotonic()
    source = printable(path)
    sink, received = ctx.storage.receive_master()
    try:
        try:
            with sink:
                asset_id = content_id(path, max_bytes=ctx.cfg.ingest.max_bytes, copy_to=sink)
        except Rejected as rej:
            return _quarantine(ctx, source, None, None, rej.error, t0)
        except OSError as exc:  # writing our copy failed: the input is fine, our disk is not
            return _failed(ctx, source, None, _disk_error(exc, received), t0)
        owner, lease_s = default_owner(), ctx.cfg.ingest.lease_s
        claim = ctx.catalog.claim(asset_id, printable(path.name), owner=owner, lease_s=lease_s)
        deadline = time.monotonic() + wait_busy
        while claim is Claim.BUSY and time.monotonic() < deadline:
            time.sleep(0.5)  # another worker is on the same bytes: wait for its result
            claim = ctx.catalog.claim(asset_id, printable(path.name), owner=owner, lease_s=lease_s)
        if claim is not Claim.CLAIMED:
            return _existing(ctx, source, asset_id, t0)
        with LeaseKeeper(ctx.catalog, asset_id, owner=owner, lease_s=lease_s) as lease:
            return _claimed(ctx, path, source, received, asset_id, lease, t0, protection, encoders)
    finally:
        received.unlink(missing_ok=True)


def reject_unread(ctx: Context, path: Path, error: JobError) -> JobResult:
    """Record a rejection made before the file was read (``ingest.discover``): the reason, no bytes."""
    return _quarantine(ctx, printable(path), None, None, error, time.monotonic())


def _claimed(ctx: Context, path: Path, source: str, received: Path, asset_id: str, lease: LeaseKeeper,
             t0: float, protection: str | None = None, encoders: int = 1) -> JobResult:
    """Validate our copy, keep it, build and publish the asset, all under a live lease."""
    try:
        ffmpeg = locate(ctx.cfg.ffmpeg.path)
        try:  # one decode validates, measures and encodes (tonearm.app.shared_pass)
            ctx.stage("validating")
            shared = validate_and_encode(ctx.cfg, ctx.storage, received, asset_id=asset_id,
                                         source_name=printable(path.name), owner=lease.owner, ffmpeg=ffmpeg,
                                         encoders=encoders, on_encode=lambda i: _encoding(ctx, i))
        except Rejected as rej:
            return _quarantine(ctx, source, received, asset_id, rej.error, t0)
        with shared:
            info = shared.info
            stored = ctx.storage.keep_master(received, asset_id, _suffix(path))
            ctx.catalog.set_state(asset_id, AssetState.VALIDATED, info=master_json(info))
            descriptor = _build(ctx, stored, info, ffmpeg, lease.owner, lease.check,
                                scheme=protection or ctx.cfg.protection.scheme, shared=shared)
        ctx.catalog.set_state(asset_id, AssetState.PUBLISHED, info=descriptor)
        return JobResult(source=source, outcome=Outcome.PUBLISHED, asset_id=asset_id, info=descriptor,
                         seconds=time.monotonic() - t0)
    except LeaseLost as exc:  # another worker owns the asset now: leave its state alone
        err = JobError(code=exc.code, message=str(exc))
        return JobResult(source=source, outcome=Outcome.FAILED, asset_id=asset_id, error=err,
                         seconds=time.monotonic() - t0)
    except CatalogError:
        raise  # the catalog itself is unusable (unreadable, disk full): the CLI prints its one line
    except TonearmError as exc:  # every stage's own failure (ffmpeg, packager, manifests), with its stable code
        err = JobError(code=exc.code, message=str(exc), details=exc.details)
    except OSError as exc:
        err = _disk_error(exc, None)
    except Exception as exc:  # a job failure must be recorded, never lost in a traceback
        log.exception("job failed for %s", source)
        err = JobError(code="internal_error", message=f"{type(exc).__name__}: {exc}")
    return _failed(ctx, source, asset_id, err, t0)


def _suffix(path: Path) -> str:
    """The input's extension for the stored copy, if it is a plain one (the name is not trusted)."""
    suffix = path.suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"


def _disk_error(exc: OSError, where: Path | None) -> JobError:
    """An OSError of our own storage as a job error that says what to do."""
    name = printable(exc.filename or where or "the data directory")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where_fs = filesystem_of(exc.filename or where or ".")
        return JobError(code="disk_full", message=f"no space left writing {name}: free space on {where_fs} and "
                        "ingest again", details={"errno": exc.errno})
    return JobError(code="storage_error", message=f"cannot write {name}: {exc.strerror or exc}",
                    details={"errno": exc.errno})


def _build(ctx: Context, master: Path, info: MasterInfo, ffmpeg: Any, owner: str, check: Callable[[], None],
           *, replace: bool = False, scheme: str = "none", shared: SharedPass | None = None) -> dict[str, Any]:
    """Encode (unless ``shared`` did), package and write manifests in staging, then publish in one step
    (if ``check`` passes: the lease still holds); ``replace``: over the published version (repackage),
    the catalog row untouched.

    A protected asset's content key is made (or, on a retried job or a repackage, reused) in the key
    store before packaging; only its scheme and key id reach the descriptor.
    """

    cfg = ctx.cfg
    if not replace and ctx.storage.is_published(info.asset_id):  # a run crashed before the catalog update
        return ctx.storage.read_descriptor(info.asset_id) or {}
    if shared is not None and shared.staging is not None and shared.encoded is not None:
        staging, encoded = shared.staging, shared.encoded
    else:
        if not replace:
            ctx.storage.clean_stale_staging(info.asset_id, owner_alive)
        staging, encoded = ctx.storage.new_staging(info.asset_id, owner), None
    try:
        if not replace:
            ctx.catalog.set_state(info.asset_id, AssetState.TRANSCODING)
        if encoded is None:
            with progress_to(_encoding(ctx, info)):
                encoded = encode_ladder(master, info, cfg.ladder, staging / ".encode", ffmpeg=ffmpeg,
                                        timeout=cfg.ffmpeg.timeout)
        ctx.stage("packaging")
        if not replace:
            ctx.catalog.set_state(info.asset_id, AssetState.PACKAGING)
        key = None
        if scheme != "none":
            key = open_keystore(cfg.data_dir, cfg.protection.master_key_file).key_for(info.asset_id, scheme)
        layouts = {layout: package(encoded, cfg.ladder, staging, layout=layout, loudness=info.loudness, key=key)
                   for layout in cfg.ladder.layouts}
        manifest_uris = write_manifests(staging, layouts, info, loudness_target=cfg.ladder.loudness_target)
        shutil.rmtree(staging / ".encode", ignore_errors=True)
        record = master_json(info)
        norm = normalisation(info.loudness, cfg.ladder.loudness_target)  # the figures the manifests carry
        descriptor = {
            **record,
            "loudness": {**record["loudness"], "target_lufs": norm.target_lufs, "gain_db": norm.gain_db},
            "manifests": manifest_uris,
            "renditions": [_rendition_json(p) for p in next(iter(layouts.values()))],
            "published_at": time.time(),
        }
        if key is not None:  # public facts only: the key stays in the key store
            descriptor["protection"] = {"scheme": key.scheme, "kid": key.kid_hex}
        write_json_atomic(staging / DESCRIPTOR, descriptor)
        ctx.stage("publishing")
        check()
        (ctx.storage.replace if replace else ctx.storage.publish)(info.asset_id, staging)
        return descriptor
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def repackage(ctx: Context, asset_id: str) -> JobResult:
    """Rebuild a published asset from its kept master (``masters/``) with the current ladder and swap the
    new version in at once (``Storage.replace``): players on the old version are served it until then."""
    t0 = time.monotonic()
    masters = sorted(ctx.storage.root.joinpath("masters", asset_id[:2]).glob(f"{asset_id}.*"))
    if not ctx.storage.is_published(asset_id) or not masters:
        code = "not_published" if masters else "master_missing"
        err = JobError(code=code, message=f"asset {asset_id} cannot be repackaged ({code.replace('_', ' ')})")
        return JobResult(source=asset_id, outcome=Outcome.FAILED, asset_id=asset_id, error=err,
                         seconds=time.monotonic() - t0)
    ffmpeg = locate(ctx.cfg.ffmpeg.path)
    try:
        info = inspect(masters[0], asset_id=asset_id, source_name=(ctx.storage.read_descriptor(asset_id) or {}).get(
            "source_name", masters[0].name), ffmpeg=ffmpeg, timeout=ctx.cfg.ffmpeg.timeout, limits=ctx.cfg.ingest)
        previous = (ctx.storage.read_descriptor(asset_id) or {}).get("protection") or {}
        descriptor = _build(ctx, masters[0], info, ffmpeg, default_owner(), lambda: None,
                            replace=True, scheme=previous.get("scheme", "none"))  # the same scheme and key
    except (Rejected, TonearmError) as exc:
        err = exc.error if isinstance(exc, Rejected) else JobError(code=exc.code, message=str(exc))
        return JobResult(source=asset_id, outcome=Outcome.FAILED, asset_id=asset_id, error=err,
                         seconds=time.monotonic() - t0)
    ctx.catalog.set_state(asset_id, AssetState.PUBLISHED, info=descriptor)
    return JobResult(source=asset_id, outcome=Outcome.PUBLISHED, asset_id=asset_id, info=descriptor,
                     seconds=time.monotonic() - t0)


def _encoding(ctx: Context, info: MasterInfo) -> Callable[[float], None] | None:
    """The encoders start (in the shared pass or on their own): the job is transcoding, and ffmpeg's
    ``-progress`` seconds become a fraction per rendition."""
    ctx.stage("transcoding")
    if ctx.on_progress is None:
        return None
    names, total = [r.name for r in ctx.cfg.ladder.all_rungs], max(info.duration_s, 1e-3)
    return lambda s: ctx.on_progress({n: min(1.0, max(0.0, s / total)) for n in names})  # type: ignore[misc]


def _rendition_json(p: Any) -> dict[str, Any]:
    return {
        "name": p.rung.name,
        "codec": p.rung.codec,
        "codecs": p.codecs,
        "nominal_bitrate": p.rung.bitrate,
        "bandwidth": peak_bandwidth(p),  # HLS BANDWIDTH (the RFC 8216 peak); the same bytes in every layout
        "average_bandwidth": average_bandwidth(p),  # HLS AVERAGE-BANDWIDTH
        "sample_rate": p.sample_rate,
        "channels": p.channels,
        "segments": len(p.segments),
    }


def master_json(info: MasterInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


def _quarantine(ctx: Context, source: str, master: Path | None, asset_id: str | None, error: JobError,
                t0: float) -> JobResult:
    """Keep the rejected bytes (our hashed copy, when there is one) and the reason; record the state."""
    reason = {"source": source, "source_name": source.rsplit("/", 1)[-1], **dataclasses.asdict(error),
              "at": time.time()}
    key = asset_id or error.details.get("quarantine_id") or "unidentified"
    folder = ctx.storage.quarantine(master, key, reason)
    if asset_id:
        ctx.catalog.set_state(asset_id, AssetState.QUARANTINED, error=dataclasses.asdict(error))
    log.info("quarantined %s: %s (%s) -> %s", source, error.code, error.message, folder)
    return JobResult(source=source, outcome=Outcome.QUARANTINED, asset_id=asset_id, error=error,
                     seconds=time.monotonic() - t0)


def _failed(ctx: Context, source: str, asset_id: str | None, err: JobError, t0: float) -> JobResult:
    if asset_id:
        ctx.catalog.set_state(asset_id, AssetState.FAILED, error=dataclasses.asdict(err))
    log.warning("failed %s: %s (%s)", source, err.code, err.message)
    return JobResult(source=source, outcome=Outcome.FAILED, asset_id=asset_id, error=err,
                     seconds=time.monotonic() - t0)


def _existing(ctx: Context, source: str, asset_id: str, t0: float) -> JobResult:
    rec = ctx.catalog.get(asset_id)
    elapsed = time.monotonic() - t0
    if rec is not None and rec.state is AssetState.QUARANTINED:
        err = JobError(**rec.error) if rec.error else JobError(code="quarantined", message="quarantined earlier")
        return JobResult(source=source, outcome=Outcome.QUARANTINED, asset_id=asset_id, error=err, seconds=elapsed)
    if rec is not None and rec.state is AssetState.PUBLISHED:
        return JobResult(source=source, outcome=Outcome.ALREADY_PUBLISHED, asset_id=asset_id, info=rec.info,
                         seconds=elapsed)
    err = JobError(code="busy", message="another worker is still processing these bytes")
    return JobResult(source=source, outcome=Outcome.FAILED, asset_id=asset_id, error=err, seconds=elapsed)

