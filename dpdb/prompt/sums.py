"""Incremental aggregation: the running per-band sums of prompt.DiaObjectSums (sql/prompt_sums.sql).

A new DiaObject version needs weighted means, errors, scatters, chi² and
extremes over the DiaSources and forced measurements of the characterization
window (DPDD §3.2.1 step 6). Recomputing them from the stored rows reads the
whole window of every touched DiaObject, which grows with the history. Instead
each (DiaObject, band) keeps counts and sums in DiaObjectSums: a visit adds its
own measurements, and only the rows that leave the window are read back and
subtracted, so the cost follows the visit.

Invariant of a row: its sums cover exactly the DiaObject's measurements of that
band (not withdrawn) with ``midpointMjdTai > windowStartMjdTai``, none older than
``firstMidpointMjdTai``, none newer than ``lastMidpointMjdTai``. A DiaObject with
no row at all has no sums (created before schema v9, or dropped): the next
version recomputes them from the stored rows. Sums are dropped, to be rebuilt
the same way, wherever the invariant could break: a daytime relink (withdrawn
DiaSources), a visit aggregated in full, a visit older than the sums. Fluxes
are summed as offsets from a reference value per row, so variances and chi²
keep their precision (no catastrophic cancellation of large sums).
"""

from __future__ import annotations

__all__ = ["SUMS_VERSION", "SUM_GROUPS", "placeholders"]

SUMS_VERSION = 9
"""The schema version that added prompt.DiaObjectSums."""

# (count column, condition on a measurement row r, ((sum column, expression), ...)).
# Rows are the visit's (or the window's) measurements with r.is_src (DiaSource) or
# not (DiaForcedSource), float8 values, and the references raref, pref, sref.
SUM_GROUPS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("ndiasources", "r.is_src", (
        ("sumdra", "dpdb_wrap180(r.ra - r.raref)"),
        ("sumdec", "r.dec"),
        ("summidpoint", "r.midpoint"),
    )),
    ("nraweights", "r.is_src AND r.raerr > 0", (
        ("sumraweights", "1 / (r.raerr * r.raerr)"),
        ("sumraweighteddra", "dpdb_wrap180(r.ra - r.raref) / (r.raerr * r.raerr)"),
        ("sumraweightedmidpoint", "r.midpoint / (r.raerr * r.raerr)"),
    )),
    ("ndecweights", "r.is_src AND r.decerr > 0", (
        ("sumdecweights", "1 / (r.decerr * r.decerr)"),
        ("sumdecweighteddec", "r.dec / (r.decerr * r.decerr)"),
    )),
    ("psffluxn", "r.is_src AND r.psfflux IS NOT NULL", (
        ("psffluxsum", "r.psfflux - r.pref"),
        ("psffluxsumsq", "(r.psfflux - r.pref) * (r.psfflux - r.pref)"),
    )),
    ("psffluxnweights", "r.is_src AND r.psfflux IS NOT NULL AND r.psffluxerr > 0", (
        ("psffluxsumweights", "1 / (r.psffluxerr * r.psffluxerr)"),
        ("psffluxsumweighted", "(r.psfflux - r.pref) / (r.psffluxerr * r.psffluxerr)"),
        ("psffluxsumweightedsq",
         "(r.psfflux - r.pref) * (r.psfflux - r.pref) / (r.psffluxerr * r.psffluxerr)"),
    )),
    ("psffluxerrn", "r.is_src AND r.psffluxerr IS NOT NULL", (
        ("psffluxerrsum", "r.psffluxerr"),
    )),
    ("fpfluxnweights", "NOT r.is_src AND r.psfflux IS NOT NULL AND r.psffluxerr > 0", (
        ("fpfluxsumweights", "1 / (r.psffluxerr * r.psffluxerr)"),
        ("fpfluxsumweighted", "r.psfflux / (r.psffluxerr * r.psffluxerr)"),
    )),
    ("sciencefluxnweights", "NOT r.is_src AND r.scienceflux IS NOT NULL AND r.sciencefluxerr > 0", (
        ("sciencefluxsumweights", "1 / (r.sciencefluxerr * r.sciencefluxerr)"),
        ("sciencefluxsumweighted", "r.scienceflux / (r.sciencefluxerr * r.sciencefluxerr)"),
    )),
    ("sciencefluxn", "NOT r.is_src AND r.scienceflux IS NOT NULL", (
        ("sciencefluxsum", "r.scienceflux - r.sref"),
        ("sciencefluxsumsq", "(r.scienceflux - r.sref) * (r.scienceflux - r.sref)"),
    )),
)  # fmt: skip

