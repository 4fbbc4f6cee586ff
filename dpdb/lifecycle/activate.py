"""``dpdb release activate`` and ``dpdb release retain``: the atomic swap and the retention policy.

Activation repoints schemas ``current`` (views on the new release) and
``previous`` (views on the release it replaces) in one transaction. It first
takes ACCESS EXCLUSIVE locks on the old views, so a query that has already
started finishes on the old pair and a query that starts meanwhile waits and
then reads the new pair: readers see one pair or the other, never a mix, never
an error. A reader that holds one old view while the swap waits on it could
form a lock cycle; the swap sets a short ``deadlock_timeout`` so it is the one
that gives way, and retries. The swap's cost is a few catalog rows per table:
independent of the release's size.

Retention (DPDD §4.5) then keeps ``releases_loaded`` releases loaded: the
active one and those activated most recently before it; older ones are
archived (dpdb/lifecycle/archive.py) after their sample is taken.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import psycopg
from astropy.time import Time
from psycopg import errors, sql

from dpdb.access import revoke_loader
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ReleaseStateError, ValidationError
from dpdb.model.layout import LOAD_ID_COLUMN
from dpdb.pg import fetch_value
from dpdb.registry.activations import (
    activation_floor,
    active_release,
    by_last_activation,
    previous_release,
    record_activation,
)
from dpdb.registry.prompt_log import WRITER_LOCK
from dpdb.registry.releases import get_release, lock_lifecycle, set_state
from dpdb.registry.states import ACTIVATABLE, FORCE_ACTIVATABLE, ReleaseState
from dpdb.tap.tap_schema import refresh_tap_schema
from dpdb.timeutil import iso_utc

from .archive import archive_release
from .samples import has_sample, make_sample

__all__ = ["Activation", "activate_release", "retention_plan", "retain"]

log = logging.getLogger(__name__)

SWAP_ATTEMPTS = 50


@dataclass
class Activation:
    name: str
    previous: str | None
    swapped: bool  # False: it was already active
    swap_seconds: float = 0.0  # the swap transaction
    lock_seconds: float = 0.0  # of which readers waited: view locks taken to commit
    attempts: int = 0
    sample_rows: dict[str, int] = field(default_factory=dict)
    archived: list[str] = field(default_factory=list)


def activate_release(
    settings: Settings, name: str, *, force: bool = False, dry_run: bool = False, at: float | None = None
) -> Activation:
    """Make ``name`` current (and the active release previous), then apply retention.

    The activation's instant is now, or ``at`` (MJD TAI, not in the future) to replay a survey's
    history; either must be later than every change committed so far and every cited instant
    (one timeline for activations and prompt writes, docs/architecture.md, decision 14).
    """
    with connect(settings) as conn:
        rel = get_release(conn, name)
        active = active_release(conn)
        allowed = ACTIVATABLE + (FORCE_ACTIVATABLE if force else ())
        if rel.state != ReleaseState.ACTIVE and rel.state not in allowed:
            hint = " (validate it first, or --force)" if rel.state in FORCE_ACTIVATABLE else ""
            raise ReleaseStateError(f"release {name} is {rel.state}; cannot activate it{hint}")
        result = Activation(
            name,
            active if rel.state != ReleaseState.ACTIVE else previous_release(conn),
            rel.state != ReleaseState.ACTIVE,
        )
    if dry_run:
        result.archived = retention_plan(settings, after=name)
        return result
    if result.swapped:
        result.attempts, result.swap_seconds, result.lock_seconds = _swap_with_retries(
            settings, name, force, at
        )
    with connect(settings) as conn:
        if not has_sample(conn, name):  # the release is frozen: an existing sample stays right
            result.sample_rows = make_sample(conn, settings, name)
    result.archived = retain(settings)
    return result


def _swap_with_retries(
    settings: Settings, name: str, force: bool, at: float | None
) -> tuple[int, float, float]:
    """Run the swap transaction until it goes through; return (attempts, seconds, seconds under lock)."""
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            with connect(settings) as conn:
                start = time.perf_counter()
                locked = _swap(conn, name, force, at)
                conn.commit()
                end = time.perf_counter()
                return attempt, end - start, end - (locked or end)
        except (errors.DeadlockDetected, errors.LockNotAvailable) as e:
            log.info("swap attempt %d gave way to readers (%s); retrying", attempt, type(e).__name__)
            time.sleep(0.01 * attempt)
    raise ReleaseStateError(f"release {name}: could not take the view locks in {SWAP_ATTEMPTS} attempts")


def _swap(conn: psycopg.Connection, name: str, force: bool, at: float | None) -> float | None:
    """Repoint current and previous in this transaction; record the activation.

    Everything that can be prepared is, before the view locks are taken, so
    readers wait only for a few catalog updates. Returns when the locks were
    taken (``time.perf_counter``), None if there was nothing to swap.
    """
    lock_lifecycle(conn)
    rel = get_release(conn, name)  # re-read under the lock
    if rel.state == ReleaseState.ACTIVE:
        return None
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if superuser and superuser[0]:
        conn.execute("SET LOCAL deadlock_timeout = '20ms'")  # the swap, not a reader, gives way
    old = active_release(conn)
    instant = _instant(conn, name, at)
    creates = _view_statements(conn, "current", name) + (
        _view_statements(conn, "previous", old) if old else []
    )
    if rel.state not in ACTIVATABLE:
        revoke_loader(conn, name)  # forced: frozen now (validation froze the others)
    when = record_activation(conn, name, old, instant, forced=rel.state not in ACTIVATABLE and force)
    if old is not None:
        set_state(conn, old, ReleaseState.SUPERSEDED, superseded_at=when)
    set_state(conn, name, ReleaseState.ACTIVE, force=force, activated_at=when)
    # Same transaction, before the view locks: TAP_SCHEMA describes the new pair from the commit on
    # (it is built from felis and the registry, already updated above), and readers do not wait for it.
    refresh_tap_schema(conn)
    # Readers wait from here to the commit: only catalog changes, whatever the release's size.
    locked = time.perf_counter()
    views = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('current', 'previous') AND c.relkind = 'v' ORDER BY 1, 2"
    ).fetchall()
    if views:
        names = sql.SQL(", ").join(sql.Identifier(s, v) for s, v in views)
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names))
        conn.execute(sql.SQL("DROP VIEW {}").format(names))
    for statement in creates:
        conn.execute(statement)
    conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA current, previous TO dpdb_reader")
    return locked


def _instant(conn: psycopg.Connection, name: str, at: float | None) -> float:
    """The activation's MJD TAI: ``at`` or the transaction's now, later than every change and citation.

    Takes the prompt writers' lock: no visit, relink or citation commits between this check and
    the activation's commit.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (WRITER_LOCK,))
    # the clock once the lock is held: later than any citation stored before (its instant is in its past)
    now = float(Time(fetch_value(conn, "SELECT clock_timestamp()")).tai.mjd)
    if at is not None and at > now:
        raise ValidationError(
            f"release {name}: activation instant {iso_utc(at)} UTC is in the future; give a past instant "
            "or none (now)"
        )
    instant = now if at is None else at
    latest, cited = activation_floor(conn)
    floors = (
        (latest, "the latest change already committed (a visit, a daytime relink or a release activation)"),
        (cited, "an instant a citation is pinned to (its result must not change)"),
    )
    for floor, what in floors:
        if floor is not None and instant <= floor:
            raise ValidationError(
                f"release {name}: activation instant {iso_utc(instant)} UTC is not later than "
                f"{iso_utc(floor)} UTC, {what}; time only moves forward"
            )
    return instant


