"""Typed configuration base shared by every config model in the project.

Every config is a pydantic model that forbids unknown keys, so a typo in a YAML file
fails before any work starts, with the key named and the allowed keys listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the fix."""


class StrictConfig(BaseModel):
    """Base for all configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Self:
        """Build the config, turning pydantic errors into one readable `ConfigError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(cls, exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        """Load the config from a YAML file."""
        return cls.from_dict(read_yaml_mapping(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form that `from_dict` accepts back (a round trip)."""
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML that `from_yaml` reads back unchanged."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; `ConfigError` if missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed at the nested location `loc` (best effort)."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(_model_class(current), "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(_model_class(current), "model_fields", None)
    return sorted(fields) if fields else []


def _model_class(annotation: Any) -> Any:
    """The pydantic model in an annotation such as `Model | None` (else the annotation)."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for member in get_args(annotation):
        if hasattr(member, "model_fields"):
            return member
    return annotation


def _describe_validation_error(model: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  unknown key '{key}'{hint}")
        else:
            shown = "hidden" if _secret(key) else repr(err.get("input"))
            lines.append(f"  '{key}': {err['msg']} (got {shown})")
    return "\n".join(lines)


SECRET_WORDS = ("key", "secret", "token", "password")


def _secret(dotted: str) -> bool:
    """A value that may be a credential is never echoed in an error message."""
    return any(word in dotted.rsplit(".", 1)[-1].lower() for word in SECRET_WORDS)
