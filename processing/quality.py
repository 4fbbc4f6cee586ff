"""Association quality against the simulator's truth (DPDD footnote 23 guarantees, in numbers).

For isolated static and transient sky objects, each truth object's detections
should all land in one DiaObject (completeness) and each DiaObject should hold
the detections of one truth object only (purity). Detections of known asteroids
must be attributed to their SSObject, never to a DiaObject.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dpdb.config import Settings
from dpdb.db import connect

__all__ = ["Quality", "association_quality"]


@dataclass(frozen=True)
class Quality:
    detections: int  # DiaSources of the visits looked at, found in the catalog
    linked: int  # isolated static/transient detections checked
    completeness: float  # fraction of those in their truth object's main DiaObject
    purity: float  # fraction of those whose DiaObject's main truth object is their own
    known_asteroid_detections: int
    known_asteroids_attributed: int  # ... that carry their own ssObjectId
    known_asteroids_in_diaobjects: int  # ... that went to a DiaObject (should be 0)

    def lines(self) -> list[str]:
        return [
            f"isolated static/transient detections checked: {self.linked}",
            f"completeness of DiaSource->DiaObject links: {self.completeness:.4%}",
            f"purity of DiaSource->DiaObject links: {self.purity:.4%}",
            f"known-asteroid detections attributed to their SSObject: "
            f"{self.known_asteroids_attributed}/{self.known_asteroid_detections}"
            f" (in a DiaObject: {self.known_asteroids_in_diaobjects})",
        ]


def association_quality(settings: Settings, visit_dirs: list[Path]) -> Quality:
    """Compare the stored associations of the DiaSources of ``visit_dirs`` with their truth files."""
    parts = [pq.read_table(d / "truth.parquet") for d in visit_dirs if (d / "truth.parquet").is_file()]
    if not parts:
        return Quality(0, 0, 1.0, 1.0, 0, 0, 0)
    truth = pa.concat_tables(parts)
    truth = truth.filter(pc.equal(truth["table"], "DiaSource"))
    ids = truth["id"].to_numpy()
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT diasourceid, coalesce(diaobjectid, -1), coalesce(ssobjectid, -1) FROM prompt.diasource "
            "WHERE diasourceid = ANY(%s) AND timewithdrawnmjdtai IS NULL",
            (ids.tolist(),),
        ).fetchall()
    stored = np.array(rows, dtype=np.int64).reshape(-1, 3)
    order = np.argsort(stored[:, 0])
    stored = stored[order]
    pos = np.searchsorted(stored[:, 0], ids)
    found = (pos < len(stored)) & (stored[np.minimum(pos, len(stored) - 1), 0] == ids)
    dia = np.where(found, stored[np.minimum(pos, len(stored) - 1), 1], -2)
    ss = np.where(found, stored[np.minimum(pos, len(stored) - 1), 2], -2)
    kind = truth["kind"].to_numpy(zero_copy_only=False)
    truth_id = truth["truthId"].to_numpy()
    isolated = truth["isolated"].to_numpy(zero_copy_only=False).astype(bool)
    known = truth["ssObjectId"].fill_null(-1).to_numpy()

    static = found & isolated & np.isin(kind, ["star", "transient"])
    completeness = _majority_fraction(truth_id[static], dia[static])
    in_objects = np.isin(dia, np.unique(dia[static])) & found & (dia >= 0)
    # Purity counts every detection in those DiaObjects, whatever its truth (noise -> its own label).
    labels = np.where(truth_id[in_objects] >= 0, truth_id[in_objects], -1 - np.arange(in_objects.sum()))
    purity = _majority_fraction(dia[in_objects], labels)
    asteroid = found & (kind == "asteroid") & (known >= 0)
    return Quality(
        detections=int(found.sum()),
        linked=int(static.sum()),
        completeness=completeness,
        purity=purity,
        known_asteroid_detections=int(asteroid.sum()),
        known_asteroids_attributed=int((asteroid & (ss == known)).sum()),
        known_asteroids_in_diaobjects=int((asteroid & (dia >= 0)).sum()),
    )


def _majority_fraction(groups: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose label is the most common label of their group."""
    if not len(groups):
        return 1.0
    pairs, counts = np.unique(np.stack([groups, labels]), axis=1, return_counts=True)  # sorted by group
    starts = np.flatnonzero(np.r_[True, pairs[0, 1:] != pairs[0, :-1]])
    return float(np.maximum.reduceat(counts, starts).sum()) / len(groups)
