"""Processing stages that write Parquet (simulated survey, data release production)."""
