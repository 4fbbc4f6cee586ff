"""Benchmark: the TAP service end to end (HTTP, ADQL translation, VOTable/Parquet writing).

On an existing dpdb database (``--home``, default ``./.dpdb``, e.g. after ``dpdb demo``; the
issue's target asks for a current.Object of at least a million rows) it starts the service
in-process under uvicorn on a free port and measures, client side:

1. the median latency of ``--cones`` (default 100) 10-arcsecond sync cones on ``current.Object``
   through HTTP (httpx, VOTable BINARY2) against the very statement the service sends to
   PostgreSQL for each (translation and partition ranges) run through psycopg directly, as the
   same reader login on a kept connection, each cone's HTTP and psycopg runs one after the
   other; targets: <= 2x psycopg and <= 25 ms median. The baseline runs three ways: the
   statement as text, each in its own transaction (autocommit) and all in one transaction, and
   the statement with its numbers as parameters (how psycopg's documentation has a user write
   it: server-side binding, prepared by psycopg after 5 runs, its default). A fourth line sends,
   through psycopg, the message the service sends for a shape it plans per query (its read-only
   repeatable-read transaction, reader limits, recorded instant, the query as a cursor, rollback):
   the database part of the service before kept shapes ran prepared. A fifth line, for
   information only, runs each cone through psycopg as a prepared statement executed with a generic
   plan (the cone's numbers as parameters, ``plan_cache_mode = force_generic_plan``: planned once),
   as the service runs a kept cone; the target is against the statement as text (autocommit);
2. streaming a large result (``--stream-rows``, default 1,000,000 or the table's size) as a
   BINARY2 VOTable and as Parquet, median of ``--stream-repeats`` (3): rows/s (target for Parquet
   >= 200k rows/s);
3. ``--clients`` concurrent clients (default 8) each running ``--client-cones`` cones (400, the
   cones' centres repeated): throughput against one client, and errors (target: none). The clients
   run as processes of their own, as separate users' programs do, then as threads of this process
   (the older figure: threads share one interpreter lock, and with ``--server thread`` the
   service's too, which caps their throughput whatever the service does).

``--make-objects N`` first adds a release ``dr9`` to that database with N synthetic Object
rows (positions uniform in a 5 deg x 5 deg box, about 3 objects per 10" cone at 1M rows; the keys,
positions, HEALPix index and five fluxes filled, other columns NULL) and activates it, so that
current.Object holds N rows (a database made once serves later runs).

Usage: python benchmarks/bench_tap.py [--home DIR] [--make-objects N] [--cones N] [--clients N]
[--stream-rows N] [--stream-repeats N]
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".dpdb"))
    parser.add_argument("--cones", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--client-cones", type=int, default=400,
                        help="cones each concurrent client runs (the cones' centres repeated)")  # fmt: skip
    parser.add_argument("--stream-rows", type=int, default=1_000_000)
    parser.add_argument("--make-objects", type=int, default=0)
    parser.add_argument("--stream-repeats", type=int, default=3)
    parser.add_argument("--loop", default="auto", help="uvicorn's event loop (auto: uvloop if installed)")
    parser.add_argument("--http", default="auto", help="uvicorn's HTTP parser (auto: httptools if installed)")
    parser.add_argument("--server", choices=("thread", "process"), default="thread",
                        help="run the service in a thread of this process, or in a process of its own "
                             "(as `dpdb serve`: the client does not share its interpreter)")  # fmt: skip
    args = parser.parse_args()
    if args.make_objects:
        make_release(args.home, args.make_objects)

    import uvicorn

    import dpdb
    from dpdb.readers import reader_conninfo
    from dpdb.service import create_app
    from dpdb.tap.run import Limits

    archive = dpdb.Archive(home=args.home)
    archive.up()
    n_objects = archive.query_arrow("SELECT count(*) AS n FROM current.Object").column("n")[0].as_py()
    code = dpdb.__file__.removesuffix("/__init__.py")
    print(f"current.Object: {n_objects:,} rows{'' if n_objects >= 1_000_000 else ' (target: >= 1M rows)'}; "
          f"dpdb {code}, uvicorn loop={args.loop} http={args.http}")  # fmt: skip
    sample = archive.query_arrow(
        f"SELECT coord_ra, coord_dec FROM current.Object ORDER BY hashint8(objectId) LIMIT {args.cones}"
    )
    centres = list(
        zip(sample.column("coord_ra").to_pylist(), sample.column("coord_dec").to_pylist(), strict=True)
    )

    limits = Limits(max_maxrec=max(10_000_000, args.stream_rows + 1))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    if args.server == "thread":
        app = create_app(archive, limits=limits)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop=args.loop, http=args.http))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
    else:
        server = _Process(args, sock, limits.max_maxrec)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/tap/sync"
    print(f"service: {'a thread of this process' if args.server == 'thread' else 'its own process'}")

    def adql(ra: float, dec: float) -> str:
        return (
            "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM current.Object WHERE "
            f"1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, {10 / 3600}))"
        )

    # 1. cone latency: HTTP vs psycopg on the same SQL. The baseline runs exactly the statement the
    # service sends (translation, partition ranges), as the service's reader login, on a kept
    # connection, one query after the other, in two ways: each query in its own transaction
    # (autocommit, as each HTTP request is), and all of them in one open transaction (the locks
    # and catalog caches of the first query serve the others: the cheapest possible baseline).
    # HTTP and psycopg take turns on each cone, so both see the same machine load, and each cone's
    # statement is run once first (not timed): whichever ran second would otherwise find the
    # cone's pages already read (measured: 10.8 ms for a first run, 6.1 ms for a second).
    sqls = [service_sql(archive, adql(ra, dec), limits) for ra, dec in centres]
    generic = [service_prepared(archive, adql(ra, dec), limits) for ra, dec in centres]
    clear_shapes()  # the service starts without the shapes computing the SQL just kept
    http_ms: list[float] = []
    pg_ms: dict[str, list[float]] = {"autocommit": [], "one transaction": [], "parameters, prepared": [],
                                     "the service's statements": [], GENERIC: []}  # fmt: skip
    bound = [parameters(text) for text in sqls]
    messages = [service_message(archive, text) for text in sqls]
    info = reader_conninfo(archive.settings)
    with (
        httpx.Client(timeout=300) as client,
        psycopg.connect(info, autocommit=True) as each,
        psycopg.connect(info, autocommit=False) as one,
        psycopg.connect(info, autocommit=True) as binding,
        psycopg.connect(info, autocommit=True) as safe,
    ):
        # the informational line runs on `safe` too (a reader login holds 8 connections; the service
        # needs its own): its message prepares nothing but the state statement, planned alike either way
        planned_once = safe
        names: dict[tuple, str] = {}
        if messages[0] is not None:
            from dpdb.tap.engine import _PREPARE_STATES

            safe.prepare_threshold = None  # as the service's kept connections
            safe.execute(_PREPARE_STATES)
        client.get(url, params={"LANG": "ADQL", "QUERY": adql(*centres[0])})  # warm up
        for conn in (each, one):
            conn.execute(sqls[0].encode()).fetchall()
        if bound[0] is not None:  # psycopg prepares it at its 5th run; PostgreSQL plans a generic plan
            for _ in range(7):  # at the 6th (once, ~0.3 s), then keeps custom plans (partition pruning)
                binding.execute(*bound[0]).fetchall()
        for (ra, dec), text, param, message, prepared in zip(centres, sqls, bound, messages, generic,
                                                             strict=True):  # fmt: skip
            each.execute(text.encode()).fetchall()  # the cone's pages read, for all (not timed)
            start = time.perf_counter()
            r = client.get(url, params={"LANG": "ADQL", "QUERY": adql(ra, dec)})
            http_ms.append((time.perf_counter() - start) * 1000)
            assert r.status_code == 200, r.text[:300]
            for label, conn in (("autocommit", each), ("one transaction", one)):
                start = time.perf_counter()
                conn.execute(text.encode()).fetchall()
                pg_ms[label].append((time.perf_counter() - start) * 1000)
            if param is not None:
                start = time.perf_counter()
                binding.execute(*param).fetchall()
                pg_ms["parameters, prepared"].append((time.perf_counter() - start) * 1000)
            if message is not None:  # what the service must do in PostgreSQL, without HTTP and Python
                start = time.perf_counter()
                cur = safe.cursor()
                cur.execute(message, prepare=False)
                while cur.nextset():
                    if cur.pgresult is not None and cur.pgresult.status == psycopg.pq.ExecStatus.TUPLES_OK:
                        cur.fetchall()
                pg_ms["the service's statements"].append((time.perf_counter() - start) * 1000)
            if prepared is not None:  # information: planned once (prepared when first seen, not timed)
                key = (prepared.text, prepared.types)
                if not names:
                    planned_once.execute(b"SET plan_cache_mode = force_generic_plan")
                if key not in names:
                    names[key] = f"cone{len(names)}"
                    planned_once.execute(
                        f"PREPARE {names[key]} ({', '.join(prepared.types)}) AS {prepared.text}".encode()
                    )
                    planned_once.execute(f"EXECUTE {names[key]}({', '.join(prepared.args)})".encode())
                start = time.perf_counter()
                planned_once.execute(f"EXECUTE {names[key]}({', '.join(prepared.args)})".encode()).fetchall()
                pg_ms[GENERIC].append((time.perf_counter() - start) * 1000)
    http_p50 = statistics.median(http_ms)
    print(f"10\" cone over HTTP: median {http_p50:.2f} ms, p90 {_p90(http_ms):.2f} ms ({len(http_ms)} cones)")
    for label in pg_ms:
        if not pg_ms[label]:
            continue
        pg_p50 = statistics.median(pg_ms[label])
        ratio = http_p50 / pg_p50
        verdict = "PASS" if http_p50 <= 25 and ratio <= 2 else "FAIL"
        if label == GENERIC:
            print(f"10\" cone, median over {len(centres)}: HTTP {http_p50:.2f} ms, psycopg ({label}) "
                  f"{pg_p50:.2f} ms, ratio {ratio:.2f}x  [information only]")  # fmt: skip
            continue
        print(f"10\" cone, median over {len(centres)}: HTTP {http_p50:.2f} ms, psycopg ({label}) "
              f"{pg_p50:.2f} ms, ratio {ratio:.2f}x  [{verdict}: <= 25 ms, <= 2x]")  # fmt: skip

    # 2. streaming a large result (median of --stream-repeats runs)
    rows = min(args.stream_rows, n_objects)
    columns = "objectId, coord_ra, coord_dec, r_psfFlux, g_psfFlux, i_psfFlux"
    query = f"SELECT TOP {rows} {columns} FROM current.Object"
    for fmt, target in (("votable", None), ("parquet", 200_000)):
        runs = []
        for _ in range(args.stream_repeats):
            start = time.perf_counter()
            r = httpx.get(url, params={"LANG": "ADQL", "QUERY": query, "MAXREC": rows, "RESPONSEFORMAT": fmt},
                          timeout=600)  # fmt: skip
            runs.append(time.perf_counter() - start)
            assert r.status_code == 200, r.text[:300]
        seconds = statistics.median(runs)
        rate = rows / seconds
        verdict = (
            "" if target is None else f"  [{'PASS' if rate >= target else 'FAIL'}: >= {target:,} rows/s]"
        )
        size = len(r.content) / 1e6
        label = "BINARY2 VOTable" if fmt == "votable" else fmt
        each = ", ".join(f"{x:.2f}" for x in runs)
        print(f"{rows:,} rows as {label}: {seconds:.2f} s (median of {len(runs)}: {each}), "
              f"{rate:,.0f} rows/s, {size:.1f} MB{verdict}")  # fmt: skip

    # 3. concurrent clients: processes of their own (as separate users' programs), then threads of
    # this process (the older figure: the clients share one interpreter, and with --server thread the
    # service's too, so their Python work queues on one lock whatever the service does)
    queries = [adql(ra, dec) for ra, dec in centres] * max(1, args.client_cones // len(centres))
    if args.server == "process":  # this process's reader connections count against the login's limit
        from dpdb.tap.engine import close_pools

        close_pools()
    failures: list[str] = []
    for kind in ("processes", "threads"):
        rates = {}
        for clients in (1, args.clients):
            seconds, results = _clients(kind, clients, url, queries)
            done = sum(r[0] for r in results)
            errors = sum(r[1] for r in results)
            failures += [f for r in results for f in r[2]]
            rates[clients] = done / seconds
            scale = f", {rates[clients] / rates[1]:.2f}x one client" if clients != 1 else ""
            print(f"{clients} client(s) ({kind}): {done} cones in {seconds:.1f} s, "
                  f"{rates[clients]:.1f} cones/s{scale}, {errors} errors")  # fmt: skip
    for failure in failures[:3]:
        print(f"  error: {failure}")
    server.should_exit = True


def _client(url: str, queries: list[str]) -> tuple[int, int, list[str]]:
    """One client: ``queries`` one after the other on one HTTP connection; (cones, errors, failures)."""
    errors, failures = 0, []
    with httpx.Client(timeout=60) as client:
        for query in queries:
            r = client.get(url, params={"LANG": "ADQL", "QUERY": query})
            if r.status_code != 200:
                errors += 1
                status = re.search(r'name="QUERY_STATUS" value="ERROR">([^<]*)<', r.text)
                failures.append(f"HTTP {r.status_code}: {status.group(1) if status else r.text[:300]}")
    return len(queries), errors, failures


def _client_process(url: str, queries: list[str], start, out) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=60) as client:  # imports and the first connection before the clock starts
        client.get(url.replace("/sync", "/availability"))
    start.wait()
    out.put(_client(url, queries))


def _clients(kind: str, n: int, url: str, queries: list[str]) -> tuple[float, list[tuple[int, int, list]]]:
    """``n`` clients each running ``queries``, as processes or threads: (wall seconds, their results)."""
    if kind == "threads":
        begin = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(_client, [url] * n, [queries] * n))
        return time.perf_counter() - begin, results
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(url, queries, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    start.wait()
    begin = time.perf_counter()
    results = [out.get() for _ in procs]
    seconds = time.perf_counter() - begin
    for p in procs:
        p.join()
    return seconds, results


class _Process:
    """The service under uvicorn in a process of its own, on ``sock`` (as ``dpdb serve`` runs it)."""

    def __init__(self, args, sock: socket.socket, max_maxrec: int) -> None:
        import subprocess
        import sys

        code = (
            "import socket, sys, uvicorn, dpdb\n"
            "from dpdb.service import create_app\n"
            "from dpdb.tap.run import Limits\n"
            "archive = dpdb.Archive(home=sys.argv[1])\n"
            "app = create_app(archive, limits=Limits(max_maxrec=int(sys.argv[2])))\n"
            "sock = socket.socket(fileno=int(sys.argv[3]))\n"
            "config = uvicorn.Config(app, log_level='warning', loop=sys.argv[4], http=sys.argv[5])\n"
            "uvicorn.Server(config).run(sockets=[sock])\n"
        )
        argv = [sys.executable, "-c", code, str(args.home), str(max_maxrec), str(sock.fileno()), args.loop,
                args.http]  # fmt: skip
        self.process = subprocess.Popen(argv, pass_fds=[sock.fileno()])
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/tap/availability", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service's process did not start")
            time.sleep(0.1)

    @property
    def should_exit(self) -> bool:
        return self.process.poll() is not None

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self.process.terminate()
            self.process.wait(timeout=30)


def service_sql(archive, query: str, limits) -> str:
    """The statement the TAP service sends to PostgreSQL for ``query`` (ADQL, no ASOF)."""
    from dpdb.tap.run import parse_params

    params = parse_params({"LANG": "ADQL", "QUERY": query}, limits)
    try:
        from dpdb.tap.run import service_sql as sql_of
    except ImportError:  # the code before the shape cache: the same steps as its engine.run_fast
        from dpdb.pruning import prune_sql
        from dpdb.query import _statement, cached_partition_orders
        from dpdb.tap.run import _translate_plain

        orders = cached_partition_orders(archive.settings, [])
        return prune_sql(_statement(_translate_plain(params).sql), orders)
    return sql_of(archive, params)


GENERIC = "prepared, generic plan"


def service_prepared(archive, query: str, limits):  # -> dpdb.tap.shapes.Prepared | None
    """The cone as the service runs a kept shape prepared (slots as parameters, partition ranges written
    in); None for code before it, or a query whose shape is not kept."""
    from dpdb.tap.run import parse_params

    try:
        from dpdb.tap.run import service_sql as sql_of
        from dpdb.tap.shapes import lookup
    except ImportError:
        return None
    params = parse_params({"LANG": "ADQL", "QUERY": query}, limits)
    sql_of(archive, params)  # teaches the shape if it is new
    found = lookup(archive.settings, params.query, params.maxrec)
    return getattr(found, "prepared", None)


def service_message(archive, text: str) -> bytes | None:
    """The one message the service sends for ``text`` (read-only repeatable-read transaction, the reader
    limits and the recorded instant, the query as a cursor and its first rows, rollback); None for code
    before it."""
    try:
        from dpdb.tap.engine import _message, _state, one_statement
    except ImportError:
        return None
    if not one_statement(text):
        return None
    state_sql, params = _state(archive.settings, False)
    return _message(state_sql, params, text)


def parameters(text: str) -> tuple[str, list[int | float]] | None:
    """``text`` with its numbers as query parameters (psycopg's ``%s``) and their values; None if the
    statement has text psycopg would read as a placeholder."""
    try:
        from dpdb.tap.shapes import _numbers
    except ImportError:
        return None
    if "%" in text:
        return None
    found = _numbers(text)
    if found is None:
        return None
    pieces, spans = found
    values: list[int | float] = []
    for begin, end in spans:
        number = text[begin:end]
        values.append(int(number) if number.isdigit() else float(number))
    return "%s".join(pieces), values


def clear_shapes() -> None:
    try:
        from dpdb.tap.shapes import clear
    except ImportError:
        return
    clear()


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def make_release(home: Path, rows: int, name: str = "dr9") -> None:
    """Release ``name`` with ``rows`` synthetic Objects, activated (forced: it has no Sources)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    import dpdb
    from dpdb.db import conninfo
    from dpdb.healpix import pixels
    from dpdb.registry.releases import set_state
    from dpdb.registry.states import ReleaseState

    archive = dpdb.Archive(home=home)
    archive.up()
    start = time.perf_counter()
    archive.releases.create(name)
    rng = np.random.default_rng(15)
    ra = rng.uniform(150.0, 155.0, rows)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-2.5)), np.sin(np.radians(2.5)), rows)))
    columns = {"objectid": np.arange(1, rows + 1, dtype=np.int64) + 9_000_000_000_000,
               "coord_ra": ra, "coord_dec": dec, "_healpix_29": pixels(ra, dec)}  # fmt: skip
    for band in "ugriz":
        columns[f"{band}_psfflux"] = rng.lognormal(8.0, 1.0, rows).astype(np.float32)
    names = ", ".join(columns)
    with psycopg.connect(conninfo(archive.settings)) as conn:
        for first in range(0, rows, 200_000):
            buf = io.BytesIO()
            chunk = pa.table({k: v[first : first + 200_000] for k, v in columns.items()})
            pcsv.write_csv(chunk, buf, pcsv.WriteOptions(include_header=False))
            with conn.cursor().copy(f"COPY {name}.object ({names}) FROM STDIN (FORMAT csv)".encode()) as copy:
                copy.write(buf.getvalue())
        set_state(conn, name, ReleaseState.LOADED)  # filled by COPY above, not by `release load`
        conn.commit()
    with psycopg.connect(conninfo(archive.settings), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {name}.object".encode())
    archive.releases.activate(name, force=True)
    print(f"release {name}: {rows:,} Objects made and activated in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
