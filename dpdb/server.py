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
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import backup
from .errors import ConfigError, ServerError

__all__ = ["EmbeddedServer", "ServerStatus", "find_bindir", "DEBIAN_PACKAGES"]

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = "postgresql-15 postgresql-15-q3c postgresql-15-pgsphere"
SUPERUSER = "postgres"
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432"
"""glibc malloc settings of the server processes (``GLIBC_TUNABLES``; one set in dpdb's environment wins).
With glibc's defaults a backend gives the heap memory a statement freed back to the kernel and faults it
in again, zeroed, for the next: planning a q3c cone (~2.4 MB) then costs ~600 page faults, 1-1.3 ms of
its ~2 ms, and whether it does depends on what the connection ran before (measured: 0-612 faults for
the same cone, see benchmarks/README.md, TAP). With up to 32 MiB kept (and blocks below 32 MiB from
the heap, not mmap), a backend reuses its memory: no faults, the same cost every time."""
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
SHARED_BUFFERS_RANGE = (512 << 20, 8 << 30)
"""Bounds of the embedded server's ``shared_buffers`` (bytes), which is otherwise a quarter of the memory."""


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its control group's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def shared_buffers_mb(memory: int | None = None) -> int:
    """``shared_buffers`` of a new embedded cluster, in MB: a quarter of ``memory`` (default: this
    machine's), PostgreSQL's guidance for a server of its own, within ``SHARED_BUFFERS_RANGE``.

    The prompt catalog's working set is DiaObject's indexes in the survey's partitions (~1 GB at a
    few million versions): with a fixed 512 MB a prompt visit's version step grew with them
    (benchmarks/README.md, bench_prompt). The memory is the server's only once pages are read into it.
    """
    lo, hi = SHARED_BUFFERS_RANGE
    quarter = (machine_memory() if memory is None else memory) // 4
    return min(max(quarter, lo), hi) >> 20


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

    def __init__(self, home: Path, bindir: Path | None = None, wal_archive: bool = True) -> None:
        self.home = Path(home).absolute()
        self._bindir = bindir
        self.wal_archive = wal_archive
        self.data_dir = self.home / "data"
        self.socket_dir = self.home / "run"
        self.log_dir = self.home / "log"
        self.port_file = self.home / "port"

    def sibling(self, home: Path) -> EmbeddedServer:
        """A server in ``home`` with this one's binaries and archiving choice (a restore's copy)."""
        return EmbeddedServer(home, self._bindir, wal_archive=self.wal_archive)

    # -- paths and identity ------------------------------------------------
    @property
    def superuser(self) -> str:
        """The cluster's superuser (the OS user the server runs as, when root starts it)."""
        return SUPERUSER

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

    def _run(
        self, args: list[str], check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the server user, with a clean locale (and ``env`` added)."""
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", **(env or {})}
        env.pop("PGDATA", None)
        proc = subprocess.run(
            args, capture_output=True, text=True, preexec_fn=self._demote(), env=env, cwd="/"
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ServerError(f"{Path(args[0]).name} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    # -- lifecycle -----------------------------------------------------------
    def check_home(self, create: bool = True) -> None:
        """Refuse, in one line, a ``DPDB_HOME`` that cannot hold the server.

        Raises
        ------
        ConfigError
            The home is not a directory, cannot be created, or is not writable.
        """
        home = self.home
        if home.exists() or home.is_symlink():
            if not home.is_dir():
                raise ConfigError(f"DPDB_HOME {home} is not a directory")
        elif create:
            try:
                home.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create DPDB_HOME {home}: {e.strerror or e}") from e
        else:
            return
        if not os.access(home, os.R_OK | os.X_OK):
            raise ConfigError(f"DPDB_HOME {home} is not readable")
        if create and not os.access(home, os.W_OK):
            raise ConfigError(f"DPDB_HOME {home} is not writable (read-only file system or permissions)")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize concurrent ``up``/``down`` calls on one home directory."""
        path = self.home / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # a read-only home can still be stopped: flock works on a read-only descriptor
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise ConfigError(f"cannot open the lock file {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def up(self) -> bool:
        """Create (first time) and start the cluster; return True if it was started now.

        Whatever ``postmaster.pid`` holds (garbage, a stale PID, another program's or another
        cluster's postmaster), the running postmaster of this data directory is found in /proc,
        so a running server is never started twice nor lost.
        """
        self.check_home()
        with self._lock():
            if not self.initialized():
                self._init()
            self._check_owner()
            if self.running():
                return False
            self._await_orphans()
            self._clear_stale_pid()
            port = self._choose_port()
            self._configure_archive(port)
            try:
                self._start(port)
            except ServerError as e:  # e.g. a killed server's last backends were still exiting
                log.info("first start failed (%s); retrying once", e)
                time.sleep(2.0)
                self._await_orphans()
                self._clear_stale_pid()
                self._start(port)
            self._after_start()
            return True

    def down(self) -> bool:
        """Stop the cluster (fast shutdown); return True if it was running.

        The postmaster is found by its data directory, not trusted from ``postmaster.pid``,
        and is signalled directly (SIGINT, PostgreSQL's fast shutdown; SIGQUIT if it has not
        stopped within a minute).
        """
        self.check_home(create=False)
        if not self.home.exists():
            return False
        with self._lock():
            pid = self._live_pid() if self.initialized() else None
            if pid is None:
                return False
            self._stop(pid)
            return True

    def running(self) -> bool:
        return self._live_pid() is not None

    def status(self) -> ServerStatus:
        self.check_home(create=False)
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
                f"shared_buffers = '{shared_buffers_mb()}MB'\n"
                "work_mem = '64MB'\n"
                "maintenance_work_mem = '512MB'\n"
                # a prompt visit writes 36-50 MB of WAL: no WAL-forced checkpoint within a night's
                # visits (benchmarks/README.md, bench_prompt)
                "max_wal_size = '16GB'\n"
                "checkpoint_timeout = '30min'\n"
                # the prompt tables' fixed vacuum thresholds (dpdb/storage.py) are reached every ~10
                # visits; at the default 1 min a vacuum could start only every ~50 (benchmarks/README.md)
                "autovacuum_naptime = '10s'\n"
                # full-page images were ~40 % of a prompt visit's WAL (benchmarks/README.md, bench_prompt)
                "wal_compression = lz4\n"
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
        """PID of the running postmaster of our data directory, or None.

        The PID in ``postmaster.pid`` is believed only if that process is a postgres
        postmaster whose working directory is our data directory (a postmaster runs in its
        data directory); otherwise /proc is searched for one.
        """
        try:
            recorded: int | None = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            recorded = None
        if recorded is not None and self._is_our_postmaster(recorded):
            return recorded
        found = self._our_processes(postmasters_only=True)
        return min(found) if found else None

    def _is_our_postmaster(self, pid: int) -> bool:
        return _process_in(pid, self.data_dir.resolve(), postmaster_only=True)

    def _our_processes(self, postmasters_only: bool = False) -> list[int]:
        """PIDs of postgres processes (postmasters only, or also their children) in our data directory."""
        target = self.data_dir.resolve()
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _process_in(int(entry.name), target, postmasters_only):
                pids.append(int(entry.name))
        return pids

    def _stop(self, pid: int) -> None:
        """Fast shutdown of postmaster ``pid``; escalate to an immediate one if it lingers."""
        for sig, wait in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 30.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._is_our_postmaster(pid):
                    return
                time.sleep(0.05)
            log.warning("postmaster %d did not stop after %s; escalating", pid, sig.name)
        raise ServerError(f"the PostgreSQL server (pid {pid}) of {self.data_dir} does not stop")

    def _await_orphans(self, timeout: float = 15.0) -> None:
        """Let backends whose postmaster was killed (kill -9) exit before a new postmaster starts.

        PostgreSQL refuses to start while they hold the old shared memory; they notice the
        postmaster's death on their own, and the ones still busy after ``timeout`` get SIGQUIT.
        """
        deadline = time.monotonic() + timeout
        quit_sent = False
        while orphans := self._our_processes():
            if time.monotonic() > deadline:
                if quit_sent:
                    raise ServerError(
                        f"processes {', '.join(map(str, orphans))} of a killed PostgreSQL server still "
                        f"use {self.data_dir}"
                    )
                for pid in orphans:
                    with _suppress_lookup():
                        os.kill(pid, signal.SIGQUIT)
                quit_sent, deadline = True, time.monotonic() + 10.0
            time.sleep(0.05)

    def _clear_stale_pid(self) -> None:
        """Remove a postmaster.pid when no postmaster runs in our data directory (checked in /proc)."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists() and self._live_pid() is None:
            log.info("removing stale %s", pid_file)  # routine after a crash or kill -9
            pid_file.unlink()

    def _configure_archive(self, port: int) -> None:
        """WAL archiving to the home's pgBackRest repository (or off), written before every start."""
        backup.configure_archiving(self, port)

    def _after_start(self) -> None:
        backup.after_start(self)

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
                "600",  # a restored copy replays its WAL before it accepts connections
                "-o",
                opts,
            ],
            check=False,
            env={"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", MALLOC_TUNABLES)},
        )
        if proc.returncode != 0:
            tail = _tail(log_file)
            raise ServerError(f"PostgreSQL did not start in {self.data_dir}: {tail}")
        for _ in range(100):  # pg_ctl -w returns when ready; the socket may lag a moment
            if (self.socket_dir / f".s.PGSQL.{port}").exists():
                return
            time.sleep(0.05)


def _port_free(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR, as PostgreSQL sets on its own sockets: connections of the previous server
    in TIME_WAIT must not make a restart move to another port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    """The reason in a server log: its last FATAL or PANIC line, else its last line."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no server log"
    fatal = [line for line in lines[-50:] if "FATAL:" in line or "PANIC:" in line]
    return (fatal or lines or ["empty server log"])[-1]


def _process_in(pid: int, data_dir: Path, postmaster_only: bool) -> bool:
    """True if ``pid`` is a postgres process running in ``data_dir`` (a postmaster, if asked).

    A postmaster's argv[0] is the postgres binary; its children rewrite theirs to
    ``postgres: <role>``. Every one of them has the data directory as working directory.
    Zombies and processes of other users (when not root) read as not ours.
    """
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        if not argv0:
            return False
        name = Path(argv0).name
        if postmaster_only:
            if name not in ("postgres", "postmaster"):
                return False
        elif not (name in ("postgres", "postmaster") or argv0.startswith("postgres:")):
            return False
        return Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir
    except (OSError, ValueError):
        return False


@contextmanager
def _suppress_lookup() -> Iterator[None]:
    try:
        yield
    except ProcessLookupError:
        pass
