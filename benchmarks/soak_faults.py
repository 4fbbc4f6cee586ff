"""Fault soak: random kill -9 during load / prompt visit / activate / archive / restore, then a rerun.

Each round clones a prepared database (the state just before the operation), runs the operation
through the real ``dpdb`` executable, kills either the command or the PostgreSQL postmaster with
SIGKILL at a random moment, brings the server back (``dpdb db up``), reruns the operation to the
end and checks the invariants against a fault-free run of the same operation:

- row counts and checksums of every prompt and release table equal the fault-free run's;
- no duplicate keys in any table;
- the release registry is consistent (same states as the fault-free run, exactly one active
  release, a schema for every loaded release and none for archived ones, archives that verify);
- the load manifest accounts for every row;
- a command whose server was killed ends with one ``error:`` line, never a traceback.

Usage::

    python benchmarks/soak_faults.py [--rounds 50] [--seed 1] [--ops load,visit,activate,archive,restore]
                                     [--small] [--keep] [--work DIR] [--first N]

Prints one line per round and a summary (rounds, faults injected, invariant violations; target 0).
Exit status 1 if any invariant was violated. Not part of the test suite; tests/test_soak.py runs a
bounded version.

A long soak can run in parts (each short enough to hold the benchmark lock): ``--work DIR --keep``
keeps the prepared templates and fault-free references, and a later run with the same ``--work``,
``--seed`` and ``--ops`` and ``--first N`` reuses them and runs rounds N, N+1, ... of the same
sequence; the summary then also counts every round recorded in ``DIR/rounds.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from dpdb.archive import Archive
from dpdb.config import Settings
from dpdb.etl import release_dir
from dpdb.etl.export import select_sql
from dpdb.etl.validate import target_table
from dpdb.model.felis import latest_version
from dpdb.model.layout import PROMPT_TABLES, RELEASE_TABLES
from dpdb.pg import close_idle_adbc, conninfo
from dpdb.processing.release import produce
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.processing.synthetic import synthetic_table
from dpdb.server import EmbeddedServer

DPDB = str(Path(sys.executable).with_name("dpdb"))
OPS = ("load", "visit", "activate", "archive", "restore")
T0 = 61000.9  # processing time of the first visit (MJD TAI): visits are reproducible


@dataclass
class Sizes:
    load_rows: int
    survey: SurveyConfig
    nights: int
    objects: dict[str, int]

    @staticmethod
    def of(small: bool) -> Sizes:
        if small:
            return Sizes(
                10_000, SurveyConfig(seed=3, visits_per_night=2, sources_per_visit=100, area_deg2=8.0), 1,
                {"dr1": 150, "dr2": 180, "dr3": 200},
            )  # fmt: skip
        return Sizes(
            120_000, SurveyConfig(seed=3, visits_per_night=4, sources_per_visit=300, area_deg2=12.0), 2,
            {"dr1": 1500, "dr2": 1800, "dr3": 2100},
        )  # fmt: skip


@dataclass
class Round:
    number: int
    op: str
    target: str  # "command" or "postmaster"
    delay: float
    injected: bool = False
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds of each step of the round


class Soak:
    def __init__(self, work: Path, sizes: Sizes, ops: list[str]) -> None:
        self.work = work
        self.home = work / "home"
        self.sizes = sizes
        self.ops = ops
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
        self.env.update(DPDB_HOME=str(self.home), DPDB_PARTITION_ORDER="0")
        self.server = EmbeddedServer(self.home)
        self.durations: dict[str, float] = {}
        self.keep_violations = False  # keep a round's database when it violated an invariant (--keep)
        self.reference: dict[str, dict[str, object]] = {}

    # -- helpers ---------------------------------------------------------------------------
    def settings(self, database: str, archive: Path | None = None) -> Settings:
        return Settings(home=self.home, database=database, partition_order=0, archive_dir=archive)

    def cli(
        self, database: str, archive: Path, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "DPDB_DATABASE": database, "DPDB_ARCHIVE_DIR": str(archive)}
        proc = subprocess.run([DPDB, *args], env=env, capture_output=True, text=True, timeout=900)
        if check and proc.returncode != 0:
            raise RuntimeError(f"dpdb {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server.conninfo("postgres"), autocommit=True)

    def clone(self, template: str, name: str) -> None:
        close_idle_adbc()  # this process's pooled connections would block the copy
        with self.admin() as conn:
            # and so would the connections the API keeps for reuse (citations, snapshots): the
            # source is this soak's own template, so its sessions are ended (a kept connection
            # found ended is replaced, dpdb/pooling.py)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                (template,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            copy_database(conn, template, name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def archive_dir(self, name: str) -> Path:
        path = self.work / "archives" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # -- preparation: inputs, one template database per operation, fault-free references ----
    def prepare(self) -> None:
        started = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.cli("dpdb", self.work, "db", "up")
        saved = self.work / "prepared.json"
        if saved.exists():
            state = json.loads(saved.read_text())
            if state["ops"] == self.ops and state["sizes"] == repr(self.sizes):
                self.durations, self.reference = state["durations"], state["reference"]
                print(f"reusing the templates and references prepared in {self.work}", flush=True)
                return
            raise SystemExit(f"{saved} was prepared for other --ops or sizes; use another --work")
        inputs = self.work / "inputs"
        inputs.mkdir(exist_ok=True)
        import pyarrow.parquet as pq

        if "load" in self.ops:
            pq.write_table(
                synthetic_table("DiaSource", 200, seed=31, first_id=5_000_000), inputs / "a_small.parquet"
            )
            big = synthetic_table("DiaSource", self.sizes.load_rows, seed=32)
            pq.write_table(big, inputs / "big.parquet", row_group_size=10_000)
        if "visit" in self.ops:
            simulate(inputs / "survey", self.sizes.nights, self.sizes.survey)
        releases = {
            "activate": ["dr1", "dr2"],
            "archive": ["dr1", "dr2", "dr3"],
            "restore": ["dr1", "dr2", "dr3"],
        }
        needed = sorted({r for op in self.ops for r in releases.get(op, [])})
        for number, name in enumerate(needed, start=1):
            produce(inputs / name, name, seed=number, objects=self.sizes.objects[name], nights=1)

        # templates are prepared through the public API (faster than one executable per step); the
        # release states build on each other, so one staging database goes through them in order
        base = "soak_base"
        self.drop(base)
        Archive(settings=self.settings(base)).up()
        stage = "soak_stage"
        self.clone(base, stage)
        api = Archive(settings=self.settings(stage, self.archive_dir(stage)))
        steps = {
            "activate": (["dr1", "dr2"], ["dr1"]),  # (releases to make ready, then to activate)
            "archive": (["dr3"], ["dr2"]),
            "restore": ([], ["dr3"]),  # the activation of dr3 retires dr1 into the archive
        }
        last = max((list(steps).index(op) for op in self.ops if op in steps), default=-1)
        for op in list(steps)[: last + 1]:
            ready, activate = steps[op]
            for name in ready:
                api.releases.create(name)
                api.releases.load(name, inputs / name)
                assert api.releases.validate(name).ok, f"{name} does not validate"
            for name in activate:
                api.releases.activate(name)
            if op in self.ops:
                self.clone(stage, f"tpl_{op}")
        for op in self.ops:
            tpl = f"tpl_{op}"
            if op not in steps:
                self.clone(base, tpl)
            with self.admin() as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} WITH is_template true").format(sql.Identifier(tpl)))
            # the fault-free run
            ref = f"ref_{op}"
            self.clone(tpl, ref)
            archive = self.archive_dir(ref)
            t = time.monotonic()
            self.cli(ref, archive, *self.command(op))
            self.durations[op] = time.monotonic() - t
            self.reference[op] = _plain(self.digest(ref, archive))
            self.drop(ref)
        state = {"ops": self.ops, "sizes": repr(self.sizes), "durations": self.durations,
                 "reference": self.reference}  # fmt: skip
        saved.write_text(json.dumps(state))
        print(f"prepared in {time.monotonic() - started:.0f} s; fault-free durations: "
              + ", ".join(f"{op} {d:.1f} s" for op, d in self.durations.items()), flush=True)  # fmt: skip

    def command(self, op: str) -> list[str]:
        inputs = self.work / "inputs"
        return {
            "load": ["load", "DiaSource", str(inputs / "a_small.parquet"), str(inputs / "big.parquet")],
            "visit": ["prompt", "ingest", str(inputs / "survey"), "--processing-time", str(T0)],
            "activate": ["release", "activate", "dr2"],
            "archive": ["release", "activate", "dr3"],  # the swap, then the retirement of dr1 to Parquet
            "restore": ["release", "restore", "dr1"],
        }[op]

    def finish(self, op: str, database: str, archive: Path) -> None:
        """Bring the operation to its end after a fault: the rerun an operator would do."""
        if op in ("load", "visit"):
            self.cli(database, archive, *self.command(op))
            return
        if op in ("activate", "archive"):
            name = "dr2" if op == "activate" else "dr3"
            if self.state(database, name) != "active":
                self.cli(database, archive, "release", "activate", name)
            self.cli(database, archive, "release", "retain")
            return
        if self.state(database, "dr1") in ("archived", "restoring"):
            self.cli(database, archive, "release", "restore", "dr1")

    def state(self, database: str, name: str) -> str | None:
        with psycopg.connect(conninfo(self.settings(database))) as conn:
            row = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s", (name,)).fetchone()
        return row[0] if row else None

    # -- invariants ------------------------------------------------------------------------
    def digest(self, database: str, archive: Path) -> dict[str, object]:
        """Everything the invariants compare: table contents, registry states, key and manifest checks."""
        out: dict[str, object] = {}
        version = latest_version()
        with psycopg.connect(conninfo(self.settings(database))) as conn:
            releases = conn.execute("SELECT name, state FROM dpdb_meta.release ORDER BY name").fetchall()
            out["registry"] = releases
            catalogs = [("prompt", "prompt", t) for t in PROMPT_TABLES]
            for name, _state in releases:
                if conn.execute("SELECT to_regnamespace(%s)", (name,)).fetchone()[0] is not None:
                    catalogs += [(name, "release", t) for t in RELEASE_TABLES]
            for schema, kind, table in catalogs:
                target = target_table(schema, version, kind, table)
                inner = select_sql(target).as_string(conn)
                keys = ", ".join(f't."{k}"' for k in target.primary_key)
                rows, distinct, checksum = conn.execute(
                    f"SELECT count(*), count(DISTINCT ({keys})), md5(coalesce(string_agg(t::text, '|'), '')) "
                    f"FROM ({inner}) t"
                ).fetchone()  # type: ignore[misc]
                out[f"{schema}.{table}"] = (rows, checksum)
                out[f"duplicates {schema}.{table}"] = rows - distinct
            # files and rows of the load manifest per target table (paths: the same inputs every round)
            out["manifest"] = conn.execute(
                "SELECT target, table_name, count(*), sum(row_count) FROM dpdb_meta.load_manifest "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            out["visits"] = conn.execute("SELECT count(*) FROM dpdb_meta.prompt_visit").fetchone()[0]  # type: ignore[index]
            out["active"] = conn.execute(
                "SELECT count(*) FROM dpdb_meta.release WHERE state = 'active'"
            ).fetchone()[0]  # type: ignore[index]
            schema_issues = []
            for name, state in releases:
                has_schema = conn.execute("SELECT to_regnamespace(%s)", (name,)).fetchone()[0] is not None
                if state in ("archived", "dropped") and has_schema:
                    schema_issues.append(f"{name} is {state} but its schema exists")
                if state not in ("archived", "dropped", "restoring") and not has_schema:
                    schema_issues.append(f"{name} is {state} but has no schema")
                if state == "archived":
                    path = conn.execute(
                        "SELECT archive_path FROM dpdb_meta.release WHERE name = %s", (name,)
                    ).fetchone()[0]  # type: ignore[index]
                    try:
                        release_dir.verify(Path(path))
                    except Exception as e:  # noqa: BLE001 - any failure to verify is a violation
                        schema_issues.append(f"archive of {name} does not verify: {str(e).splitlines()[0]}")
            out["registry issues"] = schema_issues
        return out

    def check(self, op: str, database: str, archive: Path) -> list[str]:
        got = _plain(self.digest(database, archive))
        ref = self.reference[op]
        violations = []
        for key in sorted(set(got) | set(ref)):
            if key.startswith("duplicates") and got.get(key):
                violations.append(f"{got[key]} duplicate keys in {key.split(' ', 1)[1]}")
            elif key == "registry issues" and got[key]:
                violations += got[key]  # type: ignore[arg-type]
            elif got.get(key) != ref.get(key):
                violations.append(f"{key}: {got.get(key)!r} != fault-free {ref.get(key)!r}")
        if got["active"] > 1:  # type: ignore[operator]
            violations.append(f"{got['active']} active releases")
        return violations

    # -- one round -----------------------------------------------------------------------------
    def round(self, r: Round) -> None:
        started = last = time.monotonic()

        def lap(phase: str) -> None:
            nonlocal last
            now = time.monotonic()
            r.phases[phase] = now - last
            last = now

        database = f"round_{r.number}"
        self.clone(f"tpl_{r.op}", database)
        lap("copy")
        archive = self.archive_dir(database)
        env = {**self.env, "DPDB_DATABASE": database, "DPDB_ARCHIVE_DIR": str(archive)}
        proc = subprocess.Popen([DPDB, *self.command(r.op)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(r.delay)
        if proc.poll() is None:
            r.injected = True
            if r.target == "command":
                proc.kill()
            else:
                pid = self.server.status().pid
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
        try:
            _out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            r.violations.append("the command hung after the fault")
        if r.injected and r.target == "postmaster" and proc.returncode not in (0, -signal.SIGKILL):
            lines = err.strip().splitlines()
            if "Traceback" in err or len(lines) != 1 or not lines[0].startswith("error: "):
                tail = err.strip()[-1400:]
                r.violations.append(f"not one error line after the server was killed: {tail!r}")
        if not r.injected and proc.returncode != 0:
            r.violations.append(f"the fault-free command failed: {err.strip()[-500:]}")
        lap("run")
        if r.injected and r.target == "postmaster":  # what an operator does after a crash
            up = self.cli("dpdb", self.work, "db", "up", check=False)
            lap("up")
            if up.returncode != 0:
                r.violations.append(f"db up failed: {up.stderr.strip()}")
                return
        try:
            self.finish(r.op, database, archive)
            lap("rerun")
            r.violations += self.check(r.op, database, archive)
            lap("check")
        except Exception as e:  # noqa: BLE001 - a failed rerun is an invariant violation, reported
            r.violations.append(f"rerun failed: {str(e).strip().splitlines()[-1][:500]}")
        if r.violations and self.keep_violations:
            print(f"kept database {database} and {archive} to inspect", flush=True)
        else:
            self.drop(database)
            shutil.rmtree(archive, ignore_errors=True)
        lap("drop")
        r.seconds = time.monotonic() - started


def copy_database(conn: psycopg.Connection, template: str, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE template`` in a way a later kill -9 of the server cannot undo.

    PostgreSQL 15's default copy (``STRATEGY WAL_LOG``) copies each sequence's page as it is in
    memory: its ``last_value`` and the values still pre-logged (``log_cnt``, up to 32). In the copy,
    ``nextval`` hands those values out without writing WAL (the page's LSN is newer than the last
    checkpoint), so after a crash the sequence is back at the copied page while the rows that took
    the values were committed: the next ``load_manifest`` row reuses a ``load_id`` (``load_manifest_pkey``),
    likewise ``audit_log`` and ``release_activation``. ``FILE_COPY`` checkpoints before and after
    the copy, so the copy's first ``nextval`` logs its values ahead like any other
    (tests/test_backup.py, the kill -9 mid-restore test, copies this way).
    """
    conn.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    )


