"""Reading the exports config from a file or JSON text, with validation errors told in the config's own terms.

Each problem names where it is (``exports[0].destination.listId (export 'vip-customers')``) and, for an unknown key,
the closest allowed key or the list of allowed keys.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .exports_config import Destination, ExportConfig, ExportsConfig, RateLimits, Source
from .exports_config import Mapping as ColumnMapping

# The model whose keys are allowed at each place in the config (list indexes left out of the path).
_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): ExportsConfig,
    ("exports",): ExportConfig,
    ("exports", "source"): Source,
    ("exports", "destination"): Destination,
    ("exports", "destination", "rateLimits"): RateLimits,
    ("exports", "mapping"): ColumnMapping,
}


def load_exports_config(source: str) -> ExportsConfig:
    """Load and validate the exports config from a file path or from JSON text (``EXPORTS_CONFIG``)."""
    text = source.strip()
    origin = "EXPORTS_CONFIG"
    if not text.startswith("{"):
        path = Path(text)
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"config file {origin} not found; pass --config PATH or set EXPORTS_CONFIG") from None
        except OSError as exc:
            raise ConfigError(f"config file {origin} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_exports_config(data, origin)


def parse_exports_config(data: Any, origin: str = "config") -> ExportsConfig:
    try:
        return ExportsConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, data) for error in exc.errors()]
        raise ConfigError(f"{origin} is invalid:\n" + "\n".join(f"  - {p}" for p in problems)) from None


def _describe(error: Mapping[str, Any], data: Any) -> str:
    location = _location(error["loc"], data)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        hint = _suggest(key, error["loc"][:-1])
        return f"{location}: unknown key {key!r}{hint}"
    if kind == "missing":
        return f"{location}: required, but missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def _location(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item))
    text = ".".join(parts) or "config"
    try:
        index = loc[1] if loc[0] == "exports" else None
        if isinstance(index, int):
            name = data["exports"][index].get("name")
            if name:
                text += f" (export {name!r})"
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return text


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _suggest(key: str, parent: tuple[Any, ...]) -> str:
    names = [p for p in parent if isinstance(p, str)]
    model = _MODEL_AT.get(tuple(names), ExportConfig)
    known = _known_keys(model)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or [k for k in known if k.lower() == key.lower()]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; allowed keys here: {', '.join(known)}"
