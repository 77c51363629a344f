"""The evaluation metrics, one registration each: what a figure means and how to read it.

    spec = EVALUATION_METRICS["wer"]
    spec.higher_is_better, spec.unit, spec.gauge, spec.gate_keys()   # False, "ratio", ..., ("wer_min", ...)

Every per-utterance figure the evaluate stage writes is registered here with its unit, its direction
(which way is better), whether it is in decibels, the Prometheus gauge its mean is exported as, the
value the original would score (its ideal, where one exists) and what the published systems report.
The gates config (`<name>_min`, `<name>_max`, `<name>_median_min`, `<name>_median_max`), the summary
tables, the ablation comparison and the Prometheus catalogue all read this table, so a new metric is
one function in its module and one `register_metric` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from unitvox.registry import registrar

GATE_STATISTICS = ("mean", "median")
GATE_COMPARISONS = ("min", "max")


@dataclass(frozen=True)
class MetricSpec:
    """One evaluation metric.

    Attributes:
        name: the per-utterance row key, and the stem of its gate keys.
        title: a short human name for tables.
        unit: "dB", "ratio" (0 to 1, or beyond for WER), "MOS" (1 to 5), "cents", "Hz" or "" (none).
        higher_is_better: the direction; False means lower is better.
        gauge: the Prometheus gauge (without the unitvox_ prefix) its mean is exported as.
        help: what it measures, one sentence.
        ideal: what the original scores against itself (None where that is not defined).
        reference_free: True when it needs no original (DNSMOS), so the original gets its own figure.
        published: what the published systems report, to place a run (empty when nothing comparable).
    """

    name: str
    title: str
    unit: str
    higher_is_better: bool
    gauge: str
    help: str
    ideal: float | None = None
    reference_free: bool = False
    published: str = ""

    @property
    def decibels(self) -> bool:
        return self.unit == "dB"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def gate_keys(self) -> tuple[str, ...]:
        """The gate config keys this metric supports, e.g. ("wer_max", "wer_min", "wer_median_max", ...)."""
        keys = []
        for statistic in GATE_STATISTICS:
            middle = "" if statistic == "mean" else f"_{statistic}"
            keys += [f"{self.name}{middle}_{comparison}" for comparison in GATE_COMPARISONS]
        return tuple(keys)

    def better(self, a: float, b: float) -> bool:
        """True when `a` is strictly better than `b` by this metric's direction."""
        return a > b if self.higher_is_better else a < b


