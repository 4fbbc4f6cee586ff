"""Versioned felis table definitions, installed as the data package ``dpdb.schemas``."""
