"""Checks of the arguments public verbs take, where they first enter (the facade): a wrong
kind of argument is a ConfigurationError naming the argument, never a TypeError from deep
inside."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigurationError


def _kind(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"an array of shape {tuple(shape)}"
    return type(value).__name__


def names(what: str, value: Any) -> list[str] | None:
    """``features=``: None (all) or a list/tuple of str; one str is refused (a common slip
    for ``[name]``)."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{what} must be a list of names like ['a', 'b'] (or None for all), got {_kind(value)}"
        )
    out = list(value)
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise ConfigurationError(
            f"{what} must hold names (str), got {_kind(bad[0])} {_short(bad[0])}"
        )
    return out


def ids(what: str, value: Any) -> list[Any]:
    """``entity_ids=``: an iterable of ids (a list, tuple, 1-D array...), not one id."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{what} must be a list of entity ids like ['u1', 'u2'], got {_kind(value)}"
        )
    if getattr(value, "ndim", 1) != 1:
        raise ConfigurationError(f"{what} must be one-dimensional, got {_kind(value)}")
    return list(value)


def optional_ids(what: str, value: Any) -> list[Any] | None:
    return None if value is None else ids(what, value)


def mapping(what: str, value: Any) -> Mapping[Any, Any]:
    """A dict argument (``deltas``, ``where``, ``labels``...)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be a dict, got {_kind(value)} {_short(value)}")
    return value


def rows(what: str, value: Any) -> Any:
    """Bulk rows: a list (or iterable) of dicts, a pandas.DataFrame or a pyarrow.Table."""
    frame_like = type(value).__module__.split(".")[0] in ("pandas", "pyarrow")
    if frame_like:
        if type(value).__name__ not in ("DataFrame", "Table", "RecordBatch"):
            raise ConfigurationError(
                f"{what} must be a list of dicts, a pandas.DataFrame or a pyarrow.Table, "
                f"got {type(value).__module__}.{type(value).__name__}"
            )
        return value
    if (
        value is None
        or isinstance(value, str | bytes | Mapping)
        or not isinstance(value, Iterable)
        or getattr(value, "ndim", 1) != 1
    ):
        raise ConfigurationError(
            f"{what} must be a list of dicts, a pandas.DataFrame or a pyarrow.Table, "
            f"got {_kind(value)}"
        )
    return value


def column(what: str, value: Any, *, optional: bool = False) -> Any:
    """A column name (``entity_column=``, ``event_time_column=``; None where optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a column name (str), got {_short(value)}")
    return value


def choice(what: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigurationError(f"{what} must be one of {list(options)}, got {_short(value)}")
    return value


def flag(what: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{what} must be True or False, got {_short(value)}")
    return value


def name(what: str, value: Any) -> str:
    """A name argument (view, series, model...): a non-empty str that UTF-8 can encode."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty str, got {_short(value)}")
    text(what, value)
    return value


def text(what: str, value: str) -> str:
    """A str that becomes bytes (a key, a JSON value): lone surrogates cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{what} {_short(value)} is not valid unicode (a lone surrogate)"
        ) from None
    return value


def _short(value: Any) -> str:
    try:
        r = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        r = f"<{type(value).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."
