"""Helpers to build one frozen config dataclass per entry point from the environment.

Each entry point (Lambda handler, CLI command) defines its own ``@dataclass(frozen=True)``
with a ``from_env`` classmethod built from these readers, which fail loudly with
:class:`ConfigError` naming the variable instead of defaulting silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from airflow_control_plane.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(env: Mapping[str, str] | None, name: str) -> str | None:
    source = os.environ if env is None else env
    value = source.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def require_str(name: str, env: Mapping[str, str] | None = None) -> str:
    """Return the variable's value or raise ConfigError naming it."""
    value = _raw(env, name)
    if value is None:
        raise ConfigError(f"environment variable {name} is required but not set")
    return value


def optional_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    value = _raw(env, name)
    return default if value is None else value


def optional_int(
    name: str, default: int, env: Mapping[str, str] | None = None, *, minimum: int | None = None
) -> int:
    value = _raw(env, name)
    if value is None:
        result = default
    else:
        try:
            result = int(value)
        except ValueError:
            raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ConfigError(f"environment variable {name} must be >= {minimum}, got {result}")
    return result


def optional_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"environment variable {name} must be a boolean (true/false), got {value!r}")
