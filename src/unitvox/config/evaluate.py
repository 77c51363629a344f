"""The evaluate section: held-out resynthesis quality and the gates that set evaluate's exit code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from unitvox.config.common import require as _require


# Gate keys that an earlier unitvox accepted, and what they are called now.
RENAMED_GATES = {"mcd_max": "mcd_mfcc_frames_max", "mcd_min": "mcd_mfcc_frames_min",
                 "mcd_median_max": "mcd_mfcc_frames_median_max", "mcd_median_min": "mcd_mfcc_frames_median_min"}


def _default_gates() -> dict[str, float | None]:
    return {"length_ratio_min": 0.98, "length_ratio_max": 1.02}


@dataclass
class AsrConfig:
    """The ASR listener for WER and CER. `engine`: auto (an engine that knows `language` without a
    model: pocketsphinx for English), pocketsphinx, transformers (a CTC model, `model` a hub name or a
    local folder) or none. Without an engine for the language ASR is off, and the report says so."""

    engine: str = "auto"
    model: str = ""
    language: str = "en"

    def check(self, key: str) -> None:
        from unitvox.evaluation.asr import ASR_ENGINES, supports_language

        known = ["auto", "none", *ASR_ENGINES]
        _require(self.engine in known, f"{key}.engine", f"unknown ASR engine {self.engine!r}; choose one of {known}")
        _require(bool(self.language), f"{key}.language", "must be a language code such as en")
        if self.engine == "none":
            return
        if self.engine == "auto":  # English gets pocketsphinx; other languages run without ASR, with a note
            return
        _require(self.engine != "transformers" or bool(self.model), f"{key}.model",
                 "the transformers engine needs a CTC model: a hub name or a local folder")
        _require(supports_language(ASR_ENGINES[self.engine], self.language), f"{key}.language",
                 f"ASR engine {self.engine} does not understand {self.language!r} "
                 f"(it knows {list(ASR_ENGINES[self.engine].languages)})")
        # Whether the engine's package is installed is a question about the machine: unitvox.preflight.


@dataclass
class EvaluateConfig:
    """Resynthesis quality on held-out segments, as the field measures it, beside the original's own figures.

    `checkpoint` is `best`, `latest`, or the URI of any unitvox vocoder checkpoint.
    `asr` is the listener for WER/CER, `pitch_tracker` the F0 tracker for GPE/VDE/FFE (pyin, or
    pyin-fine: librosa's finer defaults, 3x slower), `dnsmos` the MOS predictor, `distortions` MCD with
    DTW, PESQ and STOI; `report_items` how many utterances evaluate/report.html shows (0: no report).
    `gates` maps `<metric>_min`, `_max`, `_median_min` or `_median_max` (a metric of the registry in
    unitvox/evaluation/registry.py) to a threshold; null leaves a gate off.
    `speaker_embedder` is `resemblyzer` (pretrained), `mfcc_stats` (weak, no model) or `none`.
    With `unit_match`, the resynthesis is tokenized again with the run's extractor and codebook: the
    share of frames whose unit survives the round trip measures how much content the vocoder keeps.
    """

    checkpoint: str = "best"
    max_items: int = 50
    speaker_embedder: str = "resemblyzer"
    unit_match: bool = True
    asr: AsrConfig = field(default_factory=AsrConfig)
    pitch_tracker: str = "pyin"
    dnsmos: bool = True
    distortions: bool = True
    report_items: int = 50
    gates: dict[str, float | None] = field(default_factory=_default_gates)
    shards: int = 1

    EXECUTION_KEYS = ("shards",)

    def check(self, key: str) -> None:
        from unitvox.evaluation.pitch import TRACKERS

        _require(bool(self.checkpoint), f"{key}.checkpoint", "must be best, latest or a checkpoint URI")
        _require(self.max_items >= 1, f"{key}.max_items", "must be at least 1")
        _require(self.speaker_embedder in ("resemblyzer", "mfcc_stats", "none"), f"{key}.speaker_embedder",
                 f"choose resemblyzer, mfcc_stats or none, got {self.speaker_embedder!r}")
        _require(self.shards >= 1, f"{key}.shards", "must be at least 1")
        _require(self.report_items >= 0, f"{key}.report_items", "must be 0 (no report) or more")
        _require(self.pitch_tracker in TRACKERS, f"{key}.pitch_tracker",
                 f"unknown pitch tracker {self.pitch_tracker!r}; choose one of {list(TRACKERS)}")
        self.asr.check(f"{key}.asr")
        self._check_gates(f"{key}.gates")

    def _check_gates(self, key: str) -> None:
        """Every gate key names a registered metric and bound; each metric's min is not above its max."""
        from unitvox.evaluation.registry import gate_keys, unknown_gate

        known = gate_keys()
        for name, threshold in self.gates.items():
            if name in RENAMED_GATES:
                _require(False, f"{key}.{name}", f"renamed to {RENAMED_GATES[name]} (the frame-aligned MFCC "
                                                 "distortion); the standard MCD with DTW is mcd_dtw_max")
            _require(name in known, f"{key}.{name}", unknown_gate(name))
            _require(threshold is None or math.isfinite(threshold), f"{key}.{name}", "must be a finite number or null")
        for name, low in self.gates.items():
            high_key = name.removesuffix("_min") + "_max"
            high = self.gates.get(high_key) if name.endswith("_min") else None
            _require(low is None or high is None or low <= high, f"{key}.{name}", f"{low} is above {high_key} {high}")
