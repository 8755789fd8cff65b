"""Memory benchmark: bytes per entity of redfeat's layout beside a raw HSET of the same
values and Feast's measured 186 B (issue 18), on the embedded Valkey and on Redis 7.0.

Command:

    .venv/bin/python bench/memory.py [--entities 20000] [--url redis://127.0.0.1:6379/15]
                                     [--sizing 1000000] [--features 3,20] [--versions 1,10]
                                     [--lean]

For each server: an embedded Valkey (temporary directory, stopped at the end) and, if
``--url`` is given, that server (project "benchmem", its keys deleted at the end; nothing
is flushed). Each case writes ``--entities`` entities of a view with 3 or 20 Float
features, 1 or 10 versions each (history=10, the default), with or without the change feed
(with or without payloads: "+log" is an attached offline log) and profiling, and reports
``used_memory`` deltas divided by the entities. The baseline is one HSET per entity of the
same values (field names as keys, values as text).
``--sizing N`` also loads N entities (3 features, 1 version, defaults) and checks
``store.estimate_memory`` against the measured delta. ``--versions 1,2,10`` separates the
history key's own cost from each version's (core/sizing.py's h and b); ``--lean`` runs
only the cases without feed and profiling (what those constants are fitted on).
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from typing import Any

import redis

from redfeat import FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import EmbeddedServer

FEAST_B = 186.0  # Feast on Redis 7.0.15, 3 features, 100k entities (issue 18)
PROJECT = "benchmem"


def used(r: redis.Redis) -> int:
    time.sleep(0.05)  # lazy-free of the previous case's keys runs in the background
    return int(r.info("memory")["used_memory"])


def wipe(r: redis.Redis) -> None:
    batch: list[Any] = []
    for k in r.scan_iter(match=f"rf:{PROJECT}*", count=5000):
        batch.append(k)
        if len(batch) >= 5000:
            r.delete(*batch)
            batch = []
    if batch:
        r.delete(*batch)


def rows(first: int, n: int, features: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"entity_id": f"user{i:09d}", **{f"f{j}": rng.random() * 1000 for j in range(features)}}
        for i in range(first, first + n)
    ]


def case(
    r: redis.Redis,
    *,
    entities: int,
    features: int,
    versions: int,
    feed: bool,
    profile: bool,
    rng: random.Random,
    log: bool = False,
) -> float:
    wipe(r)
    store = FeatureStore(client=r, project=PROJECT, feed_cap=100_000 if feed else 0)
    if log:  # as an attached offline log does: feed entries carry the payloads
        store._ctx.registry.attach_offline()
    try:
        view = FeatureView(
            "m", entity="user", fields=[Field(f"f{j}", t.Float) for j in range(features)]
        )
        store.apply(view)
        store.quality.configure("m", profile=profile)
        gc.collect()
        before = used(r)
        for _ in range(versions):
            for first in range(0, entities, 20_000):
                store.write_many("m", rows(first, min(20_000, entities - first), features, rng))
        store.close()  # flushes profiles
        return (used(r) - before) / entities
    finally:
        store.close()
        wipe(r)


# (feed, profiling, offline log attached: the feed carries payloads)
CASES = ((True, True, False), (True, False, False), (True, False, True), (False, False, False))


def hset_baseline(r: redis.Redis, entities: int, features: int, rng: random.Random) -> float:
    wipe(r)
    before = used(r)
    pipe = r.pipeline(transaction=False)
    for i in range(entities):
        pipe.hset(
            f"rf:{PROJECT}:h:user{i:09d}",
            mapping={f"f{j}": repr(rng.random() * 1000) for j in range(features)},
        )
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    out = (used(r) - before) / entities
    wipe(r)
    return out


def run(
    name: str,
    r: redis.Redis,
    entities: int,
    sizing: int,
    features_list: tuple[int, ...],
    versions_list: tuple[int, ...] = (1, 10),
    cases: tuple[tuple[bool, bool, bool], ...] = CASES,
) -> None:
    rng = random.Random(7)
    ver = r.info("server").get("valkey_version") or r.info("server")["redis_version"]
    print(f"\n{name} ({ver}), {entities:,} entities, bytes per entity (used_memory delta)")
    print(f"  {'case':<46}{'redfeat':>9}{'HSET':>8}{'Feast':>8}")
    for features in features_list:
        base = hset_baseline(r, entities, features, rng)
        for versions in versions_list:
            for feed, profile, log in cases:
                b = case(
                    r,
                    entities=entities,
                    features=features,
                    versions=versions,
                    feed=feed,
                    profile=profile,
                    rng=rng,
                    log=log,
                )
                label = (
                    f"{features} features, {versions:>2} version(s), "
                    f"feed {'+log' if log else 'on ' if feed else 'off'} "
                    f"profiling {'on ' if profile else 'off'}"
                )
                feast = f"{FEAST_B:>8.0f}" if features == 3 else f"{'':>8}"
                print(f"  {label:<46}{b:>9.1f}{base:>8.1f}{feast}", flush=True)
    if sizing:
        check_sizing(r, sizing)


def check_sizing(r: redis.Redis, n: int) -> None:
    wipe(r)
    store = FeatureStore(client=r, project=PROJECT)
    try:
        fields = [Field(f"f{j}", t.Float) for j in range(3)]
        store.apply(FeatureView("m", entity="user", fields=fields))
        rng = random.Random(11)
        before = used(r)
        for first in range(0, n, 50_000):
            store.write_many("m", rows(first, min(50_000, n - first), 3, rng))
        store.close()
        got = used(r) - before
        est = store.estimate_memory(entities=n, features=3, history=1)
        print(
            f"  sizing check, {n:,} entities x 3 features x 1 version (defaults): measured "
            f"{got / 1e6:,.1f} MB, estimate {est / 1e6:,.1f} MB ({(est - got) / got:+.1%})"
        )
    finally:
        store.close()
        wipe(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--url", default=None)
    ap.add_argument("--sizing", type=int, default=0)
    ap.add_argument("--features", default="3,20", help="feature counts, comma-separated")
    ap.add_argument("--versions", default="1,10", help="versions per entity, comma-separated")
    ap.add_argument("--lean", action="store_true", help="only feed off, profiling off")
    args = ap.parse_args()
    feats = tuple(int(f) for f in args.features.split(","))
    vers = tuple(int(v) for v in args.versions.split(","))
    cases = ((False, False, False),) if args.lean else CASES
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(tmp)
        info = server.ensure(keep_running=True)
        try:
            run("embedded Valkey", info.client(), args.entities, args.sizing, feats, vers, cases)
        finally:
            server.stop()
    if args.url:
        r = redis.Redis.from_url(args.url)
        try:
            run("Redis", r, args.entities, args.sizing, feats, vers, cases)
        finally:
            r.close()


if __name__ == "__main__":
    main()
