"""L2: window features, sliding-window aggregates of an entity's events kept as tiles."""
