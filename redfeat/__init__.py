"""redfeat: a feature store for machine learning on Redis."""

from . import types
from .batch import ValidationReport
from .errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    Problem,
    RedfeatError,
    ValidationError,
)
from .history import Version
from .schema import Entity, FeatureView, Field
from .store import FeatureStore
from .vectors import Match
from .windows import WindowFeatures
from .writer import Record, Status, WriteReport

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigurationError",
    "ConflictError",
    "Entity",
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
