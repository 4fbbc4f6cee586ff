"""Schema migrations (Alembic underneath): ``dpdb db migrate [--to VERSION]``.

Each schema version ``N`` is one Alembic revision ``vN`` under migrations/versions;
schemas are append-only, so migrations only go forward.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from .config import Settings
from .db import conninfo, database_version, ensure_server
from .errors import SchemaError
from .schema import check_version, latest_version

__all__ = ["migrate", "install_sql", "revision_of"]

log = logging.getLogger(__name__)

VERSION_TABLE_SCHEMA = "dpdb_meta"


def revision_of(version: int) -> str:
    """Alembic revision id of schema ``version``."""
    return f"v{version}"


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
    started = datetime.now(UTC)
    ensure_server(settings)
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        before = database_version(conn)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {VERSION_TABLE_SCHEMA}")
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
            conn.execute(
                "INSERT INTO dpdb_meta.audit_log (at, who, action, arguments, outcome, duration_s) "
                "VALUES (now(), %s || '/' || current_user, 'db.migrate', %s, 'ok', "
                "extract(epoch FROM clock_timestamp() - %s))",
                (getpass.getuser(), json.dumps({"from": before, "to": target}), started),
            )
    return before, target


def install_sql(conn: psycopg.Connection) -> None:
    """(Re)install the SQL function definitions of sql/ (CREATE OR REPLACE, idempotent)."""
    for name in ("functions.sql",):
        text = (Path(str(resources.files("dpdb.sql"))) / name).read_text()
        conn.execute(text.encode())  # type: ignore[call-overload]
