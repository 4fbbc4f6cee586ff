"""Simulated daytime orbit linking (DPDD §3.2.2 step 4), from the simulator's truth files.

MOPS discovers new Solar System objects by linking DiaSources over several
nights; the prompt catalog had associated those DiaSources with DiaObjects, and
the linkage moves them to the new SSObject (``dpdb prompt relink``). This module
plays MOPS for the simulated survey: an asteroid unknown to the ephemeris
service is discovered once it has been detected on ``DISCOVERY_NIGHTS``
different nights. For each night it writes ``night_NNNNN/linkage/``:

- ``SSObject.parquet``: the asteroids discovered that night (nominal orbits);
- ``SSSource.parquet``: (diaSourceId, ssObjectId) of every detection to move
  that day: all detections so far of the asteroids discovered that night, and
  the night's detections of those discovered before (they have no ephemerides,
  so the nightly ingest still associates them with DiaObjects).

It reads only files (truth_objects.parquet and the visits' truth.parquet of
the nights written so far), so the linkage of a night is the same whichever
runs wrote the nights before it.
"""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dpdb.ids import PROMPT_ORIGIN, make_id
from dpdb.prompt.relink import NIGHT_LINKAGE

from .outputs import arrow_table, night_dir, write_parquet
from .survey_config import SurveyConfig

__all__ = ["DISCOVERY_NIGHTS", "write_linkage"]

DISCOVERY_NIGHTS = 3
_ORBITS_DISCOVERED = 7  # RNG stream of the discovered asteroids' nominal orbits
_ORBIT_RANGES = ((1.8, 3.5), (0.0, 0.3), (0.0, 25.0), (0.0, 360.0), (0.0, 360.0), (0.0, 360.0))
_NIGHT = re.compile(r"night_(\d+)$")


def write_linkage(out: Path, night: int, config: SurveyConfig) -> Path | None:
    """Write the linkage of ``night`` under ``out``; return its directory (None: nothing to link)."""
    target = night_dir(out, night) / NIGHT_LINKAGE
    detections = _unknown_asteroid_detections(out, night)
    if not len(detections["night"]):
        shutil.rmtree(target, ignore_errors=True)
        return None
    nights, truth, ids = detections["night"], detections["truthId"], detections["diaSourceId"]
    discovery = _discovery_nights(nights, truth)
    found = np.array([discovery.get(int(t), night + 1) for t in truth])
    link = (found < night) & (nights == night) | (found == night)
    if not link.any():
        shutil.rmtree(target, ignore_errors=True)
        return None
    number = _asteroid_numbers(out)
    ss_ids = make_id(PROMPT_ORIGIN, (1 << 50) + np.array([number[int(t)] for t in truth[link]], np.int64))
    target.mkdir(parents=True, exist_ok=True)
    order = np.argsort(ids[link], kind="stable")
    write_parquet(
        pa.table({"diaSourceId": pa.array(ids[link][order]), "ssObjectId": pa.array(ss_ids[order])}),
        target / "SSSource.parquet",
    )
    new = sorted({number[int(t)] for t in truth[(found == night)]})
    if new:
        write_parquet(_ssobjects(config, new), target / "SSObject.parquet")
    else:
        (target / "SSObject.parquet").unlink(missing_ok=True)
    return target


def _unknown_asteroid_detections(out: Path, last_night: int) -> dict[str, np.ndarray]:
    """night, truthId and diaSourceId of every detection of an asteroid without ephemerides so far."""
    parts: dict[str, list[np.ndarray]] = {"night": [], "truthId": [], "diaSourceId": []}
    for path in sorted(out.glob("night_*/visit_*/truth.parquet")):
        match = _NIGHT.match(path.parent.parent.name)
        if not match or int(match.group(1)) > last_night:
            continue
        t = pq.read_table(path, columns=["id", "table", "kind", "truthId", "ssObjectId"])
        keep = pc.and_(
            pc.and_(pc.equal(t["table"], "DiaSource"), pc.equal(t["kind"], "asteroid")),
            pc.is_null(t["ssObjectId"]),
        )
        t = t.filter(keep)
        parts["night"].append(np.full(t.num_rows, int(match.group(1)), np.int64))
        parts["truthId"].append(t["truthId"].to_numpy())
        parts["diaSourceId"].append(t["id"].to_numpy())
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}


def _discovery_nights(nights: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """truthId -> the night of its DISCOVERY_NIGHTS-th distinct detection night."""
    seen: dict[int, list[int]] = {}
    for n, t in sorted(set(zip(nights.tolist(), truth.tolist(), strict=True))):
        seen.setdefault(t, []).append(n)
    return {t: ns[DISCOVERY_NIGHTS - 1] for t, ns in seen.items() if len(ns) >= DISCOVERY_NIGHTS}


def _asteroid_numbers(out: Path) -> dict[int, int]:
    """truthId -> index among all asteroids (the local part of their ssObjectId, as for known ones)."""
    t = pq.read_table(out / "truth_objects.parquet", columns=["truthId", "kind"])
    asteroids = t.filter(pc.equal(t["kind"], "asteroid"))["truthId"].to_numpy()
    return {int(a): i for i, a in enumerate(asteroids)}


def _ssobjects(config: SurveyConfig, numbers: list[int]) -> pa.Table:
    """SSObject rows of newly discovered asteroids (designation and nominal orbit)."""
    year = (datetime.datetime(1858, 11, 17) + datetime.timedelta(days=config.first_mjd)).year
    values: dict[str, list] = {k: [] for k in ("q", "e", "incl", "node", "argPeri", "meanAnomaly")}
    for number in numbers:
        rng = np.random.default_rng([config.seed, _ORBITS_DISCOVERED, number])
        for key, (lo, hi) in zip(
            values,
            ((1.8, 3.5), (0.0, 0.3), (0.0, 25.0), (0.0, 360.0), (0.0, 360.0), (0.0, 360.0)),
            strict=True,
        ):
            values[key].append(rng.uniform(lo, hi))
    columns = {
        "ssObjectId": make_id(PROMPT_ORIGIN, (1 << 50) + np.array(numbers, np.int64)),
        "designation": np.array([f"{year} LK{n}" for n in numbers], dtype=str),
        **{k: np.array(v) for k, v in values.items()},
        "epochMjdTai": config.first_mjd,
    }
    return arrow_table("SSObject", columns, len(numbers))
