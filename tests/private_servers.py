"""Private PostgreSQL, Redis and RabbitMQ servers for the tests that stop and start them.

The servers on 5432/6379/5672 are shared by every test run on the machine (and by other
engineers' runs): a test that stops one breaks the others. The tests that inject server
faults (``tests/chaos``, the bus contract's broker restart) therefore start their own,
each on free ports with its data in a private temporary directory, and stop and delete
them at the end of the session. A session killed before its clean-up leaves a directory
whose owner process is gone; the next session stops those servers first (:func:`reap`).

Starting them costs a few seconds (RabbitMQ's Erlang VM most of it); :data:`STARTUP`
records each start so the suite can print the cost. Locally a missing server program
skips the tests that need it, with the reason; in CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import services

#: (server, seconds) for every private server started in this session, in order.
STARTUP: list[tuple[str, float]] = []

_PREFIX = "studio-private-"
_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


class ServerMissing(Exception):
    """A program a private server needs is not installed."""


def require(*kinds: str) -> None:
    """Skip (locally) or fail (in CI) unless every named server ("postgres", "redis",
    "rabbitmq") can be started privately here."""
    for kind in kinds:
        try:
            _PROGRAMS[kind]()
        except ServerMissing as exc:
            _missing(f"{exc} (the test starts a private server)")


def _missing(what: str) -> None:
    if services.IN_CI:
        pytest.fail(f"{what}; CI=true requires it", pytrace=False)
    pytest.skip(what)


free_port = services.free_port


def _wait(predicate, timeout: float, what: str, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} within {timeout:g} s\n{tail}")
        time.sleep(0.05)


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- Redis ------------------------------------------------------------------------------


def _redis_programs() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise ServerMissing("redis-server and redis-cli are not installed")
    return server, cli


class PrivateRedis:
    """``redis-server`` in the foreground on a free port, without persistence."""

    def __init__(self, root: Path) -> None:
        self.server, self.cli = _redis_programs()
        self.dir = root / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        args = [self.server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.log)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        (self.dir / "pid").write_text(str(self.proc.pid))

    def ready(self) -> None:
        _wait(self.answers, 30, f"private Redis did not answer on port {self.port}", self.log)

    def start(self) -> None:
        self.launch()
        self.ready()

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"private Redis exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        return _run([self.cli, "-p", str(self.port), "ping"], timeout=5).stdout.strip() == "PONG"

    def stop(self) -> None:
        """Shut down without saving: everything it held is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        _run([self.cli, "-p", str(self.port), "shutdown", "nosave"], timeout=10)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart_empty(self) -> None:
        """A real restart with the data gone (states, capabilities, reservations)."""
        try:
            self.stop()
        finally:
            self.start()


# ---- RabbitMQ ---------------------------------------------------------------------------


def _rabbit_programs() -> tuple[Path, Path]:
    server, ctl = _RABBIT_BIN / "rabbitmq-server", _RABBIT_BIN / "rabbitmqctl"
    if not (os.access(server, os.X_OK) and os.access(ctl, os.X_OK)):
        raise ServerMissing(f"RabbitMQ is not installed ({server} and {ctl})")
    return server, ctl


class PrivateRabbit:
    """A RabbitMQ node of its own: its own node name, AMQP and distribution ports, data
    and log directories, Erlang cookie (``HOME``) and config, with no plugins, so it
    clashes with nothing of the machine's node (``rabbit@localhost`` on 5672)."""

    def __init__(self, root: Path) -> None:
        self.server, self.ctl_program = _rabbit_programs()
        self.dir = root / "rabbitmq"
        self.dir.mkdir()
        self.port = free_port()
        self.node = f"studio-test-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.log = self.dir / "server.log"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        ctl_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(self.dir),  # the Erlang cookie, shared by the node and our rabbitmqctl only
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_port),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_port + 10),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        (self.dir / "node").write_text(self.node)
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(self.server)], env=self.env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        (self.dir / "pid").write_text(str(self.proc.pid))

    def ready(self) -> None:
        _wait(self.accepts, 120, f"private RabbitMQ did not listen on port {self.port}", self.log)

    def start(self) -> None:
        self.launch()
        self.ready()

    def accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"private RabbitMQ exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        return services.port_open("127.0.0.1", self.port, timeout=0.2)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(self.ctl_program), "-n", self.node, *args], env=self.env)

    def stop_app(self) -> None:
        """``rabbitmqctl stop_app``: every connection drops; the node keeps its queues."""
        result = self.ctl("stop_app")
        assert result.returncode == 0, f"rabbitmqctl stop_app failed: {result.stdout} {result.stderr}"

    def start_app(self) -> None:
        """``rabbitmqctl start_app`` (a no-op when it runs); returns once it accepts connections."""
        result = self.ctl("start_app")
        if result.returncode != 0:  # once, after a slow stop: the second try has always worked
            result = self.ctl("start_app")
        assert result.returncode == 0, f"rabbitmqctl start_app failed: {result.stdout} {result.stderr}"
        _wait(self.accepts, 60, "private RabbitMQ accepting connections again", self.log)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop")
            self.proc.wait(30)
        except (OSError, subprocess.SubprocessError):
            # The Erlang VM may be a child of the script we started: kill both by pid.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((self.dir / "rabbit.pid").read_text()), signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)


# ---- PostgreSQL -------------------------------------------------------------------------


