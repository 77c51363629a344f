"""Config sections of the data stages: prepare, tokenize, bpe, and the local pipeline runner."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from unitvox.config.common import ConfigError, require as _require
from unitvox.layout import STAGE_NAMES
# Extractor names are checked against the registry itself; units.features imports numpy, never torch, at load.
from unitvox.units.features import EXTRACTORS


@dataclass
class SplitConfig:
    """How long recordings are cut at pauses."""

    silence_db: float = -40.0
    min_pause_seconds: float = 0.5
    keep_silence_seconds: float = 0.1
    max_segment_seconds: float = 15.0
    frame_seconds: float = 0.01

    def check(self, key: str) -> None:
        _require(self.silence_db < 0, f"{key}.silence_db", f"must be below 0 dBFS, got {self.silence_db}")
        _require(self.min_pause_seconds > 0, f"{key}.min_pause_seconds", "must be positive")
        _require(self.keep_silence_seconds >= 0, f"{key}.keep_silence_seconds", "must not be negative")
        _require(
            self.max_segment_seconds > 2 * self.keep_silence_seconds,
            f"{key}.max_segment_seconds",
            "must be longer than twice keep_silence_seconds",
        )
        _require(0 < self.frame_seconds <= 0.1, f"{key}.frame_seconds", "must be in (0, 0.1]")


@dataclass
class ChecksConfig:
    """Thresholds a segment must pass to be kept."""

    min_seconds: float = 1.0
    min_rms_db: float = -45.0
    max_silence_ratio: float = 0.7
    clip_level: float = 0.999
    max_clipped_ratio: float = 0.001

    def check(self, key: str) -> None:
        _require(self.min_seconds > 0, f"{key}.min_seconds", "must be positive")
        _require(0 <= self.max_silence_ratio <= 1, f"{key}.max_silence_ratio", "must be in [0, 1]")
        _require(0 < self.clip_level <= 1, f"{key}.clip_level", "must be in (0, 1]")
        _require(0 <= self.max_clipped_ratio <= 1, f"{key}.max_clipped_ratio", "must be in [0, 1]")


@dataclass
class PrepareConfig:
    """Decode, resample, split and check raw recordings.

    `exclude` is the path or URI of a filter list (one segment id or recording path per line, `#`
    comments allowed; `unitvox diagnose data` writes one): listed recordings are skipped and listed
    segments rejected with reason `excluded`. Empty: nothing is excluded.
    """

    input: str = ""
    extensions: list[str] = field(default_factory=lambda: ["wav", "flac", "ogg", "opus", "mp3", "aiff", "aif"])
    sample_rate: int = 16000
    speaker_pattern: str = r"^(?P<speaker>[^/]+)/"
    split: SplitConfig = field(default_factory=SplitConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    exclude: str = ""
    shards: int = 1

    EXECUTION_KEYS = ("shards",)

    def check(self, key: str) -> None:
        _require(self.sample_rate >= 8000, f"{key}.sample_rate", f"must be at least 8000, got {self.sample_rate}")
        _require(bool(self.extensions), f"{key}.extensions", "must list at least one extension")
        _require(self.shards >= 1, f"{key}.shards", f"must be at least 1, got {self.shards}")
        try:
            pattern = re.compile(self.speaker_pattern)
        except re.error as error:
            raise ConfigError(f"{key}.speaker_pattern: not a regular expression ({error})") from None
        _require("speaker" in pattern.groupindex, f"{key}.speaker_pattern", "needs a named group (?P<speaker>...)")
        self.split.check(f"{key}.split")
        self.checks.check(f"{key}.checks")


@dataclass
class FeaturesConfig:
    """Frame features fed to K-Means; `extractor` names an entry of the feature registry."""

    extractor: str = "ssl"
    model: str = "facebook/wav2vec2-large-xlsr-53"
    layer: int = 14
    n_mfcc: int = 13
    n_mels: int = 80
    hop_seconds: float = 0.02
    window_seconds: float = 0.025
    normalize: bool = True
    chunk_seconds: float = 30.0
    overlap_seconds: float = 1.0
    batch_seconds: float = 60.0
    device: str = "auto"

    # batch_seconds, like device, changes the features only within float tolerance
    EXECUTION_KEYS = ("device", "batch_seconds")

    def check(self, key: str) -> None:
        _require(
            self.extractor in EXTRACTORS,
            f"{key}.extractor",
            f"unknown extractor {self.extractor!r}; choose one of {sorted(EXTRACTORS)}",
        )
        _require(self.layer >= 0, f"{key}.layer", "must not be negative")
        _require(self.hop_seconds > 0, f"{key}.hop_seconds", "must be positive")
        _require(self.window_seconds >= self.hop_seconds, f"{key}.window_seconds", "must be at least hop_seconds")
        _require(self.chunk_seconds >= 1, f"{key}.chunk_seconds", "must be at least 1 second")
        _require(
            0 <= self.overlap_seconds < self.chunk_seconds / 2,
            f"{key}.overlap_seconds",
            "must be in [0, chunk_seconds / 2)",
        )
        _require(self.batch_seconds >= 0, f"{key}.batch_seconds",
                 f"must not be negative (0: one chunk per forward), got {self.batch_seconds}")
        _require(self.device in ("auto", "cpu") or self.device.startswith("cuda"), f"{key}.device",
                 f"must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class KMeansConfig:
    """MiniBatchKMeans fitted on a bounded, reproducible sample of frames."""

    k: int = 100
    sample_frames: int = 100_000
    sample_max_seconds: float = 3600.0
    batch_size: int = 4096
    max_iter: int = 100
    n_init: int = 3
    seed: int = 0

    def check(self, key: str) -> None:
        _require(self.k >= 2, f"{key}.k", f"must be at least 2, got {self.k}")
        _require(self.sample_frames >= self.k, f"{key}.sample_frames", "must be at least k")
        _require(self.sample_max_seconds > 0, f"{key}.sample_max_seconds", "must be positive")
        _require(self.batch_size >= 1, f"{key}.batch_size", "must be positive")
        _require(self.max_iter >= 1, f"{key}.max_iter", "must be positive")
        _require(self.n_init >= 1, f"{key}.n_init", "must be positive")


@dataclass
class TokenizeConfig:
    """Features, K-Means fit and unit assignment."""

    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    shards: int = 1

    EXECUTION_KEYS = ("shards",)

    def check(self, key: str) -> None:
        _require(self.shards >= 1, f"{key}.shards", f"must be at least 1, got {self.shards}")
        self.features.check(f"{key}.features")
        self.kmeans.check(f"{key}.kmeans")


@dataclass
class BpeConfig:
    """SentencePiece BPE over unit strings, and motif analysis."""

    vocab_size: int = 1000
    deduplicate: bool = True
    top_motifs: int = 200
    min_motif_units: int = 2

    def check(self, key: str) -> None:
        _require(self.vocab_size >= 2, f"{key}.vocab_size", "must be at least 2")
        _require(self.top_motifs >= 1, f"{key}.top_motifs", "must be positive")
        _require(self.min_motif_units >= 1, f"{key}.min_motif_units", "must be positive")


@dataclass
class PipelineConfig:
    """How the local runner executes stages."""

    stages: list[str] = field(default_factory=lambda: list(STAGE_NAMES))
    workers: int = 0

    EXECUTION_KEYS = ("stages", "workers")

    def check(self, key: str) -> None:
        for index, stage in enumerate(self.stages):
            _require(stage in STAGE_NAMES, f"{key}.stages[{index}]",
                     f"unknown stage {stage!r}; known: {list(STAGE_NAMES)}")
        _require(self.workers >= 0, f"{key}.workers", "must not be negative (0 means one per core)")
