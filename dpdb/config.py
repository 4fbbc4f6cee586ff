"""dpdb settings: one pydantic model, read from ``DPDB_*`` environment variables.

Field descriptions double as CLI help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Everything that can be configured, with defaults for the embedded database."""

    model_config = SettingsConfigDict(env_prefix="DPDB_", extra="ignore")

    dsn: str | None = Field(
        None,
        description="libpq connection string of an existing PostgreSQL server; "
        "when unset dpdb runs its own embedded server under DPDB_HOME.",
    )
    reader_dsn: str | None = Field(
        None,
        description="libpq connection string of a read-only login (made with `dpdb db grant-reader`) that "
        "user SQL, plots and provenance run as when DPDB_DSN is set; the embedded server has its own.",
    )
    reader_statement_timeout: float = Field(
        300.0, gt=0, description="Readers: longest a statement may run [s] (statement_timeout)."
    )
    reader_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Readers: longest a transaction may stay idle [s] (idle_in_transaction_session_timeout).",
    )
    reader_temp_file_limit_mb: int = Field(
        4096, ge=-1, description="Readers: temporary file space per session [MiB] (temp_file_limit, -1 none)."
    )
    reader_connection_check_interval: float = Field(
        5.0,
        gt=0,
        description="Readers: how often a running query checks that its client is still there [s] "
        "(client_connection_check_interval), so abandoned queries die.",
    )
    reader_login_connections: int = Field(
        8, ge=1, description="Readers: connections one reader login may hold (CONNECTION LIMIT)."
    )
    reader_role_connections: int = Field(
        80,
        ge=1,
        description="Readers: connections all reader logins together may hold (the sum of their limits; "
        "the rest of max_connections stays for loaders and the operator).",
    )
    home: Path = Field(
        Path(".dpdb"),
        description="Directory of the embedded PostgreSQL cluster (data, socket, logs).",
    )
    database: str = Field("dpdb", description="Database name used on the embedded server.")
    partition_order: int = Field(
        1,
        ge=0,
        le=8,
        description="HEALPix order of the spatial partitions of new catalogs "
        "(12*4**order partitions per large table).",
    )
    pg_bindir: Path | None = Field(
        None, description="Directory of the PostgreSQL server binaries (default: searched)."
    )
    wal_archive: bool = Field(
        True,
        description="The embedded server archives its WAL with pgBackRest into DPDB_HOME/backup "
        "(point-in-time recovery); read when the server starts.",
    )

    association_radius: float = Field(
        1.0, gt=0, le=60, description="Radius for DiaSource -> DiaObject association [arcsec]."
    )
    ss_radius: float = Field(
        2.0, gt=0, le=60, description="Radius around a known SSObject's predicted position [arcsec]."
    )
    characterization_cutoff: float = Field(
        365.25,
        gt=0,
        description="diaCharacterizationCutoff: DiaObject aggregates use DiaSources of the last N days.",
    )
    nearby_radius: float = Field(
        60.0, gt=0, le=600, description="Search radius for a DiaObject's nearby release Objects [arcsec]."
    )

    releases_loaded: int = Field(
        2,
        ge=2,
        le=20,
        description="Data releases kept loaded: the active one and the ones activated before it "
        "(DPDD §4.5: 2, the active and the penultimate); older ones are archived.",
    )
    release_bulk_rows: int = Field(
        200_000,
        ge=0,
        description="Release directories of at least this many rows load into unindexed partitions and "
        "build their indexes afterwards (dpdb/lifecycle/bulk.py); smaller ones keep them during the load.",
    )
    archive_dir: Path | None = Field(
        None,
        description="Directory of archived releases (Parquet bulk downloads); default DPDB_HOME/archive.",
    )
    sample_region: tuple[float, float, float] = Field(
        (150.0, 2.0, 0.5),
        description="Cone (ra, dec, radius in deg) of the sample kept loaded from every archived release.",
    )
    coverage_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Validation: share of the previous release's sky (HEALPix order 6) a release must cover.",
    )
    null_fraction_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Validation: largest growth of a column's null fraction over the previous release.",
    )

    citation_prefix: str = Field(
        "10.5072",
        pattern=r"^10\.[0-9]{4,9}(\.[0-9]+)*$",
        description="DOI prefix of citation identifiers (prefix/dpdb.<id>); 10.5072 is DataCite's test "
        "prefix: set your registered one.",
    )
    citation_publisher: str = Field(
        "dpdb", min_length=1, description="Publisher named in citations (the archive or its institution)."
    )
    portal_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Base URL of the web portal; a citation's landing page is <portal_url>/cite/<id>.",
    )

    def archive_root(self) -> Path:
        return self.archive_dir or self.home / "archive"

    def embedded(self) -> bool:
        """True when dpdb runs its own server rather than using ``dsn``."""
        return not self.dsn


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. from CLI options) on top."""
    # pydantic validates the overrides by field name at run time; statically they are just values.
    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)
