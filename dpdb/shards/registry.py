"""Shards: other PostgreSQL servers that hold partitions of data releases, as postgres_fdw servers.

A shard is registered in the coordinator's own catalog, the way postgres_fdw
needs it anyway (docs/architecture.md, decision 9): a foreign server
``dpdb_shard_<name>`` carries the connection options (host, port, dbname) and
the pushdown settings, and a user mapping for the coordinator's owner carries
the login. Nothing is duplicated in a table of ours: the foreign servers *are*
the shard registry, and the foreign-table partitions pointing at them are the
placement of every sharded release.

Foreign-server options set on every shard:

- ``extensions 'q3c,pg_sphere'``: functions and operators of these extensions
  are shipped to the shard (``q3c_radial_query``, ``q3c_join``, pg_sphere's
  operators), so a cone is evaluated there, on the shard's q3c index;
- ``async_capable 'true'``: an Append over several shards' partitions starts
  them all at once instead of one after the other;
- ``fetch_size``: rows per round trip when results stream back.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dpdb.errors import ShardError, first_line
from dpdb.pg import REQUIRED_EXTENSIONS, fetch_value, missing_extensions

__all__ = [
    "SERVER_PREFIX",
    "FETCH_SIZE",
    "Shard",
    "server_name",
    "shard_of_server",
    "add_shard",
    "list_shards",
    "get_shard",
    "remove_shard",
    "releases_on",
    "shard_conninfo",
    "connect_shard",
    "set_port",
    "check_name",
    "ensure_public_mappings",
]

log = logging.getLogger(__name__)

SERVER_PREFIX = "dpdb_shard_"
FETCH_SIZE = 10_000
"""Rows per round trip from a shard (postgres_fdw's default, 100, costs a round trip per 100 rows)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LOGIN_OPTIONS = ("user", "password")
# libpq options postgres_fdw refuses on a server (it sets them itself, or they belong to the user mapping).
_NOT_SERVER_OPTIONS = {"user", "password", "passfile", "client_encoding", "fallback_application_name"}
# postgres_fdw options that are not libpq options.
FDW_OPTIONS = {
    "extensions", "async_capable", "fetch_size", "use_remote_estimate", "fdw_startup_cost",
    "fdw_tuple_cost", "updatable", "truncatable", "batch_size", "parallel_commit", "keep_connections",
}  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """A registered shard: its name, its foreign server and where it is."""

    name: str
    server: str
    options: dict[str, str]  # the foreign server's options (connection and postgres_fdw settings)
    user: str | None  # login of the coordinator's user mapping

    @property
    def where(self) -> str:
        """``host:port/dbname`` (no password), for listings and messages."""
        o = self.options
        return f"{o.get('host', 'localhost')}:{o.get('port', '5432')}/{o.get('dbname', '')}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ShardError(f"invalid shard name {name!r} (lower-case letters, digits and _, at most 40)")
    return name


def server_name(name: str) -> str:
    """The foreign server of shard ``name``."""
    return SERVER_PREFIX + check_name(name)


def shard_of_server(server: str) -> str:
    return server[len(SERVER_PREFIX) :] if server.startswith(SERVER_PREFIX) else server


def _options(raw: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in raw or [])


def list_shards(conn: psycopg.Connection) -> list[Shard]:
    """Every registered shard, by name."""
    rows = conn.execute(
        "SELECT s.srvname, s.srvoptions, um.umoptions FROM pg_foreign_server s "
        "JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw AND w.fdwname = 'postgres_fdw' "
        "LEFT JOIN pg_user_mappings um ON um.srvid = s.oid AND um.usename = current_user "
        "WHERE s.srvname LIKE %s ORDER BY s.srvname",
        (SERVER_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    out = []
    for server, options, um in rows:
        login = _options(um)
        out.append(Shard(shard_of_server(server), server, _options(options), login.get("user")))
    return out


def get_shard(conn: psycopg.Connection, name: str) -> Shard:
    for shard in list_shards(conn):
        if shard.name == name:
            return shard
    known = ", ".join(s.name for s in list_shards(conn)) or "none"
    raise ShardError(f"unknown shard {name} (shards: {known})")


def shard_conninfo(conn: psycopg.Connection, name: str) -> str:
    """libpq connection string of shard ``name`` for direct connections (loads, DDL), with its login.

    Read from the foreign server and the coordinator user's mapping, so the
    loader reaches the shard exactly where and as postgres_fdw does.
    """
    server = server_name(name)
    row = conn.execute(
        "SELECT s.srvoptions, um.umoptions FROM pg_foreign_server s "
        "LEFT JOIN pg_user_mappings um ON um.srvid = s.oid AND um.usename = current_user "
        "WHERE s.srvname = %s",
        (server,),
    ).fetchone()
    if row is None:
        raise ShardError(f"unknown shard {name}")
    params = {k: v for k, v in _options(row[0]).items() if k not in FDW_OPTIONS}
    params.update(_options(row[1]))
    return psycopg.conninfo.make_conninfo("", **params)


def connect_shard(info: str, name: str, **kwargs: object) -> psycopg.Connection:
    """A connection to shard ``name``; unreachable is a one-line ShardError naming it."""
    try:
        return psycopg.connect(info, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise ShardError(f"shard {name} is unreachable: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    text = first_line(e)
    m = re.search(r"failed: (.*)$", text)
    return m.group(1) if m else text


def add_shard(conn: psycopg.Connection, name: str, dsn: str) -> Shard:
    """Register shard ``name`` at ``dsn`` on the coordinator ``conn`` (committed by the caller).

    The shard must be reachable and have the q3c and pg_sphere extensions
    available (they are created in its database) and allow prepared
    transactions (each file's load commits on the coordinator and its shard
    together, with two-phase commit).
    """
    server = server_name(name)
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ShardError(f"shard {name}: invalid DSN ({first_line(e)})") from e
    if conn.execute("SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,)).fetchone():
        raise ShardError(f"shard {name} is already registered")
    _check_remote(name, dsn)
    login = {k: str(v) for k, v in params.items() if k in _LOGIN_OPTIONS}
    server_opts = {k: str(v) for k, v in params.items() if k not in _NOT_SERVER_OPTIONS}
    server_opts.update(
        {"extensions": ",".join(REQUIRED_EXTENSIONS), "async_capable": "true", "fetch_size": str(FETCH_SIZE)}
    )
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
    conn.execute(
        sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
            sql.Identifier(server), _option_list(server_opts)
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON SERVER {} IS {}").format(
            sql.Identifier(server), sql.Literal(f"dpdb shard {name}")
        )
    )
    # The coordinator's own user (loads, DDL) and, for user SQL run under the reader logins
    # (dpdb/readers.py), PUBLIC: who may read which table is decided by the coordinator's grants.
    for user in (sql.SQL("CURRENT_USER"), sql.SQL("PUBLIC")):
        conn.execute(
            sql.SQL("CREATE USER MAPPING FOR {} SERVER {}{}").format(
                user,
                sql.Identifier(server),
                sql.SQL(" OPTIONS ({})").format(_option_list(login)) if login else sql.SQL(""),
            )
        )
    # Aggregates and joins per partition: with foreign partitions, the partial aggregates run on
    # the shards and only their results cross the network (new sessions pick this up).
    for setting in ("enable_partitionwise_aggregate", "enable_partitionwise_join"):
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET {} = on").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(setting)
            )
        )
    return get_shard(conn, name)


def ensure_public_mappings(conn: psycopg.Connection) -> list[str]:
    """Give every shard registered before readers reached shards a PUBLIC user mapping; the shards fixed.

    User SQL runs under the reader logins (dpdb/readers.py); postgres_fdw looks
    up a mapping for the reader, or PUBLIC. Shards added before ``add_shard``
    created the PUBLIC mapping have only the owner's: readers could not read
    their partitions. The PUBLIC mapping carries the owner's login, like the
    ones ``add_shard`` makes.
    """
    fixed = []
    for server, options in conn.execute(
        "SELECT s.srvname, um.umoptions FROM pg_foreign_server s "
        "LEFT JOIN pg_user_mappings um ON um.srvid = s.oid AND um.usename = current_user "
        "WHERE s.srvname LIKE %s AND NOT EXISTS (SELECT 1 FROM pg_user_mappings p "
        "WHERE p.srvid = s.oid AND p.umuser = 0) ORDER BY 1",
        (SERVER_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall():
        login = {k: v for k, v in _options(options).items() if k in _LOGIN_OPTIONS}
        conn.execute(
            sql.SQL("CREATE USER MAPPING FOR PUBLIC SERVER {}{}").format(
                sql.Identifier(server),
                sql.SQL(" OPTIONS ({})").format(_option_list(login)) if login else sql.SQL(""),
            )
        )
        fixed.append(shard_of_server(server))
    return fixed


def _option_list(options: dict[str, str]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()
    )


def _check_remote(name: str, dsn: str) -> None:
    """The shard answers, has the extensions (created here) and allows prepared transactions."""
    with connect_shard(dsn, name, autocommit=True) as remote:
        missing = missing_extensions(remote)
        if missing:
            raise ShardError(f"shard {name}: extension(s) {', '.join(missing)} not installed on its server")
        for ext in REQUIRED_EXTENSIONS:
            remote.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
        prepared = int(fetch_value(remote, "SHOW max_prepared_transactions"))
        if prepared < 1:
            raise ShardError(
                f"shard {name}: max_prepared_transactions is 0 on its server; set it (e.g. 64) and restart "
                "it (loads commit on the coordinator and the shard together, with two-phase commit)"
            )


def releases_on(conn: psycopg.Connection, name: str) -> list[str]:
    """Schemas (releases) with foreign partitions on shard ``name``: the data it holds."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT n.nspname FROM pg_foreign_table ft "
            "JOIN pg_foreign_server s ON s.oid = ft.ftserver "
            "JOIN pg_class c ON c.oid = ft.ftrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE s.srvname = %s ORDER BY 1",
            (server_name(name),),
        )
    ]


def remove_shard(conn: psycopg.Connection, name: str) -> None:
    """Unregister shard ``name``; refused while a release has partitions on it."""
    get_shard(conn, name)
    held = releases_on(conn, name)
    if held:
        raise ShardError(
            f"shard {name} holds partitions of release(s) {', '.join(held)}; "
            "archive or drop them before removing it"
        )
    conn.execute(sql.SQL("DROP SERVER {} CASCADE").format(sql.Identifier(server_name(name))))


def set_port(conn: psycopg.Connection, name: str, port: int) -> None:
    """Point shard ``name``'s foreign server at ``port`` (an embedded shard that moved to a free port)."""
    conn.execute(
        sql.SQL("ALTER SERVER {} OPTIONS (SET port {})").format(
            sql.Identifier(server_name(name)), sql.Literal(str(port))
        )
    )
