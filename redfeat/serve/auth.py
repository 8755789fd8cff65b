"""API tokens for ``redfeat serve``: scopes, where tokens come from, and how they are kept.

A token is a high-entropy string (``rf_`` + 43 url-safe characters from ``secrets``); the
server keeps only its SHA-256 and compares digests in constant time, so a token file or a
memory dump written by ``redfeat token create`` gives nothing to replay. A plain SHA-256 is
enough here (no salt, no slow hash): the input is 256 random bits, not a password.

Scopes: ``read`` (every GET and the POST reads: get_many, features, similar), ``write``
(write, write_many) and ``admin`` (``/stats``; it also grants read and write).

Tokens come from a JSON file (``redfeat serve --token-file FILE``)::

    {"tokens": [{"token": "s3cret...", "scopes": ["read", "write"]},
                {"sha256": "9f86d0...", "scopes": ["admin"], "name": "ops"}]}

(entries with ``token`` are written by hand; ``redfeat token create`` writes ``sha256``
ones) or from ``REDFEAT_TOKENS``: the same JSON, or ``TOKEN:read,write`` entries separated
by spaces or newlines. Clients send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

SCOPES = ("read", "write", "admin")
PREFIX = "rf_"


def digest(token: str) -> str:
    """The SHA-256 of a token, in hex: all the server keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh token: 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def check_scopes(scopes: Iterable[str], what: str = "scopes") -> tuple[str, ...]:
    out = []
    for s in scopes:
        s = str(s).strip()
        if s not in SCOPES:
            raise ConfigurationError(f"{what}: unknown scope {s!r}; use {', '.join(SCOPES)}")
        if s not in out:
            out.append(s)
    if not out:
        raise ConfigurationError(f"{what}: a token needs at least one of {', '.join(SCOPES)}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Token:
    """One accepted token: its digest, scopes and a name (for logs; never the token)."""

    sha256: str
    scopes: tuple[str, ...]
    name: str
    created: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "sha256": self.sha256,
            "scopes": list(self.scopes),
        }
        if self.created:
            out["created"] = self.created
        return out


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens a server accepts (empty: no authentication)."""

    tokens: tuple[Token, ...] = ()
    sources: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def find(self, presented: str) -> Token | None:
        """The token matching ``presented`` (digests compared in constant time, all of them
        every time, so the answer's timing says nothing about which one nearly matched)."""
        d = digest(presented).encode()
        found = None
        for t in self.tokens:
            if hmac.compare_digest(d, t.sha256.encode()):
                found = t
        return found

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.tokens + other.tokens, self.sources + other.sources)

    def to_json(self) -> str:
        """The digests and scopes only (what worker processes are handed)."""
        return json.dumps({"tokens": [t.to_dict() for t in self.tokens]})


def parse(data: Any, source: str) -> Tokens:
    """Tokens from a parsed JSON document ``{"tokens": [...]}``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("tokens"), list):
        raise ConfigurationError(
            f'{source}: expected {{"tokens": [{{"token": ..., "scopes": ...}}]}}'
        )
    out = []
    for i, entry in enumerate(data["tokens"]):
        where = f"{source}: tokens[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{where}: expected an object")
        scopes = entry.get("scopes", ["read"])
        if isinstance(scopes, str) or not isinstance(scopes, Sequence):
            raise ConfigurationError(f'{where}: scopes must be a list such as ["read"]')
        scopes = check_scopes(scopes, f"{where} scopes")
        if "token" in entry:
            raw = entry["token"]
            if not isinstance(raw, str) or len(raw) < 16:
                raise ConfigurationError(f"{where}: a token is a string of 16 characters or more")
            sha = digest(raw)
        elif "sha256" in entry:
            sha = str(entry["sha256"]).lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ConfigurationError(f"{where}: sha256 must be 64 hex digits")
        else:
            raise ConfigurationError(f"{where}: give either 'token' or 'sha256'")
        name = str(entry.get("name") or f"token-{sha[:8]}")
        created = entry.get("created")
        out.append(Token(sha, scopes, name, None if created is None else str(created)))
    return Tokens(tuple(out), (source,))


def from_file(path: str | os.PathLike[str]) -> Tokens:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"token file {p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"token file {p}: {exc}") from None
    return parse(data, str(p))


def from_env(value: str, source: str = "REDFEAT_TOKENS") -> Tokens:
    """``REDFEAT_TOKENS``: the JSON of a token file, or ``TOKEN:scope,scope`` entries."""
    text = value.strip()
    if not text:
        return Tokens()
    if text.startswith("{"):
        try:
            return parse(json.loads(text), source)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None
    entries = []
    for item in text.split():
        raw, _, scopes = item.rpartition(":")
        if not raw:
            raw, scopes = scopes, "read"
        entries.append({"token": raw, "scopes": scopes.split(",")})
    return parse({"tokens": entries}, source)


# -- the file `redfeat token` manages ---------------------------------------------------------


def _read_doc(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"tokens": []}
    try:
        data = json.loads(path.read_text() or '{"tokens": []}')
    except ValueError as exc:
        raise ConfigurationError(f"token file {path}: {exc}") from None
    parse(data, str(path))  # refuse to extend a file the server would refuse
    return dict(data)


def _write_doc(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def create(path: Path, scopes: Iterable[str], name: str | None = None) -> tuple[str, Token]:
    """A new token added to the file (its digest only); returns the token, shown once."""
    scopes = check_scopes(scopes)
    data = _read_doc(path)
    names = {str(e.get("name")) for e in data["tokens"] if isinstance(e, Mapping)}
    raw = new_token()
    sha = digest(raw)
    name = name or f"token-{sha[:8]}"
    if name in names:
        raise ConfigurationError(f"token file {path} already has a token named {name!r}")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    data["tokens"].append({"name": name, "sha256": sha, "scopes": list(scopes), "created": created})
    _write_doc(path, data)
    return raw, Token(sha, scopes, name, created)


def revoke(path: Path, name: str) -> int:
    """Remove the tokens named ``name`` (or whose digest starts with it, 8+ digits)."""
    data = _read_doc(path)
    tokens = parse(data, str(path)).tokens

    def hit(t: Token) -> bool:
        return t.name == name or (len(name) >= 8 and t.sha256.startswith(name.lower()))

    keep = [e for e, t in zip(data["tokens"], tokens, strict=True) if not hit(t)]
    removed = len(data["tokens"]) - len(keep)
    if removed:
        data["tokens"] = keep
        _write_doc(path, data)
    return removed
