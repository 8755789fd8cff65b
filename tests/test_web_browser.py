"""The page in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright; Playwright's own browser downloads are never used): sign in, use every form,
check that the charts are drawn and that the browser logs no console error (a script the
Content-Security-Policy blocked would be one).

Without a chromium these tests skip and say so; under CI (``CI`` set) they fail instead,
since ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from served import served

from redfeat import FeatureService, FeatureStore, FeatureView, Field
from redfeat import types as t
from redfeat.core.embedded import ServerInfo
from redfeat.serve import auth
from redfeat.serve.http import create_app

CHROMIUM = os.environ.get("REDFEAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "rf_browser-token-0123456789abcdef"
T0 = datetime(2026, 11, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)
SEG = ["basic", "premium", "gold"]


def _need_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    why = f"no chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(why + " -- CI must run the browser tests")
    pytest.skip(why)


def _data(store: FeatureStore) -> None:
    store.apply(
        FeatureView(
            "users",
            entity="user",
            fields=[
                Field("spend", t.Float, min=0),
                Field("age", t.Int, min=0, max=150),
                Field("segment", t.Category(SEG)),
                Field("emb", t.Vector(3)),
            ],
            history=20,
        )
    )
    store.apply(FeatureView("plain", entity="user", fields=[Field("x", t.Int)]))
    rng = np.random.default_rng(1)

    def rows(start: datetime, hours: int, shift: float, seg_p: list[float]) -> pd.DataFrame:
        n = hours * 40
        return pd.DataFrame(
            {
                "entity_id": [f"u{i % 300}" for i in range(n)],
                "event_time": [start + timedelta(hours=i // 40, seconds=i % 40) for i in range(n)],
                "spend": rng.lognormal(3 + shift, 0.5, n),
                "age": rng.integers(18, 70, n),
                "segment": rng.choice(SEG, n, p=seg_p),
                "emb": [rng.normal(size=3) for _ in range(n)],
            }
        )

    store.write_many(
        "users", rows(T0, 24 * 7, 0.0, [0.6, 0.3, 0.1]), event_time_column="event_time"
    )
    store.quality.set_baseline("users", T0, T0 + timedelta(days=7))
    day = T0 + timedelta(days=7)
    store.write_many("users", rows(day, 24, 0.5, [0.2, 0.3, 0.5]), event_time_column="event_time")
    # one entity with a readable history: three versions, each changing something
    for i, (spend, age, seg) in enumerate(
        [(10.0, 30, "basic"), (12.5, 30, "basic"), (12.5, 31, "gold")]
    ):
        store.write(
            "users",
            "alice",
            {"spend": spend, "age": age, "segment": seg, "emb": [1.0, 2.0, float(i)]},
            event_time=NOW + timedelta(hours=i),
        )
    cpu = store.series("cpu", labels={"host": "web-1"})
    start = NOW - timedelta(hours=26)
    n = 26 * 120
    cpu.add_many(
        [start + timedelta(seconds=30 * i) for i in range(n)], 50 + rng.normal(0, 1, n).round(2)
    )
    cpu.add(97.5, NOW)
    store.series("mem", labels={"host": "web-1"}).add(1.0, NOW)
    # a view with a baseline but too few values to judge drift (min_count 30), recent so
    # that health's window (the last 24h) sees them too
    store.apply(FeatureView("visits", entity="user", fields=[Field("score", t.Float)]))
    recent = datetime.now(UTC) - timedelta(minutes=30)
    store.write_many(
        "visits",
        [
            {"entity_id": f"t{i}", "score": float(i), "event_time": recent + timedelta(seconds=i)}
            for i in range(12)
        ],
        event_time_column="event_time",
    )
    store.quality.set_baseline("visits", recent - timedelta(hours=1), recent + timedelta(hours=1))
    # a feature service in two versions
    store.apply(FeatureService("churn", features=["users:spend"], description="churn model"))
    store.apply(FeatureService("churn", features=["users:spend", "users:age", "visits:score"]))


@pytest.fixture
def site(embedded: ServerInfo, project: str) -> Iterator[str]:
    """The page over the embedded server only: the browser sees the same HTML on every
    backend, and a browser run costs ~10 s."""
    _need_chromium()
    client = embedded.client()
    store = FeatureStore(client=client, project=project)
    try:
        _data(store)
        tokens = auth.parse({"tokens": [{"token": TOKEN, "scopes": ["read"]}]}, "test")
        with served(create_app(store, tokens=tokens)) as url:
            yield url
    finally:
        store.close()
        keys = list(client.scan_iter(match=f"rf:{project}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
        client.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _page(browser: Any) -> tuple[Any, list[str]]:
    page = browser.pages[0] if browser.pages else browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    return page, errors


def _sign_in(page: Any, site: str, errors: list[str]) -> None:
    page.goto(site + "/")
    assert page.locator("input[name=token]").count() == 1  # the sign-in form, not the page
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("section#views")
    # the browser logs the 401 of the first, token-less load; that answer was the point
    assert all("status of 401" in e for e in errors), errors
    errors.clear()


def _drawn(page: Any, selector: str) -> int:
    """How many elements match and have a box on the screen of non-zero size."""
    n = 0
    for el in page.locator(selector).all():
        box = el.bounding_box()
        if box is not None and box["width"] > 0 and box["height"] > 0:
            n += 1
    return n


def test_page_in_chromium_forms_charts_and_no_console_error(
    site: str, browser: Any, tmp_path: Path
) -> None:
    page, errors = _page(browser)
    _sign_in(page, site, errors)
    # views and their health, with links to each view's lookup and drift
    assert page.locator("table.views-table tr").count() == 4
    # drift of the view with a baseline: the table and one bar chart per feature
    assert page.locator("#drift table.drift-table").count() == 1
    assert _drawn(page, "#drift svg.drift-plot") == 3  # spend, age, segment
    assert _drawn(page, "#drift rect.bar.current") > 10
    # the series: a line with its anomalies
    assert _drawn(page, "#series svg.series-plot") == 1
    assert _drawn(page, "#series polyline.series-line") >= 1
    assert _drawn(page, "#series circle.anomaly") >= 1

    # entity lookup: latest values, history with what changed, as-of
    page.fill("input[name=entity]", "alice")
    page.locator("#entity button[type=submit]").click()
    page.wait_for_selector("table.values-table")
    values = page.locator("table.values-table").inner_text()
    assert "31" in values and "gold" in values and "12.5" in values
    history = page.locator("table.history-table")
    assert history.locator("tr").count() == 4  # header + 3 versions
    assert history.locator("td.changed").count() >= 3  # spend; then age, segment (and emb)
    assert "first kept" in history.inner_text()
    page.fill("input[name=as_of]", (NOW + timedelta(minutes=90)).isoformat())
    page.keyboard.press("Enter")
    page.wait_for_selector("table.values-table")
    assert "as of" in page.locator("#entity h3").first.inner_text()
    as_of_values = page.locator("table.values-table").inner_text()
    assert "12.5" in as_of_values and "basic" in as_of_values and "gold" not in as_of_values
    assert page.locator("table.history-table tr.asof").count() == 1
    # an unknown id says what is missing and keeps the form
    page.fill("input[name=entity]", "nobody")
    page.fill("input[name=as_of]", "")
    page.locator("#entity button[type=submit]").click()
    page.wait_for_selector("#entity p.missing")
    assert "No values for entity" in page.locator("#entity p.missing").inner_text()
    assert page.locator("#entity input[name=entity]").input_value() == "nobody"

    # a bad time: the section says what is wrong and keeps its form and the other sections
    page.fill("input[name=start]", "last tuesday")
    page.locator("#drift button[type=submit]").click()
    page.wait_for_selector("#drift p.error")
    assert "start" in page.locator("#drift p.error").inner_text()
    assert page.locator("#drift input[name=start]").input_value() == "last tuesday"
    assert page.locator("#drift select[name=view]").count() == 1
    assert _drawn(page, "#series svg.series-plot") == 1

    # a view without a baseline keeps its selector and says how to get one
    page.select_option("#drift select[name=view]", "plain")  # the script submits the form
    page.wait_for_url("**view=plain**")
    hint = page.locator("#drift p.hint").inner_text()
    assert "no baseline" in hint and "set_baseline" in hint
    assert page.locator("#drift select[name=view]").input_value() == "plain"

    # the series selector switches the chart; a bucket of 1h draws fewer points
    page.select_option("#series select[name=series]", "mem")
    page.wait_for_url("**series=mem**")
    assert "mem" in page.locator("#series p.muted").inner_text()
    page.select_option("#series select[name=series]", "cpu")
    page.wait_for_url("**series=cpu**")
    page.fill("input[name=bucket]", "1h")
    page.locator("#series button[type=submit]").click()
    page.wait_for_selector("#series svg.series-plot")
    assert "avg per 1h" in page.locator("#series p.muted").inner_text()
    assert _drawn(page, "#series polyline.series-line") == 1

    assert errors == [], errors
    shot = os.environ.get("REDFEAT_SCREENSHOT")  # make the docs' picture: a path to write
    page.goto(site + "/?e_view=users&entity=alice")
    page.wait_for_selector("table.history-table")
    page.screenshot(path=shot or str(tmp_path / "page.png"), full_page=True)
    assert errors == [], errors


def _style(page: Any, selector: str) -> tuple[str, str]:
    """The computed colour and font style of the first element ``selector`` matches."""
    color, font = page.locator(selector).first.evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).fontStyle]"
    )
    return str(color), str(font)


def test_insufficient_data_is_shown_apart_from_healthy_and_drifting(
    site: str, browser: Any
) -> None:
    page, errors = _page(browser)
    _sign_in(page, site, errors)
    row = page.locator("table.views-table tr", has_text="visits")
    # health: the view is not drifting (ok), and its unjudged feature is said beside that
    assert row.locator("span.ok").inner_text() == "ok"
    unjudged = row.locator("span.insufficient_data")
    assert unjudged.inner_text() == "1 unjudged" and "score" in unjudged.get_attribute("title")
    assert "too few values to judge drift: score" in row.inner_text()
    page.select_option("#drift select[name=view]", "visits")
    page.wait_for_url("**view=visits**")
    verdict = page.locator("#drift p span.insufficient_data")
    assert verdict.inner_text() == "insufficient_data"
    cell = page.locator("#drift table.drift-table td.insufficient_data")
    assert cell.inner_text() == "insufficient_data"
    # a style of its own: neither the green of ok, nor a warning's or drift's colour
    mine = _style(page, "#drift td.insufficient_data")
    assert mine[1] == "italic"
    page.goto(site + "/?view=users#drift")
    page.wait_for_selector("#drift table.drift-table")
    others = {
        _style(page, f"#drift td.{v}")[0]
        for v in ("ok", "warning", "drift")
        if page.locator(f"#drift td.{v}").count()
    }
    assert others and mine[0] not in others, (mine, others)
    assert errors == [], errors


def test_feature_services_with_their_features_and_versions(site: str, browser: Any) -> None:
    page, errors = _page(browser)
    _sign_in(page, site, errors)
    table = page.locator("section#services table.services-table")
    row = table.locator("tr", has_text="churn")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "churn" and cells[1] == "2" and cells[2] == "3"
    assert "users: spend, age" in cells[3] and "visits: score" in cells[3]
    assert cells[4].splitlines() == ["v2: +users:age, +visits:score", "v1: first"]
    # a service's view links to its entity lookup
    row.locator("a", has_text="visits").click()
    page.wait_for_url("**e_view=visits**")
    assert page.locator("#entity select[name=e_view]").input_value() == "visits"
    assert errors == [], errors


def test_docs_page_renders_the_openapi_document(site: str, browser: Any) -> None:
    page, errors = _page(browser)
    _sign_in(page, site, errors)  # the cookie lets the docs page fetch /openapi.json
    page.goto(site + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    text = page.locator("#swagger-ui").inner_text()
    assert "/views/{view}/get_many" in text and "/livez" in text
    assert page.locator(".opblock").count() >= 15
    assert errors == [], errors


def test_sign_in_refuses_a_wrong_token(site: str, browser: Any) -> None:
    page, errors = _page(browser)
    page.goto(site + "/")
    page.fill("input[name=token]", "rf_wrong-token-000000000000000")
    page.click("button[type=submit]")
    page.wait_for_selector("p.error")
    assert "not accepted" in page.locator("p.error").inner_text()
    assert page.locator("section#views").count() == 0
    # a 401 status is logged by the browser as a failed resource: that is the answer here
    assert all("401" in e for e in errors), errors
