"""Ingest: single points and batches into the head, sealed chunks and tiles.

Three paths, every one a single atomic server-side step:

- append: a small batch of new timestamps newer than every sealed point goes into the
  head (appended, or inserted in order) with its partial tiles merged, in one script that
  checks on the server that no point is a duplicate (so two writers racing at one
  timestamp cannot both take this path);
- bulk: a large batch newer than the newest point is cut into sealed chunks client-side
  (with the head's points in front) and committed with its tiles by compare-and-set;
- careful: out-of-order points and duplicates. The chunks they land in are decoded,
  merged by the duplicate policy, re-encoded and swapped by compare-and-set. New points
  merge into tiles; a duplicate that changed a value updates its buckets' tiles in place
  (correct.py: never rebuilt from the raw points left, which retention may have cut).
"""

from __future__ import annotations

import struct
import time
import uuid
from typing import Any

import numpy as np

from ..core.context import Ctx
from ..errors import BackendError, ConfigurationError, ConflictError, NotFoundError, backend_error
from .chunks import (
    CHUNK_POINTS,
    POINT_BYTES,
    SLACK_POINTS,
    encode_chunk,
    pack_points,
    sealable,
    sealed,
)
from .correct import Plan, finish, plan
from .spec import SeriesRegistry, SeriesSpec
from .storage import APPEND, COMMIT, UNLOCK, State, base_keys, cap, read_state, trim
from .tiles import one_tile, partials, rollup_partials, tile_args

SMALL = CHUNK_POINTS  # batches below this try the append path first
TRIM_EVERY = 1024  # appends between retention passes (sealing and batches always trim)
MAX_TRIES = 50  # compare-and-set attempts of one write
BUSY_SECONDS = 10.0  # how long an append waits for a careful writer's lock
LOCK_AFTER = 3  # failed attempts before a careful writer locks appends out
LOCK_MS = 5000  # the lock's ttl: a crashed writer blocks appends at most this long
_POINT = struct.Struct("<qd")
# tiles of one rollup for the server: (rollup index, tiles, 's' set | 'm' merge | 'r' replace)
Group = tuple[int, np.ndarray, str]