EVALUATION_METRICS: dict[str, MetricSpec] = {}
_register = registrar(EVALUATION_METRICS)


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add `spec` to EVALUATION_METRICS under its name (refused when another spec already holds it)."""
    return _register(spec.name)(spec)


def gate_keys() -> dict[str, tuple[str, str, str]]:
    """Every gate key -> (metric, statistic, comparison), over all registered metrics."""
    keys = {}
    for spec in EVALUATION_METRICS.values():
        for statistic in GATE_STATISTICS:
            middle = "" if statistic == "mean" else f"_{statistic}"
            for comparison in GATE_COMPARISONS:
                keys[f"{spec.name}{middle}_{comparison}"] = (spec.name, statistic, comparison)
    return keys


def unknown_gate(key: str) -> str:
    """The message refusing gate `key`, listing the metrics that have gates."""
    return (f"unknown gate {key!r}: a gate is <metric>_min, <metric>_max, <metric>_median_min or "
            f"<metric>_median_max, for a metric among {', '.join(EVALUATION_METRICS)}")


for _spec in (
    # Intelligibility: an ASR listener (evaluation/asr.py)
    MetricSpec("wer", "WER", "ratio", False, "evaluate_word_error_ratio",
               "Word error rate of the ASR transcript of the audio against the reference transcript.", ideal=0.0,
               published="speech-resynthesis (LJSpeech, HuBERT units): 6.96 against 5.60 for the original; "
                         "GSLM and unit-HiFiGAN report it the same way with a wav2vec 2.0 ASR"),
    MetricSpec("cer", "CER", "ratio", False, "evaluate_character_error_ratio",
               "Character error rate of the ASR transcript against the reference transcript.", ideal=0.0,
               published="speech-resynthesis reports PER (phones) 9.52 against 6.93 for the original"),
    # Pitch (evaluation/pitch.py)
    MetricSpec("gpe", "GPE", "ratio", False, "evaluate_gross_pitch_error_ratio",
               "Share of frames voiced in both whose F0 is more than 20% off the original's.", ideal=0.0,
               published="speech-resynthesis (Polyak et al. 2021) reports it per content encoder, LJSpeech and VCTK"),
    MetricSpec("vde", "VDE", "ratio", False, "evaluate_voicing_decision_error_ratio",
               "Share of frames whose voiced/unvoiced decision differs from the original's.", ideal=0.0,
               published="speech-resynthesis (Polyak et al. 2021) reports it per content encoder, LJSpeech and VCTK"),
    MetricSpec("ffe", "FFE", "ratio", False, "evaluate_f0_frame_error_ratio",
               "Share of frames with a voicing error or a gross pitch error.", ideal=0.0,
               published="speech-resynthesis (Polyak et al. 2021) reports it per content encoder, LJSpeech and VCTK"),
    MetricSpec("f0_rmse_cents", "F0 RMSE", "cents", False, "evaluate_f0_rmse_cents",
               "Root mean square F0 difference in cents over frames voiced in both (100 cents: a semitone).",
               ideal=0.0),
    # Naturalness (evaluation/naturalness.py): no reference, so the original has its own figure
    MetricSpec("dnsmos_overall", "DNSMOS OVRL", "MOS", True, "evaluate_dnsmos_overall",
               "DNSMOS P.835 predicted overall quality, 1 (bad) to 5 (excellent).", reference_free=True,
               published="issue 13's babbling demo scored 1.66 against 3.15 for its originals"),
    MetricSpec("dnsmos_signal", "DNSMOS SIG", "MOS", True, "evaluate_dnsmos_signal",
               "DNSMOS P.835 predicted speech-signal quality (distortion), 1 to 5.", reference_free=True),
    MetricSpec("dnsmos_background", "DNSMOS BAK", "MOS", True, "evaluate_dnsmos_background",
               "DNSMOS P.835 predicted background quality (noise), 1 to 5.", reference_free=True),
    # Standard distortions (evaluation/distortion.py)
    MetricSpec("mcd_dtw", "MCD (DTW)", "dB", False, "evaluate_mel_cepstral_distortion_dtw_decibels",
               "Mel-cepstral distortion on SPTK-style mel-cepstra (order 24, alpha 0.42), frames aligned by DTW.",
               ideal=0.0, published="unit-HiFiGAN and speech-resynthesis style evaluations report MCD with DTW"),
    MetricSpec("pesq", "PESQ WB", "MOS", True, "evaluate_pesq_wideband",
               "PESQ wide-band (ITU-T P.862.2) MOS-LQO against the original, -0.5 to 4.64.", ideal=4.64,
               published="mel-spectrogram vocoders (Vocos, BigVGAN) report it; small BigVGAN 3.64 (arXiv 2408.11842)"),
    MetricSpec("stoi", "STOI", "ratio", True, "evaluate_stoi_ratio",
               "Short-time objective intelligibility against the original, 0 to 1.", ideal=1.0,
               published="issue 13's babbling demo scored 0.60; its original with 10 dB noise 0.86"),
    # Speaker
    MetricSpec("speaker_similarity", "speaker similarity", "", True, "evaluate_speaker_similarity",
               "Cosine similarity of the resynthesis's speaker embedding to the original's.", ideal=1.0),
    MetricSpec("speaker_eer", "speaker EER", "ratio", False, "evaluate_speaker_eer_ratio",
               "Speaker-verification equal error rate, originals against resynthesis (evaluation/verification.py).",
               published="voice-conversion papers report EER against real speech; 0.5 is chance"),
    # Reconstruction figures of unitvox's own (evaluation/waveform.py)
    MetricSpec("snr_db", "SNR", "dB", True, "evaluate_snr_decibels",
               "Waveform signal-to-noise ratio against the original (near 0 dB for any GAN vocoder: phase differs)."),
    MetricSpec("mcd_mfcc_frames", "MCD (MFCC, frame-aligned)", "dB", False,
               "evaluate_mel_cepstral_distortion_decibels",
               "unitvox's MFCC-style MCD, frame by frame without alignment: comparable between unitvox runs only.",
               ideal=0.0),
    MetricSpec("length_ratio", "length ratio", "ratio", True, "evaluate_length_ratio",
               "Length of the resynthesis over the original's (1 is exact; gates bound it on both sides).",
               ideal=1.0),
    MetricSpec("unit_match", "unit match", "ratio", True, "evaluate_unit_match_ratio",
               "Share of units that survive vocoding and tokenizing again (1/k is chance).", ideal=1.0),
    # A deduplicated vocoder's duration predictor (train.units deduplicated; vocoder/duration.py)
    MetricSpec("duration_error_frames", "duration error (frames)", "", False, "evaluate_duration_error_frames",
               "Mean absolute error of the predicted run durations, in unit frames per run.", ideal=0.0),
    MetricSpec("predicted_length_ratio", "predicted length ratio", "ratio", True, "evaluate_predicted_length_ratio",
               "Length of the audio vocoded from the runs with predicted durations over the original's (1 is exact).",
               ideal=1.0),
):
    register_metric(_spec)