def _view_statements(
    conn: psycopg.Connection, schema: str, release: str, missing: bool = False
) -> list[sql.Composed]:
    """CREATE VIEW of ``schema``.<table> on each table of ``release`` (all columns but ``_load_id``;
    the pixel stays so that the planner can prune partitions through the view), also on the
    per-shard foreign tables of a sharded release (dpdb/shards/placement.py). ``missing``: only
    where ``schema`` has no such view yet."""
    tables = conn.execute(
        "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> %s "
        "AND NOT (%s AND to_regclass(quote_ident(%s) || '.' || quote_ident(c.relname)) IS NOT NULL) "
        "GROUP BY c.relname ORDER BY 1",
        (release, LOAD_ID_COLUMN, missing, schema),
    ).fetchall()
    return [
        sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(
            sql.Identifier(schema, table),
            sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.Identifier(release, table),
        )  # fmt: skip
        for table, cols in tables
    ]


def add_missing_views(conn: psycopg.Connection) -> int:
    """Views of ``current``/``previous`` on tables their release gained since its activation
    (the per-shard foreign tables of a release sharded before they existed); how many were made."""
    made = 0
    for schema, release in (("current", active_release(conn)), ("previous", previous_release(conn))):
        if release is None:
            continue
        for statement in _view_statements(conn, schema, release, missing=True):
            conn.execute(statement)
            made += 1
    if made:
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA current, previous TO dpdb_reader")
    return made


def retention_plan(settings: Settings, after: str | None = None) -> list[str]:
    """Releases retention would archive now (or once ``after`` is activated), oldest last-activation first."""
    with connect(settings) as conn:
        loaded = by_last_activation(conn)
        protected = {previous_release(conn)} if after is None else {active_release(conn)}
    if after is not None:
        loaded = [after] + [n for n in loaded if n != after]
    keep = set(loaded[: settings.releases_loaded]) | protected
    return [n for n in reversed(loaded) if n not in keep]


def retain(settings: Settings, *, dry_run: bool = False) -> list[str]:
    """Archive every loaded release beyond ``releases_loaded``; return their names."""
    plan = retention_plan(settings)
    if not dry_run:
        for name in plan:
            archive_release(settings, name)
    return plan