def _combine(policy: str, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    if policy == "first":
        return old
    if policy == "last":
        return new
    out: np.ndarray
    if policy == "min":
        out = np.minimum(old, new)
    elif policy == "max":
        out = np.maximum(old, new)
    else:
        out = old + new  # sum
    return out


def dedupe_batch(spec: SeriesSpec, ts: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort a batch; equal timestamps inside it combine by the policy, in input order."""
    if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
    if len(ts) < 2:
        return ts, vs
    dup = ts[1:] == ts[:-1]
    if not dup.any():
        return ts, vs
    if spec.duplicate_policy == "block":
        t = int(ts[1:][dup][0])
        raise ConflictError(
            f"series {spec.name!r}: timestamp {t} ms appears twice in the batch and the "
            "duplicate policy is 'block'; nothing was written"
        )
    starts = np.concatenate(([0], np.flatnonzero(~dup) + 1))
    p = spec.duplicate_policy
    if p == "first":
        out = vs[starts]
    elif p == "last":
        out = vs[np.append(starts[1:], len(ts)) - 1]
    elif p == "min":
        out = np.minimum.reduceat(vs, starts)
    elif p == "max":
        out = np.maximum.reduceat(vs, starts)
    else:
        out = np.add.reduceat(vs, starts)
    return ts[starts], out


def merge_points(
    policy: str, name: str, ets: np.ndarray, evs: np.ndarray, nts: np.ndarray, nvs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge sorted new points into sorted existing ones.

    Returns (timestamps, values, mask of new points that were new timestamps, mask of new
    points that replaced an existing value with a different one)."""
    pos = np.searchsorted(ets, nts)
    dup = np.zeros(len(nts), bool)
    inside = pos < len(ets)
    dup[inside] = ets[pos[inside]] == nts[inside]
    changed = np.zeros(len(nts), bool)
    vals = evs.copy()
    if dup.any():
        if policy == "block":
            t = int(nts[dup][0])
            raise ConflictError(
                f"series {name!r}: a point at {t} ms already exists and the duplicate policy "
                "is 'block'; nothing was written"
            )
        old = vals[pos[dup]]
        res = _combine(policy, old, nvs[dup])
        changed[dup] = res.view(np.int64) != old.view(np.int64)
        vals[pos[dup]] = res
    fresh = ~dup
    ts = np.concatenate((ets, nts[fresh]))
    vs = np.concatenate((vals, nvs[fresh]))
    if fresh.any() and len(ets):
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
    return ts, vs, fresh, changed


class _Stale(Exception):
    """The server refused the write: the definition's generation is not the state's."""


class Writer:
    def __init__(self, ctx: Ctx, spec: SeriesSpec, registry: SeriesRegistry | None = None) -> None:
        self.ctx = ctx
        self.spec = spec
        self._registry = registry
        self.base = base_keys(ctx.keys, spec)
        self.pages_key = ctx.keys.series_pages(spec.escaped)
        self._lock_key = ctx.keys.series_lock(spec.escaped)
        self._what = f"series {spec.name!r} write"

    def _tile_groups(self, groups: list[Group]) -> tuple[list[str], list[Any]]:
        """(rollup index, tiles, mode) -> page KEYS and ARGV groups."""
        keys: list[str] = []
        args: list[Any] = []
        for ri, tiles, mode in groups:
            r = self.spec.rollups[ri]
            for page, a in tile_args(tiles, r.bucket_ms, r.slots, mode):
                keys.append(self.ctx.keys.series_page(self.spec.escaped, r.bucket_ms, page))
                args.extend(a)
        return keys, [len(keys), *args]

    def _fresh_tiles(
        self, ts: np.ndarray, vs: np.ndarray, newest: int | None, mode: str
    ) -> list[Group]:
        """Partial tiles of new points; with mode 's', buckets after the newest are set
        whole and only the newest's bucket is merged. Buckets past retention are left out."""
        top = int(ts[-1]) if newest is None else max(newest, int(ts[-1]))
        out: list[Group] = []
        buckets = [r.bucket_ms for r in self.spec.rollups]
        # only the points some rollup still keeps need tiles
        # (from the start of the oldest bucket kept, so that bucket's tile is whole)
        oldest = min(
            ((top - r.retention_ms) // r.bucket_ms * r.bucket_ms for r in self.spec.rollups),
            default=top,
        )
        if ts[0] < oldest:
            i = int(np.searchsorted(ts, oldest))
            ts, vs = ts[i:], vs[i:]
        for ri, (r, t) in enumerate(
            zip(self.spec.rollups, rollup_partials(ts, vs, buckets), strict=True)
        ):
            t = t[(t["b"] + 1) * r.bucket_ms > top - r.retention_ms]
            if mode == "s" and newest is not None:
                nb = newest // r.bucket_ms
                out.append((ri, t[t["b"] == nb], "m"))
                t = t[t["b"] != nb]
            out.append((ri, t, mode))
        return [g for g in out if len(g[1])]

    # -- entry ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Reload the definition after the server refused ours as stale."""
        name = self.spec.name
        spec = None if self._registry is None else self._registry.get(name)
        if spec is None:
            raise NotFoundError(
                f"series {name!r} was deleted (it is not in the registry); nothing was "
                f"written: create it again with store.series({name!r})"
            )
        if spec.gen == self.spec.gen and self._registry is not None:
            self._registry.repair_gen(spec)  # the definition is current; its state lacks it
        self.spec = spec

    def write(self, ts: np.ndarray, vs: np.ndarray) -> None:
        for _ in range(MAX_TRIES):
            try:
                self._write(ts, vs)
                cap(self.ctx, self.spec)
                return
            except _Stale:
                self._refresh()  # then the whole write again: policy and rollups may differ
        raise BackendError(
            f"series {self.spec.name!r}: its definition kept changing during the write; "
            "nothing was written"
        )

    def _write(self, ts: np.ndarray, vs: np.ndarray) -> None:
        if self.spec.precision is not None:  # lossy, on purpose: decimals compress well
            vs = np.round(vs, self.spec.precision)
        ts, vs = dedupe_batch(self.spec, ts, vs)
        if len(ts) == 0:
            return
        token: str | None = None
        deadline = time.monotonic() + BUSY_SECONDS
        tries = 0
        try:
            while tries < MAX_TRIES:
                if len(ts) < SMALL and token is None:
                    got = self._append(ts, vs)
                    if got == 1:
                        return
                    if got == -3:
                        raise _Stale
                    if got == -2 and time.monotonic() < deadline:
                        time.sleep(0.001)  # a careful writer holds the lock: wait for it
                        continue
                st = read_state(self.ctx, self.spec, int(ts[0]), int(ts[-1]))
                if st.newest is None or ts[0] > st.newest:
                    done = self._bulk(st, ts, vs)
                else:
                    done = self._careful(st, ts, vs)
                if done:
                    trim(self.ctx, self.spec)
                    return
                tries += 1
                if tries >= LOCK_AFTER and token is None:
                    # Appends keep changing the series under us: hold them off a moment
                    # (they wait on the lock) so that this write cannot be starved.
                    token = self._lock()
        finally:
            if token is not None:
                self.ctx.run(UNLOCK, [self._lock_key], [token], what=self._what)
        raise BackendError(
            f"series {self.spec.name!r}: gave up after {MAX_TRIES} tries, other writers kept "
            "changing the series; nothing was written"
        )

    def _lock(self) -> str | None:
        token = uuid.uuid4().hex
        try:
            ok = self.ctx.client.set(self._lock_key, token, nx=True, px=LOCK_MS)
        except Exception as exc:
            raise backend_error(f"{self._what}", exc) from exc
        return token if ok else None

    def write_one(self, t: int, v: float) -> None:
        """One point: the append path with its tiles packed directly (numpy costs more
        than the round trip for a single point)."""
        if self.spec.precision is not None:
            v = float(np.round(v, self.spec.precision))
        keys = [self.base[0], self.base[1], self._lock_key, self.pages_key]
        args: list[Any] = [t, t, _POINT.pack(t, v), self.spec.retention_ms, self.spec.gen]
        args.append(len(self.spec.rollups))
        for r in self.spec.rollups:
            b = t // r.bucket_ms
            page = b // r.slots
            off = t - b * r.bucket_ms
            keys.append(self.ctx.keys.series_page(self.spec.escaped, r.bucket_ms, page))
            args += ["m", (page + 1) * r.page_ms, f"{r.bucket_ms}:{page}"]
            args += [bytes((b - page * r.slots,)), one_tile(v, off)]
        reply = self.ctx.run(APPEND, keys, args, what=self._what)
        if self._appended(reply) != 1:
            self.write(np.array([t], np.int64), np.array([v]))
        else:
            cap(self.ctx, self.spec)

    def _append(self, ts: np.ndarray, vs: np.ndarray) -> int:
        tkeys, targs = self._tile_groups(self._fresh_tiles(ts, vs, None, "m"))
        reply = self.ctx.run(
            APPEND,
            [self.base[0], self.base[1], self._lock_key, self.pages_key, *tkeys],
            [
                int(ts[0]),
                int(ts[-1]),
                pack_points(ts, vs),
                self.spec.retention_ms,
                self.spec.gen,
                *targs,
            ],
            what=self._what,
        )
        return self._appended(reply)

    def _appended(self, reply: list[Any]) -> int:
        """After APPEND: seal a full head, trim now and then. 1: appended; -1: needs the
        careful path; -2: locked by a careful writer."""
        if int(reply[0]) < 0:
            return int(reply[0])
        if int(reply[0]) >= (CHUNK_POINTS + SLACK_POINTS) * POINT_BYTES:
            self.seal()
        elif int(reply[1]) % TRIM_EVERY == 0:
            trim(self.ctx, self.spec)
        return 1

    def _commit(
        self,
        st: State,
        check: str,
        head: tuple[str, Any],
        newest: int | None,
        sealed_last: int | None,
        drop: list[int],
        add: list[tuple[int, bytes]],
        tiles: list[Group],
    ) -> bool:
        tkeys, targs = self._tile_groups(tiles)
        args: list[Any] = [check, st.ver if check == "ver" else st.hgen, head[0], head[1]]
        args += ["" if newest is None else newest, "" if sealed_last is None else sealed_last]
        args.append(self.spec.gen)
        args += [len(drop), *drop, len(add)]
        for first, blob in add:
            args += [first, blob]
        reply = self.ctx.run(
            COMMIT,
            [*self.base, self.pages_key, *tkeys],
            args + targs,
            what=f"series {self.spec.name!r} write",
        )
        if int(reply) == -3:
            raise _Stale
        return bool(reply)

    def seal(self) -> None:
        """Compress the head's full chunks (compare-and-set on the head generation, so
        points appended meanwhile stay in the head)."""
        for _ in range(MAX_TRIES):
            st = read_state(self.ctx, self.spec, None, None, chunks=False)
            k = sealable(len(st.head_ts))
            if k == 0:
                return
            add = sealed(st.head_ts, st.head_v, k)
            last = int(st.head_ts[k - 1])
            try:
                done = self._commit(st, "hgen", ("c", k * POINT_BYTES), None, last, [], add, [])
            except _Stale:
                return  # redefined meanwhile: the next write reloads it and seals then
            if done:
                trim(self.ctx, self.spec)
                return

    def _bulk(self, st: State, ts: np.ndarray, vs: np.ndarray) -> bool:
        newest = int(ts[-1])
        all_ts = np.concatenate((st.head_ts, ts))
        all_vs = np.concatenate((st.head_v, vs))
        keep = all_ts >= newest - self.spec.retention_ms  # older ones would go at once
        if not keep.all():
            all_ts, all_vs = all_ts[keep], all_vs[keep]
        k = sealable(len(all_ts))
        add = sealed(all_ts, all_vs, k)
        head = pack_points(all_ts[k:], all_vs[k:])
        tiles = self._fresh_tiles(ts, vs, st.newest, "s")
        last = int(all_ts[k - 1]) if k else None
        return self._commit(st, "ver", ("s", head), newest, last, [], add, tiles)

    def _careful(self, st: State, ts: np.ndarray, vs: np.ndarray) -> bool:
        spec = self.spec
        assert st.newest is not None
        cut = st.newest - spec.retention_ms
        if ts[0] < cut:
            n_old = int(np.count_nonzero(ts < cut))
            raise ConfigurationError(
                f"series {spec.name!r}: {n_old} point(s) are older than the retention "
                f"({spec.retention_ms} ms back from the newest point, {st.newest} ms); "
                "nothing was written"
            )
        all_ts, all_vs = st.points()
        mts, mvs, fresh, changed = merge_points(
            spec.duplicate_policy, spec.name, all_ts, all_vs, ts, vs
        )
        if not fresh.any() and not changed.any():
            return True  # every point was a duplicate the policy ignores
        newest = max(cut + spec.retention_ms, int(ts[-1]))
        fix = Plan()
        if changed.any() and spec.rollups:
            cts = ts[changed]
            old = all_vs[np.searchsorted(all_ts, cts)]
            new = mvs[np.searchsorted(mts, cts)]
            fix = plan(self.ctx, spec, st.newest, cut, cts, old, new)
            lo = min([int(ts[0]), *(w[0] for w in fix.spans)])
            hi = max([int(ts[-1]), *(w[1] for w in fix.spans)])
            if lo < ts[0] or hi > ts[-1]:
                # min/max lost while raw holds the whole bucket: read the raw the plan needs
                # (a bucket, or the touched finer buckets) so that they are exact again
                st2 = read_state(self.ctx, spec, lo, hi)
                if st2.ver != st.ver:
                    return False
                st = st2
                all_ts, all_vs = st.points()
                mts, mvs, fresh, changed = merge_points(
                    spec.duplicate_policy, spec.name, all_ts, all_vs, ts, vs
                )
            finish(self.ctx, spec, fix, cts, mts, mvs)
        fixes, redo = fix.fixes, fix.redo
        drop, add, head, sealed_last = self._rechunk(st, ts, vs)
        tiles = self._careful_tiles(newest, ts, vs, fresh, fixes, redo, mts, mvs)
        return self._commit(st, "ver", head, newest, sealed_last, drop, add, tiles)

    def _rechunk(
        self, st: State, ts: np.ndarray, vs: np.ndarray
    ) -> tuple[list[int], list[tuple[int, bytes]], tuple[str, Any], int | None]:
        """New sealed chunks and head for the chunks the batch lands in."""
        policy, name = self.spec.duplicate_policy, self.spec.name
        firsts = np.array([c[0] for c in st.chunks], np.int64)
        to_head = np.ones(len(ts), bool) if st.sealed_last is None else ts > st.sealed_last
        idx = np.searchsorted(firsts, ts, side="right") - 1
        drop: list[int] = []
        add: list[tuple[int, bytes]] = []
        groups = sorted(set(idx[~to_head].tolist()))
        for g in groups:
            sel = (idx == g) & ~to_head
            if g < 0:
                ets, evs = np.zeros(0, np.int64), np.zeros(0)
            else:
                first, ets, evs = st.chunks[g]
                drop.append(first)
            mts, mvs, _, _ = merge_points(policy, name, ets, evs, ts[sel], vs[sel])
            parts = -(-len(mts) // CHUNK_POINTS)
            for pts, pvs in zip(
                np.array_split(mts, parts), np.array_split(mvs, parts), strict=True
            ):
                add.append((int(pts[0]), encode_chunk(pts, pvs)))
        head: tuple[str, Any] = ("k", "")
        sealed_last = None
        if to_head.any():
            hts, hvs, _, _ = merge_points(
                policy, name, st.head_ts, st.head_v, ts[to_head], vs[to_head]
            )
            k = sealable(len(hts))
            add += sealed(hts, hvs, k)
            if k:
                sealed_last = int(hts[k - 1])
            head = ("s", pack_points(hts[k:], hvs[k:]))
        # a dropped chunk re-added with the same first timestamp must not be deleted after
        new_firsts = {a[0] for a in add}
        drop = [d for d in drop if d not in new_firsts]
        return drop, add, head, sealed_last

    def _careful_tiles(
        self,
        newest: int,
        ts: np.ndarray,
        vs: np.ndarray,
        fresh: np.ndarray,
        fixes: list[Group],
        redo: dict[int, np.ndarray],
        mts: np.ndarray,
        mvs: np.ndarray,
    ) -> list[Group]:
        """Corrected tiles first (replaced), then rebuilt ones, then new points merged."""
        top = max(newest, int(ts[-1]))
        out: list[Group] = list(fixes)
        for ri, r in enumerate(self.spec.rollups):
            again = redo.get(ri, np.zeros(0, np.int64))
            if len(again):
                sel = np.isin(mts // r.bucket_ms, again)
                out.append((ri, partials(mts[sel], mvs[sel], r.bucket_ms), "r"))
            nts, nvs = ts[fresh], vs[fresh]
            keep = ~np.isin(nts // r.bucket_ms, again)
            out.append((ri, partials(nts[keep], nvs[keep], r.bucket_ms), "m"))
        kept: list[Group] = []
        for ri, t, mode in out:
            r = self.spec.rollups[ri]
            t = t[(t["b"] + 1) * r.bucket_ms > top - r.retention_ms]
            if len(t):
                kept.append((ri, t, mode))
        return kept
