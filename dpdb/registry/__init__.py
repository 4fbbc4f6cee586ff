"""The one owner of the bookkeeping schema ``dpdb_meta`` (docs/architecture.md, decision 11).

Only the modules of this package read or write ``dpdb_meta`` from Python:

- :mod:`.states`: release states and catalog kinds (enums) and the one table of allowed transitions;
- :mod:`.versions`: the schema version in force and who applied it;
- :mod:`.catalogs`: the catalog schemas (prompt, releases), their creation and upgrade;
- :mod:`.releases`: the data-release registry, its state changes and ID origins;
- :mod:`.activations`: which release ``current`` / ``previous`` name, now or at an instant;
- :mod:`.manifest`: the load manifest;
- :mod:`.audit`: the audit log;
- :mod:`.prompt_log`: the prompt catalog's visits and daytime relinks;
- :mod:`.leap_seconds`: the TAI - UTC table the as-of SQL reads;
- :mod:`.tap_jobs`: the TAP service's asynchronous (UWS) jobs.

(SQL that runs inside the database, in ``sql/*.sql``, reads and writes the
prompt log and the leap seconds too; that is the database's side of the same tables.)

The submodules are imported by name (``from dpdb.registry import releases``);
this package imports none of them, so :mod:`dpdb.db` can use :mod:`.versions`
without an import cycle.
"""

META_NAMESPACE = "dpdb_meta"
"""The PostgreSQL schema of the bookkeeping tables (created from ``schema/vN/meta.yaml``)."""

__all__ = ["META_NAMESPACE"]
