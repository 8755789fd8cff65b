"""L2: stream ingestion (push, workers, dead letters), the near cache, subscriptions."""
