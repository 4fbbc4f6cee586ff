"""ETL: the one door into the database (Parquet validation and bulk loading)."""
