"""Releases sharded over several PostgreSQL servers with postgres_fdw (docs/architecture.md, decision 9).

``registry`` (shards as foreign servers), ``servers`` (embedded local shards),
``placement`` (partitions to shards, foreign partitions), ``commit`` (loads
that commit on the coordinator and a shard together).
"""
