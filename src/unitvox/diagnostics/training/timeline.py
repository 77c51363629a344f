"""Training health over time, and plots of every logged loss and signal, for `unitvox diagnose training`.

The timeline re-judges the training log as it stood every few rows with the same `assess` the live
monitor uses, so it shows when each signal turned, not just the verdict at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unitvox.config.health import HealthConfig
from unitvox.health.monitor import assess, training_rows
from unitvox.health.signals import SIGNALS, STATUS_NAMES, Row, series
from unitvox.report import grid, new_figure, png_bytes

# Checks the timeline makes at most, however long the log: enough to see a turn, cheap on 4,000 rows.
MAX_POINTS = 200
STATUS_COLOURS = ("#4caf50", "#ffb300", "#e53935")
# Panels of the curves plot: a title and the key prefixes it draws; log scale for norms.
PANELS = (
    ("generator losses", ("loss/mel", "loss/adv_gen", "loss/feature_matching", "loss/contrastive", "loss/gen_total")),
    ("discriminator losses", ("loss/disc", "disc/")),
    ("discriminator scores (real solid, generated dashed)", ("disc_real/", "disc_fake/")),
    ("adversarial loss per discriminator", ("adv_gen/",)),
    ("feature matching per discriminator", ("feature_matching/",)),
    ("gradient norms before clipping", ("grad_norm/",)),
    ("mode-collapse figures", ("mode/",)),
    ("speaker similarity", ("speaker/",)),
    ("validation", ("validation/",)),
    ("learning rate", ("lr/",)),
)
LOG_SCALE = ("generator losses", "gradient norms before clipping", "learning rate")
# Logged flags, not curves.
FLAGS = ("validation/improved",)


def status_timeline(log: Sequence[Row], config: HealthConfig, weights: Mapping[str, float],
                    every_rows: int) -> list[dict[str, Any]]:
    """The health verdict every `every_rows` training rows (fewer when the log is long) and at the last.

    Returns:
        One point per check: step, status name, the unhealthy reasons, and each signal's severity.
    """
    rows = training_rows(log)
    if not rows:
        return []
    stride = max(every_rows, math.ceil(len(rows) / MAX_POINTS))
    ends = list(range(stride - 1, len(rows), stride))
    if not ends or ends[-1] != len(rows) - 1:
        ends.append(len(rows) - 1)
    points = []
    for end in ends:
        report = assess(rows[: end + 1], config, weights)
        points.append({"step": report.step, "status": report.status_name, "reasons": report.reasons,
                       "severity": {name: report.signals[name].severity for name in SIGNALS}})
    return points


def transitions(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences naming where the status changed, e.g. 'warning from step 400: discriminator_dominance'."""
    found, previous = [], None
    for point in points:
        if point["status"] != previous:
            reasons = ", ".join(point["reasons"])
            found.append(f"{point['status']} from step {point['step']}" + (f": {reasons}" if reasons else ""))
            previous = point["status"]
    return found


def status_png(points: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Each signal's status (rows) at each check (columns), green, amber or red; None without checks."""
    from matplotlib.colors import ListedColormap

    if not points:
        return None
    figure = new_figure(2, 2)  # one panel, two panels wide: room for the signal names and the steps
    axes = figure.add_subplot(1, 1, 1)
    grid_values = np.asarray([[point["severity"][name] for point in points] for name in SIGNALS])
    steps = [point["step"] for point in points]
    edges = _edges(steps)
    axes.pcolormesh(edges, np.arange(len(SIGNALS) + 1), grid_values, cmap=ListedColormap(STATUS_COLOURS),
                    vmin=0, vmax=len(STATUS_NAMES) - 1)
    axes.set_yticks(np.arange(len(SIGNALS)) + 0.5, SIGNALS, fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("step")
    axes.set_title("each health signal at each check: green healthy, amber warning, red critical")
    return png_bytes(figure)


def _edges(steps: Sequence[int]) -> np.ndarray:
    """Cell edges around each check's step, so every check gets a visible column."""
    steps = np.asarray(steps, dtype=float)
    if len(steps) == 1:
        return np.asarray([steps[0] - 0.5, steps[0] + 0.5])
    middles = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - middles[0]], middles, [2 * steps[-1] - middles[-1]]])


def curves_png(log: Sequence[Row]) -> bytes | None:
    """Every logged loss and signal over steps, one panel per family (see PANELS); None for an empty log."""
    keys = sorted({key for row in log for key in row if key != "step" and key not in FLAGS})
    panels = [(title, [key for key in keys if key.startswith(prefixes)]) for title, prefixes in PANELS]
    panels = [(title, chosen) for title, chosen in panels if chosen]
    if not panels:
        return None
    figure = new_figure(len(panels))
    rows, columns = grid(len(panels))
    for index, (title, chosen) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for key in chosen:
            steps, values = series(log, key)
            if title in LOG_SCALE:
                values = np.where(values > 0, values, np.nan)
            axes.plot(steps, values, label=key, linestyle="--" if key.startswith("disc_fake/") else "-",
                      marker="o" if len(steps) < 12 else None, linewidth=1.2)
        if title in LOG_SCALE:
            axes.set_yscale("log")
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    return png_bytes(figure)
