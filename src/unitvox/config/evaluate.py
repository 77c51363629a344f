"""The evaluate section: held-out resynthesis quality and the gates that set evaluate's exit code."""

from __future__ import annotations

from dataclasses import dataclass, field

from unitvox.config.common import require as _require


@dataclass
class GatesConfig:
    """Quality gates on evaluation means; a gate left at null is off. Failing any makes evaluate exit 1."""

    snr_db_min: float | None = None
    mcd_max: float | None = None
    length_ratio_min: float | None = 0.98
    length_ratio_max: float | None = 1.02
    speaker_similarity_min: float | None = None
    unit_match_min: float | None = None

    def check(self, key: str) -> None:
        low, high = self.length_ratio_min, self.length_ratio_max
        _require(low is None or high is None or low <= high, f"{key}.length_ratio_min",
                 f"{low} is above length_ratio_max {high}")


@dataclass
class EvaluateConfig:
    """Resynthesis quality on held-out segments: SNR, mel cepstral distortion, length ratio, speaker similarity.

    `checkpoint` is `best`, `latest`, or the URI of any unitvox vocoder checkpoint.
    `speaker_embedder` is `resemblyzer` (pretrained), `mfcc_stats` (weak, no model) or `none`.
    With `unit_match`, the resynthesis is tokenized again with the run's extractor and codebook: the
    share of frames whose unit survives the round trip measures how much content the vocoder keeps.
    """

    checkpoint: str = "best"
    max_items: int = 50
    speaker_embedder: str = "resemblyzer"
    unit_match: bool = True
    gates: GatesConfig = field(default_factory=GatesConfig)
    shards: int = 1

    EXECUTION_KEYS = ("shards",)

    def check(self, key: str) -> None:
        _require(bool(self.checkpoint), f"{key}.checkpoint", "must be best, latest or a checkpoint URI")
        _require(self.max_items >= 1, f"{key}.max_items", "must be at least 1")
        _require(self.speaker_embedder in ("resemblyzer", "mfcc_stats", "none"), f"{key}.speaker_embedder",
                 f"choose resemblyzer, mfcc_stats or none, got {self.speaker_embedder!r}")
        _require(self.shards >= 1, f"{key}.shards", "must be at least 1")
        self.gates.check(f"{key}.gates")
