"""Every Redis key redfeat uses, built in one place.

Layout (readable in redis-cli; ``{...}`` is the Redis Cluster hash tag)::

    rf:<project>:registry                 hash: definitions (views, entities, windows)
    rf:<project>:{<view>|<entity id>}     latest version of one entity (string)
    rf:<project>:{<view>|<entity id>}:t   named versions of one entity (hash tag -> id)
    rf:<project>:{<view>|<entity id>}:h   older versions of one entity (a string: one chunk,
                                          online/lua.py; the latest too with a ttl)
    rf:<project>:{<window>|<entity id>}:w tiles of one entity's window features (hash)
    rf:<project>:{<window>|<entity id>}:we  raw events of those tiles (hash, by bucket)
    rf:<project>:feed:<view>              change feed: capped stream of change events
    rf:<project>:events:<view>            pub/sub channel of live change events
    rf:<project>:ingest:<view>            pushed rows for workers (stream, group "redfeat")
    rf:<project>:dead:<view>              rows workers refused, with the error (stream)
    rf:<project>:pushed:<view>            pub/sub channel rung by a push (on a cluster)
    rf:<project>:mat:<view>               materialization: watermark, run in progress (hash)
    rf:<project>:vx:<view>:<field>:<sig>:<id>   mirror hash for a server vector index
    rf:<project>:vx:<view>:<field>:<sig>:idx    that FT index's name
    rf:<project>:q:<view>:...             quality: hourly profiles, counters, baseline
    rf:<project>:q:config|newest|written  quality settings, newest event, last write
    rf:<project>:ts:{<series>}...         time series: state, head, chunks, tile pages
    rf:<project>:alerts:...               alert rules, state, history, events channel
    rf:<project>:derive                   hash: leases of writers deriving views, and spans
                                          of source writes to derive again
    rf:<project>:derive:lock              string with a ttl: held while those are derived
    rf:<project>:durability               string: WAITAOF barrier after a reconnect
    rf:<project>:durability:{<tag>}       the same on one slot (one per node on a cluster)

A project stored partitioned (on a Redis Cluster; ``partitions`` P > 0, kept in the
registry) tags entity keys by partition instead of by entity, so that one write step of
many entities of one partition touches one slot, and splits each view's feed likewise::

    rf:<project>:{<view>|:<k>.<salt>}:<entity id>     latest (":h" history, ":w" tiles)
    rf:<project>:feed:{<view>|:<k>.<salt>}            change feed of partition k
    rf:<project>:ingest:{<view>|:<k>.<salt>}          pushed rows of partition k
    rf:<project>:dead:{<view>|:<k>.<salt>}            dead letters of partition k

k = crc32(escaped id) mod P; the salt is the smallest number that puts partition k's slot
in the k-th P-th of the 16384 slots, so the partitions spread evenly over the masters.

Every key is built here, and ``Keys.parse`` reads any of them back; nothing else in the
package slices key strings. All keys of one (view, entity) share one hash tag, so the
atomic write step and the time-travel read stay on one cluster slot. Entity ids are
percent-escaped so that no id can end a tag, forge a separator, or act as a glob in a SCAN
pattern.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

from redis.crc import key_slot

from ..errors import ConfigurationError

MAX_ID_BYTES = 1024
MAX_PARTITIONS = 1024
SLOTS = 16_384

# Characters that would change the key's structure or SCAN MATCH semantics, plus whitespace
# and controls (kept readable in redis-cli). Everything else, unicode included, passes as is.
_UNSAFE = frozenset("%{}|:*?[]\\") | frozenset(chr(c) for c in range(0x21)) | {"\x7f"}
_ESCAPE = str.maketrans({c: f"%{ord(c):02X}" for c in _UNSAFE})
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(sorted(_UNSAFE))) + "]")


def escape_id(entity_id: str) -> str:
    """Escape an entity id for use inside a key (injective: distinct ids, distinct keys)."""
    if _NEEDS_ESCAPE.search(entity_id) is None:
        return entity_id
    return entity_id.translate(_ESCAPE)


def unescape_id(escaped: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(escaped):
        c = escaped[i]
        if c == "%":
            out.append(chr(int(escaped[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_project(project: object) -> str:
    if (
        not isinstance(project, str)
        or not project
        or len(project) > 64
        or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in project)
    ):
        raise ConfigurationError(
            f"project {project!r} is not allowed: use 1-64 ASCII letters, digits, '_', '-' or '.'"
        )
    return project


class Parsed(NamedTuple):
    """A key read back: its family ("entity", "feed", "events", "ingest", "dead", "mat",
    "vx", "q", "ts", "alerts", "registry"), the view (window, series...) it belongs to, the
    entity id (unescaped) for per-entity keys, and what follows (e.g. "h" for history)."""

    family: str
    name: str
    entity: str | None = None
    suffix: str = ""


# the suffix of an entity's history key, after its latest key
HISTORY = ":h"


class Keys:
    """Key builder (and parser) for one project."""

    __slots__ = ("project", "prefix", "partitions", "_tags")

    def __init__(self, project: str, partitions: int = 0) -> None:
        self.project = check_project(project)
        self.prefix = f"rf:{project}:"
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise ConfigurationError(f"partitions must be an int, got {partitions!r}")
        if not 0 <= partitions <= MAX_PARTITIONS:
            raise ConfigurationError(
                f"partitions must be in 0 .. {MAX_PARTITIONS} (0: one tag per entity), "
                f"got {partitions}"
            )
        self.partitions = partitions
        self._tags: dict[tuple[str, int], str] = {}

    @property
    def registry(self) -> str:
        return self.prefix + "registry"

    def partition(self, escaped_id: str) -> int:
        """The partition of an entity (0 when the project is not partitioned)."""
        if not self.partitions:
            return 0
        return zlib.crc32(escaped_id.encode()) % self.partitions

    def part_tag(self, view: str, k: int) -> str:
        """``{<view>|:<k>.<salt>}``: the hash tag of a view's partition k."""
        tag = self._tags.get((view, k))
        if tag is None:
            lo = k * SLOTS // self.partitions
            hi = (k + 1) * SLOTS // self.partitions
            salt = 0
            while not lo <= key_slot(f"{view}|:{k}.{salt}".encode()) < hi:
                salt += 1
            tag = self._tags[(view, k)] = f"{{{view}|:{k}.{salt}}}"
        return tag

    def tag(self, view: str, escaped_id: str) -> str:
        if self.partitions:
            k = zlib.crc32(escaped_id.encode()) % self.partitions
            return f"{self.prefix}{self.part_tag(view, k)}:{escaped_id}"
        return f"{self.prefix}{{{view}|{escaped_id}}}"

    def latest(self, view: str, escaped_id: str) -> str:
        return self.tag(view, escaped_id)

    def history(self, view: str, escaped_id: str) -> str:
        return self.tag(view, escaped_id) + HISTORY

    def latest_affix(self, view: str, partition: int) -> tuple[str, str]:
        """What comes before and after an escaped id in the latest keys of ``view`` (of
        ``partition`` when the project is partitioned): the write step builds thousands of
        keys a call, the entities of one partition, without a crc32 for each."""
        if self.partitions:
            return f"{self.prefix}{self.part_tag(view, partition)}:", ""
        return f"{self.prefix}{{{view}|", "}"

    def tags(self, view: str, escaped_id: str) -> str:
        """Hash: one entity's named versions, tag -> version id (``write(..., tag=)``)."""
        return self.tag(view, escaped_id) + ":t"

    def window_tiles(self, name: str, escaped_id: str) -> str:
        """Hash: one entity's window-feature tiles, bucket id -> packed tile (windows.py)."""
        return self.tag(name, escaped_id) + ":w"

    def window_events(self, name: str, escaped_id: str) -> str:
        """Hash: the raw events of one entity's kept tiles, bucket id -> packed events."""
        return self.tag(name, escaped_id) + ":we"

    def feed(self, view: str, k: int = 0) -> str:
        """The view's change feed (a capped stream of change events); of partition k in a
        partitioned project."""
        if self.partitions:
            return f"{self.prefix}feed:{self.part_tag(view, k)}"
        return f"{self.prefix}feed:{view}"

    def feeds(self, view: str) -> list[str]:
        """Every partition's change feed of a view (one when not partitioned)."""
        return [self.feed(view, k) for k in range(max(1, self.partitions))]

    def channel(self, view: str) -> str:
        """Where change events of a view are published live."""
        return f"{self.prefix}events:{view}"

    @property
    def channel_pattern(self) -> str:
        return f"{self.prefix}events:*"

    def ingest(self, view: str, k: int = 0) -> str:
        """Stream: rows pushed for workers (store.push), consumed by group "redfeat"; of
        partition k in a partitioned project."""
        if self.partitions:
            return f"{self.prefix}ingest:{self.part_tag(view, k)}"
        return f"{self.prefix}ingest:{view}"

    def ingests(self, view: str) -> list[str]:
        """Every partition's ingest stream of a view (one when not partitioned)."""
        return [self.ingest(view, k) for k in range(max(1, self.partitions))]

    def ingest_bell(self, view: str) -> str:
        """Pub/sub channel (not a key): rung after rows are pushed on a cluster, where a
        worker cannot block on streams of many slots at once."""
        return f"{self.prefix}pushed:{view}"

    def dead_letters(self, view: str, k: int = 0) -> str:
        """Stream: rows workers refused, with the error; of partition k in a partitioned
        project (on the slot of that partition's ingest stream)."""
        if self.partitions:
            return f"{self.prefix}dead:{self.part_tag(view, k)}"
        return f"{self.prefix}dead:{view}"

    def dead_letter_streams(self, view: str) -> list[str]:
        """Every partition's dead letters of a view (one when not partitioned)."""
        return [self.dead_letters(view, k) for k in range(max(1, self.partitions))]

    def materialized(self, view: str) -> str:
        """Hash: how far a view's batch source is loaded (``watermark``, us) and the run in
        progress (``run``: its window and how far it got), for resuming after a crash."""
        return f"{self.prefix}mat:{view}"

    def vectors(self, view: str, field: str | None = None, sig: str | None = None) -> str:
        """Prefix of a server vector index's mirror hashes: of one (view, field, layout
        digest), or of every index of a view (field None) for dropping them all."""
        if field is None:
            return f"{self.prefix}vx:{view}:"
        return f"{self.prefix}vx:{view}:{field}:{sig}:"

    def vector_mirror(self, view: str, field: str, sig: str, escaped_id: str) -> str:
        return self.vectors(view, field, sig) + escaped_id

    def vector_index(self, view: str, field: str, sig: str) -> str:
        """The FT index's name over the mirror hashes. FT names are not keys, so it cannot
        clash with the mirror of an entity called "idx"; ``parse`` reads that text as the
        index."""
        return self.vectors(view, field, sig) + "idx"

    # -- derived views: crash recovery (transforms.derived.Leases, writes.Recovery) ------

    @property
    def derive(self) -> str:
        """Hash, one key so that it is changed atomically: ``L:<writer>`` ->
        "<since ms>:<heartbeat ms>" while a writer writes a source view that has derived
        views (server time); ``P:<source>|<writer>`` -> "<from ms>:<to ms>" or "all": source
        writes whose derived versions must be checked again (the writer died);
        ``B:<derived view>`` -> "all" or "force": a backfill not finished yet."""
        return self.prefix + "derive"

    @property
    def derive_lock(self) -> str:
        """String with a ttl: held by the process catching derived views up."""
        return self.prefix + "derive:lock"

    @property
    def durability(self) -> str:
        """String: written before WAITAOF when a write call spanned a reconnect."""
        return self.prefix + "durability"

    def durability_near(self, key: str) -> str:
        """The WAITAOF barrier on the slot of ``key`` (a key of this project with a hash
        tag): on a cluster, each node's part of a write call is confirmed on its own."""
        start = key.find("{")
        end = key.find("}", start)
        if start < 0 or end < 0:
            return self.durability
        return f"{self.prefix}durability:{key[start : end + 1]}"

    def durability_slot(self, n: int) -> str:
        """A WAITAOF barrier with the hash tag ``{n}``: some n puts one on each node."""
        return f"{self.prefix}durability:{{{n}}}"

    def view_pattern(self, view: str) -> str:
        """SCAN MATCH pattern covering every key of one view ('{' is not special to MATCH)."""
        return f"{self.prefix}{{{view}|*"

    def parse(self, key: str | bytes) -> Parsed | None:
        """What a key of this project is, or None for another project's or a stranger's."""
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        if not text.startswith(self.prefix):
            return None
        rest = text[len(self.prefix) :]
        if rest == "registry":
            return Parsed("registry", "")
        if rest.startswith("{"):
            close = rest.find("}")
            inner = rest[1:close]
            if close < 0 or "|" not in inner:
                return None
            view, _, esc = inner.partition("|")
            if esc.startswith(":"):  # partitioned: the id follows the tag
                esc, _, suffix = rest[close + 2 :].partition(":")
                return Parsed("entity", view, unescape_id(esc), suffix)
            return Parsed("entity", view, unescape_id(esc), rest[close + 2 :])
        if rest.startswith("ts:{"):
            close = rest.find("}")
            return Parsed("ts", unescape_id(rest[4:close]), None, rest[close + 2 :])
        family, _, tail = rest.partition(":")
        if family in ("feed", "ingest", "dead") and tail.startswith("{"):
            view, _, part = tail[1:-1].partition("|:")
            return Parsed(family, view, None, part.partition(".")[0])
        if family in ("feed", "events", "ingest", "dead", "mat"):
            return Parsed(family, tail)
        if family == "vx":
            view, _, more = tail.partition(":")
            parts = more.split(":", 2)  # field, sig, id or "idx"
            if len(parts) == 3 and parts[2] != "idx":
                return Parsed("vx", view, unescape_id(parts[2]), f"{parts[0]}:{parts[1]}")
            return Parsed("vx", view, None, more)
        if family == "q":
            name, _, more = tail.partition(":")
            return Parsed("q", name, None, more)
        if family == "alerts":
            return Parsed("alerts", tail.removeprefix("{a}:"))
        return Parsed(family, tail)

    # -- quality: profiles, counters, baselines (not per entity: no hash tag needed) ------

    def quality(self, view: str, *parts: str | int) -> str:
        """``rf:<p>:q:<view>:<parts...>``: profiles (``p:<source>:<hour>``), their index
        (``hours:<source>``), counters (``c:<hour>``), the baseline (``baseline``)."""
        return f"{self.prefix}q:{view}:" + ":".join(str(p) for p in parts)

    def quality_pattern(self, view: str) -> str:
        return f"{self.prefix}q:{view}:*"

    @property
    def quality_config(self) -> str:
        return self.prefix + "q:config"

    @property
    def newest_event(self) -> str:
        """Sorted set: view -> newest event time written (us)."""
        return self.prefix + "q:newest"

    @property
    def last_write(self) -> str:
        """Sorted set: view -> time of the last write (us)."""
        return self.prefix + "q:written"

    # -- time series (redfeat.timeseries) ------------------------------------------------
    # Every key of one series shares the hash tag {<escaped name>} after "ts:", so a
    # series' atomic steps stay on one cluster slot and can never reach a view's keys
    # (those start "rf:<project>:{").

    def series(self, escaped_name: str) -> str:
        """Hash: the series' state (newest timestamp, head generation, counters)."""
        return f"{self.prefix}ts:{{{escaped_name}}}"

    def series_head(self, escaped_name: str) -> str:
        """String: the open head chunk, packed (int64 ms, float64) pairs in time order."""
        return self.series(escaped_name) + ":head"

    def series_lock(self, escaped_name: str) -> str:
        """String with a ttl: held by a writer rewriting chunks; appends wait for it."""
        return self.series(escaped_name) + ":lock"

    def series_chunk_index(self, escaped_name: str) -> str:
        """Sorted set: sealed chunks scored by their first timestamp (member: that ts)."""
        return self.series(escaped_name) + ":ci"

    def series_chunks(self, escaped_name: str) -> str:
        """Hash: first timestamp -> sealed, compressed chunk."""
        return self.series(escaped_name) + ":c"

    def series_pages(self, escaped_name: str) -> str:
        """Sorted set: tile pages scored by their end (ms), member '<rollup ms>:<page>'."""
        return self.series(escaped_name) + ":tp"

    def series_page(self, escaped_name: str, rollup_ms: int, page: int) -> str:
        """Hash: one page of a rollup's tiles, bucket slot -> packed tile."""
        return f"{self.series(escaped_name)}:t:{rollup_ms}:{page}"

    def series_page_member(self, escaped_name: str, member: str) -> str:
        """The page key named by a member of ``series_pages`` ('<rollup ms>:<page>')."""
        return f"{self.series(escaped_name)}:t:{member}"

    # -- alerts (redfeat.timeseries.alerts): rules, state, versions, history, events -----

    def alerts(self, part: str) -> str:
        """``rules`` / ``state`` / ``ver`` / ``rounds`` (hashes by rule name), ``events``
        (channel). Partitioned (cluster) projects tag them ``alerts:{a}:...``: one slot, so
        that a rule's state changes stay one atomic step."""
        return f"{self.prefix}alerts:{self._alerts_tag}{part}"

    @property
    def _alerts_tag(self) -> str:
        return "{a}:" if self.partitions else ""

    def alert_history(self, name: str) -> str:
        """Capped stream: one rule's transitions."""
        return f"{self.prefix}alerts:{self._alerts_tag}history:{escape_id(name)}"
