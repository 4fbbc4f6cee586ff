"""Storage parameters of the prompt tables that each visit rewrites (docs/architecture.md, prompt).

A visit closes ~10,000 DiaObject versions (an UPDATE that leaves a dead row) and updates as many
running sums. With the default autovacuum thresholds (50 rows + 20 % of the table) the dead rows of a
multi-million-row partition pile up for a hundred visits and one late, long vacuum then competes with
the visits (benchmarks/README.md, bench_prompt). These parameters make autovacuum run small and
regular instead: a fixed threshold independent of the table's size, no cost-based sleeping, and free
room in the running sums' pages so that their updates can stay on the page (HOT).

They are storage parameters (``ALTER TABLE ... SET``), not part of the felis schema: ``apply`` sets
them on every prompt partition that lacks them, so databases made before (or copied from an older
template) get them too.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import errors, sql

log = logging.getLogger(__name__)

VACUUM_THRESHOLD = 100_000
"""Dead rows that start an autovacuum of a prompt partition (about ten visits' closed versions)."""

VERSIONED = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": str(VACUUM_THRESHOLD),
    "autovacuum_vacuum_insert_scale_factor": "0",
    "autovacuum_vacuum_insert_threshold": str(VACUUM_THRESHOLD),
    "autovacuum_analyze_scale_factor": "0",
    "autovacuum_analyze_threshold": str(4 * VACUUM_THRESHOLD),
    "autovacuum_vacuum_cost_delay": "0",
}
"""Storage parameters of the partitions of versioned prompt tables (they carry ``validityendmjdtai``)."""

SUMS = {**VERSIONED, "fillfactor": "80"}
"""Storage parameters of the running sums (updated in place every visit)."""

_TABLES = """
SELECT n.nspname, c.relname, coalesce(c.reloptions, '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'prompt' AND c.relkind = 'r'
  AND (c.relname LIKE 'diaobjectsums%%'
       OR (c.relispartition AND EXISTS (
             SELECT 1 FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attname = 'validityendmjdtai' AND NOT a.attisdropped)))
"""


def wanted(relname: str) -> dict[str, str]:
    """The storage parameters a prompt table ``relname`` should carry."""
    return SUMS if relname.startswith("diaobjectsums") else VERSIONED


def apply(conn: psycopg.Connection) -> int:
    """Set the parameters on every prompt table that lacks them; the number of tables altered."""
    altered = 0
    for schema, relname, options in conn.execute(_TABLES).fetchall():
        want = wanted(relname)
        if all(f"{k}={v}" in options for k, v in want.items()):
            continue
        params = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in want.items()
        )
        statement = sql.SQL("ALTER TABLE {}.{} SET ({})").format(
            sql.Identifier(schema), sql.Identifier(relname), params
        )
        try:
            conn.execute(statement)
        except errors.InsufficientPrivilege:  # an external server's tables owned by another role
            log.warning("cannot set the storage parameters of prompt.%s (not its owner)", relname)
            continue
        altered += 1
    return altered
