"""L2: the Parquet offline log, point-in-time training frames, export and backfill."""
