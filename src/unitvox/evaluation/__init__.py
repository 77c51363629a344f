"""Building blocks of the evaluate stage: reconstruction metrics, speaker embedders and quality gates.

All pure: waveforms and dicts in, numbers and text out; the stage does the I/O.
"""

from unitvox.evaluation.gates import (
    METRICS,
    Gate,
    GateResult,
    evaluate_gates,
    gates_exit_code,
    gates_from_config,
    junit_xml,
    metrics_json,
    summarise,
    summary_markdown,
)
from unitvox.evaluation.waveform import (
    cosine_similarity,
    length_ratio,
    level_summary,
    mel_cepstral_distortion,
    snr_db,
)
from unitvox.evaluation.speaker import (
    RESEMBLYZER_INSTALL,
    SPEAKER_EMBEDDERS,
    SilentInputError,
    SpeakerEmbedder,
    build_speaker_embedder,
    register_speaker_embedder,
    speaker_similarity,
)

__all__ = [
    "METRICS",
    "RESEMBLYZER_INSTALL",
    "SPEAKER_EMBEDDERS",
    "Gate",
    "GateResult",
    "SilentInputError",
    "SpeakerEmbedder",
    "build_speaker_embedder",
    "cosine_similarity",
    "evaluate_gates",
    "gates_exit_code",
    "gates_from_config",
    "junit_xml",
    "length_ratio",
    "level_summary",
    "mel_cepstral_distortion",
    "metrics_json",
    "register_speaker_embedder",
    "snr_db",
    "speaker_similarity",
    "summarise",
    "summary_markdown",
]
