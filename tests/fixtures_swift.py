"""A real OpenStack Swift with its S3 API (``s3api``) on loopback, for the S3 tests and the failover test.

One node, one replica: account, container and object servers plus the proxy,
each ``workers = 0`` (one process, no forking), ``mount_check = false``, the
devices under a temp dir (Swift keeps object metadata in user xattrs: the
temp dir must be on a filesystem that has them, ext4 here; ``start_swift``
checks and says so).  Rings are built at start by one helper process with
Swift's own ``RingBuilder``.  The proxy's access log is sent over UDP (Swift
logs to syslog only) to a receiver thread here, so tests can read which S3
requests the store saw (``log()``).

S3 credentials are tempauth's ``test:tester`` / ``testing``; path-style addressing.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fixtures_servers import free_port

BIN = Path(sys.executable).parent
ACCESS_KEY, SECRET_KEY = "test:tester", "testing"
SERVERS = ("account", "container", "object")

SWIFT_CONF = """\
[swift-hash]
swift_hash_path_suffix = tonearm-test-suffix
swift_hash_path_prefix = tonearm-test-prefix
[storage-policy:0]
name = default
default = yes
"""

SERVER_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {work}
devices = {work}/devices
mount_check = false
log_udp_host = 127.0.0.1
log_udp_port = {log_port}
log_name = {kind}-server
[pipeline:main]
pipeline = {kind}-server
[app:{kind}-server]
use = egg:swift#{kind}
"""

# The pipeline seen working (shared notes): s3api before tempauth, slo for multipart uploads.
PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {work}
log_udp_host = 127.0.0.1
log_udp_port = {log_port}
log_name = proxy-server
[pipeline:main]
pipeline = catch_errors healthcheck proxy-logging s3api tempauth slo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# One node: a timed-out backend is down, not slow; keep the proxy's own waits short.
conn_timeout = 1
node_timeout = 5
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
access_log_udp_host = 127.0.0.1
access_log_udp_port = {log_port}
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:slo]
use = egg:swift#slo
"""

RINGS = """\
import sys
from swift.common.ring import RingBuilder
work = sys.argv[1]
for kind, port in zip(("account", "container", "object"), map(int, sys.argv[2:5])):
    rb = RingBuilder(6, 1, 1)
    rb.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1", "weight": 100})
    rb.rebalance()
    rb.save(f"{work}/{kind}.builder")
    rb.get_ring().save(f"{work}/{kind}.ring.gz")
"""


# A client-facing proxy access line: "proxy-server: <client> <remote> <date> <METHOD> <path> <proto> <status> ..."
# (backend lines from the same proxy have "-" for the client address).  The query is logged quoted.
ACCESS_RE = re.compile(r"proxy-server: 127\.0\.0\.1 127\.0\.0\.1 \S+ ([A-Z]+) (\S+) HTTP/\S+ (\d{3}) ")


def s3_requests(log_text: str) -> list[tuple[str, str, int]]:
    """(method, path with query, status) of every S3 request the proxy answered, in order."""
    return [(m[1], unquote(unquote(m[2])), int(m[3])) for m in ACCESS_RE.finditer(log_text)]


def has_user_xattrs(where: Path) -> bool:
    probe = where / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.tonearm", b"1")
        return os.getxattr(probe, "user.tonearm") == b"1"
    except OSError:
        return False
    finally:
        probe.unlink()


class _UdpLog(threading.Thread):
    """Receives the syslog datagrams Swift sends and keeps them as text lines."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="swift-log")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.lines.append(data.decode("utf-8", "replace").rstrip("\x00\n"))

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def close(self) -> None:
        self.running = False
        self.sock.close()


@dataclass
class Swift:
    """A running Swift: ``endpoint`` (S3 API), credentials, ``log()``, ``stop_proxy()``/``start_proxy()``, ``stop()``."""

    work: Path
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    udp: _UdpLog | None = None
    _tmp: Any = None
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    base_url = endpoint  # the name the moto handle had

    @property
    def env(self) -> dict[str, str]:
        """What a boto3 process (an origin) needs in its environment to talk to this store."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def log(self) -> str:
        """The servers' log lines received so far (proxy access lines hold the S3 request and its status)."""
        return self.udp.text() if self.udp else ""

    def _start(self, kind: str) -> None:
        conf = self.work / f"{kind}-server.conf"
        out = open(self.work / f"{kind}.out", "ab")
        self.procs[kind] = subprocess.Popen([str(BIN / f"swift-{kind}-server"), str(conf)], stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.work)
        out.close()

    def _wait(self, kind: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[kind]
            if proc.poll() is not None:
                raise RuntimeError(f"swift {kind} server exited {proc.returncode}: "
                                   f"{(self.work / f'{kind}.out').read_text(errors='replace')[-2000:]}")
            # The proxy has the healthcheck middleware; the data servers answer any request (400 here).
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[kind]}/healthcheck", timeout=1) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError:
                if kind != "proxy":
                    return
                time.sleep(0.05)
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"swift {kind} server did not answer in {timeout}s")

    def start_proxy(self, timeout: float = 30.0) -> None:
        """(Re)start the proxy on the same port: the object store comes back."""
        self._start("proxy")
        self._wait("proxy", timeout)

    def stop_proxy(self) -> None:
        """Stop the proxy (the S3 endpoint refuses connections) and keep the data servers running."""
        self._kill("proxy")

    def _kill(self, kind: str) -> None:
        proc = self.procs.pop(kind, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop(self) -> None:
        for kind in ("proxy", *SERVERS):
            self._kill(kind)
        if self.udp is not None:
            self.udp.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Swift":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_swift(parent: Path | None = None, timeout: float = 60.0) -> Swift:
    """Build rings, write configs, start the four servers and wait until each answers."""
    tmp = tempfile.TemporaryDirectory(prefix="tonearm-swift-", dir=parent)
    work = Path(tmp.name)
    if not has_user_xattrs(work):
        tmp.cleanup()
        raise RuntimeError(f"{work} is on a filesystem without user xattrs, which Swift's object server needs; "
                           "pass a directory on ext4/xfs (or a loop-mounted ext4 image)")
    (work / "devices" / "d1").mkdir(parents=True)
    ports = {kind: free_port() for kind in (*SERVERS, "proxy")}
    user = pwd.getpwuid(os.geteuid()).pw_name
    udp = _UdpLog()
    udp.start()
    swift = Swift(work=work, ports=ports, udp=udp, _tmp=tmp)
    try:
        (work / "swift.conf").write_text(SWIFT_CONF)
        for kind in SERVERS:
            (work / f"{kind}-server.conf").write_text(
                SERVER_CONF.format(port=ports[kind], user=user, work=work, kind=kind, log_port=udp.port))
        (work / "proxy-server.conf").write_text(PROXY_CONF.format(port=ports["proxy"], user=user, work=work,
                                                                  log_port=udp.port))
        subprocess.run([sys.executable, "-c", RINGS, str(work), *(str(ports[k]) for k in SERVERS)],
                       check=True, capture_output=True, timeout=60)
        for kind in (*SERVERS, "proxy"):
            swift._start(kind)
        for kind in (*SERVERS, "proxy"):
            swift._wait(kind, timeout)
    except BaseException:
        swift.stop()
        raise
    return swift
