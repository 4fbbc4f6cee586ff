"""The public Python API: :class:`Archive`, the one entry point to a dpdb database.

Python users, dpdb's own CLI, the TAP service, the portal and the tools all go
through an :class:`Archive` (docs/architecture.md, decision 10). It holds the
settings of one database and exposes every operation as a method; the
lifecycle verbs live on :attr:`Archive.releases`, the prompt verbs on
:attr:`Archive.prompt` and the figures on :attr:`Archive.plot`.

Query results come back as astropy :class:`~astropy.table.Table` objects whose
columns carry the unit, UCD and description of the schema column they come
from; :meth:`Archive.query_arrow` returns the Arrow table underneath.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings, get_settings
from .errors import QueryError
from .instants import Instant, to_mjd_tai
from .results import tables_named, to_astropy

if TYPE_CHECKING:  # astropy and pyarrow are imported when first used: `import dpdb` stays fast
    import pyarrow as pa
    from astropy.table import Table

    from .asof import AsOf
    from .citations import Citation, Made, Resolution
    from .etl.load import LoadSummary
    from .harden import Check
    from .hats import CatalogResult, ExportResult
    from .lifecycle.activate import Activation
    from .lifecycle.archive import ArchiveResult
    from .lifecycle.listing import ReleaseRow
    from .lifecycle.load import LoadResult
    from .lifecycle.validate import Report
    from .lookup import ObjectView
    from .overview import Overview
    from .plots import History, LightCurve, SkyMap
    from .prompt.ingest import VisitResult
    from .prompt.relink import RelinkResult
    from .provenance import Provenance
    from .registry.releases import Release
    from .shards.registry import Shard
    from .shards.servers import ShardState

__all__ = ["Archive", "Instant", "to_mjd_tai", "to_astropy", "tables_named"]

def _checked(settings: Settings, as_of: Instant | None) -> float | None:
    """An as-of instant checked against the latest processing time (:func:`dpdb.asof.check_instant`)."""
    from .asof import AsOf, check_instant

    if as_of is None:
        return None
    if isinstance(as_of, AsOf):
        return as_of.mjd_tai
    instant = as_of.strip() if isinstance(as_of, str) else to_mjd_tai(as_of)
    return check_instant(settings, instant).mjd_tai


def cone_pixel_ranges(ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    """Order-29 HEALPix (nested) pixel ranges ``[first, end)`` that cover a cone (degrees), at the
    order whose pixels are about the cone's size (:func:`dpdb.pruning.cone_ranges`)."""
    from .pruning import cone_ranges

    return cone_ranges(ra, dec, radius)


