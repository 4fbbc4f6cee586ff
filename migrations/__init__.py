"""Alembic environment of dpdb (``dpdb db migrate`` drives it; no alembic.ini needed)."""
