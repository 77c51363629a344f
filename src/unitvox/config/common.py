"""What every config section shares: the error type and the check helper."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message names the dotted key at fault."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")
