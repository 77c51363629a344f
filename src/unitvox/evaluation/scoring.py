"""Scores one held-out utterance the way the field does, for its resynthesis and for the original itself.

    listeners = Listeners(ListenerSettings(asr_engine="auto", language="en"))
    scored = listeners.score(original, resynthesis, 16000, reference_text="HELLO WORLD")
    scored.resynthesis["wer"], scored.original["wer"], scored.texts["heard_resynthesis"]

The original's row is the ceiling a run is read against: its ASR error against the reference
transcript, its DNSMOS; figures that compare a signal with the original (F0 errors, MCD, PESQ, STOI)
are at their ideal there by definition and are filled from the metric registry rather than computed.
Without a reference transcript, the ASR transcript of the original is the reference ("asr_of_original"),
so the original's WER is 0 and the resynthesis's WER says how much of what the ASR heard survived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitvox.evaluation.asr import ASR_ENGINES, AsrEngine, build_asr_engine, error_rates, supports_language
from unitvox.evaluation.distortion import mel_cepstral_distortion_dtw, pesq_wideband, stoi
from unitvox.evaluation.pitch import f0_errors, track_f0
from unitvox.evaluation.registry import EVALUATION_METRICS

REFERENCE_TRANSCRIPT = "transcript"          # the corpus's own text (LibriSpeech *.trans.txt, a list's text)
REFERENCE_ASR_OF_ORIGINAL = "asr_of_original"  # what the ASR heard in the original


@dataclass(frozen=True)
class ListenerSettings:
    """Which independent models score the audio. `asr_engine` "auto" picks an engine that knows
    `language` and needs no model; "none" turns ASR off."""

    asr_engine: str = "auto"
    asr_model: str = ""
    language: str = "en"
    pitch_tracker: str = "pyin"
    dnsmos: bool = True
    distortions: bool = True  # MCD (DTW), PESQ, STOI


def choose_asr_engine(settings: ListenerSettings) -> tuple[str | None, str]:
    """(engine name or None, a note for the report): which ASR engine `settings` asks for.

    "auto" takes the first registered engine that understands the language without a model; when there
    is none, ASR is off and the note says why and what to set. An explicit engine is taken as it is
    (config validation has checked that it fits the language).
    """
    if settings.asr_engine == "none":
        return None, "ASR is off (evaluate.asr.engine: none): no WER or CER"
    if settings.asr_engine != "auto":
        return settings.asr_engine, f"ASR: {settings.asr_engine} {settings.asr_model}".rstrip()
    for name, engine_class in ASR_ENGINES.items():
        if supports_language(engine_class, settings.language) and "*" not in engine_class.languages:
            return name, f"ASR: {name} (chosen for language {settings.language!r})"
    return None, (f"ASR is off: no engine understands language {settings.language!r} without a model "
                  f"(pocketsphinx knows English only); set evaluate.asr.engine: transformers and "
                  f"evaluate.asr.model to a CTC model for that language")


@dataclass
class Scored:
    """One utterance's figures: a row for the resynthesis, a row for the original, and the texts."""

    resynthesis: dict[str, float] = field(default_factory=dict)
    original: dict[str, float] = field(default_factory=dict)
    texts: dict[str, Any] = field(default_factory=dict)


class Listeners:
    """The independent models (ASR, DNSMOS) loaded once, and the scoring of an utterance with them."""

    def __init__(self, settings: ListenerSettings):
        self.settings = settings
        self.asr_name, self.asr_note = choose_asr_engine(settings)
        self.asr: AsrEngine | None = None
        if self.asr_name is not None:
            self.asr = build_asr_engine(self.asr_name, language=settings.language, model=settings.asr_model)
        self.dnsmos = None
        if settings.dnsmos:
            from unitvox.evaluation.naturalness import Dnsmos

            self.dnsmos = Dnsmos()

    def score(self, original: np.ndarray, resynthesis: np.ndarray, sample_rate: int,
              reference_text: str | None = None) -> Scored:
        """Every figure of `resynthesis` (T',) against `original` (T,), and the original's own row."""
        scored = Scored()
        self._intelligibility(scored, original, resynthesis, sample_rate, reference_text)
        self._pitch(scored, original, resynthesis, sample_rate)
        if self.dnsmos is not None:
            for side, wave in (("original", original), ("resynthesis", resynthesis)):
                mos = self.dnsmos.score(wave, sample_rate)
                getattr(scored, side).update(dnsmos_overall=mos.overall, dnsmos_signal=mos.signal,
                                             dnsmos_background=mos.background)
        if self.settings.distortions:
            scored.resynthesis.update(
                mcd_dtw=mel_cepstral_distortion_dtw(original, resynthesis, sample_rate),
                pesq=pesq_wideband(original, resynthesis, sample_rate),
                stoi=stoi(original, resynthesis, sample_rate))
            scored.original.update({name: EVALUATION_METRICS[name].ideal for name in ("mcd_dtw", "pesq", "stoi")})
        return scored

    def _intelligibility(self, scored: Scored, original, resynthesis, rate: int, reference_text: str | None) -> None:
        if self.asr is None:
            scored.texts["asr_note"] = self.asr_note
            return
        heard_original = self.asr.transcribe(original, rate)
        heard_resynthesis = self.asr.transcribe(resynthesis, rate)
        if reference_text:
            reference, source = reference_text, REFERENCE_TRANSCRIPT
        else:
            reference, source = heard_original, REFERENCE_ASR_OF_ORIGINAL
        for side, heard in (("original", heard_original), ("resynthesis", heard_resynthesis)):
            rates = error_rates(reference, heard)
            getattr(scored, side).update(wer=rates.wer, cer=rates.cer)
        scored.texts.update(reference=reference, reference_source=source, heard_original=heard_original,
                            heard_resynthesis=heard_resynthesis, asr_note=self.asr_note)

    def _pitch(self, scored: Scored, original, resynthesis, rate: int) -> None:
        tracker = self.settings.pitch_tracker
        reference = track_f0(original, rate, tracker=tracker)
        errors = f0_errors(reference, track_f0(resynthesis, rate, tracker=tracker))
        scored.resynthesis.update(gpe=errors.gpe, vde=errors.vde, ffe=errors.ffe, f0_rmse_cents=errors.rmse_cents)
        # Against itself every F0 error is 0; GPE and RMSE need voiced frames to be defined at all.
        voiced = 0.0 if reference.voiced.any() else math.nan
        scored.original.update(gpe=voiced, vde=0.0, ffe=0.0, f0_rmse_cents=voiced)
