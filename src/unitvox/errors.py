"""The exceptions several layers share; `unitvox.exitcodes` says which exit code each one becomes."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message names the dotted key at fault."""


class IncompleteError(RuntimeError):
    """Work that cannot run yet because earlier work (a stage, some shards) has not finished; names it."""


class Interrupted(RuntimeError):
    """A stage stopped on SIGTERM after saving its progress; rerunning resumes it."""


class Unhealthy(RuntimeError):
    """Training stopped because its health monitor found it critical; the message names the reasons."""
