"""L0: keys, schema, codec, registry, connections, the embedded server, value types.

Imports nothing above it; never names ``FeatureStore``."""
