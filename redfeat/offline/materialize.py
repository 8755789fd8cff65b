"""Materialization: load a view's batch source into the store, incrementally.

A run reads the source's rows with ``start <= event time < end`` (``offline.sources``) and
writes them through the bulk path (``write_many``: validation, derived views, the change
feed, the offline log). Every row becomes a version, so history and training frames see
the source's past too, not only its latest row per entity.

Per view, a hash in Redis (``Keys.materialized``) keeps the ``watermark`` -- the end of the
last complete incremental load, where the next ``materialize_incremental`` starts -- and
the ``run`` in progress: its window and the event time it has written through. Rows come in
event-time order and the checkpoint moves after each batch, so a run killed half-way
resumes from its last batch; rows written again are found as duplicates by the write step
(same entity, event time and values), so a rerun of any window writes no new version.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from typing import Any

import msgspec

from ..core.context import Ctx, Writer
from ..core.records import MaterializeReport
from ..core.schema import FeatureView
from ..core.sources import Source
from ..core.time import from_us, now_us, to_us
from ..errors import ConfigurationError, Problem, ValidationError, wrap_redis
from . import sources as _sources

BATCH_ROWS = 131_072  # rows per write_many call: one checkpoint each
Progress = Callable[[int, int], None]


def _us(value: Any, what: str) -> int:
    if isinstance(value, str):  # an ISO 8601 text, as the CLI passes it
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"{what} {value!r} is not an ISO date or datetime") from None
    try:
        return to_us(value, what=what)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


class Materializer:
    """materialize / materialize_incremental of one store."""

    def __init__(self, ctx: Ctx, writer: Writer) -> None:
        self._ctx = ctx
        self._writer = writer

    # -- state ----------------------------------------------------------------------------

    def state(self, view: str) -> dict[str, Any]:
        """The view's watermark (datetime or None), the run in progress (its window and how
        far it got) and the last complete run, as kept in Redis."""
        self._ctx.registry.get(view)
        raw = self._read(view)
        run = raw.get("run")
        last = raw.get("last")
        mark = raw.get("watermark")
        return {
            "watermark": None if mark is None else from_us(int(mark)),
            "running": None if run is None else _times(msgspec.json.decode(run)),
            "last": None if last is None else _times(msgspec.json.decode(last)),
        }

    def _read(self, view: str) -> dict[str, Any]:
        key = self._ctx.keys.materialized(view)
        with wrap_redis(f"view {view!r}: reading its materialization state failed"):
            raw: dict[Any, Any] = self._ctx.client.hgetall(key)
        return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}

    def _set(self, view: str, **fields: bytes | int) -> None:
        key = self._ctx.keys.materialized(view)
        with wrap_redis(f"view {view!r}: saving its materialization state failed"):
            self._ctx.client.hset(key, mapping=dict(fields))  # type: ignore[arg-type]

    # -- runs -----------------------------------------------------------------------------

    def run(
        self,
        view: str | FeatureView,
        start: Any,
        end: Any,
        *,
        incremental: bool,
        on_error: str = "raise",
        progress: Progress | bool | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> MaterializeReport:
        """Load the view's batch source for [start, end) (incremental: from the watermark)."""
        name = view.name if isinstance(view, FeatureView) else view
        res = self._ctx.registry.get(name)
        source = _source_of(view, res.view)
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ConfigurationError(f"batch_rows must be an int >= 1, got {batch_rows!r}")
        end_us = now_us() if end is None else _us(end, "end")
        state = self._read(name)
        mark = None if state.get("watermark") is None else int(state["watermark"])
        start_us = mark if incremental else None if start is None else _us(start, "start")
        report = MaterializeReport(name, _dt(start_us), from_us(end_us), watermark=_dt(mark))
        if start_us is not None and start_us >= end_us:
            return report  # nothing new: the watermark is at or past end
        lo = start_us
        if state.get("run") is not None:
            run = msgspec.json.decode(state["run"])
            # the same window start as an interrupted run: skip what it wrote
            if run.get("start") == start_us and run.get("done") is not None:
                lo = max(int(run["done"]), start_us or int(run["done"]))
                report.resumed_from = from_us(lo)
        t0 = time.perf_counter()
        run_state = {"start": start_us, "end": end_us, "done": lo, "started_at": now_us()}
        self._set(name, run=msgspec.json.encode(run_state))
        show = _bar(name) if progress is True else None
        step: Progress | None = show[0] if show else (progress or None)  # type: ignore[assignment]
        scan = _sources.scan(source, res, lo, end_us, batch_rows=batch_rows, count=bool(step))
        total = scan.total or 0
        batches = _prefetch(scan.batches)
        try:
            for table in batches:
                self._batch(name, table, report, on_error, step, total)
                run_state["done"] = int(table[_sources.ET][-1].value)
                self._set(name, run=msgspec.json.encode(run_state))
            if step is not None:
                step(report.rows, report.rows)
        finally:
            batches.close()  # stops the read-ahead thread before its connection closes
            scan.close()
            if show:
                show[1]()
        report.seconds = time.perf_counter() - t0
        # a complete run: the watermark moves (an explicit window only when it continues
        # the loaded range, so that a gap before it is never skipped)
        if incremental or mark is None or start_us is None or start_us <= mark:
            new_mark = end_us if mark is None else max(mark, end_us)
            report.watermark = from_us(new_mark)
            self._set(name, watermark=new_mark)
        last = {
            "start": start_us,
            "end": end_us,
            "rows": report.rows,
            "written": report.written,
            "finished_at": now_us(),
        }
        key = self._ctx.keys.materialized(name)
        with wrap_redis(f"view {name!r}: saving its materialization state failed"):
            pipe = self._ctx.client.pipeline(transaction=True)
            pipe.hset(key, "last", msgspec.json.encode(last))
            pipe.hdel(key, "run")
            pipe.execute()
        return report

    def _batch(
        self,
        view: str,
        table: Any,
        report: MaterializeReport,
        on_error: str,
        step: Progress | None,
        total: int,
    ) -> None:
        import pyarrow.compute as pc

        ids = table[_sources.ID]
        nulls = ids.null_count
        if nulls:
            if on_error == "raise":
                raise ValidationError(
                    [
                        Problem(
                            view,
                            None,
                            None,
                            "entity_key_null",
                            nulls,
                            f"{nulls} source row(s) in this batch have a join key that is null, "
                            "empty, or not a whole number for an Int key; fix the source or "
                            'pass on_error="skip" (earlier batches are written; a rerun '
                            "resumes here)",
                        )
                    ]
                )
            table = table.filter(pc.is_valid(ids))
            report.refused += nulls
        done = report.rows

        def inner(d: int, _n: int) -> None:
            if step is not None:
                step(done + d, max(total, done + d))

        wr = self._writer.write_many(
            view,
            table,
            entity_column=_sources.ID,
            event_time_column=_sources.ET,
            on_error=on_error,
            progress=inner if step is not None else None,
        )
        report.rows += table.num_rows + nulls
        report.written += wr.written
        report.late += wr.late
        report.duplicates += wr.duplicates
        report.dropped += wr.dropped
        report.refused += len(wr.refused)
        if step is not None:
            step(report.rows, max(total, report.rows))


