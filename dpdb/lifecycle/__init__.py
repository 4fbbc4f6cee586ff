"""The data-release lifecycle (DPDD §4.5): load, validate, activate, retain/archive, restore, drop.

One module per verb of ``dpdb release``; the registry and states are in
:mod:`dpdb.registry`, the on-disk layout of release and archive directories in
:mod:`dpdb.etl.release_dir`.
"""
