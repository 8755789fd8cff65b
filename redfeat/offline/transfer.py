"""Moving versions in and out: Parquet export and historical backfill (import)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.codec import READ, normalize_id
from ..core.columns import ColumnCheck, columns_of, encode_columns
from ..core.context import Ctx, WriteObserver
from ..core.records import WriteReport
from ..core.registry import Resolved
from ..core.time import from_us, to_us
from ..errors import ConfigurationError, Problem, ValidationError
from ..online.online import Online
from ..online.scan import entities_of
from ..online.writer import tally
from .dump import Dumper
from .log import OfflineLog


def dedupe(table: pa.Table) -> pa.Table:
    """One row per (entity_id, version_id), sorted by entity, event time, written_at."""
    if table.num_rows == 0:
        return table
    table = table.sort_by(
        [("entity_id", "ascending"), ("event_time", "ascending"), ("version_id", "ascending")]
    )
    same = pc.and_(
        pc.equal(table["entity_id"][1:], table["entity_id"][:-1]),
        pc.equal(table["version_id"][1:], table["version_id"][:-1]),
    )
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same.combine_chunks())])
    return table.filter(keep)


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a temporary file in the same directory, then a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def backfill_items(
    res: Resolved,
    frame: Any,
    *,
    entity_column: str,
    event_time_column: str,
    written_at_column: str | None,
    custom: ColumnCheck | None = None,
    out: dict[str, Any] | None = None,
) -> tuple[Iterator[tuple[str, int, bytes, int | None]], int]:
    """Validated write items for historical rows (event time required, written_at optional).

    All or nothing: any bad row raises ValidationError listing every problem."""
    cols = columns_of(frame)
    if event_time_column not in cols.data:
        raise ConfigurationError(
            f"import needs an event time per row: no column {event_time_column!r} "
            f"(columns: {sorted(cols.data)})"
        )
    written: list[Any] | None = None
    if written_at_column is not None:
        if written_at_column not in cols.data:
            raise ConfigurationError(f"no column {written_at_column!r} for written_at")
        written = cols.data.pop(written_at_column)
    items, total, problems = encode_columns(
        res.codec,
        cols,
        entity_column=entity_column,
        event_time_column=event_time_column,
        custom=custom,
        out=out,
    )
    was: list[int] = []
    exact = written_at_column in cols.micros  # Arrow timestamps arrive as int microseconds
    for i, v in enumerate(written or ()):
        try:
            was.append(to_us(from_us(v) if exact and v is not None else v, what="written_at"))
        except ValueError as exc:
            problems.setdefault(i, []).append(
                Problem(res.name, None, written_at_column, "written_at", v, str(exc), i)
            )
    if problems:
        raise ValidationError([p for i in sorted(problems) for p in problems[i]])
    if written is None:
        return ((e, et, p, None) for e, et, p, _ in items), total
    return ((e, et, p, wa) for (e, et, p, _), wa in zip(items, was, strict=True)), total


def report_from(flat: list[int], refused: list[tuple[int, ValidationError]]) -> WriteReport:
    return tally(WriteReport(refused=refused), flat)


# -- the store's verbs for moving versions -------------------------------------------------


def versions(
    ctx: Ctx,
    dumper: Dumper,
    offline: OfflineLog | None,
    view: str,
    entity_ids: Iterable[str | int] | None,
    lo: int | None,
    hi: int | None,
    progress: Callable[[int, int], None] | None,
) -> pa.Table:
    """Redis history plus the offline log (when configured), one row per version."""
    res = ctx.registry.get(view)
    if entity_ids is None:
        ents = entities_of(ctx, res)
    else:
        ents = [normalize_id(view, e, i, outcome=READ) for i, e in enumerate(entity_ids)]
    table = dumper.versions(res, ents, start_us=lo, end_us=hi, progress=progress)
    if offline is not None:
        logged = offline.scan(res.view, start_us=lo, end_us=hi)
        if entity_ids is not None and logged.num_rows:
            logged = logged.filter(pc.is_in(logged["entity_id"], pa.array(ents, pa.string())))
        table = dedupe(pa.concat_tables([table, logged]))
    return table


def import_frame(
    ctx: Ctx,
    online: Online,
    observer: WriteObserver,
    view: str,
    frame: Any,
    *,
    entity_column: str,
    event_time_column: str,
    written_at_column: str | None,
    progress: Callable[[int, int], None] | None,
) -> WriteReport:
    """Backfill historical versions (all or nothing); derived views are the caller's."""
    res = ctx.registry.get(view)
    out: dict[str, Any] = {}
    items, total = backfill_items(
        res,
        frame,
        entity_column=entity_column,
        event_time_column=event_time_column,
        written_at_column=written_at_column,
        custom=functools.partial(observer.check_columns, res),
        out=out,
    )
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    mode = 0 if written_at_column is None else 2
    flat = online.run_logged(res, items, mode=mode, progress=step, fields=list(res.codec.fields))
    report = report_from(flat, [])
    report.warnings = out["warnings"]
    observer.written_columns(res, out, {}, flat)  # a backfill lands in its hours
    return report
