"""write_training_frame: an entity_df read in chunks (DataFrame, Arrow, Parquet file or
directory, CSV), each chunk's frame appended to one Parquet file; the result equals
training_frame's over the whole input, from Redis history and from the offline log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redfeat import ConfigurationError, FeatureStore, FeatureView, Field, NotFoundError
from redfeat import types as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["redis", "log"])
def store(
    request: pytest.FixtureRequest, client: redis.Redis, project: str, tmp_path: Path
) -> Iterator[FeatureStore]:
    log = tmp_path / "log" if request.param == "log" else None
    s = FeatureStore(client=client, project=project, offline_dir=log)
    rng = np.random.default_rng(3)
    for name, ttl in (("a", None), ("b", timedelta(hours=12))):
        s.apply(
            FeatureView(
                name,
                entity="user",
                fields=[Field(f"{name}x", t.Float), Field(f"{name}n", t.Int)],
                history=20,
                ttl=ttl,
            )
        )
        n = 400
        s.write_many(
            name,
            pd.DataFrame(
                {
                    "entity_id": [f"u{i % 40}" for i in range(n)],
                    "event_time": [
                        T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 9000, n)
                    ],
                    f"{name}x": rng.random(n),
                    f"{name}n": rng.integers(0, 100, n),
                }
            ),
            event_time_column="event_time",
        )
    yield s
    s.close()
    batch = list(client.scan_iter(match=f"rf:{project}:*", count=1000))
    if batch:
        client.unlink(*batch)


def rows(n: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "entity_id": [f"u{i}" for i in rng.integers(0, 45, n)],  # some unknown entities
            "event_time": [T0 + timedelta(minutes=int(m)) for m in rng.integers(-60, 9100, n)],
            "label": rng.integers(0, 2, n),
        }
    )


FEATURES = ["a:ax", "a:an", "b:bx", "b:bn"]


def whole(store: FeatureStore, df: pd.DataFrame) -> pa.Table:
    got: pa.Table = store.training_frame(df, FEATURES, as_arrow=True)
    return got


@pytest.mark.parametrize("form", ["pandas", "arrow", "parquet", "directory", "csv"])
def test_chunks_of_every_input_form_give_the_whole_frame(
    store: FeatureStore, tmp_path: Path, form: str
) -> None:
    df = rows(1000)
    want = whole(store, df)
    src: object = df
    if form == "arrow":
        src = pa.Table.from_pandas(df, preserve_index=False)
    elif form == "parquet":
        src = tmp_path / "rows.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src, row_group_size=77)
    elif form == "directory":
        src = tmp_path / "rows"
        src.mkdir()
        table = pa.Table.from_pandas(df, preserve_index=False)
        for k in range(3):  # files named so their order is the rows' order
            pq.write_table(table.slice(k * 400, 400), src / f"part-{k}.parquet")
    elif form == "csv":
        src = tmp_path / "rows.csv"
        df.assign(event_time=[ts.isoformat() for ts in df.event_time]).to_csv(src, index=False)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "frame.parquet"
    n = store.write_training_frame(
        out, src, FEATURES, chunk_rows=128, progress=lambda d, tot: seen.append((d, tot))
    )
    assert n == 1000
    got = pq.read_table(out)
    assert got.column_names == want.column_names
    for name in ["entity_id", "label", *[f.split(":")[1] for f in FEATURES]]:
        assert got[name].to_pylist() == want[name].to_pylist(), name
    assert pc_us(got["event_time"]) == pc_us(want["event_time"])
    assert [d for d, _ in seen] == [min(128 * (k + 1), 1000) for k in range(8)]
    assert {tot for _, tot in seen} == {1000}


def pc_us(col: pa.ChunkedArray) -> list[int]:
    us: list[int] = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    return us


def test_a_failure_leaves_no_file_and_bad_input_is_refused(
    store: FeatureStore, tmp_path: Path
) -> None:
    out = tmp_path / "frame.parquet"
    with pytest.raises(NotFoundError, match="no file or directory"):
        store.write_training_frame(out, tmp_path / "missing.parquet", FEATURES)
    with pytest.raises(ConfigurationError, match="chunk_rows"):
        store.write_training_frame(out, rows(10), FEATURES, chunk_rows=0)
    # the third chunk holds a text where the first had timestamps: refused, no file left
    df = rows(300)
    bad = pd.concat(
        [df.iloc[:200], df.iloc[200:].assign(event_time="yesterday")], ignore_index=True
    )
    with pytest.raises(ConfigurationError, match="chunk 2"):
        store.write_training_frame(out, bad, FEATURES, chunk_rows=100)
    assert list(tmp_path.iterdir()) == [tmp_path / "log"] or list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigurationError, match="must be a pandas.DataFrame"):
        store.write_training_frame(out, [("u1", T0)], FEATURES)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(0, 300), parts=st.integers(1, 6), extra=st.integers(0, 40))
def test_any_chunk_size_gives_the_same_rows(
    store: FeatureStore, tmp_path: Path, n: int, parts: int, extra: int
) -> None:
    chunk = -(-n // parts) + extra or 1  # up to 6 chunks: each is a frame of its own
    df = rows(n, seed=n)
    out = tmp_path / f"f-{n}-{chunk}.parquet"
    assert store.write_training_frame(out, df, FEATURES, chunk_rows=chunk) == n
    got = pq.read_table(out)
    want = whole(store, df)
    assert got.num_rows == n
    for f in FEATURES:
        c = f.split(":")[1]
        assert got[c].to_pylist() == want[c].to_pylist()
