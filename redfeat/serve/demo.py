"""`redfeat demo`: the end-to-end tour, printed for people."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from .. import types as t
from ..core.schema import Entity, FeatureView, Field
from ..errors import ConfigurationError, ValidationError
from ..store import FeatureStore
from ..transforms.builtins import seed_scenario
from . import demo_series
from .tables import drift_table, health_table

USERS = {
    "user123": {
        "age": 34,
        "income": 72_000.0,
        "credit_score": 710,
        "purchase_history_length": 48,
        "avg_order_value": 63.5,
        "zip_code": "00123",
    },
    "user456": {
        "age": 27,
        "income": 48_500.0,
        "credit_score": 655,
        "purchase_history_length": 12,
        "avg_order_value": 31.2,
        "zip_code": "94107",
    },
    "user789": {
        "age": 51,
        "income": 128_000.0,
        "credit_score": 802,
        "purchase_history_length": 230,
        "avg_order_value": 118.0,
        "zip_code": "10001",
    },
}


def _table(title: str, rows: list[dict[str, Any]], first: str = "entity") -> Table:
    table = Table(title=title, title_justify="left")
    cols = [first, *next((r for r in rows if r), {}).keys()] if rows else [first]
    for c in cols:
        table.add_column(c)
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, str):
        return repr(v)
    return str(v)


def run(console: Console, store: FeatureStore) -> None:
    with store:
        _run(console, store)


def _run(console: Console, store: FeatureStore) -> None:
    caps = store.capabilities
    where = store.server_info.url() if store.server_info else "the server at REDFEAT_URL"
    console.print(
        Panel.fit(
            f"redfeat demo on {caps['server']} {caps['version']} ({where}), project 'demo'",
            style="bold",
        )
    )
    user = Entity("user", description="a customer")
    profile = FeatureView(
        "user_profile",
        entity=user,
        fields=[
            Field("age", t.Int, min=0, max=150),
            Field("income", t.Float, min=0),
            Field("credit_score", t.Int, min=300, max=850),
            Field("purchase_history_length", t.Int, min=0),
            Field("avg_order_value", t.Float, min=0),
            Field("zip_code", t.String, pattern=r"\d{5}"),
        ],
        ttl="30d",
        history=10,
        description="who the user is and how they buy",
    )
    derived = FeatureView(
        "user_derived",
        entity=user,
        source="user_profile",
        transforms=seed_scenario(),
    )
    activity = FeatureView("user_activity", entity=user, fields=[Field("clicks", t.Int)])
    views = ("user_derived", "user_profile", "user_activity", "user_embedding", "texts_demo")
    for name in (*views, "user_spend"):
        if any(v.name == name for v in store.views()):
            store.delete_view(name)  # start every demo run from clean views
    console.print("\n[bold]1. Define and apply feature views (one derived by transforms)[/bold]")
    console.print(f"   {store.apply(user, profile, derived, activity)}")

    console.print("\n[bold]2. Write three users (event time: two days ago)[/bold]")
    t0 = datetime.now(UTC) - timedelta(days=2)
    for uid, values in USERS.items():
        v = store.write("user_profile", uid, values, event_time=t0)
        console.print(f"   {uid}: version {v.id}")

    console.print("\n[bold]3. Read one user: values come back typed as written[/bold]")
    row = store.get("user_profile", "user123")
    assert row is not None
    for k, val in row.items():
        console.print(f"   {k:<24} {_fmt(val):<12} [dim]{type(val).__name__}[/dim]")
    console.print("   [green]the zip code '00123' is still a string with its leading zeros[/green]")

    console.print("\n[bold]4. Batch read (one round trip), including an unknown user[/bold]")
    ids = ["user123", "user456", "user789", "nobody"]
    t1 = time.perf_counter()
    rows = store.get_many("user_profile", ids, features=["age", "income", "zip_code"])
    ms = (time.perf_counter() - t1) * 1000
    table = _table(f"get_many: {ms:.2f} ms", [r for r in rows if r])
    for uid, r in zip(ids, rows, strict=True):
        table.add_row(uid, *((_fmt(x) for x in r.values()) if r else ["None"] * 3))
    console.print(table)

    console.print("\n[bold]5. Update user123 (income rises): a new version[/bold]")
    before_update = datetime.now(UTC) - timedelta(days=1)
    v2 = store.update("user_profile", "user123", {"income": 81_000.0}, event_time=before_update)
    v3 = store.increment("user_profile", "user123", {"purchase_history_length": 1})
    console.print(f"   update    -> version {v2.id}, income {v2.values['income']}")
    console.print(
        f"   increment -> version {v3.id}, purchases {v3.values['purchase_history_length']}"
    )

    console.print("\n[bold]6. History of user123, newest first[/bold]")
    table = Table("version", "event time", "income", "purchases")
    for h in store.history("user_profile", "user123"):
        table.add_row(
            str(h.id),
            _fmt(h.event_time),
            _fmt(h.values["income"]),
            _fmt(h.values["purchase_history_length"]),
        )
    console.print(table)

    console.print("\n[bold]7. Time travel: user123 as it was before the update[/bold]")
    past = store.get("user_profile", "user123", as_of=t0 + timedelta(hours=1))
    assert past is not None
    console.print(f"   as of {_fmt(t0 + timedelta(hours=1))}: income {past['income']}")
    now_row = store.get("user_profile", "user123")
    assert now_row is not None
    console.print(f"   now: income {now_row['income']}")

    console.print("\n[bold]8. A point-in-time training frame at two past times[/bold]")
    import pandas as pd

    entity_df = pd.DataFrame(
        {
            "entity_id": ["user123", "user123", "user456"],
            "event_time": [t0 + timedelta(hours=1), datetime.now(UTC), t0 + timedelta(hours=1)],
            "label": [0, 1, 0],
        }
    )
    training = store.training_frame(
        entity_df, ["user_profile:income", "user_profile:purchase_history_length"]
    )
    console.print(_frame_table(training))
    console.print(
        "   [green]the earlier row sees the income before the update; the later one sees "
        "the new value (no leakage from the future)[/green]"
    )

    console.print("\n[bold]9. Derived features, computed on every write of the source[/bold]")
    rows = store.get_many("user_derived", list(USERS))
    table = Table("user_derived", *USERS)
    for feature in rows[0] or {}:
        table.add_row(feature, *(_fmt((r or {}).get(feature)) for r in rows))
    console.print(table)

    console.print("\n[bold]10. Live change events while clicks are incremented[/bold]")
    seen: list[str] = []
    with store.subscribe("user_activity", entity_ids=["user123"]) as sub:
        sub.on_event(
            lambda ev: seen.append(
                f"   event: {ev.kind} {ev.entity_id} version {ev.version_id} fields {ev.fields}"
            )
        )
        time.sleep(0.1)
        for _ in range(3):
            v = store.increment("user_activity", "user123", {"clicks": 1})
            console.print(f"   increment -> clicks {v.values['clicks']}")
            time.sleep(0.05)
        deadline = time.time() + 2
        while len(seen) < 3 and time.time() < deadline:
            time.sleep(0.01)
    for line in seen:
        console.print(line)
    events, cursor = store.changes("user_activity")
    console.print(f"   the change feed kept {len(events)} events; resume after cursor {cursor}")

    console.print("\n[bold]11. Similar users (embeddings, with a filter) and similar texts[/bold]")
    rng_e = np.random.default_rng(5)
    basis = rng_e.normal(size=(4, 16))
    store.apply(
        FeatureView(
            "user_embedding",
            entity=user,
            fields=[Field("emb", t.Vector(16)), Field("segment", t.Category(["basic", "premium"]))],
            history=0,
        )
    )
    people = [f"user{i}" for i in range(2000)] + list(USERS)
    store.write_many(
        "user_embedding",
        [
            {
                "entity_id": p,
                "emb": rng_e.normal(size=4) @ basis,
                "segment": "premium" if i % 3 == 0 else "basic",
            }
            for i, p in enumerate(people)
        ],
    )
    me = store.get("user_embedding", "user123")
    assert me is not None
    for m in store.similar("user_embedding", "emb", me["emb"], k=4, where={"segment": "premium"}):
        console.print(f"   {m.entity_id:<10} cosine {m.score:.3f}")

    try:
        from ..vectors.embed import local_embedder

        store.embedder = local_embedder()  # all-MiniLM-L6-v2, offline (redfeat[embed])
        console.print("   texts embedded by the local model all-MiniLM-L6-v2 (redfeat[embed])")
    except ConfigurationError:

        def letters(texts: Any) -> Any:  # a toy bag-of-letters embedder standing in for a model
            return np.array([[s.count(c) + 0.01 for c in "aeiourst"] for s in texts], dtype=float)

        store.embedder = letters
        console.print("   texts embedded by a toy embedder (install redfeat[embed] for a model)")
    for doc in ["red running shoes", "a blue rain jacket", "trail running shoes", "wool socks"]:
        store.put_text(doc, model="demo")
    hits = store.similar_texts(text="running shoes", model="demo", k=2)
    console.print(
        "   texts nearest 'running shoes': "
        + ", ".join(repr((h.values or {}).get("text")) for h in hits)
    )

    console.print("\n[bold]12. A hostile entity id stays inside its own keys[/bold]")
    hostile = "evil}{user123|:*?[x]\n🙂"
    store.write("user_profile", hostile, {**USERS["user456"], "age": 99})
    console.print(f"   wrote {hostile!r}", markup=False)
    key = store.keys.latest("user_profile", _esc(hostile))
    console.print(f"   its key: {key!r}", markup=False)
    hostile_row = store.get("user_profile", hostile)
    user123 = store.get("user_profile", "user123")
    assert hostile_row is not None and user123 is not None
    console.print(
        f"   read back: age {hostile_row['age']}; user123 untouched: age {user123['age']}"
    )

    console.print("\n[bold]13. A bad row is refused, nothing is written[/bold]")
    try:
        store.write(
            "user_profile",
            "user999",
            {"age": -5, "income": float("nan"), "zip_code": "12ab", "favourite_colour": "red"},
        )
    except ValidationError as exc:
        console.print(f"   ValidationError: {exc}", style="red", markup=False)
    console.print(f"   user999 exists: {store.get('user_profile', 'user999') is not None}")

    console.print(
        "\n[bold]14. Bulk load 50,000 users with write_many (and their derived views)[/bold]"
    )
    rng = random.Random(42)
    bulk = [
        {
            "entity_id": f"bulk{i}",
            "age": rng.randint(18, 90),
            "income": round(rng.uniform(15_000, 250_000), 2),
            "credit_score": rng.randint(300, 850),
            "purchase_history_length": rng.randint(0, 500),
            "avg_order_value": round(rng.uniform(5, 300), 2),
            "zip_code": f"{rng.randint(0, 99_999):05d}",
        }
        for i in range(50_000)
    ]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("writing", total=len(bulk))
        t1 = time.perf_counter()
        report = store.write_many(
            "user_profile", bulk, progress=lambda done, total: progress.update(task, completed=done)
        )
        secs = time.perf_counter() - t1
    console.print(
        f"   {report.written:,} rows in {secs:.2f} s ({report.written / secs:,.0f} rows/s)"
    )
    frame = store.get_features(
        ["bulk1", "bulk2", "user123"],
        ["user_profile:age", "user_profile:credit_score", "user_profile:zip_code"],
        as_frame=True,
    )
    console.print(_frame_table(frame))
    _quality(console, store, user)
    demo_series.run(console, store)
    demo_series.windows(console, store)
    demo_series.stats(console, store)
    console.print(
        "\n[bold green]done.[/bold green] See drift and the CPU series on the web page: "
        "[bold]redfeat serve --project demo[/bold] (http://127.0.0.1:8000/)"
    )


def _quality(console: Console, store: FeatureStore, user: Entity) -> None:
    console.print("\n[bold]15. Feature quality: a baseline week, then a shifted day[/bold]")
    store.apply(
        FeatureView(
            "user_spend",
            entity=user,
            fields=[
                Field("spend", t.Float, min=0),
                Field("basket", t.Int, min=0),
                Field("channel", t.Category(["web", "app", "store"])),
            ],
            history=0,
        )
    )

    @store.validator("user_spend", severity="warning")
    def big_basket_small_spend(row: dict[str, Any]) -> str | None:
        if (row["basket"] or 0) > 20 and (row["spend"] or 0) < 5:
            return "20+ items for under 5: a pricing bug upstream?"
        return None

    rng = np.random.default_rng(11)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=8)

    def rows(day0: datetime, hours: int, spend_mu: float, mix: list[float]) -> Any:
        n = hours * 40
        return pd.DataFrame(
            {
                "entity_id": [f"user{i % 2000}" for i in range(n)],
                "event_time": [day0 + timedelta(minutes=i * 60 / 40) for i in range(n)],
                "spend": rng.lognormal(spend_mu, 0.6, n).round(2),
                "basket": rng.poisson(4, n),
                "channel": rng.choice(["web", "app", "store"], n, p=mix),
            }
        )

    week = rows(start, 7 * 24, 3.5, [0.5, 0.4, 0.1])
    report = store.write_many("user_spend", week, event_time_column="event_time")
    console.print(f"   backfilled {report.written:,} rows over 7 days (profiled per hour)")
    store.quality.set_baseline("user_spend", start, start + timedelta(days=7))
    day = start + timedelta(days=7)
    shifted = rows(day, 24, 3.9, [0.2, 0.3, 0.5])  # spend up ~50 %, shoppers move to stores
    shifted.loc[:3, ["basket", "spend"]] = [30, 1.0]  # rows the warning validator flags
    report = store.write_many("user_spend", shifted, event_time_column="event_time")
    console.print(f"   last day: {report.written:,} rows, {len(report.warnings)} warnings, e.g.")
    console.print(f"   {report.warnings[0]}", markup=False)
    drift = store.quality.drift("user_spend", start=day, end=day + timedelta(days=1))
    console.print(drift_table(drift))
    console.print(f"   features that moved: {', '.join(drift.drifting)}")
    console.print(health_table(store.quality.health()))


def _frame_table(frame: Any) -> Table:
    table = Table(*[str(c) for c in frame.columns])
    for row in frame.itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    return table


def _esc(entity_id: str) -> str:
    from ..core.keys import escape_id

    return escape_id(entity_id)
