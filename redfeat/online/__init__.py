"""L1, the hot path: atomic writes, latest and as-of reads, history, the change feed."""
