"""unitvox: acoustic units, motifs and unit vocoders for speech research."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unitvox.model.unit_model import UnitModel


def __getattr__(name: str):
    if name == "UnitModel":  # lazy: `import unitvox` stays light; torch loads with the model
        from unitvox.model.unit_model import UnitModel

        return UnitModel
    raise AttributeError(f"module 'unitvox' has no attribute {name!r}")
