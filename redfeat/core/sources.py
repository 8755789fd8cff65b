"""Batch sources: where a view's rows come from when they are loaded in bulk
(``store.materialize``). These are definitions only, kept in the registry with the view;
reading them lives in ``redfeat.offline.sources``.

Every source names its entity column(s) (default: the entity's join keys), its event-time
column and, optionally, a created-time column that breaks ties between rows of one entity
at one event time (the latest created wins, as in Feast).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigurationError

KINDS = ("parquet", "csv", "sql")


def _columns(kind: str, value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    cols = (value,) if isinstance(value, str) else tuple(value)
    if not cols or not all(isinstance(c, str) and c for c in cols):
        raise ConfigurationError(
            f"{kind} source: entity_column must be a column name or a list of them, got {value!r}"
        )
    return cols


def _path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ConfigurationError(f"a source path must be a non-empty path, got {path!r}")
    # absolute, so that another process (a worker, the CLI) reads the same files
    return text if "://" in text else os.path.abspath(os.path.expanduser(text))


def redact(url: str) -> str:
    """The URL without its password (what the registry keeps of a SqlSource)."""
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}@{rest}"


class Source:
    """What every batch source has: the columns that carry entity, event and created time,
    and how source columns map onto the view's fields (``field_mapping``: source -> field).
    Sources are values: equal when their definitions are."""

    kind = ""

    def __init__(
        self,
        entity_column: str | Iterable[str] | None,
        event_time_column: str,
        created_column: str | None,
        field_mapping: Mapping[str, str] | None,
    ) -> None:
        self.entity_column = _columns(self.kind, entity_column)
        for label, col in (
            ("event_time_column", event_time_column),
            ("created_column", created_column),
        ):
            if (col is not None or label == "event_time_column") and (
                not isinstance(col, str) or not col
            ):
                raise ConfigurationError(f"{self.kind} source: {label} must be a column name")
        self.event_time_column = event_time_column
        self.created_column = created_column
        mapping = dict(field_mapping or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise ConfigurationError(
                f"{self.kind} source: field_mapping maps source column names to field names"
            )
        self.field_mapping: dict[str, str] = mapping

    def _spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity_column": None if self.entity_column is None else list(self.entity_column),
            "event_time_column": self.event_time_column,
            "created_column": self.created_column,
            "field_mapping": dict(self.field_mapping),
        }

    def spec(self) -> dict[str, Any]:
        """The definition as data (kept in the registry with its view)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for people: the kind and where."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Source) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.describe())


class ParquetSource(Source):
    """Parquet file(s): a path, a directory of files or a glob (``data/*.parquet``)."""

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        entity_column: str | Iterable[str] | None = None,
        event_time_column: str = "event_time",
        created_column: str | None = None,
        field_mapping: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(entity_column, event_time_column, created_column, field_mapping)
        self.path = _path(path)

    def spec(self) -> dict[str, Any]:
        return {**self._spec(), "path": self.path}

    def describe(self) -> str:
        return f"parquet {self.path}"

    def __repr__(self) -> str:
        return f"ParquetSource({self.path!r}, event_time_column={self.event_time_column!r})"


class CsvSource(Source):
    """CSV file(s), a path or a glob, with a header row; types are inferred (timestamps
    with an offset are instants, without one UTC)."""

    kind = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        entity_column: str | Iterable[str] | None = None,
        event_time_column: str = "event_time",
        created_column: str | None = None,
        field_mapping: Mapping[str, str] | None = None,
        delimiter: str = ",",
    ) -> None:
        super().__init__(entity_column, event_time_column, created_column, field_mapping)
        self.path = _path(path)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ConfigurationError(f"csv source: delimiter must be one character: {delimiter!r}")
        self.delimiter = delimiter

    def spec(self) -> dict[str, Any]:
        return {**self._spec(), "path": self.path, "delimiter": self.delimiter}

    def describe(self) -> str:
        return f"csv {self.path}"

    def __repr__(self) -> str:
        return f"CsvSource({self.path!r}, event_time_column={self.event_time_column!r})"


class SqlSource(Source):
    """A SQL query's rows. ``url``: ``postgresql://user@host:5432/db`` (read with the
    ``redfeat[postgres]`` extra: Arrow through libpq; the time window is pushed into the
    query) or ``duckdb:///path/to.db``. The registry keeps the URL without its password:
    another process reading the definition from there authenticates as libpq does
    (``PGPASSWORD``, ``~/.pgpass``)."""

    kind = "sql"

    def __init__(
        self,
        query: str,
        *,
        url: str,
        entity_column: str | Iterable[str] | None = None,
        event_time_column: str = "event_time",
        created_column: str | None = None,
        field_mapping: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(entity_column, event_time_column, created_column, field_mapping)
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError("sql source: query must be a non-empty SQL query")
        if not isinstance(url, str) or not url.startswith(
            ("postgresql://", "postgres://", "duckdb://")
        ):
            raise ConfigurationError(
                f"sql source: url {redact(str(url))!r} is not supported: use "
                "postgresql://user@host:5432/db or duckdb:///path/to.db"
            )
        self.query = query.strip().rstrip(";")
        self.url = url

    def spec(self) -> dict[str, Any]:
        return {**self._spec(), "query": self.query, "url": redact(self.url)}

    def describe(self) -> str:
        return f"sql {redact(self.url)}"

    def __repr__(self) -> str:
        return f"SqlSource({self.query[:40]!r}, url={redact(self.url)!r})"


def source_from_spec(spec: Mapping[str, Any]) -> Source:
    """A source from its registry form."""
    common: dict[str, Any] = {
        "entity_column": spec.get("entity_column"),
        "event_time_column": spec.get("event_time_column", "event_time"),
        "created_column": spec.get("created_column"),
        "field_mapping": spec.get("field_mapping") or {},
    }
    kind = spec.get("kind")
    if kind == "parquet":
        return ParquetSource(spec["path"], **common)
    if kind == "csv":
        return CsvSource(spec["path"], delimiter=spec.get("delimiter", ","), **common)
    if kind == "sql":
        return SqlSource(spec["query"], url=spec["url"], **common)
    raise ConfigurationError(f"unknown batch source kind in the registry: {kind!r}")
