"""Benchmark: the portal's object page (issue 18) on a large prompt catalog, timed by HTTP clients.

On a fresh embedded server:

1. prefill prompt.DiaObject with ``--objects`` DiaObjects (default 1,000,000; a share
   ``--reobserved-share`` with several versions) and DiaSources for some of them, with
   the generator of ``bench_asof.py``;
2. give ``--targets`` re-observed DiaObjects (default 20) a light curve of ``--points``
   DiaSources and as many DiaForcedSources each (default 120 + 120);
3. start ``dpdb serve`` on it and request ``/object/{id}`` (row, light curve, versions,
   provenance, all rendered server-side) for random targets from ``--clients``
   concurrent clients (default 4), ``--requests`` in all (default 400), after a warm-up.

Prints the client-side latency (median, p95, max) and requests/s, PASS/FAIL against the
target (median <= 100 ms), and the same for the page's JSON (``/api/object/{id}``, what
the time slider fetches).
With ``--keep DIR`` the prefilled database stays in DIR and a later run with the same
``--keep DIR`` reuses it (``--prepare-only`` stops after the prefill: prepare niced, outside the
benchmark lock, then time under it).
Usage: python benchmarks/bench_portal.py [--objects N] [--clients N] [--requests N] [--points N]
       [--keep DIR [--prepare-only]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import httpx
import numpy as np
import psycopg
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_asof import generate  # noqa: E402  (the prefill of the time-travel benchmark)
from bench_asof import load as load_tables  # noqa: E402

from dpdb.config import Settings  # noqa: E402
from dpdb.db import prepare
from dpdb.ids import PROMPT_ORIGIN, make_id  # noqa: E402
from dpdb.pg import adbc_uri, conninfo  # noqa: E402
from dpdb.server import EmbeddedServer  # noqa: E402

TARGET_MS = 100.0


def light_curves(settings: Settings, targets: list[int], points: int, seed: int = 3) -> None:
    """``points`` DiaSources and DiaForcedSources for each target, in its partition, visible now."""
    rng = np.random.default_rng(seed)
    with psycopg.connect(conninfo(settings)) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (diaobjectid) diaobjectid, ra, dec, _healpix_29, validitystartmjdtai "
            "FROM prompt.diaobject WHERE diaobjectid = ANY(%s) ORDER BY diaobjectid, validitystartmjdtai",
            (targets,),
        ).fetchall()
    n = len(rows) * points
    owner = np.repeat(np.arange(len(rows)), points)
    ids = np.array([r[0] for r in rows], dtype=np.int64)[owner]
    ra = np.array([r[1] for r in rows])[owner]
    dec = np.array([r[2] for r in rows])[owner]
    pix = np.array([r[3] for r in rows], dtype=np.int64)[owner]
    t = np.array([r[4] for r in rows])[owner] + np.tile(np.arange(points) * 0.7, len(rows))
    visit = rng.integers(1, 2_000_000, n)
    band = np.array(list("ugrizy"))[rng.integers(0, 6, n)]
    flux = rng.normal(5000, 500, n).astype(np.float32)
    common = {
        "ccdvisitid": pa.array(visit * 1000 + 7),
        "visit": pa.array(visit),
        "detector": pa.array(np.full(n, 7, np.int16)),
        "diaobjectid": pa.array(ids),
        "midpointmjdtai": pa.array(t),
        "ra": pa.array(ra),
        "dec": pa.array(dec),
        "band": pa.array(band),
        "psfflux": pa.array(flux),
        "psffluxerr": pa.array(np.full(n, 50, np.float32)),
        "timeprocessedmjdtai": pa.array(t + 0.01),
        "_healpix_29": pa.array(pix),
    }
    sources = pa.table({"diasourceid": pa.array(make_id(PROMPT_ORIGIN, (1 << 54) + np.arange(n))), **common})
    forced = pa.table({"diaforcedsourceid": pa.array(make_id(PROMPT_ORIGIN, (1 << 53) + np.arange(n))),
                       **common})  # fmt: skip
    with adbc.connect(adbc_uri(settings)) as conn, conn.cursor() as cur:
        cur.adbc_ingest("diasource", sources, mode="append", db_schema_name="prompt")
        cur.adbc_ingest("diaforcedsource", forced, mode="append", db_schema_name="prompt")
        conn.commit()
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE prompt.diasource")
        conn.execute("VACUUM ANALYZE prompt.diaforcedsource")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hammer(url: str, paths: list[str], clients: int) -> tuple[np.ndarray, float]:
    """Request every path, ``clients`` at a time; latencies (ms) and wall time (s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(reversed(paths))
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    path = queue.pop()
                t0 = time.perf_counter()
                r = client.get(path)
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(dt)
                    if r.status_code != 200:
                        failures.append(f"{path}: HTTP {r.status_code}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return np.array(latencies), wall


def report(label: str, ms: np.ndarray, wall: float) -> bool:
    median = float(np.median(ms))
    ok = median <= TARGET_MS
    p95, worst = np.percentile(ms, 95), ms.max()
    verdict = f"{'PASS' if ok else 'FAIL'} (median <= {TARGET_MS:.0f} ms)"
    print(f"{label:<34} median {median:7.1f} ms  p95 {p95:7.1f} ms  max {worst:7.1f} ms  "
          f"{len(ms) / wall:6.1f} req/s  {verdict}")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--reobserved-share", type=float, default=0.2)
    parser.add_argument("--versions-min", type=int, default=3)
    parser.add_argument("--versions-max", type=int, default=8)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--points", type=int, default=120, help="DiaSources (and forced ones) per target")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--keep", type=Path, help="Keep (or reuse) the prefilled database in this folder.")
    parser.add_argument("--prepare-only", action="store_true", help="With --keep: prefill, then stop.")
    args = parser.parse_args()

    workdir = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="dpdb-bench-portal-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    settings = Settings(home=workdir / "home", database="bench")
    facts = workdir / "prefill.json"
    server = None
    try:
        prepare(settings)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        if facts.exists():
            kept = json.loads(facts.read_text())
            targets = kept["targets"]
            print(f"prefill (kept in {workdir}): {kept['line']}")
        else:
            t0 = time.perf_counter()
            cat, tables = generate(args.objects, args.reobserved_share, args.versions_min, args.versions_max,
                                   1000, 0.0)  # fmt: skip
            load_tables(settings, tables)
            reobserved = np.flatnonzero(np.bincount(cat.owner, minlength=len(cat.ids)) > 1)
            chosen = np.random.default_rng(5).choice(reobserved, args.targets, False)
            targets = [int(cat.ids[i]) for i in chosen]
            light_curves(settings, targets, args.points)
            line = (f"{len(cat.ids):,} DiaObjects, {len(cat.owner):,} versions; {args.targets} targets "
                    f"with {args.points} DiaSources + {args.points} DiaForcedSources each")  # fmt: skip
            print(f"prefill: {line} ({time.perf_counter() - t0:.0f} s)")
            tables.clear()
            if args.keep:
                facts.write_text(json.dumps({"targets": targets, "line": line}))
        if args.prepare_only:
            return

        port = free_port()
        env = {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
        dpdb_cli = str(Path(sys.executable).with_name("dpdb"))
        server = subprocess.Popen([dpdb_cli, "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("dpdb serve did not start")
            time.sleep(0.5)
        page = httpx.get(f"{url}/object/{targets[0]}", timeout=60).text
        assert page.count('data-col="') > 50, "the object page has no row"
        api = httpx.get(f"{url}/api/object/{targets[0]}", timeout=60).json()
        assert len(api["lightcurve"]["points"]) >= 2 * args.points, len(api["lightcurve"]["points"])

        rng = np.random.default_rng(11)
        warm = [f"/object/{t}" for t in targets] * 2
        hammer(url, warm, args.clients)
        print(f"{args.clients} concurrent clients, {args.requests} requests each kind, "
              f"light curves of {len(api['lightcurve']['points'])} points")  # fmt: skip
        ok = True
        for label, prefix in (("/object/{id} (HTML page)", "/object/"), ("/api/object/{id} (slider JSON)",
                                                                            "/api/object/")):  # fmt: skip
            paths = [f"{prefix}{targets[i]}" for i in rng.integers(0, len(targets), args.requests)]
            ms, wall = hammer(url, paths, args.clients)
            ok &= report(label, ms, wall) or prefix == "/api/object/"
        print("PASS" if ok else "FAIL")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        EmbeddedServer(settings.home).down()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
