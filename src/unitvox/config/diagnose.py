"""The diagnostics' thresholds and sizes (`diagnose.data`, `.checkpoint`, `.embeddings`, `.training`).

Check: unitvox validate --config jobs/base.yaml --set diagnose.data.min_rms_db=-40
Diagnostics only read a run: none of these keys changes what a stage makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unitvox.config.common import require

EMBEDDERS = ("evaluate", "resemblyzer", "mfcc_stats", "checkpoint")


@dataclass
class DataDiagnosisConfig:
    """What `diagnose data` flags in a file.

    Attributes:
        min_seconds: shorter files are `too_short`.
        min_rms_db: files quieter than this RMS level (dBFS) are `too_quiet`.
        max_silence_ratio: files with a larger share of silent frames are `mostly_silent`.
        max_padding_ratio: files whose training window would be more than this share padding
            (a file shorter than `train.segment_seconds` is padded up to it) are `heavy_padding`.
        max_clipped_ratio: files with a larger share of samples at full scale (`prepare.checks.clip_level`)
            are `clipped`.
        max_padded_files_ratio: when more than this share of the files left after the filter list
            are `heavy_padding`, a shorter `train.segment_seconds` is recommended.
        segment_coverage: the recommended `train.segment_seconds` is a length this share of those
            files reach.
        level_gap_db: when evaluation's SNR is negative, a mean output-minus-input RMS level of more
            than this (either way) is reported as a level mismatch that explains it.
        max_items: files to read (0: all of them); the validation split is read first.
    """

    min_seconds: float = 1.0
    min_rms_db: float = -40.0
    max_silence_ratio: float = 0.5
    max_padding_ratio: float = 0.5
    max_clipped_ratio: float = 0.001
    max_padded_files_ratio: float = 0.1
    segment_coverage: float = 0.9
    level_gap_db: float = 6.0
    max_items: int = 0

    def check(self, key: str) -> None:
        require(self.min_seconds >= 0, f"{key}.min_seconds", f"must not be negative, got {self.min_seconds}")
        require(self.min_rms_db < 0, f"{key}.min_rms_db", f"must be below 0 dBFS, got {self.min_rms_db}")
        for name in ("max_silence_ratio", "max_padding_ratio", "max_clipped_ratio", "max_padded_files_ratio"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{key}.{name}", f"must be in [0, 1], got {value}")
        require(0 < self.segment_coverage <= 1, f"{key}.segment_coverage",
                f"must be in (0, 1], got {self.segment_coverage}")
        require(self.level_gap_db > 0, f"{key}.level_gap_db", f"must be positive, got {self.level_gap_db}")
        require(self.max_items >= 0, f"{key}.max_items", f"must not be negative (0 = all), got {self.max_items}")


@dataclass
class CheckpointDiagnosisConfig:
    """How `diagnose checkpoint` reads a checkpoint.

    Attributes:
        checkpoint: the checkpoint to diagnose when `--checkpoint` is not given: `latest`, `best`,
            a key in the run or a URI (as `evaluate.checkpoint`).
        keys_shown: keys listed per module group in the printed summary (the JSON lists them all).
    """

    checkpoint: str = "latest"
    keys_shown: int = 5

    def check(self, key: str) -> None:
        require(bool(self.checkpoint), f"{key}.checkpoint", "must name a checkpoint (latest, best or a URI)")
        require(self.keys_shown >= 1, f"{key}.keys_shown", f"must be at least 1, got {self.keys_shown}")


@dataclass
class EmbeddingsDiagnosisConfig:
    """How `diagnose embeddings` embeds and judges speakers.

    Attributes:
        embedder: `evaluate` (the run's `evaluate.speaker_embedder`), `resemblyzer`, `mfcc_stats`,
            or `checkpoint` (the speaker encoder trained with the vocoder).
        generated: also embed the vocoder's resynthesis of each file (needs a checkpoint).
        max_items: validation files to embed (0: all); training files fill up to it when the
            validation split has too few speakers.
        min_separation: the gap between mean same-speaker and different-speaker similarity below
            which speakers are reported as poorly separated.
        min_auc: an embedder that compresses similarities (mfcc_stats) can rank same-speaker pairs
            above different-speaker ones almost always with a small gap; with an AUC of at least this,
            a gap below `min_separation` is a warning rather than a problem.
        perplexity: t-SNE's perplexity (lowered to what the number of points allows).
    """

    embedder: str = "evaluate"
    generated: bool = True
    max_items: int = 64
    min_separation: float = 0.1
    min_auc: float = 0.9
    perplexity: float = 10.0

    def check(self, key: str) -> None:
        require(self.embedder in EMBEDDERS, f"{key}.embedder", f"unknown {self.embedder!r}; choose one of {EMBEDDERS}")
        require(self.max_items >= 0, f"{key}.max_items", f"must not be negative (0 = all), got {self.max_items}")
        require(-2 <= self.min_separation <= 2, f"{key}.min_separation",
                f"cosine similarities differ by at most 2, got {self.min_separation}")
        require(0.5 <= self.min_auc <= 1, f"{key}.min_auc", f"must be in [0.5, 1], got {self.min_auc}")
        require(self.perplexity > 0, f"{key}.perplexity", f"must be positive, got {self.perplexity}")


@dataclass
class TrainingDiagnosisConfig:
    """How `diagnose training` probes a checkpoint beyond the health monitor's log.

    Attributes:
        checkpoint: the checkpoint probed for discriminator AUC and loss balance (as above).
        auc_items: held-out segments scored real versus generated for the discriminator AUC.
        balance_batches: training batches over which each loss term's gradient norm is measured.
        every_rows: the status-over-time plot re-judges the log every this many rows.
        dominance_auc: a discriminator whose AUC on held-out real versus generated audio reaches
            this, and whose mean scores for the two are `train.health.dominance_score_gap` or more
            apart, is reported as dominating the generator.
    """

    checkpoint: str = "latest"
    auc_items: int = 16
    balance_batches: int = 2
    every_rows: int = 10
    dominance_auc: float = 0.98

    def check(self, key: str) -> None:
        require(bool(self.checkpoint), f"{key}.checkpoint", "must name a checkpoint (latest, best or a URI)")
        for name in ("auc_items", "balance_batches", "every_rows"):
            value = getattr(self, name)
            require(value >= 1, f"{key}.{name}", f"must be at least 1, got {value}")
        require(0.5 < self.dominance_auc <= 1, f"{key}.dominance_auc", f"must be in (0.5, 1], got {self.dominance_auc}")


@dataclass
class DiagnoseConfig:
    """The four diagnoses' settings."""

    data: DataDiagnosisConfig = field(default_factory=DataDiagnosisConfig)
    checkpoint: CheckpointDiagnosisConfig = field(default_factory=CheckpointDiagnosisConfig)
    embeddings: EmbeddingsDiagnosisConfig = field(default_factory=EmbeddingsDiagnosisConfig)
    training: TrainingDiagnosisConfig = field(default_factory=TrainingDiagnosisConfig)

    def check(self, key: str) -> None:
        for name in ("data", "checkpoint", "embeddings", "training"):
            getattr(self, name).check(f"{key}.{name}")