def _source_of(view: str | FeatureView, stored: FeatureView) -> Source:
    """The source of a view object (its full URL) or, for a name, the registry's."""
    if isinstance(view, FeatureView) and view.batch_source is not None:
        return view.batch_source
    if stored.batch_source is None:
        raise ConfigurationError(
            f"view {stored.name!r} has no batch_source: define it with "
            "FeatureView(..., batch_source=ParquetSource(...) | CsvSource(...) | "
            "SqlSource(...)) and apply it"
        )
    return stored.batch_source


def _dt(us: int | None) -> Any:
    return None if us is None else from_us(us)


def _times(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (from_us(int(v)) if k in ("start", "end", "done", "started_at", "finished_at") else v)
        if v is not None
        else None
        for k, v in d.items()
    }


def _prefetch(batches: Iterator[Any], depth: int = 2) -> Generator[Any, None, None]:
    """The batches, read ahead on a thread: DuckDB reads and sorts batch k+1 (without the
    GIL) while this thread encodes batch k and the server writes it."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(("item", b), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="redfeat-materialize", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join(timeout=10)


def _bar(view: str) -> tuple[Progress, Callable[[], None]]:
    """A progress bar on stderr (``progress=True``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(f"materialize {view}", total=None)
    bar.start()

    def step(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return step, bar.stop
