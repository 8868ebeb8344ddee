"""``tonearm watch PATH... [--once]``: drop folders and buckets turned into jobs.

One loop serves every watched source.  A listing (a folder walk, or a bucket listing from its
persisted cursor) feeds :class:`~tonearm.app.watch_folder.Settler`; what has been stable for
``[watch] settle_s`` and was not taken before (:class:`~tonearm.app.watch_ledger.Ledger`) goes to
``JobQueue.submit`` (``origin="watch"`` for folders, ``"bucket"`` for buckets).  Listings run at
start (so files dropped while the watcher was down are found), every ``[watch] rescan_s``, faster
while something is settling or a job is open, and at once when inotify reports a change.

inotify comes from ``watchfiles`` (Rust ``notify``, maintained, wheels for Linux/macOS/Windows, a
``stop_event`` for clean shutdown, and it copes with folders created later): it only *wakes* the loop
early, the listing decides, so a lost or coalesced event (inotify queues overflow, network file
systems send none) costs at most one rescan interval, never a file.

After-take policy (``[watch] after``), applied once the job ended, since the worker reads the
file after ``submit`` returned: ``leave``; ``move`` (published -> ``done/`` beside the file,
quarantined -> ``rejected/``); ``delete`` (only a published file; a quarantined one is left).  A
rejected file is never deleted.  Failed or cancelled jobs leave their file where it is.

With SQLite the queue runs the jobs in this process's own pool (``queue_local``); with PostgreSQL it
only enqueues and ``tonearm worker`` processes run them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

from ingest.names import printable
from tonearm.app.jobs import JobQueue, JobState, Tombstoned, open_queue
from tonearm.app.watch_folder import DONE_DIR, REJECTED_DIR, Seen, Settler, scan_folder
from tonearm.app.watch_ledger import Ledger, Taken
from tonearm.core.config import Config, ConfigError
from tonearm.core.errors import TonearmError

log = logging.getLogger("tonearm.watch")

__all__ = ("Watcher", "FolderSource", "run_watch", "state_path")

MAX_CHECKS = 500  # open jobs looked up per source and pass (the oldest first): a pass stays short
TOO_LARGE = "too_large"  # ingest.errors.TOO_LARGE: decided here, before any byte is read


class Source(Protocol):
    name: str  # the ledger's name for it (absolute folder path, or s3://bucket/prefix)
    origin: str

    def listing(self, full: bool) -> list[Seen]: ...
    def ref(self, seen: Seen | Taken) -> str: ...  # what JobQueue.submit is given
    def still(self, seen: Seen | Taken) -> bool: ...  # the same bytes are still there (size and tag)
    def move(self, seen: Seen | Taken, folder: str) -> None: ...
    def delete(self, seen: Seen | Taken) -> None: ...
    def advance(self, ledger: Ledger, listing: list[Seen]) -> None: ...


def state_path(cfg: Config) -> Path:
    return Path(cfg.watch.state_file) if cfg.watch.state_file else cfg.data_dir / "watch.sqlite3"


class FolderSource:
    """A local folder: walked with :func:`scan_folder`; ``done/`` and ``rejected/`` beside each file."""

    origin = "watch"

    def __init__(self, root: Path, cfg: Config) -> None:
        if not root.is_dir():
            raise ConfigError(f"watch: {printable(root)} is not a folder")
        self.root = root.absolute()
        self.name = str(self.root)
        self.cfg = cfg

    def listing(self, full: bool) -> list[Seen]:
        return scan_folder(self.root, patterns=self.cfg.watch.ignore, max_depth=self.cfg.watch.max_depth)

    def ref(self, seen: Seen | Taken) -> str:
        return str(self.root / seen.key)

    def still(self, seen: Seen | Taken) -> bool:
        try:
            st = os.stat(self.root / seen.key)
        except OSError:
            return False
        return st.st_size == seen.size and f"{st.st_mtime_ns}:{st.st_ino}" == seen.tag

    def move(self, seen: Seen | Taken, folder: str) -> None:
        src = self.root / seen.key
        dest_dir = src.parent / folder
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / src.name
        n = 1
        while dest.exists():  # never overwrite an earlier delivery of the same name
            dest = dest_dir / f"{src.stem}.{n}{src.suffix}"
            n += 1
        os.rename(src, dest)

    def delete(self, seen: Seen | Taken) -> None:
        (self.root / seen.key).unlink()

    def advance(self, ledger: Ledger, listing: list[Seen]) -> None:
        """Folders have no cursor: every listing is complete."""


class Watcher:
    """The loop over one or more sources, one queue and one ledger (use from one thread)."""

    def __init__(self, cfg: Config, sources: Sequence[Source], queue: JobQueue, ledger: Ledger, *,
                 report: Callable[[str], None] = lambda line: None) -> None:
        self.cfg, self.sources, self.queue, self.ledger, self.report = cfg, list(sources), queue, ledger, report
        self.settlers = {s.name: Settler(cfg.watch.settle_s) for s in self.sources}
        self.unsettled = 0  # candidates seen in the last pass but not taken yet
        self.passes = 0
        for src in self.sources:
            src.advance(ledger, [])  # a bucket loads its persisted cursor: the first listing resumes there

    def step(self) -> None:
        """One pass: list every source, take what settled, apply the policy to jobs that ended."""
        self.passes += 1
        self.unsettled = 0
        for src in self.sources:
            for part in (self._list_and_take, self._finish):
                try:
                    part(src)
                except Exception as exc:  # the disk, the bucket or the catalog is down (OSError, botocore,
                    log.warning("watch: %s: %s: %s", printable(src.name), type(exc).__name__, exc)  # psycopg)
                    self.unsettled += 1  # so --once does not end on an error: the next pass tries again

    def open_jobs(self) -> int:
        return sum(len(self.ledger.open_jobs(s.name)) for s in self.sources)

    def _list_and_take(self, src: Source) -> None:
        full = self.passes % 10 == 0  # buckets: a full listing now and then finds keys sorting before the cursor
        listing = src.listing(full)
        fresh = [s for s in listing if not self.ledger.seen(src.name, s.key, s.size, s.tag)]
        ready = self.settlers[src.name].observe(fresh)
        for seen in ready:
            self._take(src, seen)
        self.unsettled += len(fresh) - len(ready)
        src.advance(self.ledger, listing)

    def _take(self, src: Source, seen: Seen) -> None:
        if not src.still(seen):
            return  # changed or gone since the listing: the next pass sees it again
        name = seen.key.rsplit("/", 1)[-1]  # as it is: the queue escapes it (ingest.names.printable), once
        if seen.size > self.cfg.ingest.max_bytes:
            self.ledger.record(src.name, seen.key, seen.size, seen.tag, job_id=None, asset_id=None, status="finished",
                               outcome=TOO_LARGE)
            self.report(f"rejected: {printable(src.ref(seen))}: {TOO_LARGE}: {seen.size} bytes, more than "
                        f"[ingest] max_bytes = {self.cfg.ingest.max_bytes}")
            self._apply(src, Taken(seen.key, seen.size, seen.tag, None, None, "finished", TOO_LARGE), TOO_LARGE)
            return
        try:
            job = self.queue.submit(src.ref(seen), filename=name, priority=self.cfg.watch.priority, origin=src.origin)
        except Tombstoned as exc:
            self.ledger.record(src.name, seen.key, seen.size, seen.tag, job_id=None, asset_id=None, status="finished",
                               outcome=exc.code)
            self.report(f"refused: {printable(src.ref(seen))}: {exc.code}: {exc}")
            return
        except FileNotFoundError:
            return  # removed between the check and the hash
        except TonearmError as exc:  # refused before a job exists (unreadable, ...): recorded, not retried
            self.ledger.record(src.name, seen.key, seen.size, seen.tag, job_id=None, asset_id=None, status="finished",
                               outcome=exc.code)
            self.report(f"rejected: {printable(src.ref(seen))}: {exc.code}: {exc}")
            return
        self.ledger.record(src.name, seen.key, seen.size, seen.tag, job_id=job.id, asset_id=job.asset_id)
        self.settlers[src.name].forget(seen.key)
        self.report(f"taken: {printable(src.ref(seen))} -> job {job.id}")

    def _finish(self, src: Source) -> None:
        for t in self.ledger.open_jobs(src.name)[:MAX_CHECKS]:
            job = self.queue.get(t.job_id) if t.job_id else None
            if job is None or job.done:
                outcome = job.state.value if job else "lost"
                self._apply(src, t, outcome)
                self.ledger.finish(src.name, t, outcome)
                self.report(f"{outcome}: {printable(src.ref(t))}" + (f" -> {job.asset_id}" if job and job.asset_id
                                                                        else ""))

    def _apply(self, src: Source, t: Taken, outcome: str) -> None:
        """The after-take policy; a file that changed since it was taken is left alone."""
        policy = self.cfg.watch.after
        if policy == "leave" or not src.still(t):
            return
        published = outcome == JobState.PUBLISHED.value
        rejected = outcome in (JobState.QUARANTINED.value, TOO_LARGE)
        try:
            if policy == "move" and (published or rejected):
                src.move(t, DONE_DIR if published else REJECTED_DIR)
            elif policy == "delete" and published:
                src.delete(t)
        except Exception as exc:  # OSError, or botocore's errors for a bucket: logged, the file stays
            log.warning("watch: after-take %s of %s failed: %s", policy, printable(src.ref(t)), exc)


def _sources(cfg: Config, targets: Sequence[str]) -> list[Source]:
    out: list[Source] = []
    for t in targets:
        if t.startswith("s3://"):
            from tonearm.app.watch_bucket import BucketSource

            out.append(BucketSource.from_url(t, cfg))
        else:
            out.append(FolderSource(Path(t), cfg))
    return out


def _inotify(folders: list[Path], wake: threading.Event, stop: threading.Event) -> None:
    import watchfiles

    try:
        for _ in watchfiles.watch(*folders, stop_event=stop, debounce=200, step=50, rust_timeout=1000,
                                  yield_on_timeout=False, raise_interrupt=False):
            wake.set()
    except Exception as exc:  # inotify limits reached, a folder removed: the periodic rescan still runs
        log.warning("watch: inotify stopped (%s); relying on the rescan every [watch] rescan_s", exc)


def run_watch(cfg: Config, targets: Sequence[str], *, once: bool = False, stop: threading.Event | None = None,
              report: Callable[[str], None] = print, queue: JobQueue | None = None) -> int:
    """Watch until ``stop`` is set (or, with ``once``, until what is there now was taken and, where the
    policy or the local pool needs it, finished).  Returns 0."""
    stop = stop or threading.Event()
    sources = _sources(cfg, targets)
    own_queue = queue is None
    queue = queue or open_queue(cfg)
    ledger = Ledger(state_path(cfg))
    wake = threading.Event()
    folders = [s.root for s in sources if isinstance(s, FolderSource)]
    notifier = threading.Thread(target=_inotify, args=(folders, wake, stop), daemon=True) if folders else None
    if notifier:
        notifier.start()
    wait_jobs = cfg.watch.after != "leave" or not cfg.catalog.is_postgres
    fast = min(cfg.watch.settle_s / 4, 1.0)
    try:
        watcher = Watcher(cfg, sources, queue, ledger, report=report)
        while not stop.is_set():
            wake.clear()
            watcher.step()
            busy = watcher.unsettled or (wait_jobs and watcher.open_jobs())
            if once and not busy:
                break
            deadline = time.monotonic() + (fast if busy else cfg.watch.rescan_s)
            while not stop.is_set() and not wake.is_set() and (left := deadline - time.monotonic()) > 0:
                wake.wait(min(left, 0.5))  # in slices, so a stop from another thread is seen at once
        return 0
    finally:
        stop.set()
        if notifier:
            notifier.join(timeout=5)
        ledger.close()
        if own_queue:
            queue.close()


def add_command(sub: "argparse._SubParsersAction", config: Callable[..., Config]) -> None:
    """``tonearm watch``, registered by the CLI (one line there)."""
    s = sub.add_parser("watch", help="take masters from drop folders and buckets as they arrive (settled, once)")
    s.add_argument("targets", nargs="+", metavar="PATH", help="folders, or s3://bucket/prefix")
    s.add_argument("--once", action="store_true", help="take what is there now, wait for its jobs, then exit")
    s.add_argument("--settle", type=float, default=None, help="seconds a file must hold still ([watch] settle_s)")
    s.add_argument("--after", choices=("leave", "move", "delete"), default=None, help="[watch] after")
    s.set_defaults(func=lambda args: run_watch(config(args, watch={"settle_s": args.settle, "after": args.after}),
                                               args.targets, once=args.once, report=_line, stop=_stop_on_sigterm()))


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM ends the loop after the current pass (the ledger and the queue are closed properly)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _line(text: str) -> None:
    print(text, flush=True)
