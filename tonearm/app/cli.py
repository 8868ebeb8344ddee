"""The ``tonearm`` command: doctor, ingest, serve, sign, demo, assets, catalog rebuild, protection cpix.

Errors a person can fix are printed as one line without a traceback; exit
codes: 0 all good, 1 some inputs were rejected or failed, 2 usage or
configuration error, an unreadable catalog or a full disk.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ingest.discover import discover
from tonearm.app import jobs_cli, watch, webhooks
from tonearm.app.api import commands as api_commands
from tonearm.app.batch import default_jobs, process_many
from tonearm.app.pipeline import Context, reject_unread
from tonearm.core.backends import open_storage
from tonearm.core.catalog_errors import CatalogError, filesystem_of
from tonearm.core.catalog_open import open_catalog
from tonearm.core.catalog_rebuild import rebuild
from tonearm.core.codecs import needed_encoders
from tonearm.core.config import PROTECTION_SCHEMES, Config, ConfigError, load
from tonearm.core.ffmpeg import FfmpegError, locate


def _config(args: argparse.Namespace, **overrides: dict) -> Config:
    flags: dict[str, dict] = {"storage": {"root": getattr(args, "data", None)}}
    for section, values in overrides.items():
        flags.setdefault(section, {}).update(values)
    return load(args.config, overrides=flags)


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = _config(args)
    try:
        info = locate(cfg.ffmpeg.path)
    except FfmpegError as exc:
        print(f"ffmpeg: NOT FOUND - {exc}")
        return 1
    print(f"ffmpeg: {info.path} ({info.source})")
    print(f"version: {info.version}")
    for enc in needed_encoders():
        print(f"encoder {enc}: {'yes' if enc in info.encoders else 'MISSING'}")
    try:
        import av

        print(f"prober: PyAV {av.__version__}")
    except ImportError:
        print("prober: ffmpeg (PyAV not installed)")
    print(f"data dir: {cfg.data_dir.absolute()}")
    print(f"storage: {cfg.storage.backend}")
    print(f"ladder: {', '.join(r.name for r in cfg.ladder.all_rungs)}; segments {cfg.ladder.segment_duration} s")
    missing = info.missing_encoders
    if missing:
        print(f"missing encoders: {', '.join(missing)} (the ladder needs them)")
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = _config(args, **({"protection": {"scheme": args.protection}} if args.protection else {}))
    ctx = Context.from_config(cfg)
    items = discover([Path(p) for p in args.paths])
    if cfg.catalog.is_postgres:  # a shared catalog: enqueue for the workers (rejections still recorded here)
        return jobs_cli.ingest_queued(cfg, args, [i.path for i in items if i.error is None],
                                      [reject_unread(ctx, i.path, i.error) for i in items if i.error])
    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    progress = None
    if not args.json and sys.stderr.isatty() and len(items) > 1:
        progress = tqdm(total=len(items), unit="file", file=sys.stderr)
    failures = 0
    rejected = (reject_unread(ctx, item.path, item.error) for item in items if item.error is not None)
    accepted = process_many(cfg, [item.path for item in items if item.error is None], jobs=jobs)
    for result in itertools.chain(rejected, accepted):
        if progress:
            progress.update(1)
        if not result.ok:
            failures += 1
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
        elif result.ok:
            print(f"{result.outcome.value}: {result.source} -> {result.asset_id}", flush=True)
        else:
            err = result.error
            print(f"{result.outcome.value}: {result.source}: {err.code}: {err.message}", file=sys.stderr, flush=True)
    if progress:
        progress.close()
    return 1 if failures else 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config(args, origin={"host": args.host, "port": args.port, "workers": args.workers})
    from origin.server import serve  # lazy: aiohttp and the origin are not needed to ingest (start-up cost)

    return serve(cfg)


def cmd_sign(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.origin.signing_key:
        raise ConfigError("signing needs a key: set [origin] signing_key or TONEARM_SIGNING_KEY")
    from origin.signing import parse_ttl, playback_urls

    for url in playback_urls(cfg, args.asset, parse_ttl(args.ttl), base=args.base):
        print(url)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from tonearm.app.demo import write_demo_master  # lazy: numpy is only for the demo

    path = write_demo_master(Path(args.out) if args.out else cfg.data_dir / "demo", cfg)
    print(path)
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    cfg = _config(args)
    for rec in open_catalog(cfg).list(limit=args.limit, offset=args.offset):
        title = (rec.info.get("tags") or {}).get("title") or rec.source_name
        print(f"{rec.id}  {rec.state.value:<12} {title}")
    return 0


def cmd_catalog_rebuild(args: argparse.Namespace) -> int:
    cfg = _config(args)
    report = rebuild(cfg.catalog_path, open_storage(cfg))
    if report.moved_aside is not None:
        print(f"moved the unreadable catalog {report.path} aside to {report.moved_aside} ({report.moved_reason})",
              flush=True)
    for where, why in report.skipped:
        print(f"tonearm: skipped {where}: {why}", file=sys.stderr, flush=True)
    n = len(report.restored)
    print(f"restored {n} published asset{'' if n == 1 else 's'} into {report.path}")
    return 1 if report.skipped else 0


def cmd_protection_cpix(args: argparse.Namespace) -> int:
    """The asset's key as a DASH-IF CPIX document (for a DRM provider), on stdout or in a 0600 file."""
    from tonearm.app.cpix import cpix_document
    from tonearm.core.keys import KeyStoreError, open_keystore
    from tonearm.core.storage import is_asset_id

    cfg = _config(args)
    if not is_asset_id(args.asset):
        raise ConfigError(f"{args.asset!r} is not an asset id (64 lowercase hex characters)")
    try:
        key = open_keystore(cfg.data_dir, cfg.protection.master_key_file, create=False).get(args.asset)
    except KeyStoreError as exc:
        print(f"tonearm: {exc}", file=sys.stderr)
        return 2
    if key is None:
        print(f"tonearm: asset {args.asset} has no content key (published clear, or unknown)", file=sys.stderr)
        return 1
    doc = cpix_document(key)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(doc)
    else:
        sys.stdout.write(doc)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tonearm", description="Adaptive-bitrate audio pipeline and origin.")
    p.add_argument("--config", help="TOML config file (default: $TONEARM_CONFIG)")
    p.add_argument("--data", help="data directory (default: ./data or $TONEARM_DATA)")
    p.add_argument("-v", "--verbose", action="store_true", help="log ffmpeg command lines and more")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="show which ffmpeg is used and whether the ladder's encoders exist").set_defaults(
        func=cmd_doctor
    )

    s = sub.add_parser("ingest", help="validate, transcode, package and publish masters (files or folders)")
    s.add_argument("paths", nargs="+", help="files or folders")
    s.add_argument("--json", action="store_true", help="one JSON record per input on stdout")
    jobs_cli.add_ingest_flags(s)  # --wait --timeout --priority --force (a PostgreSQL catalog: queued jobs)
    s.add_argument("--jobs", "-j", type=int, default=None,
                   help="masters processed at once, one worker process each (default: number of cores)")
    s.add_argument("--protection", choices=PROTECTION_SCHEMES, default=None,
                   help="encrypt these masters' assets (default: [protection] scheme); cbcs plays in HLS and DASH")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("serve", help="run the HLS/DASH origin")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("sign", help="print signed playback URLs for an asset")
    s.add_argument("asset")
    s.add_argument("--ttl", default="1h", help="lifetime, e.g. 90s, 15m, 1h, 2d")
    s.add_argument("--base", default=None, help="origin base URL (default: from [origin] host/port)")
    s.set_defaults(func=cmd_sign)

    s = sub.add_parser("demo", help="generate the embedded demo master (music-like, tagged, with artwork)")
    s.add_argument("--out", help="output folder")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("assets", help="list the catalog")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--offset", type=int, default=0)
    s.set_defaults(func=cmd_assets)

    s = sub.add_parser("catalog", help="maintain the catalog")
    catalog = s.add_subparsers(dest="catalog_command", required=True)
    catalog.add_parser("rebuild", help="recreate the catalog from the published descriptors "
                       "(an unreadable one is moved aside)").set_defaults(func=cmd_catalog_rebuild)

    s = sub.add_parser("protection", help="content protection: export an asset's key")
    prot = s.add_subparsers(dest="protection_command", required=True)
    c = prot.add_parser("cpix", help="print a protected asset's DASH-IF CPIX document (holds the key: keep it safe)")
    c.add_argument("asset")
    c.add_argument("--out", help="write it to this file (mode 0600) instead of stdout")
    c.set_defaults(func=cmd_protection_cpix)
    watch.add_command(sub, _config)  # tonearm watch PATH|s3://... [--once]
    webhooks.add_command(sub, _config)  # tonearm webhooks run|status
    api_commands.add_command(sub, _config)  # tonearm api [--host --port]; tonearm keys create|list|revoke
    jobs_cli.add_command(sub, _config)  # tonearm worker; tonearm jobs [cancel ID | watch]
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"tonearm: configuration error: {exc}", file=sys.stderr)
        return 2
    except CatalogError as exc:  # unreadable or on a full disk: the message names the file and what to do
        print(f"tonearm: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or exc.filename2
        fs = filesystem_of(where) if where else "the disk holding the data folder"
        print(f"tonearm: no space left on device{f' writing {where}' if where else ''}: free space on {fs} "
              "and run again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tonearm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
