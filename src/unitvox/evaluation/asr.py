"""Intelligibility: speech recognition engines, word and character error rates, word alignments.

    engine = build_asr_engine("pocketsphinx", language="en")
    heard = engine.transcribe(wave, 16000)
    rates = error_rates(reference_text, heard)      # rates.wer, rates.cer
    marks = word_alignment(reference_text, heard)   # per-word ops, for a report

An engine is a plug-in point (`ASR_ENGINES`): adding one is a class and a `@register_asr_engine`.
Texts are normalised before scoring (case, punctuation, spacing), as the published WERs are, so a
comma or a capital letter is never an error.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from unitvox.registry import Requirement, registrar, unknown


class AsrEngine(Protocol):
    """A speech recogniser: mono audio in, a plain-text transcript out."""

    name: str
    languages: tuple[str, ...]  # ISO 639-1 codes it understands; ("*",) for any (the user vouches for the model)

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        """Transcribe `wave`, shape (T,) float32 in [-1, 1] at `sample_rate`; returns words separated by spaces."""
        ...


ASR_ENGINES: dict[str, type] = {}
register_asr_engine = registrar(ASR_ENGINES)


def build_asr_engine(name: str, *, language: str = "en", model: str = "") -> AsrEngine:
    """The engine registered as `name`, for `language`; `model` names a model where the engine takes one.

    Raises:
        ValueError: an unknown engine, or one that does not understand `language`.
    """
    if name not in ASR_ENGINES:
        raise ValueError(unknown("ASR engine", name, ASR_ENGINES))
    engine_class = ASR_ENGINES[name]
    if not supports_language(engine_class, language):
        raise ValueError(f"ASR engine {name!r} does not understand language {language!r} "
                         f"(it knows {list(engine_class.languages)})")
    return engine_class(language=language, model=model)


def supports_language(engine_class: type, language: str) -> bool:
    """True when the engine class understands `language` (its first two letters: "en-US" counts as "en")."""
    languages = engine_class.languages
    return "*" in languages or language.lower()[:2] in languages


@register_asr_engine("pocketsphinx")
class PocketsphinxEngine:
    """CMU PocketSphinx with the US English acoustic model, dictionary and language model in its wheel.

    Fully offline and small; far less accurate than a neural model (LibriSpeech test-other WER is
    around 0.4), but an independent listener that does not share the vocoder's features. It decodes
    16 kHz 16-bit audio; other rates are resampled. About 0.25 s of compute per second of audio.
    """

    name = "pocketsphinx"
    languages = ("en",)
    requires = (Requirement("pocketsphinx", "pip install pocketsphinx"),)
    sample_rate = 16000
    # At most 3000 active HMMs a frame (the default is 30000): half the compute on LibriSpeech, and the
    # transcript of 1 word in 10 differs from the default search's, on read speech that is hard for it.
    # Cepstral mean from the whole utterance (offline), rather than carried over from the last one.
    search = {"maxhmmpf": 3000, "cmn": "batch"}

    def __init__(self, *, language: str = "en", model: str = ""):
        from pocketsphinx import Decoder  # optional dependency: imported only when this engine is chosen

        if model:
            raise ValueError("pocketsphinx uses the English model in its wheel; leave model empty")
        self.decoder = Decoder(samprate=self.sample_rate, loglevel="FATAL", **self.search)

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        samples = _resampled(wave, sample_rate, self.sample_rate)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        # Feature state (the cepstral mean) outlives an utterance; without a reset, the same audio can be
        # heard differently after other audio, and the original's WER against itself would not be 0.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return normalise_text(hypothesis.hypstr) if hypothesis is not None else ""


@register_asr_engine("transformers")
class TransformersCtcEngine:
    """Any CTC speech model `transformers` loads (`AutoModelForCTC`), by hub name or local folder.

    For example `facebook/wav2vec2-base-960h` (as GSLM's evaluation uses) once it is in the local
    cache, or a folder written by `save_pretrained`. Greedy (argmax) CTC decoding, one utterance at a
    time on the CPU. The language is the user's word: the model is not asked.
    """

    name = "transformers"
    languages = ("*",)
    requires = (Requirement("transformers", "pip install transformers"), Requirement("torch", "pip install torch"))

    def __init__(self, *, language: str = "en", model: str = ""):
        import torch
        from transformers import AutoModelForCTC, AutoProcessor

        if not model:
            raise ValueError("the transformers ASR engine needs a model: a hub name or a local folder")
        self.torch = torch
        self.processor = AutoProcessor.from_pretrained(model)
        self.model = AutoModelForCTC.from_pretrained(model).eval()
        extractor = getattr(self.processor, "feature_extractor", self.processor)
        self.sample_rate = int(getattr(extractor, "sampling_rate", 16000))

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        samples = _resampled(wave, sample_rate, self.sample_rate)
        inputs = self.processor(samples, sampling_rate=self.sample_rate, return_tensors="pt")
        with self.torch.inference_mode():
            logits = self.model(inputs.input_values).logits
        tokens = logits.argmax(dim=-1)
        return normalise_text(self.processor.batch_decode(tokens, skip_special_tokens=True)[0])


def _resampled(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return wave if rate == target else soxr.resample(wave, rate, target).astype(np.float32)


_NOT_WORD = re.compile(r"[^\w']+")


def normalise_text(text: str) -> str:
    """Lower case, punctuation and symbols to spaces, apostrophes kept inside words, one space between words.

    "Hello, World!" and "hello world" normalise alike; "don't" stays one word. Unicode letters are
    kept (NFKC first), so the normalisation works beyond English. Underscores count as separators.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("_", " ")
    words = (word.strip("'") for word in _NOT_WORD.split(text))
    return " ".join(word for word in words if word)


@dataclass(frozen=True)
class ErrorRates:
    """Word and character error rates of a hypothesis against a reference, with the word edit counts.

    wer = (substitutions + deletions + insertions) / reference_words: 0 is perfect, and it can exceed 1
    when the hypothesis adds words. cer is the same over characters (spaces included). Both are NaN
    when the normalised reference is empty and the hypothesis is not (no words to be wrong about).
    """

    wer: float
    cer: float
    reference_words: int
    substitutions: int
    deletions: int
    insertions: int


def error_rates(reference: str, hypothesis: str) -> ErrorRates:
    """WER and CER (jiwer) of `hypothesis` against `reference`, both normalised first."""
    import jiwer

    reference, hypothesis = normalise_text(reference), normalise_text(hypothesis)
    if not reference:
        empty = 0.0 if not hypothesis else math.nan
        return ErrorRates(empty, empty, 0, 0, 0, len(hypothesis.split()))
    if not hypothesis:
        words = len(reference.split())
        return ErrorRates(1.0, 1.0, words, 0, words, 0)
    words = jiwer.process_words(reference, hypothesis)
    return ErrorRates(wer=float(words.wer), cer=float(jiwer.cer(reference, hypothesis)),
                      reference_words=len(reference.split()), substitutions=int(words.substitutions),
                      deletions=int(words.deletions), insertions=int(words.insertions))


@dataclass(frozen=True)
class WordOp:
    """One step of a word alignment: kind is "equal", "substitute", "delete" (reference word missing
    from the hypothesis) or "insert" (hypothesis word not in the reference); the absent side is None."""

    kind: str
    reference: str | None
    hypothesis: str | None


def word_alignment(reference: str, hypothesis: str) -> list[WordOp]:
    """The minimum-edit alignment of the normalised texts, one op per word, in reading order."""
    import jiwer

    reference_words, hypothesis_words = normalise_text(reference).split(), normalise_text(hypothesis).split()
    if not reference_words or not hypothesis_words:
        return ([WordOp("delete", word, None) for word in reference_words]
                + [WordOp("insert", None, word) for word in hypothesis_words])
    ops: list[WordOp] = []
    for chunk in jiwer.process_words(" ".join(reference_words), " ".join(hypothesis_words)).alignments[0]:
        said = reference_words[chunk.ref_start_idx:chunk.ref_end_idx]
        heard = hypothesis_words[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "delete":
            ops.extend(WordOp("delete", word, None) for word in said)
        elif chunk.type == "insert":
            ops.extend(WordOp("insert", None, word) for word in heard)
        else:  # equal and substitute chunks pair words one to one
            ops.extend(WordOp(chunk.type, a, b) for a, b in zip(said, heard, strict=True))
    return ops
