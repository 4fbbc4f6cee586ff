"""Embedded shards: local PostgreSQL servers under ``DPDB_HOME/shards/<name>`` (``dpdb db up --shards N``).

Each is a :class:`dpdb.server.EmbeddedServer` of its own (data directory,
port, socket, log), whose ``postgres`` login gets a generated password kept
in ``DPDB_HOME/shards/<name>/password`` (mode 0600): the coordinator reaches
it over TCP on 127.0.0.1 with scram-sha-256, as it would a remote server.
They allow prepared transactions (loads commit with two-phase commit).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dpdb.config import Settings
from dpdb.errors import ShardError
from dpdb.pg import fetch_value
from dpdb.server import SUPERUSER, EmbeddedServer

from . import registry

__all__ = ["ShardServer", "shards_home", "embedded_shards", "start_shards", "stop_shards", "shard_status"]

SHARD_PREFIX = "shard"


class ShardServer(EmbeddedServer):
    """An embedded server that serves as a shard: prepared transactions on, a smaller buffer cache."""

    def _init(self) -> None:
        super()._init()
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "# dpdb shard\n"
                "max_prepared_transactions = 64\n"  # one per file being loaded at once
                "shared_buffers = '256MB'\n"
            )

    def _choose_port(self) -> int:
        """Keep the recorded port unless another program listens there: the coordinator's foreign
        server names it. (A port just released by this server may linger in TIME_WAIT; PostgreSQL
        binds with SO_REUSEADDR, so it can take it again.)"""
        port = self.port
        if port is not None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    pass
        return super()._choose_port()

    @property
    def password_file(self) -> Path:
        return self.home / "password"

    def password(self) -> str:
        """The ``postgres`` login's password, set (generated) on first use."""
        if self.password_file.is_file():
            return self.password_file.read_text().strip()
        password = secrets.token_urlsafe(24)
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), SUPERUSER.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())
                )
            )
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password

    def dsn(self, dbname: str) -> str:
        """Where the coordinator reaches this shard: TCP on 127.0.0.1 with the password."""
        return psycopg.conninfo.make_conninfo(
            "", host="127.0.0.1", port=str(self.port), dbname=dbname, user=SUPERUSER, password=self.password()
        )


def shards_home(settings: Settings) -> Path:
    return Path(settings.home).absolute() / "shards"


def embedded_shards(settings: Settings) -> list[ShardServer]:
    """The embedded shard servers that exist under ``DPDB_HOME/shards``, by name."""
    root = shards_home(settings)
    if not root.is_dir():
        return []
    return [
        ShardServer(path, settings.pg_bindir)
        for path in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name))
        if (path / "data" / "PG_VERSION").is_file()
    ]


def start_shards(settings: Settings, count: int, conn: psycopg.Connection) -> list[str]:
    """Start (creating the first time) embedded shards shard1..shardN and register them on ``conn``.

    Idempotent: running shards stay, registered ones are re-pointed at their
    port if it changed. Returns what was done, one line per shard.
    """
    if not settings.embedded():
        raise ShardError(
            "--shards starts local shard servers; with DPDB_DSN register shards with dpdb shard add"
        )
    done = []
    known = {s.name: s for s in registry.list_shards(conn)}
    for i in range(1, count + 1):
        name = f"{SHARD_PREFIX}{i}"
        server = ShardServer(shards_home(settings) / name, settings.pg_bindir)
        started = server.up()
        _ensure_database(server, settings.database)
        if name not in known:
            registry.add_shard(conn, name, server.dsn(settings.database))
            done.append(f"{name} {'started' if started else 'running'} on port {server.port}, registered")
        else:
            if known[name].options.get("port") != str(server.port):
                registry.set_port(conn, name, server.port or 5432)
            done.append(f"{name} {'started' if started else 'already running'} on port {server.port}")
    return done


def _ensure_database(server: ShardServer, dbname: str) -> None:
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def stop_shards(settings: Settings) -> list[str]:
    """Stop every embedded shard server; the names of those that were running."""
    return [s.home.name for s in embedded_shards(settings) if s.down()]


@dataclass(frozen=True)
class ShardState:
    name: str
    where: str
    up: bool
    detail: str  # version and releases, or why it cannot be reached
    embedded: Path | None


def shard_status(settings: Settings, conn: psycopg.Connection) -> list[ShardState]:
    """Each registered shard: reachable or not, its PostgreSQL version and the releases it holds."""
    local = {s.home.name: s.home for s in embedded_shards(settings)} if settings.embedded() else {}
    out = []
    for shard in registry.list_shards(conn):
        held = registry.releases_on(conn, shard.name)
        try:
            info = registry.shard_conninfo(conn, shard.name)
            with psycopg.connect(info, connect_timeout=3) as remote:
                version = fetch_value(remote, "SHOW server_version")
            up, detail = True, f"PostgreSQL {version}"
        except psycopg.Error as e:
            up, detail = False, registry._reason(e)
        detail += f"; releases: {', '.join(held) or 'none'}"
        out.append(ShardState(shard.name, shard.where, up, detail, local.get(shard.name)))
    return out
