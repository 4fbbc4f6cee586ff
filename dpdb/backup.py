"""Backups and point-in-time recovery of the embedded server, with pgBackRest.

The embedded server archives its WAL continuously into a pgBackRest repository in
``$DPDB_HOME/backup`` (``archive_command = pgbackrest archive-push``, written into
``dpdb_archive.conf`` in the data directory before every start). :func:`backup` takes a base
backup; :func:`restore` recovers a copy of the cluster as of an instant into a new dpdb home
and starts it there as its own embedded server (its own port, its own WAL archive), so the
original keeps running untouched. pgBackRest checksums every file and WAL segment it stores
and picks the newest backup that ends before the instant (docs/architecture.md, Conventions).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from .errors import ConfigError, ServerError

if TYPE_CHECKING:
    from .server import EmbeddedServer

__all__ = [
    "STANZA",
    "BackupInfo",
    "RestoreResult",
    "pgbackrest",
    "configure_archiving",
    "after_start",
    "archiving",
    "backup",
    "list_backups",
    "WalStatus",
    "wal_status",
    "restore",
    "instant_utc",
]

log = logging.getLogger(__name__)

STANZA = "dpdb"
ARCHIVE_CONF = "dpdb_archive.conf"
_INCLUDE = f"include_if_exists = '{ARCHIVE_CONF}'"
# At most this long between a commit and the archiving of its WAL segment (the recovery point
# objective when the server is lost with its disk); `restore` forces a switch itself.
ARCHIVE_TIMEOUT_S = 300


def pgbackrest() -> str | None:
    """Path of the pgBackRest executable (Debian package ``pgbackrest``), or None."""
    return shutil.which("pgbackrest")


def _need_pgbackrest() -> str:
    exe = pgbackrest()
    if exe is None:
        raise ServerError("pgbackrest not found; install the Debian package: apt-get install pgbackrest")
    return exe


def _config(server: EmbeddedServer) -> Path:
    return server.home / "pgbackrest.conf"


def _repo_root(server: EmbeddedServer) -> Path:
    return server.home / "backup"


def _chown(server: EmbeddedServer, path: Path, mode: int) -> None:
    os.chmod(path, mode)
    user = server._server_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)




def instant_utc(mjd_tai: float) -> _dt.datetime:
    """An MJD TAI (what :func:`dpdb.archive.to_mjd_tai` makes of any instant) as an aware UTC datetime."""
    from astropy.time import Time

    try:
        value = Time(mjd_tai, format="mjd", scale="tai").utc.to_datetime()
    except (ValueError, OverflowError) as e:
        raise ConfigError(f"instant MJD {mjd_tai} is out of range") from e
    return value.replace(tzinfo=_dt.UTC)


# -- archiving, set up by EmbeddedServer.up -------------------------------------------------
def configure_archiving(server: EmbeddedServer, port: int) -> None:
    """Write the pgBackRest configuration and ``dpdb_archive.conf`` for a start on ``port``.

    Archiving is on when pgBackRest is installed and the server was not told otherwise
    (``DPDB_WAL_ARCHIVE=false``); else it is off, so no WAL piles up behind a failing command.
    """
    conf = server.data_dir / "postgresql.conf"
    text = conf.read_text()
    if _INCLUDE not in text:
        with open(conf, "a") as fh:
            fh.write(f"\n# dpdb: WAL archiving (rewritten at every start)\n{_INCLUDE}\n")
    exe = pgbackrest()
    if server.wal_archive and exe:
        _write_pgbackrest_conf(server, port)
        command = f"{exe} --config={shlex.quote(str(_config(server)))} --stanza={STANZA} archive-push %p"
        body = (
            "archive_mode = on\n"
            f"archive_command = '{_conf_quote(command)}'\n"
            f"archive_timeout = {ARCHIVE_TIMEOUT_S}\n"
        )
    else:
        why = "DPDB_WAL_ARCHIVE is off" if exe else "pgbackrest is not installed"
        body = f"# {why}\narchive_mode = off\n"
    target = server.data_dir / ARCHIVE_CONF
    target.write_text("# written by dpdb before every start of the embedded server\n" + body)
    _chown(server, target, 0o600)


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def _write_pgbackrest_conf(server: EmbeddedServer, port: int) -> None:
    root = _repo_root(server)
    for sub in (root, root / "repo", root / "lock", root / "spool"):
        sub.mkdir(exist_ok=True)
        _chown(server, sub, 0o700)
    server.log_dir.mkdir(exist_ok=True)
    text = (
        "# written by dpdb at every start of the embedded server\n"
        "[global]\n"
        f"repo1-path={root / 'repo'}\n"
        "repo1-retention-full=2\n"
        f"lock-path={root / 'lock'}\n"
        f"spool-path={root / 'spool'}\n"
        f"log-path={server.log_dir}\n"
        "compress-type=lz4\n"
        "process-max=2\n"
        "start-fast=y\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        f"\n[{STANZA}]\n"
        f"pg1-path={server.data_dir}\n"
        f"pg1-socket-path={server.socket_dir}\n"
        f"pg1-port={port}\n"
        f"pg1-user={server.superuser}\n"
    )
    path = _config(server)
    path.write_text(text)
    _chown(server, path, 0o640)


def archiving(server: EmbeddedServer) -> bool:
    """True if the server's configuration archives WAL to its pgBackRest repository."""
    try:
        return "archive_mode = on" in (server.data_dir / ARCHIVE_CONF).read_text()
    except OSError:
        return False


