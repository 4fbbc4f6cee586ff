"""The prompt tables' autovacuum storage parameters (dpdb/storage.py): set by ``prepare``, also on a
database made without them, and left alone once set."""

from __future__ import annotations

import psycopg

from dpdb import storage
from dpdb.config import Settings
from dpdb.db import _prepared, _prepared_key, prepare
from dpdb.pg import conninfo

OPTIONS = """
SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'prompt' AND c.relkind = 'r'
  AND (c.relname LIKE 'diaobject%' OR c.relname LIKE 'diasource%')
"""


def _options(settings: Settings) -> dict[str, list[str]]:
    with psycopg.connect(conninfo(settings)) as conn:
        return dict(conn.execute(OPTIONS).fetchall())


def test_prepare_sets_the_prompt_tables_storage_parameters(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:  # as a database made before
        for name in _options(settings):
            conn.execute(f"ALTER TABLE prompt.{name} RESET (autovacuum_vacuum_scale_factor)")
    _prepared.discard(_prepared_key(settings))
    prepare(settings)
    options = _options(settings)
    partitions = [n for n in options if n.startswith("diaobject_hpx")]
    assert len(partitions) == 12, options.keys()
    for name in partitions:
        assert "autovacuum_vacuum_scale_factor=0" in options[name], name
        assert f"autovacuum_vacuum_threshold={storage.VACUUM_THRESHOLD}" in options[name], name
        assert "fillfactor=80" not in options[name], name
    assert "fillfactor=80" in options["diaobjectsums"]
    assert "autovacuum_vacuum_cost_delay=0" in options["diaobjectsums"]
    assert not any(o for n, o in options.items() if n.startswith("diasource_hpx")), (
        "DiaSource is not versioned"
    )
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        assert storage.apply(conn) == 0  # already set: nothing to do
