"""Schema migrations (Alembic underneath): ``dpdb db migrate [--to VERSION]``.

Each schema version ``N`` is one Alembic revision ``vN`` under migrations/versions;
schemas are append-only, so migrations only go forward.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from dpdb.model.felis import check_version, latest_version

from .config import Settings
from .errors import SchemaError
from .pg import conninfo, ensure_server
from .registry import META_NAMESPACE, audit
from .registry.catalogs import find_catalog
from .registry.leap_seconds import store_leap_seconds
from .registry.versions import database_version

__all__ = ["migrate", "install_sql", "revision_of", "revision_connection"]

log = logging.getLogger(__name__)


def revision_of(version: int) -> str:
    """Alembic revision id of schema ``version``."""
    return f"v{version}"


def revision_connection() -> psycopg.Connection:
    """The psycopg connection a revision (migrations/versions) runs on, inside its transaction."""
    from alembic import op

    conn = op.get_bind().connection.dbapi_connection
    if not isinstance(conn, psycopg.Connection):
        raise SchemaError(f"migrations run on a psycopg connection, not {type(conn).__name__}")
    return conn


def _alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("dpdb.migrations")))
    cfg.attributes["partition_order"] = settings.partition_order
    return cfg


def _engine(settings: Settings) -> Engine:
    info = conninfo(settings)
    return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(info), poolclass=NullPool)


def migrate(settings: Settings, to: int | None = None) -> tuple[int | None, int]:
    """Upgrade the database to schema ``to`` (default: newest); return (before, after).

    Refuses unknown versions and downgrades (schemas are append-only). On an
    empty database this creates everything (that is how ``dpdb db up`` bootstraps).
    """
    target = check_version(to if to is not None else latest_version())
    started = time.monotonic()
    ensure_server(settings)
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        before = database_version(conn)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {META_NAMESPACE}")  # Alembic's version table lives there
    if before is not None and target < before:
        raise SchemaError(
            f"cannot migrate down from schema version {before} to {target} (schemas are append-only)"
        )
    if before != target:
        log.info("migrating schema %s -> %d", before, target)
        cfg = _alembic_config(settings)
        with _engine(settings).begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision_of(target))
    with psycopg.connect(conninfo(settings)) as conn:
        install_sql(conn)
        if before != target:
            audit.record(conn, "db.migrate", {"from": before, "to": target}, "ok", time.monotonic() - started)
    return before, target


TIME_TRAVEL_SINCE = 4
"""Schema version from which the prompt tables carry every visibility time that sql/as_of.sql reads."""


def install_sql(conn: psycopg.Connection) -> None:
    """(Re)install the SQL of sql/ (functions, as-of views, roles, grants) and reference data; idempotent."""
    files = ["functions.sql"]
    version = database_version(conn)
    if version is not None and version >= TIME_TRAVEL_SINCE:
        store_leap_seconds(conn)
        if find_catalog(conn, "prompt") is not None:
            files += ["as_of.sql", "cones.sql"]
    files.append("access.sql")  # last: it grants on what the others create
    for name in files:
        text = (Path(str(resources.files("dpdb.sql"))) / name).read_text()
        conn.execute(text.encode())  # a file of statements: as bytes, psycopg sends it as one script
