"""Training frames too large for memory: the entity rows read in chunks, each chunk's frame
appended to one Parquet file, so memory holds one chunk at a time whatever the input's size.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigurationError, NotFoundError


def entity_chunks(entity_df: Any, chunk_rows: int) -> tuple[Iterator[pa.Table], int]:
    """``entity_df`` as Arrow tables of at most ``chunk_rows`` rows, and its row count.

    A pandas DataFrame or Arrow table is sliced (each chunk converted on its own); a path
    (str or Path) to a Parquet file, a directory of Parquet files, or a ``.csv`` file is read
    batch by batch and never whole. Every chunk has the first chunk's schema."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigurationError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    if isinstance(entity_df, str | os.PathLike):
        return _from_path(Path(entity_df), chunk_rows)
    mod = type(entity_df).__module__
    if mod.startswith("pandas") and type(entity_df).__name__ == "DataFrame":
        frame = entity_df

        def pandas_chunks() -> Iterator[pa.Table]:
            for start in range(0, max(len(frame), 1), chunk_rows):
                yield _arrow(frame.iloc[start : start + chunk_rows])

        return _same_schema(pandas_chunks()), len(frame)
    if isinstance(entity_df, pa.Table):
        table = entity_df
        return (
            _same_schema(
                table.slice(s, chunk_rows) for s in range(0, max(table.num_rows, 1), chunk_rows)
            ),
            table.num_rows,
        )
    raise ConfigurationError(
        "entity_df must be a pandas.DataFrame, a pyarrow.Table or the path of a Parquet file, "
        f"a directory of Parquet files or a .csv file; got {type(entity_df).__name__}"
    )


def _arrow(frame: Any) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"entity_df: a column mixes kinds of values Arrow cannot hold together ({exc}); "
            "entity ids must be str or int, event times datetimes or epoch seconds"
        ) from None


def _from_path(path: Path, chunk_rows: int) -> tuple[Iterator[pa.Table], int]:
    if not path.exists():
        raise NotFoundError(f"entity_df: no file or directory {str(path)!r}")
    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            total = _csv_rows(path)
            reader = pacsv.open_csv(path)
            return _same_schema(_rebatch(iter(reader), chunk_rows, reader.schema)), total
        import pyarrow.dataset as ds

        dataset = ds.dataset(path, format="parquet")
        total = dataset.count_rows()
        batches = dataset.to_batches(batch_size=chunk_rows)
        return _same_schema(_rebatch(batches, chunk_rows, dataset.schema)), total
    except (pa.ArrowException, OSError) as exc:
        raise ConfigurationError(f"entity_df: cannot read {str(path)!r}: {exc}") from None


def _csv_rows(path: Path) -> int:
    # rows for the progress bar: lines after the header (a field holding a newline makes this
    # an estimate; the frame itself does not depend on it)
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        f.seek(max(f.tell() - 1, 0))
        ends_with_newline = f.read(1) == b"\n"
    return max(lines - (1 if ends_with_newline else 0), 0)


def _rebatch(batches: Iterator[pa.RecordBatch], rows: int, schema: pa.Schema) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter, the only one may be empty)
    out of batches of any size."""
    held: list[pa.RecordBatch] = []
    n = 0
    yielded = False
    for batch in batches:
        while batch.num_rows:
            take = min(rows - n, batch.num_rows)
            held.append(batch.slice(0, take))
            n += take
            batch = batch.slice(take)
            if n == rows:
                yield pa.Table.from_batches(held, schema=schema)
                held, n, yielded = [], 0, True
    if held or not yielded:
        yield pa.Table.from_batches(held, schema=schema)


def _same_schema(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    first: pa.Schema | None = None
    for i, table in enumerate(tables):
        if first is None:
            first = table.schema
        elif not table.schema.equals(first):
            try:
                table = table.cast(first)
            except (pa.ArrowException, ValueError) as exc:
                raise ConfigurationError(
                    f"entity_df: chunk {i} (rows from {i} x chunk_rows) does not fit the "
                    f"first chunk's column types ({exc}); give the columns one type"
                ) from None
        yield table


def write_frames(
    out: str | os.PathLike[str],
    chunks: Iterator[pa.Table],
    frame_of: Callable[[pa.Table], pa.Table],
    progress: Callable[[int], None] | None = None,
) -> int:
    """The frame of each chunk appended to the Parquet file ``out`` (written to a temporary
    file beside it and renamed at the end: a failure leaves no partial file); rows written."""
    if not isinstance(out, str | os.PathLike) or not str(out) or "\0" in str(out):
        raise ConfigurationError(f"out must be the path of a file to write, got {out!r}")
    target = Path(out)
    if target.is_dir():
        raise ConfigurationError(f"out: {str(target)!r} is a directory; give a file's path")
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for chunk in chunks:
            frame = frame_of(chunk)
            if writer is None:
                writer = pq.ParquetWriter(tmp, frame.schema, compression="zstd")
            elif not frame.schema.equals(writer.schema):
                frame = frame.cast(writer.schema)
            writer.write_table(frame)
            rows += frame.num_rows
            if progress is not None:
                progress(rows)
        if writer is None:
            raise ConfigurationError("entity_df: nothing to read")
        writer.close()
        writer = None
        os.replace(tmp, target)
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"out: cannot write {str(target)!r}: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return rows
