"""The samples section: how much listening material `unitvox samples` renders."""

from __future__ import annotations

from dataclasses import dataclass

from unitvox.config.common import require as _require


@dataclass
class SamplesConfig:
    """Listening material: reconstructions, voice conversions, a multi-speaker set and a long-form item."""

    checkpoint: str = "best"
    count: int = 4
    conversions: int = 2
    voices: int = 4
    long_form_segments: int = 4

    def check(self, key: str) -> None:
        _require(bool(self.checkpoint), f"{key}.checkpoint", "must be best, latest or a checkpoint URI")
        for name in ("count", "long_form_segments"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be at least 1")
        for name in ("conversions", "voices"):
            _require(getattr(self, name) >= 0, f"{key}.{name}", "must not be negative")
