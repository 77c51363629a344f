"""What every config section shares: the error type and the check helper."""

from __future__ import annotations

from unitvox.errors import ConfigError

__all__ = ["ConfigError", "require"]


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")
