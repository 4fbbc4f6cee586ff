"""SQL run inside PostgreSQL (data package of ``*.sql`` files, readable in psql)."""