class Archive:
    """One dpdb database: its catalogs, releases, prompt processing and provenance.

    Parameters
    ----------
    dsn
        libpq connection string of an existing PostgreSQL server. ``None``
        uses ``DPDB_DSN`` if set, else the embedded server under ``home``.
    home
        Directory of the embedded server (default ``DPDB_HOME`` or ``./.dpdb``).
    settings
        A complete :class:`~dpdb.config.Settings`; ``dsn``, ``home`` and
        ``overrides`` are applied on top of it.
    **overrides
        Any other :class:`~dpdb.config.Settings` field (``database``,
        ``partition_order``, ``archive_dir`` ...).

    Examples
    --------
    >>> import dpdb
    >>> archive = dpdb.Archive()                                     # doctest: +SKIP
    >>> archive.query("SELECT count(*) AS n FROM current.Object")   # doctest: +SKIP
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        home: str | Path | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        given = {"dsn": dsn, "home": Path(home) if home is not None else None, **overrides}
        given = {k: v for k, v in given.items() if v is not None}
        if settings is None:
            self.settings = get_settings(**given)
        else:
            self.settings = settings.model_copy(update=given) if given else settings
        self.releases = Releases(self)
        self.shards = Shards(self)
        self.prompt = Prompt(self)
        self.plot = Plots(self)
        self.citations = Citations(self)
        self.backups = Backups(self)

    def __repr__(self) -> str:
        where = "DPDB_DSN server" if self.settings.dsn else f"embedded server in {self.settings.home}"
        return f"Archive({where}, database {self.settings.database!r})"

    # -- the database ----------------------------------------------------------------------------

    def up(self, shards: int = 0) -> str:
        """Start the embedded server if needed and bring the database to the newest schema.

        Parameters
        ----------
        shards
            Also start (creating them the first time) this many local shard
            servers under ``DPDB_HOME/shards/`` and register them: new releases
            are then distributed over them (see :attr:`shards`).

        Returns
        -------
        str
            What was done, e.g. ``embedded server started in .dpdb, schema version 5``.
        """
        from .db import connect, describe, prepare
        from .pg import server_for

        server = server_for(self.settings)
        was_running = server is None or (server.initialized() and server.running())
        prepare(self.settings)
        with connect(self.settings, check=False) as conn:
            info = describe(conn)
        state = "already running" if was_running else "started"
        where = f"embedded server {state} in {server.home}" if server else "server at DPDB_DSN"
        done = f"{where}, schema version {info.schema_version}"
        if shards:
            done += "; " + "; ".join(self.shards.start(shards))
        self._shard_upkeep()
        return done

    def _shard_upkeep(self) -> list[str]:
        """Mend shards and sharded releases made by earlier versions (dpdb/shards/upkeep.py)."""
        from .db import connect
        from .shards.upkeep import shard_upkeep

        with connect(self.settings, check=False) as conn:
            return shard_upkeep(conn)

    def down(self) -> bool:
        """Stop the embedded server; False if it was not running.

        Raises
        ------
        ServerError
            The archive uses an external server (``dsn``), which dpdb never stops.
        """
        from .errors import ServerError
        from .pg import server_for
        from .shards.servers import stop_shards

        server = server_for(self.settings)
        if server is None:
            raise ServerError("DPDB_DSN points at an external server; dpdb does not stop it")
        stop_shards(self.settings)
        return server.down()

    def status(self) -> dict[str, str]:
        """Facts about the server and database: state, version, extensions, schema version, catalogs."""
        from .db import connect, describe
        from .model.felis import latest_version
        from .pg import server_for

        facts: dict[str, str] = {}
        server = server_for(self.settings)
        if server is not None:
            st = server.status()
            facts["server"] = f"embedded, {'running' if st.running else 'stopped'}" + (
                f" (pid {st.pid})" if st.pid else ""
            )
            facts["data directory"] = str(st.data_dir)
            facts["socket"] = f"{st.socket_dir} port {st.port}"
            facts["binaries"] = str(st.bindir) if st.bindir else "not found"
            if not st.running:
                return facts
        else:
            facts["server"] = "external (DPDB_DSN)"
        with connect(self.settings, check=False) as conn:
            info = describe(conn)
        facts["PostgreSQL"] = info.server_version
        facts["extensions"] = ", ".join(f"{k} {v}" for k, v in info.extensions.items()) or "none"
        facts["schema version"] = f"{info.schema_version} (this dpdb knows up to {latest_version()})"
        facts["catalogs"] = ", ".join(f"{n} ({k}, v{v})" for n, k, v in info.catalogs) or "none"
        for shard in self.shards.status():
            facts[f"shard {shard.name}"] = (
                f"{'up' if shard.up else 'DOWN'} at {shard.where}"
                + (" (embedded)" if shard.embedded else "") + f": {shard.detail}"
            )  # fmt: skip
        return facts

    def url(self) -> str:
        """The connection URL of the database (starting the embedded server if needed)."""
        from .db import prepare
        from .pg import server_for

        prepare(self.settings)
        server = server_for(self.settings)
        return server.url(self.settings.database) if server else str(self.settings.dsn)

    def migrate(self, to: int | None = None) -> tuple[int | None, int]:
        """Upgrade the schema (append-only, never down); the versions before and after."""
        from .migrate import migrate

        done = migrate(self.settings, to)
        self._shard_upkeep()
        return done

    def grant_reader(self, name: str, password: str | None = None) -> str:
        """Create login ``name`` that can only read the catalogs; its password (generated unless given)."""
        from .access import create_reader
        from .db import connect, prepare
        from .registry.audit import audited

        prepare(self.settings)
        with audited(self.settings, "db.grant-reader", name=name):
            with connect(self.settings) as conn:
                return create_reader(conn, name, password, self.settings)

    def harden(self, *, apply: bool = False) -> list[Check]:
        """The server hardening checks (:mod:`dpdb.harden`): what least privilege needs from the server.

        Parameters
        ----------
        apply : bool
            Also run the SQL that fixes each unmet requirement, where this login has the right
            (the rest is the server's superuser's: each check's ``fix`` holds the statements).

        Returns
        -------
        list of dpdb.harden.Check
            One per requirement: ``name``, ``ok``, ``detail``, ``fix``, ``applied``, ``needs``.
        """
        from .harden import check, harden

        if not apply:
            return check(self.settings)
        from .registry.audit import audited

        with audited(self.settings, "db.harden"):
            return harden(self.settings)

    def resolve_as_of(self, as_of: Instant, *, provisional: bool = False) -> AsOf:
        """An as-of instant checked against the latest processing time (``now``: the current one).

        Raises :class:`~dpdb.errors.ValidationError` for an instant out of range, or later than the
        latest processing time without ``provisional`` (see :mod:`dpdb.asof`).
        """
        from .asof import check_instant

        instant = as_of.strip() if isinstance(as_of, str) else to_mjd_tai(as_of)
        return check_instant(self.settings, instant, provisional=provisional)

    def reader_conninfo(self, name: str) -> str:
        """Where a reader login connects: ``host=… port=… dbname=… user=name`` (no password)."""
        from .pg import server_for

        server = server_for(self.settings)
        if server is None:
            return f"the server of DPDB_DSN, user={name}"
        return f"host=localhost port={server.port} dbname={self.settings.database} user={name}"

    # -- queries ---------------------------------------------------------------------------------

    def query_arrow(
        self, sql: str, *, as_of: Instant | None = None, release: str | None = None, provisional: bool = False
    ) -> pa.Table:
        """Run one read-only SQL statement; the result as a :class:`pyarrow.Table`.

        See :meth:`query` for the parameters; the schema metadata ``dpdb.as_of_*``
        records the resolved instant.
        """
        from .query import run_query

        instant = as_of.strip() if isinstance(as_of, str) else to_mjd_tai(as_of)  # strings: dpdb.asof
        return run_query(self.settings, sql, as_of=instant, release=release, provisional=provisional)

    def query(
        self, sql: str, *, as_of: Instant | None = None, release: str | None = None, provisional: bool = False
    ) -> Table:
        """Run one read-only SQL statement (PostgreSQL dialect, q3c and pg_sphere functions).

        Parameters
        ----------
        sql
            One statement. It runs in a read-only transaction that is rolled back.
        as_of
            Read the catalogs as they were at this instant (DPDD §2.5); the same
            query at the same instant always gives the same rows. ``None``: now.
            An instant later than the latest processing time is refused (its
            answer could still change) unless ``provisional``; ``"now"`` is
            evaluated as the current instant. ``meta['as_of']`` records the
            resolved instant and ``meta['as_of_repeatable']`` whether it is final.
        provisional
            Evaluate an instant later than the latest processing time anyway.
        release
            Catalog whose tables unqualified names resolve to: ``prompt``, a
            release (``dr1``), ``current`` or ``previous``.

        Returns
        -------
        astropy.table.Table
            The rows, with canonical column names; schema columns carry
            ``unit``, ``description`` and ``meta['ucd']``. ``.to_pandas()``
            converts it; :meth:`query_arrow` gives Arrow.

        Raises
        ------
        QueryError
            Bad SQL, a write attempt, or a failing statement.
        ReleaseStateError
            ``release`` names no catalog.
        """
        arrow = self.query_arrow(sql, as_of=as_of, release=release, provisional=provisional)
        table = to_astropy(arrow, tables_named(sql))
        meta = arrow.schema.metadata or {}
        if b"dpdb.as_of_utc" in meta:
            table.meta["as_of"] = meta[b"dpdb.as_of_utc"].decode()
            table.meta["as_of_mjd_tai"] = float(meta[b"dpdb.as_of_mjd_tai"])
            table.meta["as_of_repeatable"] = meta[b"dpdb.as_of_repeatable"] == b"true"
        return table

    def adql(
        self,
        query: str,
        *,
        as_of: Instant | None = None,
        release: str | None = None,
        maxrec: int = 10**7,
        cite: bool = False,
    ) -> Table:
        """Run one ADQL 2.1 query as the TAP service does (geometry on q3c, ``current``/``previous``
        as they were at ``as_of``); the rows as an astropy Table. ``cite``: also cite the result
        (as TAP's ``CITE=true``); its identifier is ``meta['citation']``.

        Raises
        ------
        dpdb.tap.run.TapError
            The ADQL does not parse (the message says what and where) or cannot run.
        """
        from astropy.io.votable import parse_single_table

        from .tap.run import Limits, parse_params, run_query

        params = {"LANG": "ADQL", "QUERY": query, "MAXREC": str(maxrec)}
        if as_of is not None:
            params["ASOF"] = repr(to_mjd_tai(as_of))
        if release is not None:
            params["RELEASE"] = release
        if cite:
            params["CITE"] = "true"
        outcome = run_query(self, parse_params(params, Limits()))
        import io

        table = parse_single_table(io.BytesIO(outcome.body)).to_table()
        if outcome.info.citation:
            table.meta["citation"] = outcome.info.citation
        return table

    def app(self, **options: Any) -> Any:
        """The web service of this archive as an ASGI app (TAP at ``/tap``), for uvicorn or a test client.

        ``options`` go to :func:`dpdb.service.create_app` (``limits``, ``job_dir``).
        """
        from .service import create_app

        return create_app(self, **options)

    def cone(
        self,
        table: str,
        ra: float,
        dec: float,
        radius: float,
        *,
        as_of: Instant | None = None,
        release: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> Table:
        """The rows of ``table`` within ``radius`` degrees of (``ra``, ``dec``), using the q3c index.

        Parameters
        ----------
        table
            A catalog table with a position (``Object``, ``DiaObject``, ``DiaSource`` ...).
        ra, dec, radius
            Centre and radius in degrees.
        as_of, release
            As for :meth:`query`; ``release`` defaults to ``current`` for
            release-only tables and ``prompt`` for the others.
        columns
            Columns to return (default all).
        """
        from psycopg import sql as psql

        from dpdb.errors import SchemaError
        from dpdb.model.layout import PROMPT_TABLES
        from dpdb.model.table import catalog_table

        try:
            model = catalog_table(table)
        except SchemaError:
            raise QueryError(f"cone: unknown table {table!r}") from None
        if model.position is None:
            raise QueryError(f"cone: table {model.name} has no position columns")
        for name, value in (("ra", ra), ("dec", dec), ("radius", radius)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise QueryError(f"cone: {name} must be a finite number of degrees, not {value!r}")
        if not -90 <= dec <= 90 or not 0 < radius <= 180:
            raise QueryError("cone: dec must lie in [-90, 90] and radius in (0, 180] degrees")
        if release is None:
            release = "prompt" if model.name in PROMPT_TABLES else "current"
        wanted = list(columns) if columns else None
        if wanted:
            bad = [c for c in wanted if c.lower() not in model.canonical_names]
            if bad:
                raise QueryError(f"cone: table {model.name} has no column {bad[0]!r}")
        select = psql.SQL(", ").join(psql.Identifier(c.lower()) for c in wanted) if wanted else psql.SQL("*")
        stmt = psql.SQL("SELECT {} FROM {} WHERE q3c_radial_query({}, {}, {}, {}, {})").format(
            select,
            psql.Identifier(model.db_name),
            psql.Identifier(model.position[0]),
            psql.Identifier(model.position[1]),
            psql.Literal(float(ra)),
            psql.Literal(float(dec)),
            psql.Literal(float(radius)),
        )
        # The query path adds the _healpix_29 ranges of the partitions the cone overlaps (dpdb.pruning).
        text = stmt.as_string(None)
        return to_astropy(self.query_arrow(text, as_of=as_of, release=release), [model.name])

    def cite(
        self,
        sql: str,
        *,
        as_of: Instant | None = None,
        release: str | None = None,
        title: str | None = None,
        creator: str | None = None,
    ) -> Citation:
        """Cite the result of a query: a persistent identifier, verifiable forever (RDA data citation).

        The query is pinned to an instant (``as_of``, never in the future; default:
        the present, as the newest processing time of the prompt catalog), run,
        and stored with its row count and result hash. Citing the same query at
        the same instant again returns the same citation. See :attr:`citations`.

        Returns
        -------
        dpdb.citations.Citation
            ``.handle`` is the DOI-shaped identifier, ``.citation_id`` the short one.
        """
        return self.citations.cite(sql, as_of=as_of, release=release, title=title, creator=creator).citation

    # -- files -----------------------------------------------------------------------------------

    def load(
        self,
        table: str,
        paths: Sequence[str | Path],
        *,
        into: str = "prompt",
        dry_run: bool = False,
        jobs: int = 1,
        ignore_extra: bool = False,
        replace: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> LoadSummary:
        """Validate and bulk-load Parquet files (or folders of them) into ``into``.``table``.

        Each file loads in one transaction and is recorded in the load manifest
        with its checksum, so a rerun skips what is loaded and finishes the rest.

        Returns
        -------
        dpdb.etl.load.LoadSummary
            Per-file outcome and row counts (``.line()`` is a one-line summary).
        """
        from .etl.load import load

        return load(
            self.settings, table, [Path(p) for p in paths], into=into, dry_run=dry_run, jobs=jobs,
            ignore_extra=ignore_extra, replace=replace, progress=progress,
        )  # fmt: skip

    def export(self, table: str, out: str | Path, *, catalog: str = "prompt") -> int:
        """Write ``catalog``.``table`` to the Parquet file ``out`` (canonical names); the row count."""
        from .etl.export import export_table

        return export_table(self.settings, table, catalog, Path(out))

    def export_hats(
        self,
        catalog: str,
        out: str | Path,
        *,
        tables: Sequence[str] | None = None,
        as_of: Instant | None = None,
        margin: float = 10.0,
        jobs: int = 2,
        partition_mb: float = 256,
        zstd_level: int = 3,
        progress: bool = False,
        on_catalog: Callable[[CatalogResult], None] | None = None,
    ) -> ExportResult:
        """Export a catalog as HATS collections (one per table) that LSDB opens, into folder ``out``.

        Parameters
        ----------
        catalog
            A release (``dr2``), ``current`` or ``previous`` (as they were at
            ``as_of`` if given), or ``prompt``: the prompt catalog as of
            ``as_of`` (default: the instant the export starts, kept by a rerun).
        out
            Folder of the export: one HATS collection per table (main catalog
            and margin), tables without a position as Parquet files, and
            ``dpdb_export.json``, written last.
        tables
            Tables to export (default all, plus the nested ``ObjectNested`` /
            ``DiaObjectNested``: each object with its measurements as nested columns).
        margin
            Margin catalogs' width in arcseconds (0: none).
        jobs
            Parallel workers: dask worker processes (1: one worker thread in this process).
        partition_mb
            Largest HATS partition in memory, in MiB; bounds memory with the chunk size.
        zstd_level
            Parquet zstd compression level (hats' own default is 15: about 5 % smaller files
            for many times the CPU).
        progress
            Show hats-import's progress bars (on standard error).
        on_catalog
            Called with each finished catalog.

        Returns
        -------
        dpdb.hats.ExportResult
            The catalogs with their rows and margins; ``.line()`` summarizes.

        Notes
        -----
        A rerun into the same folder (after a kill) keeps every complete
        collection whose row count and provenance match, and finishes the rest.
        """
        from .hats import export_hats

        return export_hats(
            self.settings, catalog, Path(out), tables=list(tables) if tables else None,
            as_of=to_mjd_tai(as_of), margin=margin, jobs=jobs, partition_bytes=int(partition_mb * (1 << 20)),
            zstd_level=zstd_level, progress=progress, on_catalog=on_catalog,
        )  # fmt: skip

    # -- provenance ------------------------------------------------------------------------------

    def provenance(self, object_id: int) -> Provenance:
        """Where an ID comes from: its catalog, rows, versions, visits, loads, alerts and releases."""
        from .lookup import snapshot
        from .provenance import read_provenance

        with snapshot(self.settings) as conn:  # a pooled read-only snapshot (the portal calls this often)
            return read_provenance(conn, object_id)

    # -- objects and catalogs at a glance (what the web portal shows) ----------------------------

    def lookup(
        self,
        object_id: int,
        *,
        as_of: Instant | None = None,
        lightcurve: bool = False,
        provenance: bool = False,
    ) -> ObjectView:
        """A DiaObject, SSObject or Object by ID, from the catalog its ID came from.

        Returns its version visible at ``as_of`` (``.values()``, ``.row``), every
        version (``.versions``) with what changed between them (``.changes``), and
        the same object in the other loaded catalogs (``.counterparts``); with
        ``lightcurve``, its light curve as of ``as_of`` (``.curve``, see :meth:`lightcurve`),
        with ``provenance`` its :meth:`provenance` report (``.provenance``), all read in one
        snapshot.

        Raises
        ------
        ProvenanceError
            No catalog holds an object with this ID.
        ReleaseStateError
            The ID's release is archived or dropped.
        """
        from .lookup import lookup_object

        return lookup_object(
            self.settings, object_id, as_of=to_mjd_tai(as_of), lightcurve=lightcurve, provenance=provenance
        )

    def lightcurve(self, object_id: int, *, as_of: Instant | None = None) -> LightCurve:
        """The measurements of a DiaObject, Object or SSObject (an SSObject's: its DiaSources).

        Like :meth:`Plots.lightcurve_data`, which covers DiaObjects and Objects; ``as_of``
        reads the prompt catalog as it was and is ignored for a release's objects.
        """
        from .lookup import lightcurve

        return lightcurve(self.settings, object_id, as_of=to_mjd_tai(as_of))

    def overview(self) -> Overview:
        """The catalogs at a glance: the prompt catalog's size and last visit, every release."""
        from .overview import overview

        return overview(self.settings)


class Releases:
    """The data-release lifecycle of an :class:`Archive` (``archive.releases``).

    Every state-changing verb is recorded in the audit log.
    """

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    @property
    def _settings(self) -> Settings:
        return self._archive.settings

    def list(self) -> list[ReleaseRow]:
        """Every release with its state, row counts, size and dates."""
        from .db import prepare
        from .lifecycle.listing import list_releases

        prepare(self._settings)
        return list_releases(self._settings)

    def produce(
        self,
        name: str,
        out: str | Path,
        *,
        from_prompt: bool = False,
        number: int | None = None,
        seed: int = 1,
        objects: int = 20_000,
        nights: int = 3,
    ) -> Any:
        """Write release ``name``'s Parquet files and manifest to ``out`` (simulated, or from the prompt)."""
        from .db import prepare
        from .processing.simulator import produce

        if from_prompt:
            prepare(self._settings)
        return produce(
            Path(out), name, number=number, seed=seed, objects=objects, nights=nights,
            settings=self._settings if from_prompt else None,
        )  # fmt: skip

    def create(
        self, name: str, *, number: int | None = None, balance_from: str | Path | None = None
    ) -> Release:
        """Create release ``name``: an empty schema at the newest schema version (state ``created``).

        With shards registered its partitions are distributed over them, balanced by
        the rows of the files of the release directory ``balance_from`` (default: by area).
        """
        from dpdb.model.felis import latest_version

        from .db import connect, prepare
        from .etl.release_dir import verify
        from .registry.audit import audited
        from .registry.releases import create_release
        from .shards.placement import weights_from

        prepare(self._settings)
        order = self._settings.partition_order
        weights = None
        if balance_from is not None:
            files = verify(Path(balance_from)).tables.values()
            weights = weights_from(((f.path, f.rows) for entries in files for f in entries), order)
        with audited(self._settings, "release.create", name=name, number=number):
            with connect(self._settings) as conn:
                return create_release(conn, name, latest_version(), order, number, weights)

    def load(self, name: str, directory: str | Path, *, jobs: int = 2, legacy: bool = False) -> LoadResult:
        """Load a produced release folder into release ``name`` (state ``loaded``); rerun to finish.

        A fresh release streams into unindexed partitions and builds its indexes afterwards,
        in ``jobs`` connections; ``legacy`` keeps the indexes during the load (to compare).
        """
        from .lifecycle.load import load_release
        from .registry.audit import audited

        with audited(self._settings, "release.load", name=name, directory=str(directory)) as audit:
            result = load_release(self._settings, name, Path(directory), jobs=jobs, legacy=legacy)
            audit.outcome = f"ok: {sum(result.rows.values())} rows"
        return result

    def validate(self, name: str) -> Report:
        """Check release ``name`` (state ``validated`` or ``failed``); the report of every check."""
        from .lifecycle.validate import validate_release
        from .registry.audit import audited

        with audited(self._settings, "release.validate", name=name) as audit:
            report = validate_release(self._settings, name)
            audit.outcome = "validated" if report.ok else "failed"
        return report

    def activate(
        self, name: str, *, force: bool = False, dry_run: bool = False, at: Instant | None = None
    ) -> Activation:
        """Make ``name`` the ``current`` release (the old one becomes ``previous``).

        ``at``: the activation's instant (default now), e.g. to replay a survey's history; it may not
        lie in the future and must be later than every change committed so far.
        """
        from .lifecycle.activate import activate_release
        from .registry.audit import audited

        instant = to_mjd_tai(at)
        with audited(
            self._settings, "release.activate", name=name, force=force, dry_run=dry_run, at=instant
        ) as audit:
            result = activate_release(self._settings, name, force=force, dry_run=dry_run, at=instant)
            audit.outcome = (
                "dry run" if dry_run else f"ok: previous {result.previous}, archived {result.archived}"
            )
        return result

    def retain(self, *, dry_run: bool = False) -> builtins.list[str]:
        """Archive the releases beyond the retention policy; the names archived."""
        from .lifecycle.activate import retain
        from .registry.audit import audited

        with audited(self._settings, "release.retain", dry_run=dry_run) as audit:
            names = retain(self._settings, dry_run=dry_run)
            audit.outcome = f"{'dry run' if dry_run else 'ok'}: {names}"
        return names

    def archive(self, name: str) -> ArchiveResult:
        """Archive release ``name`` to Parquet and drop its tables, keeping a sample."""
        from .lifecycle.archive import archive_release
        from .registry.audit import audited

        with audited(self._settings, "release.archive", name=name):
            return archive_release(self._settings, name)

    def restore(self, name: str, *, jobs: int = 2) -> LoadResult:
        """Load an archived release back into the database from its archive."""
        from .lifecycle.load import restore_release
        from .registry.audit import audited

        with audited(self._settings, "release.restore", name=name) as audit:
            result = restore_release(self._settings, name, jobs=jobs)
            audit.outcome = f"ok: {sum(result.rows.values())} rows"
        return result

    def drop(self, name: str, *, dry_run: bool = False) -> builtins.list[str]:
        """Drop release ``name`` (never the active one); the actions taken.

        When citations read the release, the last line is a warning naming them
        (also written to the audit log): they can no longer be verified afterwards.
        """
        from .citations import drop_warning
        from .lifecycle.archive import drop_release
        from .registry.audit import audited

        warning = drop_warning(self._settings, name)
        with audited(self._settings, "release.drop", name=name, dry_run=dry_run) as audit:
            actions = drop_release(self._settings, name, dry_run=dry_run)
            audit.outcome = ("dry run" if dry_run else "ok") + (f"; {warning}" if warning else "")
        return actions + ([warning] if warning else [])


class Shards:
    """The shards of an :class:`Archive` (``archive.shards``): PostgreSQL servers holding release partitions.

    While shards are registered, every new release (``releases.create``, and a
    restore) is distributed over them as postgres_fdw foreign partitions;
    queries, views, time travel and the lifecycle work unchanged.
    """

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def add(self, name: str, dsn: str) -> Shard:
        """Register shard ``name`` at ``dsn`` (a server with q3c, pg_sphere and prepared transactions)."""
        from .db import connect
        from .registry.audit import audited
        from .shards.registry import add_shard

        with audited(self._archive.settings, "shard.add", name=name):
            with connect(self._archive.settings) as conn:
                return add_shard(conn, name, dsn)

    def list(self) -> builtins.list[Shard]:
        """The registered shards (:class:`dpdb.shards.registry.Shard`), by name."""
        from .db import connect
        from .shards.registry import list_shards

        with connect(self._archive.settings) as conn:
            return list_shards(conn)

    def remove(self, name: str) -> None:
        """Unregister shard ``name``; refused while it holds partitions of a release."""
        from .db import connect
        from .registry.audit import audited
        from .shards.registry import remove_shard

        with audited(self._archive.settings, "shard.remove", name=name):
            with connect(self._archive.settings) as conn:
                remove_shard(conn, name)

    def start(self, count: int) -> builtins.list[str]:
        """Start ``count`` local shard servers (embedded default only) and register them; what was done."""
        from .db import connect
        from .shards.servers import start_shards

        with connect(self._archive.settings) as conn:
            return start_shards(self._archive.settings, count, conn)

    def status(self) -> builtins.list[ShardState]:
        """Each shard: reachable or not, where, its version and the releases it holds."""
        from .db import connect
        from .shards.servers import shard_status

        with connect(self._archive.settings, check=False) as conn:
            return shard_status(self._archive.settings, conn)

    def placement(self, release: str) -> dict[str, builtins.list[tuple[int, int]]]:
        """Shard -> order-29 HEALPix pixel ranges ``[first, end)`` of ``release`` ({} if not sharded)."""
        from .db import connect
        from .shards.placement import placement

        with connect(self._archive.settings) as conn:
            return placement(conn, release)


class Prompt:
    """Prompt processing of an :class:`Archive` (``archive.prompt``): ingest, relink, alerts."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        processing_time: Instant | None = None,
        progress: Callable[[VisitResult], None] | None = None,
        on_relink: Callable[[RelinkResult], None] | None = None,
    ) -> list[VisitResult]:
        """Ingest the visit folders under ``paths`` in time order (association and aggregation in SQL)."""
        from .prompt.ingest import ingest

        return ingest(
            self._archive.settings, [Path(p) for p in paths], processing_time=to_mjd_tai(processing_time),
            progress=progress, on_relink=on_relink,
        )  # fmt: skip

    def simulate(
        self, out: str | Path, nights: int, *, first_night: int | None = None, **options: object
    ) -> list[Path]:
        """Simulate ``nights`` nights of the survey into ``out`` (visit folders of Parquet, with truth).

        ``first_night=None`` continues after the last night the prompt catalog holds;
        ``options`` are survey settings (``seed``, ``visits_per_night``, ``sources_per_visit``,
        ``area``) applied on top of the survey already in ``out``.
        """
        from .processing.simulator import simulate, survey_config

        out = Path(out)
        if first_night is None:
            first_night = self.next_night()
        return simulate(out, nights, survey_config(out, **options), first_night=first_night)

    def next_night(self) -> int:
        """The simulated survey's night after the last one the prompt catalog holds (0 when empty)."""
        from .processing.simulator import next_night

        return next_night(self.last_visit())

    def last_visit(self) -> int | None:
        """The highest visit ID ingested (``None``: none yet)."""
        from .db import connect
        from .registry.prompt_log import last_visit

        with connect(self._archive.settings) as conn:
            return last_visit(conn)

    def association_quality(self, paths: Sequence[str | Path]) -> Any:
        """Association completeness and purity against the simulator's truth files under ``paths``."""
        from .processing.simulator import association_quality
        from .prompt.staging import find_visits

        return association_quality(self._archive.settings, find_visits([Path(p) for p in paths]))

    def relink(self, linkage: str | Path, *, processing_time: Instant | None = None) -> RelinkResult:
        """Apply a daytime linkage folder: DiaSources move to the SSObjects it names."""
        from .prompt.relink import relink

        return relink(self._archive.settings, Path(linkage), processing_time=to_mjd_tai(processing_time))

    def alert(self, dia_source_id: int, *, as_of: Instant | None = None) -> dict[str, Any]:
        """The alert record of a DiaSource (schema lsst.v11_1.alert); ``as_of=None``: as issued."""
        from .prompt.alert import alert_record

        return alert_record(self._archive.settings, dia_source_id, _checked(self._archive.settings, as_of))


class Citations:
    """Citations of query results (``archive.citations``): make, resolve, show, list."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def cite(
        self,
        sql: str,
        *,
        as_of: Instant | None = None,
        release: str | None = None,
        title: str | None = None,
        creator: str | None = None,
    ) -> Made:
        """Cite a query's result (see :meth:`Archive.cite`); ``.existing``: it was cited before."""
        from .citations import cite

        settings = self._archive.settings
        return cite(settings, sql, as_of=to_mjd_tai(as_of), release=release, title=title, creator=creator)

    def resolve(self, reference: str, *, record: bool = True) -> Resolution:
        """Re-run a citation as of its instant; ``.verified``, or ``.differences`` saying what changed.

        ``reference`` is the ID, the handle, a doi.org URL or the landing URL.
        A citation of a release archived since is read from the release's kept
        sample when the query lies inside it, else ``CitationUnavailableError``
        says which release to restore. ``record=False`` writes no audit-log
        entry (the web portal only reads).
        """
        from .citations import resolve

        return resolve(self._archive.settings, reference, record=record)

    def get(self, reference: str) -> Citation:
        """The stored citation (no query is run)."""
        from .db import connect
        from .registry.citations import find

        with connect(self._archive.settings) as conn:
            return find(conn, reference)

    def list(self) -> builtins.list[Citation]:
        """Every citation, oldest first."""
        from .db import connect
        from .registry.citations import all_citations

        with connect(self._archive.settings) as conn:
            return all_citations(conn)

    def show(self, reference: str, format: str = "json") -> str:
        """A citation's metadata as ``json``, ``datacite`` (DataCite REST JSON) or ``bibtex`` text."""
        from .citations import render

        return render(self.get(reference), self._archive.settings, format)

    def write(self, resolution: Resolution, out: str | Path, format: str = "parquet") -> Path:
        """Write a resolved citation's rows to ``out`` (a ``dpdb query`` format), citation in its metadata."""
        from .citations import file_metadata
        from .query_output import write_result

        meta = file_metadata(resolution.citation, self._archive.settings)
        write_result(resolution.result, format, Path(out), meta=meta)
        return Path(out)

    def dependents(self, release: str) -> builtins.list[Citation]:
        """The citations whose query read ``release``."""
        from .citations import dependents

        return dependents(self._archive.settings, release)


class Plots:
    """Figures of an :class:`Archive` (``archive.plot``).

    ``*_data`` methods return the data of a figure (for the portal, or your own plots);
    ``draw`` writes any of them as a PNG; ``lightcurve``/``sky``/``history`` do both.
    """

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def lightcurve_data(self, object_id: int, *, as_of: Instant | None = None) -> LightCurve:
        """Light curve of an Object or DiaObject: per band, detections and forced photometry."""
        from .plots import lightcurve_data

        instant = _checked(self._archive.settings, as_of)
        return lightcurve_data(self._archive.settings, object_id, as_of=instant)

    def sky_data(
        self, *, release: str = "current", table: str | None = None, order: int | None = None
    ) -> SkyMap:
        """HEALPix density of a catalog's objects (``release``: current, previous, drN or prompt)."""
        from .plots import sky_data

        return sky_data(self._archive.settings, release=release, table=table, order=order)

    def history_data(self, dia_object_id: int) -> History:
        """Version history of a prompt DiaObject: what changed, when."""
        from .plots import history_data

        return history_data(self._archive.settings, dia_object_id)

    @staticmethod
    def draw(data: LightCurve | SkyMap | History, out: str | Path) -> Path:
        """Write the figure of ``data`` (from a ``*_data`` method) as a PNG, atomically."""
        from .plots import History, LightCurve, SkyMap, draw_history, draw_lightcurve, draw_sky

        if isinstance(data, LightCurve):
            return draw_lightcurve(data, Path(out))
        if isinstance(data, SkyMap):
            return draw_sky(data, Path(out))
        if isinstance(data, History):
            return draw_history(data, Path(out))
        raise TypeError(f"nothing to draw for {type(data).__name__}")

    def lightcurve(self, object_id: int, out: str | Path, *, as_of: Instant | None = None) -> Path:
        """Draw :meth:`lightcurve_data` to the PNG ``out``."""
        return self.draw(self.lightcurve_data(object_id, as_of=as_of), out)

    def sky(self, out: str | Path, *, release: str = "current", table: str | None = None) -> Path:
        """Draw :meth:`sky_data` to the PNG ``out``."""
        return self.draw(self.sky_data(release=release, table=table), out)

    def history(self, dia_object_id: int, out: str | Path) -> Path:
        """Draw :meth:`history_data` to the PNG ``out``."""
        return self.draw(self.history_data(dia_object_id), out)


class Backups:
    """``archive.backups``: base backups and point-in-time recovery of the embedded server."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def _server(self) -> Any:
        """The embedded server (backups cover the embedded server only)."""
        from .errors import ConfigError
        from .pg import server_for

        server = server_for(self._archive.settings)
        if server is None:
            raise ConfigError(
                "dpdb backs up its embedded server only; DPDB_DSN points at another server, "
                "back it up with that server's own tooling"
            )
        return server

    def take(self, kind: str = "full") -> Any:
        """Take a base backup (``full``, ``diff`` or ``incr``); return a :class:`~dpdb.backup.BackupInfo`."""
        from .backup import backup

        return backup(self._server(), kind)

    def list(self) -> list[Any]:
        """The base backups in the repository, oldest first."""
        from .backup import list_backups

        return list_backups(self._server())

    def wal(self) -> Any:
        """The WAL archive: whether the server archives, and the first and last segment stored."""
        from .backup import wal_status

        return wal_status(self._server())

    def restore(self, to: Instant, into: str | Path) -> Any:
        """Recover a copy of the database as of ``to`` into the new dpdb home ``into`` (left running).

        Returns a :class:`~dpdb.backup.RestoreResult`; ``Archive(home=into)`` reads the copy.
        """
        from .backup import instant_utc, restore
        from .errors import ConfigError

        mjd = to_mjd_tai(to)
        if mjd is None:
            raise ConfigError("give the instant to restore to")
        return restore(self._server(), instant_utc(mjd), Path(into))
