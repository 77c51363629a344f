"""A trained unit model without the pipeline: audio -> units (encode) and units -> audio (vocode).

    from unitvox import UnitModel
    model = UnitModel.from_pretrained("model/")        # a bundle folder, or a run root (local or s3://)
    units = model.encode(wave, sample_rate)            # any rate; (T,), (T, channels) or (channels, T)
    wave = model.vocode(units, speaker=reference_wave) # float32 at model.sample_rate
    runs, durations = model.encode(wave, rate, deduplicate=True)
    wave = model.vocode(runs, durations=durations)     # any model: the runs expanded by their durations
    wave = model.vocode(runs)                          # a deduplicated model: durations from its predictor
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import unitvox.audio as audio
from unitvox.config import FeaturesConfig, GeneratorConfig, SpeakerConfig, from_dict
from unitvox.config.train import DurationPredictorConfig
import unitvox.model.bundle as bundles
from unitvox.store import open_store
from unitvox.units import features as feats
from unitvox.units.kmeans import check_compatible
from unitvox.vocoder.duration import collapse
from unitvox.vocoder.inference import inference_duration_predictor, inference_generator, inference_speaker_encoder

VOCODE_CHUNK_FRAMES = 1500
"""Unit sequences up to this long (30 s at a 20 ms hop) are vocoded in one pass, exactly as the samples
and evaluate stages do; longer ones in chunks with the generator's receptive field as context either side."""


