"""A trained model anywhere: the self-contained bundle (`bundle`) and `UnitModel` (encode, vocode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unitvox.model.unit_model import UnitModel


def __getattr__(name: str):
    if name == "UnitModel":  # torch loads only when the model is asked for
        from unitvox.model.unit_model import UnitModel

        return UnitModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["UnitModel"]
