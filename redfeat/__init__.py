"""redfeat: a feature store for machine learning on Redis.

Every type a public verb of ``FeatureStore`` takes or returns is exported here. The ones
whose modules load pandas, pyarrow or pcodec are imported on first use, so that ``import
redfeat`` stays quick (a CLI command is a new process).
"""

import importlib as _importlib
import typing as _typing

from . import types
from .core.durability import Durability, Persistence
from .core.embedded import EmbeddedServer, ServerInfo
from .core.keys import Keys
from .core.metrics import Metrics
from .core.records import (
    ChangeEvent,
    EntityStats,
    Match,
    MaterializeReport,
    Record,
    Status,
    ValidationReport,
    Version,
    WriteReport,
)
from .core.schema import Entity, EntityId, FeatureService, FeatureView, Field
from .core.sources import CsvSource, ParquetSource, SqlSource
from .core.time import Duration
from .errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    FeedTrimmedError,
    NotFoundError,
    Problem,
    RedfeatError,
    ValidationError,
)
from .online.events import Subscription
from .quality.service import Quality
from .realtime.cache import Cache
from .realtime.ingest import Worker
from .store import FeatureStore
from .windows.spec import WindowFeatures

if _typing.TYPE_CHECKING:
    from .offline.log import OfflineLog
    from .timeseries.alerts import Alerts
    from .timeseries.series import Series
    from .timeseries.service import TimeSeriesAdmin
    from .transforms.core import TransformRegistry
    from .windows.service import RecordReport

__version__ = "0.1.0"

_LAZY = {
    "Alerts": ".timeseries.alerts",
    "OfflineLog": ".offline.log",
    "RecordReport": ".windows.service",
    "Series": ".timeseries.series",
    "TimeSeriesAdmin": ".timeseries.service",
    "TransformRegistry": ".transforms.core",
}

__all__ = [
    "Alerts",
    "BackendError",
    "Cache",
    "ChangeEvent",
    "ConfigurationError",
    "ConflictError",
    "CsvSource",
    "Durability",
    "Duration",
    "EmbeddedServer",
    "Entity",
    "EntityId",
    "FeatureService",
    "EntityStats",
    "FeatureStore",
    "FeatureView",
    "FeedTrimmedError",
    "Field",
    "Keys",
    "MaterializeReport",
    "Match",
    "Metrics",
    "NotFoundError",
    "OfflineLog",
    "ParquetSource",
    "Persistence",
    "Problem",
    "Quality",
    "Record",
    "RecordReport",
    "RedfeatError",
    "Series",
    "ServerInfo",
    "SqlSource",
    "Status",
    "Subscription",
    "TimeSeriesAdmin",
    "TransformRegistry",
    "ValidationError",
    "ValidationReport",
    "Version",
    "WindowFeatures",
    "Worker",
    "WriteReport",
    "__version__",
    "types",
]


def __getattr__(name: str) -> _typing.Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(where, __name__), name)
    globals()[name] = value  # found once, then a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
