"""L2: similarity search over Vector fields (in-process and server indexes) and texts."""
