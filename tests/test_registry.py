"""The registry: the one owner of dpdb_meta, its enums, the transition table and the CHECK constraints."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import psycopg
import pytest

from dpdb.config import Settings
from dpdb.errors import ReleaseStateError
from dpdb.model.felis import META_FELIS, latest_version, load_felis
from dpdb.registry.activations import resolve_alias
from dpdb.registry.catalogs import find_catalog
from dpdb.registry.releases import NOW, create_release, get_release, owner_of_id, set_state
from dpdb.registry.states import (
    ACTIVATABLE,
    FORCE_ACTIVATABLE,
    FORCED,
    TRANSITIONS,
    VALIDATABLE,
    WRITABLE,
    CatalogKind,
    ReleaseState,
    check_transition,
)

ROOT = Path(__file__).resolve().parents[1]
S = ReleaseState


def _check_values(table: str, column: str) -> set[str]:
    """The values a felis CHECK constraint ``column IN (...)`` of ``dpdb_meta.<table>`` allows."""
    ftable = next(t for t in load_felis(latest_version(), META_FELIS).tables if t.name == table)
    for c in ftable.constraints:
        expression = getattr(c, "expression", "")
        m = re.fullmatch(rf"\s*{column}\s+IN\s*\((.*)\)\s*", " ".join(expression.split()))
        if m:
            return {v.strip().strip("'") for v in m.group(1).split(",")}
    raise AssertionError(f"no CHECK constraint on {table}.{column}")


def test_check_constraints_hold_the_enums() -> None:
    assert _check_values("release", "state") == {s.value for s in ReleaseState}
    assert _check_values("catalog", "kind") == {k.value for k in CatalogKind}


def test_transition_table_is_complete_and_derived_sets_follow() -> None:
    assert set(TRANSITIONS) == set(ReleaseState)
    assert TRANSITIONS[S.DROPPED] == frozenset()
    assert all(S.DROPPED not in TRANSITIONS[s] for s in (S.ACTIVE, S.DROPPED))
    assert WRITABLE == (S.CREATED, S.LOADED, S.FAILED, S.RESTORING)
    assert VALIDATABLE == (S.LOADED, S.VALIDATED, S.FAILED)
    assert ACTIVATABLE == (S.VALIDATED, S.SUPERSEDED)
    assert FORCE_ACTIVATABLE == (S.LOADED, S.FAILED)
    assert all(new in TRANSITIONS[old] for old, new in FORCED)


@pytest.mark.parametrize(
    ("old", "new", "force", "ok"),
    [
        (S.CREATED, S.LOADED, False, True),
        (S.CREATED, S.ACTIVE, True, False),
        (S.LOADED, S.ACTIVE, False, False),
        (S.LOADED, S.ACTIVE, True, True),
        (S.VALIDATED, S.LOADED, False, False),  # validated releases are frozen
        (S.ACTIVE, S.DROPPED, True, False),
        (S.SUPERSEDED, S.ARCHIVED, False, True),
        (S.ARCHIVED, S.LOADED, False, False),  # restoring comes first
        (S.DROPPED, S.RESTORING, True, False),
    ],
)
def test_check_transition(old: ReleaseState, new: ReleaseState, force: bool, ok: bool) -> None:
    if ok:
        check_transition("dr9", old, new, force=force)
    else:
        with pytest.raises(ReleaseStateError, match=f"release dr9 is {old}"):
            check_transition("dr9", old, new, force=force)


def test_set_state_enforces_the_table_in_the_database(conn: psycopg.Connection) -> None:
    create_release(conn, "dr7", latest_version(), 0)
    with pytest.raises(ReleaseStateError, match="release dr7 is created; it cannot become active"):
        set_state(conn, "dr7", ReleaseState.ACTIVE, activated_at=NOW)
    set_state(conn, "dr7", ReleaseState.LOADED, loaded_at=NOW)
    rel = get_release(conn, "dr7")
    assert rel.state is ReleaseState.LOADED and rel.loaded_at is not None
    with pytest.raises(ValueError, match="not release registry columns: bogus"):
        set_state(conn, "dr7", ReleaseState.LOADED, bogus=1)


def test_database_refuses_unknown_states_and_kinds(conn: psycopg.Connection) -> None:
    create_release(conn, "dr8", latest_version(), 0)
    conn.commit()
    with pytest.raises(psycopg.errors.CheckViolation, match="release_state_check"):
        conn.execute("UPDATE dpdb_meta.release SET state = 'frozen' WHERE name = 'dr8'")
    conn.rollback()
    with pytest.raises(psycopg.errors.CheckViolation, match="catalog_kind_check"):
        conn.execute("UPDATE dpdb_meta.catalog SET kind = 'archive' WHERE name = 'dr8'")
    conn.rollback()


def test_owner_of_id_and_aliases(conn: psycopg.Connection) -> None:
    prompt = owner_of_id(conn, (1 << 58) + 5)
    assert prompt.kind is CatalogKind.PROMPT and prompt.catalog == find_catalog(conn, "prompt")
    create_release(conn, "dr3", latest_version(), 0)
    rel = owner_of_id(conn, (4 << 58) + 5)
    assert rel.kind is CatalogKind.RELEASE and rel.release is not None and rel.release.name == "dr3"
    assert owner_of_id(conn, (5 << 58) + 5).release is None  # dr4's origin: no such release
    assert owner_of_id(conn, 5).kind is None  # origin 0 is no dpdb origin
    with pytest.raises(ReleaseStateError, match="no release is current"):
        resolve_alias(conn, "current")
    with pytest.raises(ReleaseStateError, match="no release was previous at MJD 60000"):
        resolve_alias(conn, "previous", 60000.0)


_SQL_ON_META = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+dpdb_meta\.", re.IGNORECASE)
_EXAMPLES = {"dpdb/demo/report.py"}  # an example query the demo report shows users, not bookkeeping


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_only_the_registry_runs_sql_on_dpdb_meta() -> None:
    """Every SQL statement on the bookkeeping tables is in dpdb/registry (its one owner)."""
    offenders = []
    for folder in ("dpdb", "etl", "processing"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel.startswith("dpdb/registry/") or rel in _EXAMPLES:
                continue
            if any(_SQL_ON_META.search(s) for s in _string_constants(path)):
                offenders.append(rel)
    assert offenders == []


def test_migrated_database_is_at_the_newest_version(settings: Settings) -> None:
    from dpdb.db import connect
    from dpdb.registry.versions import applied_by

    with connect(settings) as c:
        version, code = applied_by(c)
    assert version == latest_version() and code


def test_the_latest_change_is_read_through_indexes(conn: psycopg.Connection) -> None:
    """Every as-of query reads the latest change; with a year of visits in the log a scan costs ~16 ms
    (benchmarks/README.md), the indexes of schema v10 make it one probe per table."""
    from dpdb.registry.prompt_log import LATEST_TIME_SQL

    conn.execute(
        "INSERT INTO dpdb_meta.prompt_visit (visit, processing_time_mjd_tai, midpoint_mjd_tai, ingested_at, "
        "n_diasources, n_ss_attributed, n_associated, n_new_diaobjects, n_forced, n_forced_unlinked, "
        "seconds) SELECT g, 61000 + g * 1e-4, 61000 + g * 1e-4, now(), 0, 0, 0, 0, 0, 0, 0 "
        "FROM generate_series(1, 20000) g"
    )
    conn.execute("ANALYZE dpdb_meta.prompt_visit")
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) {LATEST_TIME_SQL}"))
    indexes = ["prompt_visit_processing_time", "prompt_relink_processing_time"]
    indexes.append("release_activation_activated")
    for index in indexes:
        assert f"Index Only Scan Backward using {index}" in plan, plan
    assert conn.execute(LATEST_TIME_SQL).fetchone() == (61002.0,)