# Per-band outputs from a DiaObjectSums row x, named as the aggregates of the full
# recomputation (the aggregate block of sql/prompt_ingest.sql) so that its pivots apply.
_OUTPUTS = (
    ("mean", "CASE WHEN x.psffluxnweights > 0 "
             "THEN x.psffluxref + x.psffluxsumweighted / x.psffluxsumweights END"),
    ("meanerr", "CASE WHEN x.psffluxnweights > 0 THEN sqrt(1 / x.psffluxsumweights) END"),
    ("sigma", "CASE WHEN x.psffluxn > 1 THEN sqrt(greatest(x.psffluxsumsq - x.psffluxsum * x.psffluxsum "
              "/ x.psffluxn, 0) / (x.psffluxn - 1)) END"),
    ("chi2", "CASE WHEN x.psffluxnweights > 0 THEN greatest(x.psffluxsumweightedsq - x.psffluxsumweighted "
             "* x.psffluxsumweighted / x.psffluxsumweights, 0) END"),
    ("ndata", "x.psffluxn"),
    ("fmin", "x.psffluxmin"),
    ("fmax", "x.psffluxmax"),
    ("errmean", "CASE WHEN x.psffluxerrn > 0 THEN x.psffluxerrsum / x.psffluxerrn END"),
    ("fpmean", "CASE WHEN x.fpfluxnweights > 0 THEN x.fpfluxsumweighted / x.fpfluxsumweights END"),
    ("fpmeanerr", "CASE WHEN x.fpfluxnweights > 0 THEN sqrt(1 / x.fpfluxsumweights) END"),
    ("scimean", "CASE WHEN x.sciencefluxnweights > 0 "
                "THEN x.sciencefluxsumweighted / x.sciencefluxsumweights END"),
    ("scimeanerr", "CASE WHEN x.sciencefluxnweights > 0 THEN sqrt(1 / x.sciencefluxsumweights) END"),
    ("scisigma", "CASE WHEN x.sciencefluxn > 1 THEN sqrt(greatest(x.sciencefluxsumsq - x.sciencefluxsum "
                 "* x.sciencefluxsum / x.sciencefluxn, 0) / (x.sciencefluxn - 1)) END"),
)  # fmt: skip


def _counts() -> list[str]:
    return [count for count, _, _ in SUM_GROUPS]


def _sums() -> list[str]:
    return [col for _, _, cols in SUM_GROUPS for col, _ in cols]


def placeholders() -> dict[str, str]:
    """The column lists and expressions that fill sql/prompt_sums.sql."""
    delta = []
    for count, cond, cols in SUM_GROUPS:
        delta.append(f"coalesce(sum(r.sign) FILTER (WHERE {cond}), 0) AS {count}")
        delta += [f"coalesce(sum(r.sign * ({expr})) FILTER (WHERE {cond}), 0) AS {col}" for col, expr in cols]
    add = [f"{c} = x.{c} + excluded.{c}" for c in _counts()]
    subtract = []
    for count, _, cols in SUM_GROUPS:
        subtract.append(f"{count} = x.{count} + coalesce(d.{count}, 0)")
        subtract += [
            f"{col} = CASE WHEN x.{count} + coalesce(d.{count}, 0) = 0 THEN 0 "
            f"ELSE x.{col} + coalesce(d.{col}, 0) END"
            for col, _ in cols
        ]
    for _count, _, cols in SUM_GROUPS:
        add += [f"{col} = x.{col} + excluded.{col}" for col, _ in cols]
    empty = " AND ".join(f"x.{c} + coalesce(d.{c}, 0) = 0" for c in _counts())
    return {
        "sum_columns": ", ".join(c for count, _, cols in SUM_GROUPS for c in (count, *(n for n, _ in cols))),
        "delta_sums": ",\n       ".join(delta),
        "add_set": ",\n    ".join(add),
        "subtract_set": ",\n    ".join(subtract),
        "emptied": empty,
        "band_outputs": ",\n       ".join(f"{expr} AS {name}" for name, expr in _OUTPUTS),
    }
