"""Citing without the planner check (issue 21, dpdb/citations/relations.py): the tables a query names,
resolved by PostgreSQL, must cover every table the planner reads, and anything unsure goes to the
planner check with its own messages."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import psycopg
import pytest
from conftest import DemoRun, demo_copy

import dpdb
from dpdb.citations import CitationError, relations
from dpdb.citations._conn import owner_connection
from dpdb.config import Settings
from dpdb.server import EmbeddedServer

cite_module = importlib.import_module("dpdb.citations.cite")

QUERIES = [
    "SELECT diaSourceId, psfFlux FROM prompt.DiaSource WHERE diaObjectId > 0 ORDER BY diaSourceId",
    "SELECT objectId FROM current.Object WHERE q3c_radial_query(coord_ra, coord_dec, 150.27, 1.70, 0.05)",
    "WITH s AS (SELECT diaObjectId, count(*) AS n FROM DiaSource GROUP BY 1) "
    "SELECT o.diaObjectId, s.n FROM prompt.DiaObject o JOIN s USING (diaObjectId) "
    "WHERE o.validityEndMjdTai IS NULL",
    "SELECT diaObjectId FROM prompt.DiaObject UNION SELECT diaObjectId FROM prompt.DiaForcedSource",
    "SELECT (SELECT max(midpointMjdTai) FROM prompt.DiaSource) AS last, count(*) FROM samples.dr1_Object",
]


@pytest.fixture(scope="module")
def copied(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with demo_copy(demo_run, "citerel", tmp_path_factory.mktemp("citerel-archive")) as settings:
        yield settings


def _resolved(settings: Settings, text: str) -> list[tuple[str, str]] | None:
    named = relations.named_relations(text)
    assert named is not None, text
    path = relations.search_path(["prompt_as_of", "public"])
    with owner_connection(settings) as conn:
        rows = conn.execute(
            relations.RESOLVE_SQL,
            {"path": path, "schemas": [s for s, _ in named[0]], "names": [n for _, n in named[0]]},
        )
        return relations.resolved_tables(rows.fetchall(), named[1])


def test_the_names_resolved_cover_what_the_planner_reads(copied: Settings) -> None:
    archive = dpdb.Archive(settings=copied)
    for text in QUERIES:
        try:
            archive.query_arrow(text, as_of="now")
        except Exception as e:  # noqa: BLE001 - a query the demo cannot answer says so
            pytest.fail(f"{text}: {e}")
        quick = _resolved(copied, text)
        with owner_connection(copied) as conn:
            views = {r[0] for r in conn.execute(cite_module._VIEWS_SQL, ("prompt_as_of",))}
            planned = cite_module._tables_read(conn, text, 61000.0, None, views)
        assert quick is not None and set(planned) <= set(quick), (text, planned, quick)
        made = archive.citations.cite(text)
        assert made.citation.tables == [f"{s}.{t}" for s, t in quick], text


def test_what_only_the_planner_can_tell_goes_to_it() -> None:
    assert relations.named_relations("SELECT * FROM generate_series(1, 3) g") is None
    assert relations.named_relations("SELECT * FROM prompt.DiaSource s, LATERAL f(s.ra) x") is None
    assert relations.named_relations("SELECT * FROM db.prompt.DiaSource") is None
    assert relations.named_relations("SELECT 1; SELECT 2") is None
    assert relations.named_relations("SELEKT 1") is None
    tables, ctes = relations.named_relations('WITH c AS (SELECT 1) SELECT * FROM c, "Prompt".DiaSource')  # type: ignore[misc]
    assert tables == [(None, "c"), ("Prompt", "diasource")] and ctes == {"c"}


def test_views_of_system_catalogs_and_unknown_names_are_still_refused(copied: Settings) -> None:
    """Dependencies on system catalogs are not recorded in pg_depend: the view's own range table is
    read, so a view over pg_class is seen reading it."""
    with psycopg.connect(EmbeddedServer(copied.home).conninfo(copied.database), autocommit=True) as su:
        su.execute("CREATE VIEW public.cite_catalog_view AS SELECT relname FROM pg_class")
        su.execute("GRANT SELECT ON public.cite_catalog_view TO PUBLIC")
    archive = dpdb.Archive(settings=copied)
    assert _resolved(copied, "SELECT * FROM public.cite_catalog_view") == [("pg_catalog", "pg_class")]
    cases = [
        ("SELECT * FROM public.cite_catalog_view", "pg_catalog.pg_class"),
        ("SELECT table_name FROM information_schema.tables", "pg_catalog."),
        ("SELECT * FROM dpdb_meta.audit_log", "dpdb_meta.audit_log"),
        ("SELECT * FROM prompt.NoSuchTable", "query failed"),
    ]
    for text, message in cases:
        with pytest.raises((CitationError, dpdb.errors.QueryError), match=message.replace(".", r"\.")):
            archive.citations.cite(text)