def _postgres_programs() -> tuple[str, str]:
    for folder in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb, pg_ctl = shutil.which("initdb", path=folder), shutil.which("pg_ctl", path=folder)
        if initdb and pg_ctl:
            return initdb, pg_ctl
    raise ServerMissing("PostgreSQL's initdb and pg_ctl are not installed")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a private directory, ``pg_ctl`` on a
    free port, trust authentication on 127.0.0.1 only). PostgreSQL refuses to run as
    root, so under root its programs run as the ``postgres`` user."""

    def __init__(self, root: Path) -> None:
        self.initdb, self.pg_ctl = _postgres_programs()
        self.dir = root / "postgres"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.log = self.dir / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                import pwd

                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerMissing("PostgreSQL cannot run as root and there is no `postgres` user") from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._initialised = False

    def _pg(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return _run([*self._as, *args], timeout=timeout)

    def launch(self) -> None:
        self.start()

    def ready(self) -> None:
        """Started by :meth:`launch` already (``pg_ctl -w`` waits)."""

    def start(self) -> None:
        if not self._initialised:
            result = self._pg(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            assert result.returncode == 0, f"initdb failed: {result.stdout} {result.stderr}"
            self._initialised = True
        # fsync off: nothing here must survive a power cut, and a stop -m immediate is
        # still recovered from the WAL the kernel kept.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        result = self._pg(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")
        assert result.returncode == 0, f"pg_ctl start failed: {result.stdout} {result.stderr}\n{self._tail()}"
        (self.dir / "pid").write_text((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions are ended) or ``-m immediate`` (a crash)."""
        if not (self.data / "postmaster.pid").exists():
            return
        result = self._pg(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        assert result.returncode == 0, f"pg_ctl stop failed: {result.stdout} {result.stderr}\n{self._tail()}"

    def accepts(self) -> bool:
        return services.port_open("127.0.0.1", self.port, timeout=0.2)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


# ---- a small disk ---------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int = 64) -> Iterator[None]:
    """A tmpfs of ``size_mb`` mounted on ``path``, for tests of a full disk. Mounting needs
    the privilege to: without it the test is skipped locally and fails in CI."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        result = _run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)], timeout=30)
        if result.returncode != 0:
            raise ServerMissing(f"cannot mount a small disk: {(result.stderr or result.stdout).strip()}")
    except (OSError, ServerMissing) as exc:
        _missing(str(exc))
    try:
        yield
    finally:
        _run(["umount", "-l", str(path)], timeout=30)


_PROGRAMS = {"redis": _redis_programs, "rabbitmq": _rabbit_programs, "postgres": _postgres_programs}
_CLASSES = {"redis": PrivateRedis, "rabbitmq": PrivateRabbit, "postgres": PrivatePostgres}


@dataclass
class PrivateServers:
    root: Path
    postgres: PrivatePostgres | None = None
    redis: PrivateRedis | None = None
    rabbitmq: PrivateRabbit | None = None


@contextlib.contextmanager
def private_servers(*kinds: str) -> Iterator[PrivateServers]:
    """Start the named servers ("postgres", "redis", "rabbitmq") at once; stop and delete
    them afterwards. Call :func:`require` first (it skips or fails when one is missing)."""
    reap()
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
    root.chmod(0o755)  # the postgres user must reach its folder
    (root / "owner").write_text(str(os.getpid()))
    servers = PrivateServers(root)
    try:
        began = time.monotonic()
        created = [(kind, _CLASSES[kind](root)) for kind in kinds]
        for kind, server in created:
            setattr(servers, kind, server)
        # RabbitMQ's VM boots while PostgreSQL initialises: launch all, then wait for each.
        for kind, server in sorted(created, key=lambda item: item[0] != "rabbitmq"):
            server.launch()
        for kind, server in created:
            server.ready()
            STARTUP.append((kind, time.monotonic() - began))
        yield servers
    finally:
        for kind in reversed(kinds):
            server = getattr(servers, kind)
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        shutil.rmtree(root, ignore_errors=True)


def reap() -> None:
    """Stop the private servers of sessions that died before cleaning up, and delete their
    folders. Only folders of ours whose owner process is gone are touched."""
    for folder in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for kind in ("redis", "rabbitmq", "postgres"):
            with contextlib.suppress(OSError, ValueError):
                pid = int((folder / kind / "pid").read_text())
                if _alive(pid):
                    # SIGQUIT is PostgreSQL's immediate shutdown; the others just die.
                    os.kill(pid, signal.SIGQUIT if kind == "postgres" else signal.SIGKILL)
        # RabbitMQ's Erlang VM is a child of the script we started: its own pid file.
        with contextlib.suppress(OSError, ValueError):
            beam = int((folder / "rabbitmq" / "rabbit.pid").read_text())
            if _alive(beam):
                os.kill(beam, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


_reported: list[bool] = []


def report(terminal: pytest.TerminalReporter) -> None:
    """Print :func:`startup_summary` once per session (several conftests call this)."""
    line = startup_summary()
    if line and not _reported:
        _reported.append(True)
        terminal.write_line(line)


def startup_summary() -> str:
    """The start-up cost of the private servers, for the test report: each server's time
    until it answered, counted from the launch of its group (they start in parallel)."""
    if not STARTUP:
        return ""
    return "private servers ready after: " + ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in STARTUP)
