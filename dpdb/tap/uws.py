"""UWS 1.1 asynchronous TAP jobs: state in ``dpdb_meta.tap_job``, results as files.

The job table is bookkeeping (written with the service's own connection, like the audit log);
the query itself runs through :func:`dpdb.tap.run.run_query`, the archive's read-only path.
Jobs survive a restart: queued and executing jobs are run again when the service starts, and
a reaper destroys every job at its destruction time.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import secrets
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..db import connect
from ..registry import tap_jobs
from ..registry.tap_jobs import TapJob
from .run import Limits, TapError, parse_params, run_query

__all__ = ["Job", "JobStore", "PHASES"]

log = logging.getLogger(__name__)

PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD", "SUSPENDED",
          "ARCHIVED")  # fmt: skip

Job = TapJob


class JobStore:
    """The async jobs of one service: create, run, abort, destroy, list."""

    def __init__(self, archive: Any, folder: Path, limits: Limits, workers: int = 2) -> None:
        self.archive = archive
        self.folder = folder
        self.limits = limits
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tap-job")
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._archives: dict[str, Any] = {}
        """job id -> the archive of its owner's login (in memory only: passwords are never stored)."""

    # -- lifecycle of the store
    def start(self) -> None:
        """Requeue what a previous run left queued or executing; start the reaper."""
        with connect(self.archive.settings) as conn:
            requeued = tap_jobs.requeue_jobs(conn)
        for job_id in requeued:
            log.info("requeueing TAP job %s after a restart", job_id)
            self._pool.submit(self._execute, job_id)
        self._reaper = threading.Thread(target=self._reap_loop, name="tap-reaper", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- jobs
    def create(
        self, params: Mapping[str, str], owner: str | None, uploads: Mapping[str, Any], archive: Any = None
    ) -> Job:
        job_id = secrets.token_hex(8)
        stored = {k.upper(): v for k, v in params.items() if k.upper() not in ("PHASE",)}
        if uploads:
            (self.folder / job_id).mkdir(parents=True, exist_ok=True)
            for name, table in uploads.items():
                import pyarrow.parquet as pq

                pq.write_table(table, self.folder / job_id / f"upload-{name}.parquet")
            stored["_UPLOADS"] = ",".join(uploads)
        now = dt.datetime.now(dt.UTC)
        destruction = now + dt.timedelta(days=self.limits.destruction_days)
        with connect(self.archive.settings) as conn:
            tap_jobs.insert_job(conn, job_id, owner, stored, destruction, self.limits.async_max_duration_s)
        if owner is not None and archive is not None:
            self._archives[job_id] = archive
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with connect(self.archive.settings) as conn:
            job = tap_jobs.get_job(conn, job_id)
        if job is None:
            raise TapError(f"no job {job_id} (it may have been destroyed)", status=404)
        return job

    def list(
        self, phases: list[str] | None = None, after: dt.datetime | None = None, last: int | None = None
    ) -> list[Job]:
        with connect(self.archive.settings) as conn:
            return tap_jobs.list_jobs(conn, phases, after, last)

    def update(self, job_id: str, **values: Any) -> None:
        with connect(self.archive.settings) as conn:
            tap_jobs.update_job(conn, job_id, **values)
        with self._changed:
            self._changed.notify_all()

    def set_parameters(self, job_id: str, params: Mapping[str, str]) -> None:
        job = self.get(job_id)
        if job.phase != "PENDING":
            raise TapError(f"job {job_id} is {job.phase}: parameters change only while PENDING", status=400)
        merged = {**job.parameters, **{k.upper(): v for k, v in params.items()}}
        self.update(job_id, parameters=merged)

    def run(self, job_id: str) -> None:
        job = self.get(job_id)
        if job.phase in ("PENDING", "HELD"):
            self.update(job_id, phase="QUEUED")
            self._pool.submit(self._execute, job_id)
        elif job.phase not in ("QUEUED", "EXECUTING"):
            raise TapError(f"job {job_id} is {job.phase}; it cannot run again (create a new job)", status=400)

    def abort(self, job_id: str) -> None:
        job = self.get(job_id)
        if job.phase in ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED"):
            self.update(job_id, phase="ABORTED", ended_at=dt.datetime.now(dt.UTC))

    def destroy(self, job_id: str) -> None:
        self.get(job_id)
        with connect(self.archive.settings) as conn:
            tap_jobs.delete_job(conn, job_id)
        shutil.rmtree(self.folder / job_id, ignore_errors=True)
        self._archives.pop(job_id, None)

    def wait(self, job_id: str, seconds: float, phase: str | None = None) -> Job:
        """UWS blocking: return once the phase leaves ``phase`` (default: now) or in ``seconds``."""
        import time

        job = self.get(job_id)
        start = job.phase if phase is None else phase
        if job.phase != start or job.phase not in ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED"):
            return job
        deadline = time.monotonic() + max(0.0, seconds)
        while time.monotonic() < deadline:
            with self._changed:
                self._changed.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            job = self.get(job_id)
            if job.phase != start:
                break
        return job

    def result_file(self, job: Job) -> Path:
        if job.phase != "COMPLETED" or not job.result_path:
            raise TapError(f"job {job.job_id} is {job.phase}: it has no result", status=404)
        return self.folder / job.job_id / job.result_path

    # -- running
    def _execute(self, job_id: str) -> None:
        try:
            job = self.get(job_id)
        except TapError:
            return
        if job.phase != "QUEUED":
            return
        self.update(job_id, phase="EXECUTING", started_at=dt.datetime.now(dt.UTC))
        try:
            uploads = {}
            for name in filter(None, job.parameters.get("_UPLOADS", "").split(",")):
                import pyarrow.parquet as pq

                uploads[name] = pq.read_table(self.folder / job_id / f"upload-{name}.parquet")
            params = parse_params({k: v for k, v in job.parameters.items() if not k.startswith("_")},
                                  self.limits, uploads)  # fmt: skip
            archive = self._archives.get(job_id, self.archive if job.owner is None else None)
            if archive is None:
                raise TapError(f"job {job_id} of login {job.owner} was queued before the service restarted; "
                               "its credentials are not kept: submit it again")  # fmt: skip
            outcome = _with_timeout(lambda: run_query(archive, params), job.execution_duration)
        except TapError as e:
            self._finish(job_id, phase="ERROR", error=str(e))
            return
        except Exception as e:  # noqa: BLE001 - a job must end in a phase, whatever went wrong
            log.exception("TAP job %s failed", job_id)
            self._finish(job_id, phase="ERROR", error=f"internal error: {e}")
            return
        folder = self.folder / job_id
        folder.mkdir(parents=True, exist_ok=True)
        name = "result." + {"csv": "csv", "tsv": "tsv", "parquet": "parquet"}.get(params.writer, "xml")
        tmp = folder / (name + ".part")
        tmp.write_bytes(outcome.body)
        tmp.replace(folder / name)
        if self.get(job_id).phase == "ABORTED":
            return
        self._finish(job_id, phase="COMPLETED", result_path=name, result_type=outcome.mime,
                     result_rows=outcome.rows)  # fmt: skip

    def _finish(self, job_id: str, **values: Any) -> None:
        if self.get(job_id).phase == "ABORTED":
            return
        self.update(job_id, ended_at=dt.datetime.now(dt.UTC), **values)

    def _reap_loop(self) -> None:
        while not self._stop.wait(30.0):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - keep reaping
                log.exception("TAP job reaper")

    def reap(self) -> builtins.list[str]:
        """Destroy the jobs past their destruction time; their ids."""
        with connect(self.archive.settings) as conn:
            gone = tap_jobs.reap_jobs(conn)
        for job_id in gone:
            shutil.rmtree(self.folder / job_id, ignore_errors=True)
            self._archives.pop(job_id, None)
        return gone


def _with_timeout(fn: Any, seconds: int) -> Any:
    """Run ``fn`` and refuse its result after ``seconds`` (the job's execution duration)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout=seconds if seconds > 0 else None)
    if worker.is_alive():
        raise TapError(f"the query ran longer than its execution duration of {seconds} s")
    if "error" in result:
        raise result["error"]
    return result["value"]
