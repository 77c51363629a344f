"""unitvox: acoustic units, motifs and unit vocoders for speech research."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitvox import jitcache

__version__ = "0.1.0"

# Before anything imports numba (librosa does): parallel shards must not share numba's cache files.
jitcache.claim_slot()

if TYPE_CHECKING:
    from unitvox.model.unit_model import UnitModel


def __getattr__(name: str):
    if name == "UnitModel":  # lazy: `import unitvox` stays light; torch loads with the model
        from unitvox.model.unit_model import UnitModel

        return UnitModel
    raise AttributeError(f"module 'unitvox' has no attribute {name!r}")
