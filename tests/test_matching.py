"""The association matching (sql/prompt_ingest.sql, match_round) on random inputs (hypothesis).

Guarantees (DPDD footnote 23): each DiaSource gets at most one DiaObject, each
DiaObject at most one DiaSource of the visit, and conflicts go to the closest
pair, ties broken by ID. The SQL must give exactly the matching of the plain
greedy algorithm: take the closest remaining pair, drop both ends, repeat.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpdb.config import Settings
from dpdb.named_sql import named_blocks, statements
from dpdb.pg import conninfo

pairs = st.lists(
    st.tuples(
        st.integers(1, 12),  # DiaSource
        st.integers(1, 12),  # DiaObject
        st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.8, 1.0]),  # few distances: many ties
    ),
    max_size=60,
    unique_by=lambda p: (p[0], p[1]),
)


def greedy(candidates: list[tuple[int, int, float]]) -> set[tuple[int, int]]:
    taken_a: set[int] = set()
    taken_b: set[int] = set()
    out = set()
    for a, b, _ in sorted(candidates, key=lambda p: (p[2], p[0], p[1])):
        if a not in taken_a and b not in taken_b:
            out.add((a, b))
            taken_a.add(a)
            taken_b.add(b)
    return out


@pytest.fixture(scope="module")
def match_conn(pg_home, template_db) -> Iterator[psycopg.Connection]:  # noqa: ANN001
    from conftest import drop_database, new_database

    name = new_database(pg_home, template_db)
    with psycopg.connect(conninfo(Settings(home=pg_home, database=name)), autocommit=True) as conn:
        for stmt in statements(named_blocks("prompt_ingest.sql")["match_tables"]):
            conn.execute(stmt.replace("ON COMMIT DROP", ""))
        yield conn
    drop_database(pg_home, name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(candidates=pairs)
def test_sql_matching_is_the_greedy_matching(match_conn: psycopg.Connection, candidates: list) -> None:
    conn = match_conn
    conn.execute("TRUNCATE cand, matched")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO cand (a, b, d) VALUES (%s, %s, %s)", candidates)
    round_sql = statements(named_blocks("prompt_ingest.sql")["match_round"])[0]
    while conn.execute(round_sql).rowcount:
        pass
    got = {(a, b) for a, b in conn.execute("SELECT a, b FROM matched")}
    assert got == greedy(candidates)
    assert len({a for a, _ in got}) == len(got) == len({b for _, b in got})