class UnitModel:
    """Codebook, feature extractor, generator and speaker encoder of one trained model, ready for inference."""

    def __init__(self, bundle: bundles.Bundle, device: str | torch.device = "cpu"):
        description = bundle.description
        self.bundle = bundle
        self.device = torch.device(device)
        self.codebook = bundle.codebook
        self.sample_rate = int(description["sample_rate"])
        self.features = from_dict(FeaturesConfig, description["features"], "features")
        vocoder = description["vocoder"]
        generator_config = from_dict(GeneratorConfig, vocoder["generator"], "vocoder.generator")
        self.generator = inference_generator(generator_config, self.codebook.k, bundle.generator, self.device)
        self.hop_samples = generator_config.hop_samples
        self.encoder = None
        if vocoder.get("speaker"):
            speaker = from_dict(SpeakerConfig, vocoder["speaker"], "vocoder.speaker")
            self.encoder = inference_speaker_encoder(speaker, bundle.speaker_encoder, self.device)
        self.duration_predictor = None
        if bundle.units == "deduplicated":
            predictor = from_dict(DurationPredictorConfig, vocoder["duration_predictor"], "vocoder.duration_predictor")
            self.duration_predictor = inference_duration_predictor(predictor, self.codebook.k,
                                                                   bundle.duration_predictor, self.device)
        self._extractor = None

    @classmethod
    def from_pretrained(cls, source: str, *, checkpoint: str = "best", device: str = "cpu") -> UnitModel:
        """Load a bundle folder (`unitvox export`) or a run root's `checkpoint`, checking every fingerprint.

        Raises:
            BundleError: a bundle file missing or altered, or parts made for another codebook or extractor.
            CheckpointMismatch, CodebookMismatch: a run whose checkpoint or codebook do not fit its config.
        """
        store = open_store(source)
        if bundles.is_bundle(store):
            return cls(bundles.read(store), device)
        made = bundles.from_run(store, checkpoint)
        bundles.check_fingerprints(made.description, made.centroids, {}, made.where)
        return cls(made, device)

    @property
    def k(self) -> int:
        return self.codebook.k

    @property
    def hop_seconds(self) -> float:
        return float(self.codebook.fingerprint["hop_seconds"])

    @property
    def conditioned(self) -> bool:
        """Whether the vocoder takes a speaker reference (voice conversion)."""
        return self.encoder is not None

    @property
    def deduplicated(self) -> bool:
        """Whether the vocoder was trained on deduplicated (run) units, with a duration predictor."""
        return self.duration_predictor is not None

    @property
    def pieces_deduplicated(self) -> bool | None:
        """Whether the run's BPE motif model spells run units (bpe.deduplicate); None when unknown or absent."""
        return self.bundle.description.get("bpe", {}).get("deduplicated")

    def predict_durations(self, runs: Any) -> np.ndarray:
        """Frames per run unit (R,) int64, each at least 1, from a deduplicated model's duration predictor."""
        if self.duration_predictor is None:
            raise ValueError(NO_PREDICTOR)
        return self.duration_predictor.durations(self.check_units(runs))

    @property
    def extractor(self) -> feats.FeatureExtractor:
        """The run's feature extractor, built on first use (an ssl model loads then) and checked against the codebook."""
        if self._extractor is None:
            extractor = feats.build_extractor(self.features, self.sample_rate)
            check_compatible(self.codebook.fingerprint, extractor.fingerprint())
            self._extractor = extractor
        return self._extractor

    def encode(self, wave: np.ndarray, sample_rate: int, deduplicate: bool = False, progress: str | None = None) -> Any:
        """Units of a recording: (T // hop,) int64, or with `deduplicate` (run units, run durations in frames).

        A long recording goes through the extractor in chunks of `features.chunk_seconds`; `progress`
        names a bar that counts them (shown for recordings of more than two chunks).
        """
        mono = self.to_model_rate(wave, sample_rate)
        extractor = self.extractor
        chunks = -(-len(mono) // max(1, int(self.features.chunk_seconds * self.sample_rate)))
        if progress and chunks > 2:
            from tqdm import tqdm

            with tqdm(total=chunks, desc=progress, unit="chunk", leave=False, disable=None) as bar:
                units = self.codebook.assign(feats.extract(_Counted(extractor, bar), mono, self.features))
        else:
            units = self.codebook.assign(feats.extract(extractor, mono, self.features))
        return deduplicated(units) if deduplicate else units

    def to_model_rate(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 at the model's rate from (T,), (T, channels) or (channels, T) audio at `sample_rate`."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2 and wave.shape[0] < wave.shape[1]:
            wave = wave.T  # (channels, T), as torchaudio gives it
        if wave.ndim not in (1, 2) or wave.size == 0:
            raise ValueError(f"expected audio of shape (T,) or (T, channels), got {wave.shape}")
        if not np.isfinite(wave).all():
            raise ValueError("the audio holds NaN or infinite samples")
        return audio.to_mono(wave, int(sample_rate), self.sample_rate)

    def check_units(self, units: Any) -> np.ndarray:
        """Units as int64, refusing any outside 0..k-1 with its position."""
        array = np.asarray(units)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"units must be a sequence of integers, got shape {array.shape} of {array.dtype}")
        bad = np.flatnonzero((array < 0) | (array >= self.k))
        if bad.size:
            raise ValueError(f"unit {int(array[bad[0]])} at position {int(bad[0])} is outside 0..{self.k - 1} "
                             f"(this model's codebook has k={self.k})")
        return array.astype(np.int64)

    @torch.inference_mode()
    def embed(self, reference: np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        """The speaker embedding (1, D) of a reference recording (at the model's rate unless given)."""
        if self.encoder is None:
            raise ValueError("this model has no speaker conditioning (it was trained with train.speaker.enabled false)")
        clip = self.to_model_rate(reference, sample_rate or self.sample_rate)
        return self.encoder(torch.from_numpy(np.ascontiguousarray(clip))[None].to(self.device))

    @torch.inference_mode()
    def vocode(self, units: Any, speaker: np.ndarray | torch.Tensor | None = None, *,
               durations: Any = None, deduplicated: bool | None = None, speaker_rate: int | None = None) -> np.ndarray:
        """Audio (frames * hop,) float32 at `sample_rate`.

        Args:
            units: frame units, or run units (`deduplicated`, or when `durations` are given).
            speaker: a reference recording (at `speaker_rate`, default the model's) or an embedding from
                `embed`; required by a speaker-conditioned model, refused by one without conditioning.
            durations: frames per run unit; the runs are expanded by them, whatever the model.
            deduplicated: whether `units` are run units; None (default) takes them in the form the model
                was trained on. Run units without durations get them from a deduplicated model's duration
                predictor, and are refused by a frame-unit model (it has none).
        """
        frames = self.check_units(units)
        if durations is not None:
            if deduplicated is False:
                raise ValueError("durations were given with deduplicated=False: durations belong to run units")
            frames = np.repeat(frames, check_durations(durations, len(frames)))
        elif deduplicated or (deduplicated is None and self.deduplicated):
            frames = np.repeat(frames, self.predict_durations(frames))
        if self.encoder is not None and speaker is None:
            raise ValueError("this model is speaker-conditioned: give a speaker reference (--speaker ref.wav)")
        embedding = None
        if speaker is not None:
            embedding = speaker if isinstance(speaker, torch.Tensor) else self.embed(speaker, speaker_rate)
        return self._generate(frames, embedding)

    def _generate(self, frames: np.ndarray, embedding: torch.Tensor | None) -> np.ndarray:
        tensor = torch.from_numpy(frames)[None].to(self.device)
        if len(frames) <= VOCODE_CHUNK_FRAMES:
            return self.generator(tensor, embedding).float().cpu().numpy().reshape(-1)
        context = -(-self.generator.receptive_field() // self.hop_samples) + 1
        pieces = []
        for first in range(0, len(frames), VOCODE_CHUNK_FRAMES):
            last = min(len(frames), first + VOCODE_CHUNK_FRAMES)
            begin, end = max(0, first - context), min(len(frames), last + context)
            wave = self.generator(tensor[:, begin:end], embedding).float().cpu().numpy().reshape(-1)
            pieces.append(wave[(first - begin) * self.hop_samples : (last - begin) * self.hop_samples])
        return np.concatenate(pieces)


class _Counted:
    """An extractor that ticks a progress bar once per chunk it is given; otherwise the extractor itself."""

    def __init__(self, extractor: feats.FeatureExtractor, bar):
        self._extractor, self._bar = extractor, bar

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)

    def extract(self, samples: np.ndarray) -> np.ndarray:
        frames = self._extractor.extract(samples)
        self._bar.update(1)
        return frames


NO_PREDICTOR = ("these are deduplicated (run) units without durations, and this model was trained on frame units "
                "(train.units frames), so it has no duration predictor: give the durations beside the units "
                "(`unitvox encode --deduplicate` writes them) or use a model trained with train.units deduplicated")


def deduplicated(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length form of frame units: (the unit of each run, the frames each run lasts)."""
    return collapse(units)


def check_durations(durations: Any, count: int) -> np.ndarray:
    array = np.asarray(durations)
    if array.ndim == 1 and len(array) != count:
        raise ValueError(f"{len(array)} durations for {count} units: give one duration per unit")
    if array.shape != (count,) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"durations must be {count} integers, one per unit, got shape {array.shape} of {array.dtype}")
    if (array < 1).any():
        position = int(np.flatnonzero(array < 1)[0])
        raise ValueError(f"duration {int(array[position])} at position {position} is not a positive number of frames")
    return array.astype(np.int64)
