"""The embedded PostgreSQL server: a private cluster under ``DPDB_HOME``.

With no DSN configured, dpdb runs its own cluster from the PostgreSQL server
binaries found on the machine: data in ``$DPDB_HOME/data``, a Unix socket in
``$DPDB_HOME/run`` (mode 0700, so only the operator can use it) and a TCP port
on 127.0.0.1 that requires scram-sha-256 passwords. As root the server runs as
the ``postgres`` OS user, as the Debian packages do.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ServerError

__all__ = ["EmbeddedServer", "ServerStatus", "find_bindir", "DEBIAN_PACKAGES"]

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = "postgresql-15 postgresql-15-q3c postgresql-15-pgsphere"
SUPERUSER = "postgres"
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")


def find_bindir(explicit: Path | None = None) -> Path:
    """Directory holding initdb, pg_ctl and postgres (newest PostgreSQL >= 15 first)."""
    if explicit is not None:
        bindir = Path(explicit)
        if all((bindir / name).is_file() for name in _REQUIRED_BINARIES):
            return bindir
        raise ServerError(
            f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {bindir}; "
            f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
        )
    candidates: list[Path] = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=_major_version, reverse=True
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in _REQUIRED_BINARIES) and _major_version(bindir) >= 15:
            return bindir
    raise ServerError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres >= 15) not found; "
        f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
    )


def _major_version(bindir: Path) -> int:
    """PostgreSQL major version of a bin directory (0 if unknown)."""
    for part in (bindir.parent.name, bindir.name):
        if part.isdigit():
            return int(part)
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class ServerStatus:
    """What ``dpdb db status`` reports about the embedded server."""

    running: bool
    pid: int | None
    port: int | None
    socket_dir: Path
    data_dir: Path
    bindir: Path | None


class EmbeddedServer:
    """A private PostgreSQL cluster living in ``home``."""

    def __init__(self, home: Path, bindir: Path | None = None) -> None:
        self.home = Path(home).absolute()
        self._bindir = bindir
        self.data_dir = self.home / "data"
        self.socket_dir = self.home / "run"
        self.log_dir = self.home / "log"
        self.port_file = self.home / "port"

    # -- paths and identity ------------------------------------------------
    @property
    def bindir(self) -> Path:
        if self._bindir is None or not (Path(self._bindir) / "pg_ctl").is_file():
            self._bindir = find_bindir(self._bindir)
        return self._bindir

    @property
    def port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def conninfo(self, dbname: str) -> str:
        """libpq keyword/value connection string over the private socket."""
        port = self.port or 5432
        return f"host={self.socket_dir} port={port} dbname={dbname} user={SUPERUSER}"

    def url(self, dbname: str) -> str:
        """The same as a ``postgresql://`` URL (what ``dpdb db url`` prints)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port or 5432}"

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """The OS user the server runs as when we are root (None when not root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as e:
            raise ServerError(
                "running as root needs the 'postgres' OS user to run the server; "
                f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
            ) from e

    def _demote(self) -> Callable[[], None] | None:
        user = self._server_user()
        if user is None:
            return None

        def demote() -> None:
            os.setgid(user.pw_gid)
            os.initgroups(user.pw_name, user.pw_gid)
            os.setuid(user.pw_uid)

        return demote

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the server user, with a clean locale."""
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("PGDATA", None)
        proc = subprocess.run(
            args, capture_output=True, text=True, preexec_fn=self._demote(), env=env, cwd="/"
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ServerError(f"{Path(args[0]).name} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    # -- lifecycle -----------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize concurrent ``up``/``down`` calls on one home directory."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def up(self) -> bool:
        """Create (first time) and start the cluster; return True if it was started now."""
        with self._lock():
            if not self.initialized():
                self._init()
            self._check_owner()
            if self.running():
                return False
            self._clear_stale_pid()
            port = self._choose_port()
            self._start(port)
            return True

    def down(self) -> bool:
        """Stop the cluster (fast shutdown); return True if it was running."""
        with self._lock():
            if not self.initialized() or not self.running():
                return False
            self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"])
            return True

    def running(self) -> bool:
        return self._live_pid() is not None

    def status(self) -> ServerStatus:
        try:
            bindir: Path | None = self.bindir
        except ServerError:
            bindir = None
        return ServerStatus(
            running=self.running(),
            pid=self._live_pid(),
            port=self.port,
            socket_dir=self.socket_dir,
            data_dir=self.data_dir,
            bindir=bindir,
        )

    # -- internals -------------------------------------------------------------
    def _init(self) -> None:
        bindir = self.bindir
        user = self._server_user()
        for path in (self.home, self.socket_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ConfigError(f"data directory {self.data_dir} is not empty and holds no PostgreSQL cluster")
        self.data_dir.mkdir(exist_ok=True)
        for path in (self.socket_dir, self.data_dir, self.log_dir):
            os.chmod(path, 0o700)
            if user is not None:
                os.chown(path, user.pw_uid, user.pw_gid)
        if user is not None:
            probe = subprocess.run(["test", "-w", str(self.data_dir)], preexec_fn=self._demote())
            if probe.returncode != 0:
                raise ConfigError(
                    f"the postgres OS user cannot reach {self.data_dir}; "
                    "set DPDB_HOME to a directory whose parents it can traverse"
                )
        log.info("initializing PostgreSQL cluster in %s", self.data_dir)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# dpdb embedded server\n"
                "password_encryption = 'scram-sha-256'\n"
                "shared_buffers = '512MB'\n"
                "work_mem = '64MB'\n"
                "maintenance_work_mem = '512MB'\n"
                "max_wal_size = '4GB'\n"
                "max_locks_per_transaction = 1024\n"
                "timezone = 'UTC'\n"
                "jit = off\n"  # short set-based statements: compiling costs more than it saves
            )

    def _check_owner(self) -> None:
        user = self._server_user()
        expected_uid = user.pw_uid if user is not None else os.geteuid()
        owner_uid = self.data_dir.stat().st_uid
        if owner_uid != expected_uid:
            try:
                owner = pwd.getpwuid(owner_uid).pw_name
            except KeyError:
                owner = str(owner_uid)
            expected = user.pw_name if user is not None else pwd.getpwuid(expected_uid).pw_name
            raise ConfigError(
                f"data directory {self.data_dir} is owned by user {owner}, not {expected}; "
                "use your own DPDB_HOME"
            )

    def _live_pid(self) -> int | None:
        """PID of a running postmaster for our data directory, or None."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if b"postgres" not in cmdline[0]:  # the pid was reused by another program
            return None
        return pid

    def _clear_stale_pid(self) -> None:
        """Remove a postmaster.pid whose process is gone (or is some other program)."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists() and self._live_pid() is None:
            log.warning("removing stale %s", pid_file)
            pid_file.unlink()

    def _choose_port(self) -> int:
        """Keep the recorded port if it is free, else take a free one and record it."""
        port = self.port
        if port is None or not _port_free(port):
            port = _free_port()
            self.port_file.write_text(f"{port}\n")
        return port

    def _start(self, port: int) -> None:
        log_file = self.log_dir / "server.log"
        opts = f"-p {port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        proc = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(log_file),
                "-w",
                "-t",
                "60",
                "-o",
                opts,
            ],
            check=False,
        )
        if proc.returncode != 0:
            tail = _tail(log_file)
            raise ServerError(f"PostgreSQL did not start in {self.data_dir}: {tail}")
        for _ in range(100):  # pg_ctl -w returns when ready; the socket may lag a moment
            if (self.socket_dir / f".s.PGSQL.{port}").exists():
                return
            time.sleep(0.05)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no server log"
    return lines[-1] if lines else "empty server log"
