"""Pieces every human report shares: Markdown tables and PNG figures drawn without pyplot.

Used by evaluate's summary, the ablation report and the diagnostics.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

PANEL_INCHES = (5.0, 3.6)


def markdown_table(header: Sequence[Any], body: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines: numbers to three decimals, None as '-', pipes escaped."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(cell(value) for value in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in body)]


def cell(value: Any) -> str:
    """One table cell's text."""
    if value is None:
        return "-"
    if isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, Real) and not isinstance(value, (bool, np.bool_)):
        return "NaN" if math.isnan(value) else f"{float(value):.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def new_figure(panels: int, columns: int = 2):
    """A Figure sized for `panels` panels on a grid of up to `columns`, with its own Agg canvas.

    Its own canvas leaves pyplot's global state (and any GUI backend) alone, so reports can be
    drawn from worker processes and tests alike. Add panels with `figure.add_subplot(rows, columns, i)`;
    `grid(panels, columns)` gives the rows and columns used.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = grid(panels, columns)
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def grid(panels: int, columns: int = 2) -> tuple[int, int]:
    """(rows, columns) of a grid holding `panels` panels, at most `columns` wide."""
    columns = max(1, min(columns, panels))
    return max(1, math.ceil(panels / columns)), columns


def png_bytes(figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars made plain and NaN or infinities made None, recursively (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value) if math.isfinite(value) else None
    return value
