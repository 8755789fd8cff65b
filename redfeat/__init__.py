"""redfeat: a feature store for machine learning on Redis."""

from . import types
from .core.records import (
    Match,
    MaterializeReport,
    Record,
    Status,
    ValidationReport,
    Version,
    WriteReport,
)
from .core.schema import Entity, FeatureService, FeatureView, Field
from .core.sources import CsvSource, ParquetSource, SqlSource
from .errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    Problem,
    RedfeatError,
    ValidationError,
)
from .store import FeatureStore
from .windows.spec import WindowFeatures

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigurationError",
    "ConflictError",
    "CsvSource",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "MaterializeReport",
    "Match",
    "NotFoundError",
    "ParquetSource",
    "Problem",
    "Record",
    "RedfeatError",
    "SqlSource",
    "Status",
    "ValidationError",
    "ValidationReport",
    "Version",
    "WindowFeatures",
    "WriteReport",
    "__version__",
    "types",
]
