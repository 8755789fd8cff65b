"""Feature value types: ``from redfeat import types as t`` then ``t.Int``, ``t.Vector(128)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "DType",
    "Int",
    "Float",
    "Bool",
    "String",
    "Timestamp",
    "Category",
    "Vector",
    "List",
    "from_spec",
]


@dataclass(frozen=True, slots=True)
class DType:
    """Base of every feature type."""

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def numeric(self) -> bool:
        return False

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def __repr__(self) -> str:
        return f"t.{self.kind}"


@dataclass(frozen=True, slots=True, repr=False)
class _Int(DType):
    @property
    def kind(self) -> str:
        return "Int"

    @property
    def numeric(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, repr=False)
class _Float(DType):
    @property
    def kind(self) -> str:
        return "Float"

    @property
    def numeric(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, repr=False)
class _Bool(DType):
    @property
    def kind(self) -> str:
        return "Bool"


@dataclass(frozen=True, slots=True, repr=False)
class _String(DType):
    @property
    def kind(self) -> str:
        return "String"


@dataclass(frozen=True, slots=True, repr=False)
class _Timestamp(DType):
    @property
    def kind(self) -> str:
        return "Timestamp"


Int = _Int()
Float = _Float()
Bool = _Bool()
String = _String()
Timestamp = _Timestamp()


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Category(DType):
    """A string from a fixed list, e.g. ``Category(["basic", "premium"])``."""

    categories: tuple[str, ...]

    def __init__(self, categories: list[str] | tuple[str, ...]) -> None:
        cats = tuple(categories)
        if not cats or not all(isinstance(c, str) for c in cats):
            raise ConfigurationError("Category needs a non-empty list of strings")
        if len(set(cats)) != len(cats):
            raise ConfigurationError(f"Category has duplicate values: {list(cats)}")
        object.__setattr__(self, "categories", cats)

    @property
    def kind(self) -> str:
        return "Category"

    def spec(self) -> dict[str, Any]:
        return {"kind": "Category", "categories": list(self.categories)}

    def __repr__(self) -> str:
        return f"t.Category({list(self.categories)!r})"


_METRICS = ("cosine", "l2", "ip")


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Vector(DType):
    """A fixed-length float32 vector (an embedding), e.g. ``Vector(128)``."""

    dim: int
    metric: str

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65_536:
            raise ConfigurationError(f"Vector dim must be an int in 1..65536, got {dim!r}")
        if metric not in _METRICS:
            raise ConfigurationError(f"Vector metric must be one of {_METRICS}, got {metric!r}")
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "metric", metric)

    @property
    def kind(self) -> str:
        return "Vector"

    def spec(self) -> dict[str, Any]:
        return {"kind": "Vector", "dim": self.dim, "metric": self.metric}

    def __repr__(self) -> str:
        return f"t.Vector({self.dim}, metric={self.metric!r})"


@dataclass(frozen=True, slots=True, init=False, repr=False)
class List(DType):
    """A variable-length list of Int, Float or String, e.g. ``List(Int)``."""

    element: DType

    def __init__(self, element: DType) -> None:
        if element not in (Int, Float, String):
            raise ConfigurationError(f"List elements must be Int, Float or String, got {element!r}")
        object.__setattr__(self, "element", element)

    @property
    def kind(self) -> str:
        return "List"

    @property
    def numeric(self) -> bool:
        return self.element.numeric

    def spec(self) -> dict[str, Any]:
        return {"kind": "List", "element": self.element.kind}

    def __repr__(self) -> str:
        return f"t.List({self.element!r})"


_SIMPLE: dict[str, DType] = {
    "Int": Int,
    "Float": Float,
    "Bool": Bool,
    "String": String,
    "Timestamp": Timestamp,
}


def from_spec(spec: dict[str, Any]) -> DType:
    """Rebuild a type from its registry form."""
    kind = spec.get("kind")
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind == "Category":
        return Category(spec["categories"])
    if kind == "Vector":
        return Vector(spec["dim"], spec.get("metric", "cosine"))
    if kind == "List":
        return List(_SIMPLE[spec["element"]])
    raise ConfigurationError(f"unknown feature type in registry: {spec!r}")