def _plain(digest: dict[str, object]) -> dict[str, object]:
    """The digest as JSON gives it back (tuples as lists, sums as text), so saved references compare equal."""
    return json.loads(json.dumps(digest, default=str))  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument(
        "--max-delay", type=float, default=1.0,
        help="kill at a random moment in [0, this fraction of the fault-free duration]",
    )  # fmt: skip
    parser.add_argument(
        "--kill-at",
        help="kill at this fraction of the fault-free duration; a comma-separated list is taken in turn, "
        "round after round (default: a random moment, see --max-delay)",
    )  # fmt: skip
    parser.add_argument(
        "--target", choices=("random", "command", "postmaster", "alternate", "alternate-postmaster"),
        default="random",
        help="what to kill (default: chosen at random each round; alternate: the command, then the "
        "postmaster, and so on; alternate-postmaster: the other way round)",
    )  # fmt: skip
    parser.add_argument("--small", action="store_true", help="small inputs (the test suite's bounded run)")
    parser.add_argument("--work", type=Path, help="working directory (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--first", type=int, default=1,
        help="number of the first round (a later part of a soak run in parts; needs --work)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown operation(s): {', '.join(sorted(unknown))}")
    if args.first > 1 and args.work is None:
        parser.error("--first needs the --work of the earlier parts")
    try:
        kill_at = [float(x) for x in args.kill_at.split(",")] if args.kill_at else []
    except ValueError:
        parser.error(f"--kill-at {args.kill_at}: not a comma-separated list of fractions")
    turns = {"alternate": ("command", "postmaster"), "alternate-postmaster": ("postmaster", "command")}
    work = args.work or Path(tempfile.mkdtemp(prefix="dpdb-soak-"))
    soak = Soak(work, Sizes.of(args.small), ops)
    soak.keep_violations = args.keep
    rng = random.Random(args.seed)
    rounds: list[Round] = []
    started = time.monotonic()
    try:
        soak.prepare()
        log = work / "rounds.jsonl"
        if args.first == 1:
            log.unlink(missing_ok=True)
        for n in range(1, args.first + args.rounds):
            # the same sequence of operations, targets and moments whatever part of it runs now
            op = ops[(n - 1) % len(ops)] if n <= len(ops) else rng.choice(ops)
            target = rng.choice(["command", "postmaster"])
            # a moment within the fault-free duration (which includes the executable's start-up)
            delay = rng.uniform(0.0, args.max_delay * soak.durations[op])
            if kill_at:
                delay = kill_at[(n - 1) % len(kill_at)] * soak.durations[op]
            if args.target in turns:
                target = turns[args.target][(n - 1) % 2]
            elif args.target != "random":
                target = args.target
            r = Round(n, op, target, delay)
            if n < args.first:
                continue
            soak.round(r)
            rounds.append(r)
            with log.open("a") as f:
                f.write(json.dumps({"round": n, "op": op, "target": r.target, "injected": r.injected,
                                    "violations": r.violations, "seconds": r.seconds}) + "\n")  # fmt: skip
            status = "ok" if not r.violations else "VIOLATION: " + "; ".join(r.violations)
            what = "injected" if r.injected else "finished first"
            phases = ", ".join(f"{k} {v:.0f}" for k, v in r.phases.items())
            print(f"round {n:3d} {op:8s} kill -9 {r.target:10s} at {r.delay:5.1f} s {what}: {status} "
                  f"({r.seconds:.0f} s: {phases})", flush=True)  # fmt: skip
    finally:
        soak.server.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    violations = _summary("", [vars(r) for r in rounds], ops)
    print(f"elapsed: {time.monotonic() - started:.0f} s")
    if args.first > 1 and args.keep:
        recorded = [json.loads(line) for line in (work / "rounds.jsonl").read_text().splitlines()]
        _summary("all parts: ", recorded, ops)
    return 1 if violations else 0


def _summary(prefix: str, rounds: list[dict[str, object]], ops: list[str]) -> int:
    """Print rounds, faults injected (per operation and target) and invariant violations."""
    injected = [r for r in rounds if r["injected"]]
    violations = sum(len(r["violations"]) for r in rounds)  # type: ignore[arg-type]
    by_op = ", ".join(f"{op} {sum(r['op'] == op for r in injected)}" for op in ops)
    by_target = ", ".join(f"{t} {sum(r['target'] == t for r in injected)}" for t in ("postmaster", "command"))
    print(f"{prefix}rounds: {len(rounds)}")
    print(f"{prefix}faults injected: {len(injected)} ({by_op}; {by_target})")
    print(f"{prefix}invariant violations: {violations}")
    return violations


if __name__ == "__main__":
    sys.exit(main())
