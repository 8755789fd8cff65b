"""redfeat: a feature store for machine learning on Redis."""

from . import types
from .core.records import (
    EntityStats,
    Match,
    Record,
    Status,
    ValidationReport,
    Version,
    WriteReport,
)
from .core.schema import Entity, FeatureView, Field
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
    "Entity",
    "EntityStats",
    "FeatureStore",
    "FeatureView",
    "Field",
    "Match",
    "NotFoundError",
    "Problem",
    "Record",
    "RedfeatError",
    "Status",
    "ValidationError",
    "ValidationReport",
    "Version",
    "WindowFeatures",
    "WriteReport",
    "__version__",
    "types",
]
