"""The felis schema files: valid, append-only across versions, DPDD coverage, positions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpdb.errors import SchemaError
from dpdb.model.felis import (
    CATALOG_FELIS,
    META_FELIS,
    check_version,
    load_felis,
    load_felis_file,
    position_columns,
    versions,
)
from dpdb.model.layout import LAYOUTS, PROMPT_TABLES, RELEASE_TABLES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "schema"
BANDS = "ugrizy"


def all_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("v*/*.yaml"))


@pytest.mark.parametrize("path", all_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_felis_validate_passes(path: Path) -> None:
    felis = Path(sys.executable).with_name("felis")
    proc = subprocess.run([str(felis), "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_versions_are_consecutive_and_complete() -> None:
    found = versions()
    assert found == list(range(1, len(found) + 1))
    assert len(found) >= 2
    for v in found:
        assert (SCHEMA_DIR / f"v{v}" / "dpdb.yaml").is_file()
        assert (SCHEMA_DIR / f"v{v}" / "meta.yaml").is_file()
        assert load_felis(v).version == str(v)


def test_all_catalog_tables_defined() -> None:
    names = {t.name for t in load_felis(versions()[-1]).tables}
    assert set(LAYOUTS) == names
    assert set(PROMPT_TABLES) | set(RELEASE_TABLES) == names


def _columns(table) -> dict[str, tuple]:
    return {
        c.name: (c.datatype.value, c.nullable, c.length, (c.postgresql_datatype or "").upper())
        for c in table.columns
    }


@pytest.mark.parametrize("which", [CATALOG_FELIS, META_FELIS])
def test_every_version_only_adds(which: str) -> None:
    """Append-only: no table or column dropped, renamed or retyped; new columns nullable."""
    vs = versions()
    for old, new in zip(vs, vs[1:], strict=False):
        before = {t.name: t for t in load_felis(old, which).tables}
        after = {t.name: t for t in load_felis(new, which).tables}
        assert set(before) <= set(after), f"v{new} drops tables {set(before) - set(after)}"
        for name, table in before.items():
            old_cols, new_cols = _columns(table), _columns(after[name])
            for col, spec in old_cols.items():
                assert col in new_cols, f"v{new} drops or renames {name}.{col}"
                assert new_cols[col] == spec, f"v{new} retypes {name}.{col}: {spec} -> {new_cols[col]}"
            for col in set(new_cols) - set(old_cols):
                assert new_cols[col][1], f"v{new} adds non-nullable column {name}.{col}"
            old_pk = [table.primary_key] if isinstance(table.primary_key, str) else table.primary_key
            new_pk = after[name].primary_key
            new_pk = [new_pk] if isinstance(new_pk, str) else new_pk
            assert old_pk == new_pk, f"v{new} changes the primary key of {name}"


def test_v2_adds_something_real() -> None:
    v1 = {t.name: {c.name for c in t.columns} for t in load_felis(1).tables}
    v2 = {t.name: {c.name for c in t.columns} for t in load_felis(2).tables}
    added = {(t, c) for t in v2 for c in v2[t] - v1.get(t, set())}
    assert ("Object", "photoZ") in added and ("Object", "photoZ_pest") in added


def test_principal_positions_marked_once() -> None:
    schema = load_felis(versions()[-1])
    for table in schema.tables:
        ras = [c.name for c in table.columns if (c.ivoa_ucd or "").replace(" ", "") == "pos.eq.ra;meta.main"]
        decs = [
            c.name for c in table.columns if (c.ivoa_ucd or "").replace(" ", "") == "pos.eq.dec;meta.main"
        ]
        assert len(ras) <= 1 and len(decs) <= 1, table.name
    by_name = {t.name: t for t in schema.tables}
    for name in (
        "DiaObject",
        "DiaSource",
        "DiaForcedSource",
        "Object",
        "Source",
        "ForcedSource",
        "Visit",
        "CcdVisit",
    ):
        assert position_columns(by_name[name]) is not None, name


def test_units_and_validity_columns() -> None:
    tables = {t.name: {c.name: c for c in t.columns} for t in load_felis(versions()[-1]).tables}
    for name in ("DiaObject", "SSObject"):
        assert not tables[name]["validityStartMjdTai"].nullable
        assert tables[name]["validityEndMjdTai"].nullable
    for name in ("DiaSource", "DiaForcedSource"):
        assert not tables[name]["timeProcessedMjdTai"].nullable
        assert tables[name]["timeWithdrawnMjdTai"].nullable
    assert tables["DiaSource"]["psfFlux"].fits_tunit == "nJy"
    assert tables["DiaObject"]["ra"].fits_tunit == "deg"
    for b in BANDS:
        assert tables["DiaObject"][f"{b}_psfFluxMean"].fits_tunit == "nJy"


# -- DPDD coverage ---------------------------------------------------------------------
DPDD_TABLES = {
    1: "DIASource",
    2: "DIAForcedSource",
    3: "DIAObject",
    4: "SSObject",
    5: "Object",
    6: "Source",
    7: "ForcedSource",
}


def _coverage() -> dict[int, dict[str, list[str]]]:
    """Parse schema/DPDD_COVERAGE.md into {table number: {DPDD column: [our Table.column...]}}."""
    out: dict[int, dict[str, list[str]]] = {}
    current = None
    for line in (SCHEMA_DIR / "DPDD_COVERAGE.md").read_text().splitlines():
        m = re.match(r"^## Table (\d+):", line)
        if m:
            current = int(m.group(1))
            out[current] = {}
            continue
        if line.startswith("## "):  # the sections after the DPDD tables (Rubin's as-built files)
            current = None
            continue
        if current is None or not line.startswith("|"):
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("DPDD column", "") or set(cells[0]) <= set("-: "):
            continue
        targets = [t.strip().strip("`") for t in cells[1].split(",") if t.strip()]
        out[current][cells[0]] = targets
    return out


def _dpdd_columns() -> dict[int, set[str]]:
    """DPDD column names of Tables 1-7, read from the DPDD text in ../shared/seeds when present."""
    seeds = ROOT.parent / "shared" / "seeds" / "003_cc78b76a5344cf9b.txt"
    if not seeds.is_file():
        pytest.skip("DPDD text not beside the repository")
    out: dict[int, set[str]] = {n: set() for n in DPDD_TABLES}
    current = None
    for line in seeds.read_text().splitlines():
        m = re.match(r"^Table (\d+):", line)
        if m:
            n = int(m.group(1))
            current = n if n in DPDD_TABLES else None
            continue
        if current is None:
            continue
        if re.match(r"^\d+(\.\d+)+ ", line) or line.startswith("Table 8"):
            current = None
            continue
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] != "Name" and re.match(r"^[A-Za-z][A-Za-z0-9_]*$", parts[0]):
            out[current].add(parts[0])
    return out


def test_dpdd_coverage_file_lists_every_dpdd_column() -> None:
    coverage = _coverage()
    for n, columns in _dpdd_columns().items():
        assert columns, f"parsed no columns of DPDD Table {n}"
        missing = columns - set(coverage.get(n, {}))
        assert not missing, f"DPDD Table {n} columns not mapped in DPDD_COVERAGE.md: {sorted(missing)}"


def test_dpdd_coverage_targets_exist() -> None:
    newest = {t.name: {c.name for c in t.columns} for t in load_felis(versions()[-1]).tables}
    coverage = _coverage()
    assert set(coverage) == set(DPDD_TABLES)
    for n, rows in coverage.items():
        assert rows, f"no rows for Table {n}"
        for dpdd_col, targets in rows.items():
            assert targets, f"Table {n} {dpdd_col} is unmapped"
            for target in targets:
                expanded = [target.replace("{b}", b) for b in BANDS] if "{b}" in target else [target]
                for t in expanded:
                    table, _, column = t.partition(".")
                    assert column in newest.get(table, set()), f"Table {n} {dpdd_col} -> {t} does not exist"


# -- bad schema input ---------------------------------------------------------------------
def test_unknown_version_is_a_named_error() -> None:
    with pytest.raises(SchemaError, match=r"unknown schema version 99 \(known: 1, 2"):
        check_version(99)


def test_corrupted_felis_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "dpdb.yaml"
    bad.write_text("name: x\ntables: [ {name: A, columns: [ {name: a, datatype: nosuchtype} ] } ]\n")
    with pytest.raises(SchemaError) as err:
        load_felis_file(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntables: [\n  - {")
    with pytest.raises(SchemaError, match="not valid YAML"):
        load_felis_file(broken)
    assert yaml  # noqa: the yaml module is what felis files are parsed with
