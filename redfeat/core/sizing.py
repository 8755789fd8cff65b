"""The memory a view needs, from constants measured by bench/memory.py (issue 18).

bytes = entities x (a + h + (P + b) x (versions - 1)) + buckets + feed + profiles, where
``a`` is one entity's latest key, ``h`` the history key an entity gets with its second
version (the key and its chunk's head), ``P + b`` each further version kept: its payload
(msgpack: 1-3 bytes of array header, 9 per Float, 1-9 per Int) and ``b``, its deltas of
event time and id (a few bytes each: versions written seconds to days apart) and the
allocator's rounding of the chunk (online/lua.py's docstring has the stored form);
``feed`` is the change feed (at most ``feed_cap`` versions; the payloads too once an
offline log is attached) and ``profiles`` the quality profiles of the view; ``buckets``
is the server's key table (8 bytes x the next power of two of the number of keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Constants:
    """Measured bytes (used_memory deltas) for one server kind."""

    latest: float  # latest key without its payload
    per_payload_byte: float  # latest key growth per payload byte (allocator classes)
    history_key: float  # the history key itself (with its chunk's head)
    per_version: float  # each older version besides its payload
    feed_per_version: float  # without payloads (with an offline log: + payload + 4 bytes)


# bench/memory.py, 20,000 entities, 3 and 20 Float features, less the main dictionary's
# buckets (8 bytes x the next power of two of the key count), which the estimate adds for
# the keys it counts. history_key and per_version: history chunks, `--versions 1,2,5,10
# --lean`, a least-squares fit over both widths (bench/RESULTS.md, Memory); the chunk's
# rounding up to the allocator's size classes is in them, on average
REDIS_7 = Constants(93.5, 1.14, 149.8, 11.6, 19.4)
VALKEY_9 = Constants(73.6, 1.12, 84.9, 8.9, 30.7)
PROFILES = 32_768  # a view's hourly profiles (measured 15-31 KB for 20k-100k entities)


def _buckets(keys: int) -> int:
    """The main dictionary's bucket array for ``keys`` keys (a power of two)."""
    return 8 * (1 << max(0, keys - 1).bit_length()) if keys else 0


def payload_bytes(features: int) -> int:
    """A row of ``features`` Float values as msgpack: the array header, 9 bytes each."""
    return (1 if features < 16 else 3) + 9 * features


def estimate(
    constants: Constants,
    *,
    entities: int,
    features: int,
    history: int,
    feed_cap: int = 100_000,
    profiles: bool = True,
    offline: bool = False,
) -> int:
    """Bytes for ``entities`` of one view with ``features`` Float features and ``history``
    versions kept per entity (1: the latest only); ``offline``: an offline log is attached,
    so the feed carries each version's payload."""
    for name, value, low in (("entities", entities, 0), ("features", features, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ConfigurationError(
            f"history must be the versions kept per entity, an int >= 1, got {history!r}"
        )
    p = payload_bytes(features)
    per_entity = constants.latest + constants.per_payload_byte * p
    if history > 1:
        per_entity += constants.history_key + (history - 1) * (p + constants.per_version)
    feed = min(entities * history, feed_cap) * (constants.feed_per_version + (p + 4) * offline)
    keys = entities * (2 if history > 1 else 1)
    return round(entities * per_entity + _buckets(keys) + feed + (PROFILES if profiles else 0))


def constants_for(server: str) -> Constants:
    """The measured constants of "redis" (7.0) or "valkey" (9)."""
    kinds = {"redis": REDIS_7, "valkey": VALKEY_9}
    if server not in kinds:
        raise ConfigurationError(f"server must be 'redis' or 'valkey', got {server!r}")
    return kinds[server]
