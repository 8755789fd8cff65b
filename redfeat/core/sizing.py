"""The memory a view needs, from constants measured by bench/memory.py (issue 18).

bytes = entities x (a + h + b x (versions - 1)) + buckets + feed + profiles, where ``a`` is one
entity's latest key, ``h`` the history key an entity gets with its second version, ``b``
each further version kept, ``feed`` the change feed (at most ``feed_cap`` versions; the
payloads too once an offline log is attached) and
``profiles`` the quality profiles of the view; ``buckets`` is the server's key table (8
bytes x the next power of two of the number of keys). A history member is the version id and the
payload (msgpack: 1-3 bytes of array header, 9 per Float, 1-9 per Int); while members fit
in 64 bytes (zset-max-listpack-value) the history is a listpack, beyond that a skiplist,
which costs several times more per version.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError

LISTPACK_VALUE = 64  # zset-max-listpack-value: the default on Redis 7.0 and Valkey
LISTPACK_ENTRIES = 128  # zset-max-listpack-entries


@dataclass(frozen=True, slots=True)
class Constants:
    """Measured bytes (used_memory deltas) for one server kind."""

    latest: float  # latest key without its payload
    per_payload_byte: float  # latest key growth per payload byte (allocator classes)
    history_key: tuple[float, float]  # the history key itself: listpack, skiplist
    per_version: tuple[float, float]  # each older version besides its member bytes
    feed_per_version: float  # without payloads (with an offline log: + payload + 4 bytes)


# bench/memory.py, 20,000 entities, 3 and 20 Float features, 1, 2 and 10 versions, less
# the main dictionary's buckets (8 bytes x the next power of two of the key count), which
# the estimate adds for the keys it counts
REDIS_7 = Constants(93.5, 1.14, (113.2, 861.0), (10.5, 137.2), 19.4)
VALKEY_9 = Constants(73.6, 1.12, (62.7, 771.7), (13.1, 54.8), 30.7)
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
    member = 9 + p
    skip = member > LISTPACK_VALUE or history - 1 > LISTPACK_ENTRIES
    per_entity = constants.latest + constants.per_payload_byte * p
    if history > 1:
        per_entity += constants.history_key[skip]
        per_entity += (history - 1) * (member + constants.per_version[skip])
    feed = min(entities * history, feed_cap) * (constants.feed_per_version + (p + 4) * offline)
    keys = entities * (2 if history > 1 else 1)
    return round(entities * per_entity + _buckets(keys) + feed + (PROFILES if profiles else 0))


def constants_for(server: str) -> Constants:
    """The measured constants of "redis" (7.0) or "valkey" (9)."""
    kinds = {"redis": REDIS_7, "valkey": VALKEY_9}
    if server not in kinds:
        raise ConfigurationError(f"server must be 'redis' or 'valkey', got {server!r}")
    return kinds[server]