def after_start(server: EmbeddedServer, strict: bool = False) -> None:
    """Create the pgBackRest stanza once the server runs as a primary (first start only).

    A failure does not keep the server from being used (``db backup`` reports it), unless
    ``strict``.
    """
    if not archiving(server) or _stanza_exists(server):
        return
    with _admin(server) as conn:
        if _in_recovery(conn):
            return  # a restored copy: `restore` creates it after promotion
    try:
        _pgbackrest(server, "stanza-create")
    except ServerError as e:
        if strict:
            raise
        log.warning("WAL archiving is not working: %s", e)


def _in_recovery(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def _stanza_exists(server: EmbeddedServer) -> bool:
    return (_repo_root(server) / "repo" / "backup" / STANZA / "backup.info").exists()


def _pgbackrest(server: EmbeddedServer, *args: str, timeout: float = 3600) -> str:
    """Run pgBackRest on the server's configuration as the server's OS user; return stdout."""
    exe = _need_pgbackrest()
    argv = [exe, f"--config={_config(server)}", f"--stanza={STANZA}", *args]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, preexec_fn=server._demote(), cwd="/", timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"pgbackrest {args[0]} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line]
        detail = (errors or lines or [f"exit code {proc.returncode}"])[0]
        raise ServerError(f"pgbackrest {args[0]} failed: {detail.strip()}")
    return proc.stdout


def _admin(server: EmbeddedServer) -> psycopg.Connection:
    try:
        return psycopg.connect(server.conninfo("postgres"), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise ServerError(f"cannot connect to the embedded server in {server.home}: {e}") from e


def _need_archiving(server: EmbeddedServer) -> None:
    _need_pgbackrest()
    server.up()  # like every command, on demand
    if not archiving(server):
        raise ConfigError(
            f"the embedded server in {server.home} does not archive WAL (DPDB_WAL_ARCHIVE off, or it was "
            "started before pgbackrest was installed); restart it: dpdb db down && dpdb db up"
        )
    if not _stanza_exists(server):
        after_start(server, strict=True)


# -- backups ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupInfo:
    """One base backup in the repository."""

    label: str
    kind: str  # full, diff, incr
    start: _dt.datetime
    stop: _dt.datetime
    size: int  # bytes of the cluster
    stored: int  # bytes in the repository (compressed, this backup's own files)
    wal_start: str
    wal_stop: str


def backup(server: EmbeddedServer, kind: str = "full") -> BackupInfo:
    """Take a base backup (``full``, ``diff`` or ``incr``) of the running embedded server.

    Raises
    ------
    ServerError
        pgBackRest is missing, the server cannot start, or the backup failed.
    ConfigError
        The server does not archive WAL.
    """
    if kind not in ("full", "diff", "incr"):
        raise ConfigError(f"backup type {kind!r}: give full, diff or incr")
    _need_archiving(server)
    _pgbackrest(server, "backup", f"--type={kind}")
    return list_backups(server)[-1]


def list_backups(server: EmbeddedServer) -> list[BackupInfo]:
    """The backups in the server's repository, oldest first (empty when there are none)."""
    if not _stanza_exists(server):
        return []
    info = _info(server)
    out = []
    for b in info.get("backup", []):
        out.append(
            BackupInfo(
                label=b["label"],
                kind=b["type"],
                start=_ts(b["timestamp"]["start"]),
                stop=_ts(b["timestamp"]["stop"]),
                size=int(b["info"]["size"]),
                stored=int(b["info"]["repository"]["delta"]),
                wal_start=b["archive"]["start"],
                wal_stop=b["archive"]["stop"],
            )
        )
    return out


@dataclass(frozen=True)
class WalStatus:
    """Whether the server archives its WAL, and the oldest and newest segment in the repository."""

    archiving: bool
    first: str | None
    last: str | None


def wal_status(server: EmbeddedServer) -> WalStatus:
    """The state of the server's WAL archive."""
    first = last = None
    if _stanza_exists(server):
        for archive in _info(server).get("archive", []):
            if archive.get("min") and archive.get("max"):
                first, last = str(archive["min"]), str(archive["max"])
    return WalStatus(archiving(server), first, last)


def _info(server: EmbeddedServer) -> dict[str, Any]:
    stanzas = json.loads(_pgbackrest(server, "info", "--output=json") or "[]")
    return stanzas[0] if stanzas else {}


def _ts(epoch: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.UTC)


# -- point-in-time recovery -------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreResult:
    """A recovered copy: a dpdb home of its own, running."""

    home: Path
    port: int
    target: _dt.datetime
    backup: str  # label of the base backup it started from
    stopped_at: str  # what recovery reported about where it stopped


def restore(server: EmbeddedServer, target: _dt.datetime, into: Path, timeout: float = 1800) -> RestoreResult:
    """Recover a copy of ``server``'s cluster as of ``target`` (UTC) into the new dpdb home ``into``.

    The copy starts from the newest base backup that ended before ``target`` and replays the
    archived WAL up to the last transaction committed at or before ``target``; it is then
    promoted and left running as its own embedded server (``DPDB_HOME=into``), with its own
    port and its own WAL archive. When the source runs, its current WAL is archived first so
    that the most recent commits can be recovered.

    Raises
    ------
    ConfigError
        ``into`` is not a new or empty directory, or ``target`` lies in the future.
    ServerError
        No backup ends before ``target``, or recovery failed (the server log's line is given).
    """
    target = target.astimezone(_dt.UTC)
    now = _dt.datetime.now(_dt.UTC)
    if target > now:
        raise ConfigError(f"cannot restore to {target.isoformat()}: that instant is in the future")
    _need_pgbackrest()
    if not _stanza_exists(server):
        raise ServerError(f"no backup repository in {server.home}; take one with `dpdb db backup`")
    into = Path(into).absolute()
    if into.resolve() == server.home.resolve():
        raise ConfigError(f"restore into {into}: that is the source's own DPDB_HOME")
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise ConfigError(f"restore into {into}: give a new or empty directory")
    if server.running() and archiving(server):
        _archive_current_wal(server)
    # pgBackRest records whole seconds: a backup counts as ended a second after its stop stamp
    backups = [b for b in list_backups(server) if b.stop + _dt.timedelta(seconds=1) <= target]
    if not backups:
        first = list_backups(server)
        when = f"; the oldest ends at {first[0].stop.isoformat()}" if first else ""
        raise ServerError(f"no backup ends before {target.isoformat()}{when}")
    chosen = backups[-1]

    copy = server.sibling(into)
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {into}: {e.strerror or e}") from e
    os.chmod(into, 0o755)
    for path in (copy.data_dir, copy.socket_dir, copy.log_dir):
        path.mkdir(exist_ok=True)
        _chown(server, path, 0o700)
    if server._server_user() is not None:
        probe = subprocess.run(["test", "-w", str(copy.data_dir)], preexec_fn=server._demote())
        if probe.returncode != 0:
            shutil.rmtree(into, ignore_errors=True)
            raise ConfigError(
                f"the postgres OS user cannot reach {into}; restore into a directory whose parents it can "
                "traverse"
            )
    stamp = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    try:
        _pgbackrest(
            server,
            "restore",
            f"--pg1-path={copy.data_dir}",
            f"--set={chosen.label}",
            "--type=time",
            f"--target={stamp}",
            "--target-action=promote",
            timeout=timeout,
        )
        copy.up()  # writes the copy's own archive configuration, picks a free port, starts recovery
        stopped = _await_promotion(copy, timeout)
        after_start(copy, strict=True)
    except BaseException:
        # nothing half-restored is left behind: the directory was new or empty
        with contextlib.suppress(Exception):
            copy.down()
        shutil.rmtree(into, ignore_errors=True)
        raise
    return RestoreResult(into, copy.port or 0, target, chosen.label, stopped)


def _archive_current_wal(server: EmbeddedServer) -> None:
    """Commit a marker transaction and archive the current WAL segment.

    Recovery to a time stops at the first commit after it; the marker guarantees there is
    one after any past instant, so a target after the last real commit recovers everything.
    """
    with _admin(server) as conn:
        conn.execute("SELECT txid_current()")
    _pgbackrest(server, "check", "--archive-timeout=120")  # switches WAL and waits for it to be archived


def _await_promotion(copy: EmbeddedServer, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    log_file = copy.log_dir / "server.log"
    while time.monotonic() < deadline:
        if not copy.running():
            raise ServerError(f"recovery of {copy.data_dir} failed: {_recovery_line(log_file, 'FATAL')}")
        with (
            contextlib.suppress(psycopg.OperationalError),
            psycopg.connect(copy.conninfo("postgres"), autocommit=True, connect_timeout=5) as conn,
        ):
            if not _in_recovery(conn):
                return _recovery_line(log_file, "recovery stopping") or "end of archived WAL"
        time.sleep(0.2)
    raise ServerError(f"recovery of {copy.data_dir} did not finish within {timeout:.0f} s")


def _recovery_line(log_file: Path, marker: str) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "no server log"
    hits = [line for line in lines if marker in line]
    if not hits:
        return ""
    return re.sub(r"^.*?(LOG|FATAL|ERROR):\s*", "", hits[-1]).strip()
