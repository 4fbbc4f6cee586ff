"""The IVOA TAP 1.1 service's pieces: ADQL translation, TAP_SCHEMA, VOTable output, UWS jobs.

The HTTP routes are in :mod:`dpdb.tap.router`; :mod:`dpdb.service` mounts them at ``/tap``.
"""
