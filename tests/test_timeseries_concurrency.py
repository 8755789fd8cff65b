"""Concurrent writers to one series lose no point: appends, seals, out-of-order batches
and bulk batches race, and raw points and tiles still agree with what was written."""

from __future__ import annotations

import threading

import numpy as np

from redfeat import FeatureStore
from redfeat.timeseries.chunks import CHUNK_POINTS

T0_MS = 1_700_006_400_000


def test_concurrent_writers_lose_nothing(store: FeatureStore) -> None:
    s = store.series("race", rollups=("1m", "1h"), retention="30d")
    n_threads, per = 4, 1500
    errors: list[BaseException] = []

    def single(k: int) -> None:
        try:
            for i in range(per):  # interleaved timestamps: threads race for "newest"
                s.add(float(k), (T0_MS + (i * n_threads + k) * 100) / 1000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def batches() -> None:
        try:
            rng = np.random.default_rng(0)
            # out of order, into the past of the racing appends (distinct timestamps)
            for _ in range(5):
                ts = T0_MS - 1 - rng.choice(10**7, 500, replace=False)
                s.add_many(ts / 1000, np.full(500, 10.0))
            # and a backfill in bulk, further back
            ts = T0_MS - 10**8 + np.arange(CHUNK_POINTS + 100) * 1000
            s.add_many(ts / 1000, np.full(len(ts), 20.0))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=single, args=(k,)) for k in range(n_threads)]
    threads.append(threading.Thread(target=batches))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ts, vs = s.range()
    assert bool(np.all(np.diff(ts.astype(np.int64)) > 0))
    from_singles = ts.astype(np.int64) >= T0_MS
    assert int(from_singles.sum()) == n_threads * per
    for k in range(n_threads):
        assert int(((vs == k) & from_singles).sum()) == per
    assert int((vs == 20.0).sum()) == CHUNK_POINTS + 100
    total = len(ts)
    assert s.range(None, None, bucket="1h", agg="count")[1].sum() == total
    assert s.range(None, None, bucket="1m", agg="sum")[1].sum() == vs.sum()
