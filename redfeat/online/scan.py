"""Bounded SCANs of a view's keys: list its entities, remove its data. Never KEYS, never
blocking: batches of COUNT 1000-2000, removed with UNLINK."""

from __future__ import annotations

from collections.abc import Callable

from ..core.context import Ctx
from ..core.registry import Resolved
from ..errors import wrap_redis


def entities_of(
    ctx: Ctx, res: Resolved, progress: Callable[[int], None] | None = None
) -> list[str]:
    """Every entity id of a view that has stored versions, sorted."""
    # the latest key, and for views with history the history key too (the latest key of
    # a view with a ttl expires; history alone may remain)
    suffixes = ("", "h") if res.hist_mode != "n" else ("",)
    out: list[str] = []
    with wrap_redis(f"view {res.name!r}: listing entities failed"):
        for raw in ctx.client.scan_iter(match=ctx.keys.view_pattern(res.name), count=2000):
            parsed = ctx.keys.parse(raw)
            if parsed is not None and parsed.suffix in suffixes and parsed.entity is not None:
                out.append(parsed.entity)
                if progress is not None and len(out) % 10_000 == 0:
                    progress(len(out))
    return sorted(set(out))


def unlink_matching(
    ctx: Ctx, pattern: str, *, what: str, progress: Callable[[int], None] | None = None
) -> int:
    """UNLINK every key matching a SCAN pattern, in batches of 500; the number removed."""
    removed = 0
    with wrap_redis(f"{what}: deleting its data failed"):
        batch: list[bytes] = []
        for key in ctx.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += ctx.client.unlink(*batch)
                batch.clear()
                if progress is not None:
                    progress(removed)
        if batch:
            removed += ctx.client.unlink(*batch)
    return removed


def delete_view_data(ctx: Ctx, view: str, *, suffix: str = "") -> int:
    """Every key of a view (or window features), or only those ending in ``suffix``."""
    return unlink_matching(ctx, ctx.keys.view_pattern(view) + suffix, what=f"view {view!r}")
