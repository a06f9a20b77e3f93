"""A real S3 server for the tests: Ceph's RADOS Gateway on a throw-away one-host cluster.

``tests/start-rgw.sh`` starts ceph-mon, one ceph-osd on memstore and radosgw (beast) in a
private temporary directory on free ports; :func:`rgw` wraps it for a pytest session
fixture and the benchmarks. A machine-wide file lock serialises the start-ups of
concurrent runs, so two runs never pick the same ports (and the start-up, mostly pool
creation, does not compete for the two cores). A run killed before its clean-up leaves
a folder whose owner process is gone; the next start stops those daemons first.

Locally a missing ``radosgw`` skips the tests that need it; in CI (``CI=true``) it fails
them (``make s3-deps`` installs Debian's packages).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import private_servers

HERE = Path(__file__).resolve().parent
_PREFIX = "studio-rgw-"
_LOCK = Path(tempfile.gettempdir()) / "studio-rgw.lock"
_PROGRAMS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
_DAEMONS = ("client.rgw", "osd.0", "mon.a")


def require() -> None:
    """Skip (locally) or fail (in CI) unless the Ceph programs are installed."""
    missing = [p for p in _PROGRAMS if shutil.which(p) is None]
    if missing:
        private_servers._missing(
            f"{', '.join(missing)} not installed (Debian: apt-get install radosgw ceph-mon ceph-osd; make s3-deps)"
        )


@dataclass
class RGW:
    """A running gateway: where it listens and the keys of its one S3 user."""

    root: Path
    port: int
    access_key: str
    secret_key: str
    #: Keys of the user "agent", who may only do what a bucket policy grants it.
    agent_access_key: str = ""
    agent_secret_key: str = ""
    started_in: float = 0.0
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
        )

    def new_bucket(self, prefix: str = "test") -> str:
        """A fresh, empty bucket of a unique name (deleted with the cluster)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def allow_agent_writes(self, bucket: str) -> None:
        """The bucket policy of docs/deploy.md: the agent user may only put objects."""
        import json

        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam:::user/agent"]},
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"], "Resource": [f"arn:aws:s3:::{bucket}/*"],
        }]}
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def _pid(self, daemon: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root / "run" / f"{daemon}.pid").read_text())
        return None

    def answers(self) -> bool:
        return private_servers.services.port_open("127.0.0.1", self.port)

    def stop_gateway(self) -> None:
        """Stop radosgw only: the S3 endpoint is gone, the objects stay in the OSD."""
        pid = self._pid("client.rgw")
        if pid is not None and private_servers._alive(pid):
            os.kill(pid, signal.SIGTERM)
            private_servers._wait(lambda: not private_servers._alive(pid), 30, "radosgw did not stop")
        private_servers._wait(lambda: not self.answers(), 30, "the gateway's port stayed open")

    def start_gateway(self) -> None:
        subprocess.run(["radosgw", "-c", str(self.root / "ceph.conf"), "-n", "client.rgw"],
                       check=True, capture_output=True, timeout=60)
        private_servers._wait(self.answers, 60, "radosgw did not come back", self.root / "log" / "client.rgw.log")

    def stop(self) -> None:
        subprocess.run(["bash", str(HERE / "stop-rgw.sh"), str(self.root)], capture_output=True, timeout=120, check=False)


def _two_free_ports() -> int:
    """A port P with P+1 free too (the gateway and the monitor)."""
    for _ in range(100):
        port = private_servers.free_port()
        with contextlib.suppress(OSError):
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no two adjacent free ports")


@contextlib.contextmanager
def rgw() -> Iterator[RGW]:
    """Start a private cluster; stop it and delete its folder afterwards. Call
    :func:`require` first."""
    reap()
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (root / "owner").write_text(str(os.getpid()))
    server: RGW | None = None
    try:
        with open(_LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            began = time.monotonic()
            port = _two_free_ports()
            done = subprocess.run(["bash", str(HERE / "start-rgw.sh"), str(root / "ceph"), str(port)],
                                  capture_output=True, text=True, timeout=300, check=False)
            server = RGW(root / "ceph", port, "", "")
            if done.returncode != 0:
                log = root / "ceph" / "log"
                tails = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(log.glob("*")))
                raise RuntimeError(f"start-rgw.sh failed ({done.returncode}): {done.stderr[-2000:]}{tails}")
            keys = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
            server.access_key, server.secret_key = keys["access_key"], keys["secret_key"]
            server.agent_access_key, server.agent_secret_key = keys["agent_access_key"], keys["agent_secret_key"]
            server.started_in = time.monotonic() - began
            private_servers.STARTUP.append(("ceph-rgw", server.started_in))
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def reap() -> None:
    """Stop the clusters of runs that died before cleaning up, and delete their folders."""
    for folder in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if private_servers._alive(owner):
            continue
        for daemon in _DAEMONS:
            with contextlib.suppress(OSError, ValueError):
                pid = int((folder / "ceph" / "run" / f"{daemon}.pid").read_text())
                if private_servers._alive(pid):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
