"""The demo's time-series steps: a CPU metric with a planted spike, its rollups, the anomaly
found, an alert firing then resolving, and the store's own statistics."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from ..store import FeatureStore
from ..windows.spec import WindowFeatures


def run(console: Console, store: FeatureStore) -> None:
    console.print("\n[bold]16. Time series: a CPU metric with a planted spike[/bold]")
    for name in store.series_list():
        if name.startswith("demo_"):
            store.series(name).delete()  # start every demo run from clean series
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=2)
    ts = np.arange(int(start.timestamp()), int(now.timestamp()), 10, dtype=np.int64)
    rng = np.random.default_rng(3)
    hours = (ts - ts[0]) / 3600
    cpu = 35 + 10 * np.sin(hours / 24 * 2 * np.pi) + rng.normal(0, 1.5, ts.size)
    spike = (ts >= ts[-1] - 40 * 60) & (ts < ts[-1] - 30 * 60)  # 10 minutes at ~95 %
    cpu[spike] = rng.normal(95, 1.0, int(spike.sum()))
    series = store.series("demo_cpu", labels={"host": "web-1", "metric": "cpu"})
    t0 = time.perf_counter()
    series.add_many(ts.astype(np.float64), np.round(cpu, 2))
    secs = time.perf_counter() - t0
    console.print(
        f"   {ts.size:,} points (every 10 s for 2 days) in {secs * 1e3:.0f} ms; "
        f"{_bytes_per_point(store, ts.size):.2f} bytes/point with its rollup tiles"
    )
    last = now - timedelta(hours=1)
    table = Table("5m bucket (UTC)", "avg", "max", "count", title="rollup tiles, last hour")
    avg = series.range(last, now, bucket="5m", agg="avg", as_frame=True)
    mx = series.range(last, now, bucket="5m", agg="max", as_frame=True)
    count = series.range(last, now, bucket="5m", agg="count", as_frame=True)
    for when in avg.index:
        hot = mx.loc[when, "value"] > 80
        style = "bold red" if hot else ""
        table.add_row(
            f"{when:%H:%M}",
            f"{avg.loc[when, 'value']:.1f}",
            f"[{style}]{mx.loc[when, 'value']:.1f}[/]" if style else f"{mx.loc[when, 'value']:.1f}",
            f"{count.loc[when, 'value']:.0f}",
        )
    console.print(table)
    console.print(f"   read from: {series.source(last, now, bucket='5m')}")
    found = series.anomalies(last, now, method="zscore", baseline="1d")
    if len(found):
        console.print(
            f"   anomalies (z-score vs the day before, from 1m tiles): {len(found)} points, "
            f"{found.index[0]:%H:%M:%S} .. {found.index[-1]:%H:%M:%S}, "
            f"max score {found['score'].abs().max():.1f}"
        )
    _alert(console, store, int(ts[-1]) - 40 * 60, int(ts[-1]) - 30 * 60)
    busy = store.series("demo_cpu_web2", labels={"host": "web-2", "metric": "cpu"})
    busy.add_many(ts.astype(np.float64), np.round(cpu * 0.8 + rng.normal(0, 2, ts.size), 2))
    corr = store.correlate(["demo_cpu", "demo_cpu_web2"], start, now, bucket="5m")
    console.print(f"   web-1 vs web-2 (Pearson over 5m buckets): {corr.to_numpy()[0, 1]:.3f}")


def _alert(console: Console, store: FeatureStore, spike_start: int, spike_end: int) -> None:
    """An alert rule walked through the spike on an injected clock (as `redfeat alerts run`
    would see it every minute)."""
    store.alerts.add(
        "demo_cpu_hot",
        "demo_cpu",
        condition="above",
        threshold=80,
        window="5m",
        agg="avg",
        for_="1m",
        cooldown="10m",
        replace=True,
    )
    seen: list[str] = []

    def show(tr: Any) -> None:
        value = "-" if tr.value is None else f"{tr.value:.1f}"
        seen.append(f"   {tr.at:%H:%M} {tr.rule}: {tr.from_state} -> {tr.to_state} (avg {value})")

    store.alerts.on_transition(show)
    for minute in range(-2, 18):
        store.alerts.evaluate(now=spike_start + minute * 60)
    console.print("   alert 'demo_cpu_hot' (5m avg above 80 for 1m), evaluated every minute:")
    for line in seen:
        console.print(line)


def windows(console: Console, store: FeatureStore) -> None:
    console.print("\n[bold]17. Window features: purchases per user over 1h / 24h / 7d[/bold]")
    if any(w.name == "user_purchases" for w in store.window_features()):
        store.delete_window("user_purchases")
    store.apply(
        WindowFeatures(
            "user_purchases",
            entity="user",
            source="amount",
            aggs=["sum", "count", "avg", "max"],
            windows=["1h", "24h", "7d"],
            hop="5m",
        )
    )
    rng = np.random.default_rng(8)
    now = datetime.now(UTC)
    n = 200_000
    users = [f"user{i}" for i in rng.integers(0, 2000, n)] + ["user123"] * 40
    ages = np.concatenate([rng.uniform(0, 7 * 86400, n), rng.uniform(0, 3 * 86400, 40)])
    amounts = np.round(rng.lognormal(3.2, 0.8, n + 40), 2)
    events = pd.DataFrame(
        {
            "entity_id": users,
            "amount": amounts,
            "event_time": pd.to_datetime(now) - pd.to_timedelta(ages, unit="s"),
        }
    )
    t0 = time.perf_counter()
    report = store.record_many("user_purchases", events)
    secs = time.perf_counter() - t0
    console.print(
        f"   {report.events:,} purchase events of {report.entities:,} users, a week's worth, "
        f"in {secs:.2f} s ({report.events / secs:,.0f} events/s): tiles per user and 5 min"
    )
    store.record("user_purchases", "user123", 250.0)  # one live event, now
    row = store.get("user_purchases", "user123")
    assert row is not None
    table = Table("window", "sum", "count", "avg", "max", title="user123, now")
    for w in ("1h", "24h", "7d"):
        avg = row[f"amount_avg_{w}"]
        table.add_row(
            w,
            f"{row[f'amount_sum_{w}']:,.2f}",
            str(row[f"amount_count_{w}"]),
            "-" if avg is None else f"{avg:,.2f}",
            f"{row[f'amount_max_{w}'] or 0:,.2f}",
        )
    console.print(table)
    rows = pd.DataFrame(
        {
            "entity_id": ["user123"] * 3,
            "event_time": [now - timedelta(days=2), now - timedelta(hours=12), now],
        }
    )
    frame = store.training_frame(
        rows, ["user_purchases:amount_sum_24h", "user_purchases:amount_count_7d"]
    )
    console.print("   the same features at past times, for training (point in time):")
    for r in frame.itertuples(index=False):
        console.print(
            f"   {r.event_time:%Y-%m-%d %H:%M}  sum 24h {r.amount_sum_24h:>9,.2f}  "
            f"count 7d {r.amount_count_7d:>3.0f}"
        )


def _bytes_per_point(store: FeatureStore, n: int) -> float:
    stats = store.stats()["storage"]["series"].get("demo_cpu", {})
    return float(stats.get("bytes", 0)) / n


def stats(console: Console, store: FeatureStore) -> None:
    console.print("\n[bold]18. The store's own statistics (store.stats())[/bold]")
    s: dict[str, Any] = store.stats()
    table = Table("operation", "count", "errors", "p50 ms", "p99 ms", title="operations")
    for op, v in s["operations"].items():
        table.add_row(
            op,
            f"{v['count']:,}",
            str(v["errors"]),
            f"{v['p50_ms']:.3f}",
            f"{v['p99_ms']:.3f}",
        )
    console.print(table)
    mem = s["storage"]["server"]["used_memory"]
    views = s["storage"]["views"]
    top = sorted(views.items(), key=lambda kv: -kv[1]["bytes"])[:3]
    console.print(
        f"   server memory {mem / 2**20:.1f} MiB; largest views: "
        + ", ".join(f"{k} {v['keys']:,} keys / {v['bytes'] / 2**20:.1f} MiB" for k, v in top)
    )
