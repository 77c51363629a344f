"""Why evaluation's SNR is negative: input and output level ranges, and whether level or the data explains it.

Evaluate's SNR is the reference's energy over the energy of (estimate - reference). A gain error of
g dB alone caps it at -20 log10|10^(g/20) - 1| dB: an output 20 dB too loud cannot score above -19 dB,
one 20 dB too quiet not above +0.9 dB (so a quiet output alone never makes SNR negative). A quiet or
mostly silent reference leaves the numerator tiny, so any noise in the output drives its SNR below 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from unitvox.config.diagnose import DataDiagnosisConfig
from unitvox.diagnostics.data.levels import FLAGS, UNREADABLE, quantiles

OUTPUT_LEVEL, FLAGGED_FILES = "output_level", "flagged_files"
# SNR counts as negative when its mean is, or when at least this share of utterances are.
MANY_NEGATIVE = 0.25
SIDES = {"reference": "input", "estimate": "output"}


def snr_check(metrics: Mapping[str, Any], flags: Mapping[str, list[str]],
              settings: DataDiagnosisConfig) -> dict[str, Any] | None:
    """Judge evaluate/metrics.json's per-utterance rows against the flags of the same files.

    Args:
        metrics: the parsed evaluate/metrics.json (its `utterances` rows carry snr_db and the
            reference_/estimate_ peak_dbfs and rms_dbfs).
        flags: the flags of each measured file by id (an utterance's id is its segment id).
        settings: `diagnose.data` (its `level_gap_db`).

    Returns:
        None when no utterance has an SNR, else: counts, the mean SNR, whether it is negative, level
        ranges of both sides, the mean level gap, what explains it (`output_level`, `flagged_files`),
        findings, and one point per utterance for the plot.
    """
    rows = [row for row in metrics.get("utterances", []) if _number(row.get("snr_db"))]
    if not rows:
        return None
    snrs = np.array([row["snr_db"] for row in rows])
    negative = [row for row in rows if row["snr_db"] < 0]
    check: dict[str, Any] = {
        "utterances": len(rows), "snr_db_mean": round(float(snrs.mean()), 3), "negative": len(negative),
        "is_negative": bool(snrs.mean() < 0 or len(negative) >= MANY_NEGATIVE * len(rows)),
        "measured": sum(row["utterance"] in flags for row in rows),
        "levels": {side: {name: quantiles(_column(rows, f"{side}_{name}")) for name in ("peak_dbfs", "rms_dbfs")}
                   for side in SIDES},
        "level_gap_db": _mean_gap(rows),
        "points": [_point(row, flags) for row in rows],
        "explained_by": [], "findings": [],
    }
    if check["is_negative"]:
        _explain(check, rows, negative, flags, settings)
    return check


def _explain(check: dict[str, Any], rows: list[dict], negative: list[dict], flags: Mapping[str, list[str]],
             settings: DataDiagnosisConfig) -> None:
    """Fill in what explains a negative SNR, and the findings that say so with their numbers."""
    levels = check["levels"]
    ranges = "; ".join(f"{word} RMS {_range(levels[side]['rms_dbfs'])}, peak {_range(levels[side]['peak_dbfs'])}"
                       for side, word in SIDES.items())
    findings = [f"Validation SNR is negative: mean {check['snr_db_mean']:.1f} dB, {len(negative)} of {len(rows)} "
                f"utterances below 0 dB ({ranges})."]
    gap = _mean_gap(negative or rows)
    if gap is not None and abs(gap) > settings.level_gap_db:
        findings.append(_level_finding(gap, levels))
        if gap > 0:
            check["explained_by"].append(OUTPUT_LEVEL)
    flagged = [row for row in negative if flags.get(row["utterance"])]
    check["flagged_negative"] = len(flagged)
    if negative and len(flagged) > len(negative) / 2:
        check["explained_by"].append(FLAGGED_FILES)
        findings.append(_data_finding(flagged, negative, rows, flags))
    if not check["explained_by"]:
        shown = "n/a" if gap is None else f"{gap:+.1f} dB"
        findings.append(
            f"Neither the output level (mean output-minus-input RMS {shown}; a gain error alone turns SNR negative "
            f"only when the output is {settings.level_gap_db:g} dB or more louder) "
            f"nor the data ({len(flagged)} of {len(negative)} negative utterances are flagged files) explains the "
            "negative SNR: the vocoder does not reproduce the waveform yet (waveform SNR also punishes phase; "
            "compare MCD, and see `unitvox diagnose training`).")
    check["findings"] = findings


def _level_finding(gap: float, levels: dict[str, Any]) -> str:
    cap = gain_error_snr_cap(gap)
    medians = (f"median output RMS {levels['estimate']['rms_dbfs']['median']:.1f} dBFS against input "
               f"{levels['reference']['rms_dbfs']['median']:.1f} dBFS")
    if gap > 0:
        return (f"Level explains it: the output is {gap:.1f} dB louder than the input on average ({medians}); a gain "
                f"error that large alone caps SNR at {cap:.1f} dB. Check the generator's output gain and the level "
                "of its training audio.")
    return (f"The output is {-gap:.1f} dB quieter than the input on average ({medians}); that gain error caps SNR at "
            f"{cap:.1f} dB, near 0 dB, but cannot by itself make it negative.")


def _data_finding(flagged: list[dict], negative: list[dict], rows: list[dict], flags: Mapping[str, list[str]]) -> str:
    by_flag = Counter(flag for row in flagged for flag in flags[row["utterance"]])
    named = ", ".join(f"{flag.replace('_', ' ')} {by_flag[flag]}" for flag in (*FLAGS, UNREADABLE) if by_flag[flag])
    flagged_ids = {row["utterance"] for row in flagged}
    others = [row for row in rows if row["utterance"] not in flagged_ids]
    compare = (f"mean SNR {_mean(flagged, 'snr_db'):.1f} dB on them against {_mean(others, 'snr_db'):.1f} dB on the "
               f"other {len(others)}" if others else f"mean SNR {_mean(flagged, 'snr_db'):.1f} dB on them")
    levels = _column(flagged, "reference_rms_dbfs")
    inputs = f"; their median input RMS is {np.median(levels):.1f} dBFS" if len(levels) else ""
    return (f"The data explains it: {len(flagged)} of {len(negative)} utterances with negative SNR are flagged files "
            f"({named}); {compare}{inputs}. Quiet, silent, short or padded references leave SNR nothing but noise "
            "to measure: leave them out with the filter list.")


def _point(row: dict, flags: Mapping[str, list[str]]) -> dict[str, Any]:
    """One utterance for the plot and the lowest-SNR table."""
    return {"utterance": row["utterance"], "snr_db": row["snr_db"], "flags": list(flags.get(row["utterance"], [])),
            "reference_rms_dbfs": row.get("reference_rms_dbfs"), "estimate_rms_dbfs": row.get("estimate_rms_dbfs")}


def gain_error_snr_cap(gap_db: float) -> float:
    """The best SNR (dB) an output can reach that differs from its input only by a gain of `gap_db` dB."""
    error = abs(10 ** (gap_db / 20) - 1)
    return math.inf if error == 0 else -20 * math.log10(error)


def _mean_gap(rows: list[dict]) -> float | None:
    gaps = [row["estimate_rms_dbfs"] - row["reference_rms_dbfs"] for row in rows
            if _number(row.get("estimate_rms_dbfs")) and _number(row.get("reference_rms_dbfs"))]
    return round(float(np.mean(gaps)), 3) if gaps else None


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([row[key] for row in rows if _number(row.get(key))], dtype=np.float64)


def _mean(rows: list[dict], key: str) -> float:
    values = _column(rows, key)
    return float(values.mean()) if len(values) else math.nan


def _range(figures: dict[str, float | None]) -> str:
    if figures["min"] is None:
        return "n/a"
    return f"{figures['min']:.1f} to {figures['max']:.1f} dBFS"


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
