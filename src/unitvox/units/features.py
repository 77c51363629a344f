"""Frame feature extractors behind a registry: `mfcc`, `logmel` and `ssl` (a transformers speech encoder).

Every extractor yields frame i for samples starting at i * hop, so features, units and timestamps
line up whatever the extractor; long audio goes through in overlapping chunks to bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from unitvox.errors import ConfigError
from unitvox.registry import registrar

if TYPE_CHECKING:
    from unitvox.config import FeaturesConfig


class FeatureExtractor(Protocol):
    """Turns mono audio into frame features.

    An extractor may set `costly = True` (a neural encoder): tokenize then keeps the features of its
    K-Means sample for assignment instead of extracting them twice.
    """

    sample_rate: int
    hop_samples: int
    dim: int

    def extract(self, samples: np.ndarray) -> np.ndarray:
        """Features of one chunk: samples (T,) float32 at `sample_rate` -> (about T // hop_samples, dim) float32."""

    def fingerprint(self) -> dict[str, Any]:
        """What made these features (extractor, model, layer, rate, hop, dim), for codebooks and units."""


EXTRACTORS: dict[str, Callable[[FeaturesConfig, int], FeatureExtractor]] = {}


register_extractor = registrar(EXTRACTORS)  # @register_extractor("mfcc") class Mfcc: ...


def build_extractor(config: FeaturesConfig, sample_rate: int) -> FeatureExtractor:
    if config.extractor not in EXTRACTORS:
        raise ConfigError(f"tokenize.features.extractor: unknown {config.extractor!r}; choose one of {sorted(EXTRACTORS)}")
    return EXTRACTORS[config.extractor](config, sample_rate)


def extract(extractor: FeatureExtractor, samples: np.ndarray, config: FeaturesConfig) -> np.ndarray:
    """Features of a whole segment, (T // hop, dim) float32, computed chunk by chunk.

    Each chunk sees `overlap_seconds` of context either side and keeps only the frames of its own
    span, so chunk borders do not show and memory is bounded by the chunk length.
    """
    hop = extractor.hop_samples
    total = len(samples) // hop
    if total == 0:
        return np.zeros((0, extractor.dim), dtype=np.float32)
    chunk = max(1, int(config.chunk_seconds * extractor.sample_rate) // hop)
    context = int(math.ceil(config.overlap_seconds * extractor.sample_rate / hop))
    pieces = []
    for first in range(0, total, chunk):
        last = min(total, first + chunk)
        begin = max(0, first - context)
        end = min(len(samples), (last + context) * hop + _window_extra(extractor))
        frames = extractor.extract(samples[begin * hop : end])
        pieces.append(_fit_frames(frames[first - begin : first - begin + last - first], last - first))
    features = np.concatenate(pieces).astype(np.float32, copy=False)
    if config.normalize and config.extractor in ("mfcc", "logmel"):
        features = (features - features.mean(0)) / (features.std(0) + 1e-5)
    return features


def _window_extra(extractor: FeatureExtractor) -> int:
    return getattr(extractor, "window_samples", extractor.hop_samples) - extractor.hop_samples


def _fit_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Exactly `count` frames: a frame or two missing at the very end repeat the last one."""
    if len(frames) >= count:
        return frames[:count]
    if len(frames) == 0:
        raise ValueError("the extractor returned no frames for a non-empty chunk")
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)])


@dataclass
class SpectralFrames:
    """The framing shared by the model-free extractors: a window every hop, frame i starting at i * hop."""

    config: FeaturesConfig
    sample_rate: int

    @property
    def hop_samples(self) -> int:
        return int(round(self.config.hop_seconds * self.sample_rate))

    @property
    def window_samples(self) -> int:
        return int(round(self.config.window_seconds * self.sample_rate))

    def fingerprint(self, extractor: str, dim: int, **settings: Any) -> dict[str, Any]:
        return {"extractor": extractor, **settings, "sample_rate": self.sample_rate,
                "hop_seconds": self.hop_samples / self.sample_rate, "window_seconds": self.config.window_seconds,
                "normalize": self.config.normalize, "dim": dim}


@register_extractor("mfcc")
class MfccExtractor:
    """13 MFCCs with deltas and delta-deltas (39 dims), librosa, no model needed."""

    def __init__(self, config: FeaturesConfig, sample_rate: int):
        self.config = config
        self.frames = SpectralFrames(config, sample_rate)
        self.sample_rate = sample_rate
        self.hop_samples, self.window_samples = self.frames.hop_samples, self.frames.window_samples
        self.dim = 3 * config.n_mfcc

    def extract(self, samples: np.ndarray) -> np.ndarray:
        import librosa

        mfcc = librosa.feature.mfcc(
            y=_pad_to_window(samples, self.window_samples), sr=self.sample_rate, n_mfcc=self.config.n_mfcc,
            n_fft=self.window_samples, hop_length=self.hop_samples, n_mels=min(40, self.config.n_mels), center=False,
        )
        # librosa's delta needs an odd width no wider than the frames at hand
        width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2)) if mfcc.shape[1] >= 3 else 0
        deltas = [librosa.feature.delta(mfcc, order=o, width=width) if width >= 3 else np.zeros_like(mfcc)
                  for o in (1, 2)]
        return np.concatenate([mfcc, *deltas]).T.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return self.frames.fingerprint("mfcc", self.dim, n_mfcc=self.config.n_mfcc)


@register_extractor("logmel")
class LogMelExtractor:
    """Log mel filterbank energies (`n_mels` dims), librosa, no model needed."""

    def __init__(self, config: FeaturesConfig, sample_rate: int):
        self.config = config
        self.frames = SpectralFrames(config, sample_rate)
        self.sample_rate = sample_rate
        self.hop_samples, self.window_samples = self.frames.hop_samples, self.frames.window_samples
        self.dim = config.n_mels

    def extract(self, samples: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(
            y=_pad_to_window(samples, self.window_samples), sr=self.sample_rate, n_fft=self.window_samples,
            hop_length=self.hop_samples, n_mels=self.config.n_mels, center=False,
        )
        return np.log(mel + 1e-6).T.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return self.frames.fingerprint("logmel", self.dim, n_mels=self.config.n_mels)


def _pad_to_window(samples: np.ndarray, window: int) -> np.ndarray:
    return samples if len(samples) >= window else np.pad(samples, (0, window - len(samples)))


@register_extractor("ssl")
class SslExtractor:
    """Hidden states of one layer of a self-supervised speech encoder loaded with `from_pretrained`.

    `model` is a hub name or a local folder; `layer` counts transformer layers (0 is the input to
    the first). Layers above the chosen one are dropped, so they cost nothing.
    """

    costly = True  # worth keeping the sample's features for assign rather than running the encoder twice

    def __init__(self, config: FeaturesConfig, sample_rate: int):
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        self.config = config
        self.sample_rate = sample_rate
        _limit_heap_fragmentation()
        try:
            model_config = AutoConfig.from_pretrained(config.model)
            self.model = AutoModel.from_pretrained(config.model)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"tokenize.features.model: cannot load {config.model!r} ({error}); give a local folder made with "
                "save_pretrained, or a hub name this machine can download"
            ) from None
        layers = getattr(model_config, "num_hidden_layers", None)
        if layers is not None and config.layer > layers:
            raise ConfigError(f"tokenize.features.layer: {config.layer}, but {config.model} has {layers} layers")
        self._drop_layers_above(config.layer)
        self.normalize_input = _wants_normalized_input(AutoFeatureExtractor, config.model)
        expected_rate = getattr(model_config, "sampling_rate", 16000) if hasattr(model_config, "sampling_rate") else 16000
        if sample_rate != expected_rate:
            raise ConfigError(f"prepare.sample_rate: {sample_rate}, but {config.model} expects {expected_rate} Hz")
        self.hop_samples = int(np.prod(getattr(model_config, "conv_stride", [320])))
        self.window_samples = _receptive_field(model_config)
        self.dim = int(model_config.hidden_size)
        self.device = _device(config.device)
        self.model.to(self.device).eval()
        self._torch = torch

    def _drop_layers_above(self, layer: int) -> None:
        encoder = getattr(self.model, "encoder", None)
        if encoder is not None and hasattr(encoder, "layers"):
            # Keep one layer beyond the chosen one: some encoders normalise only the final output.
            encoder.layers = encoder.layers[: layer + 1]

    def extract(self, samples: np.ndarray) -> np.ndarray:
        torch = self._torch
        samples = _pad_to_window(samples, self.window_samples)
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(self.device)
        if self.normalize_input:
            wave = (wave - wave.mean()) / torch.sqrt(wave.var() + 1e-7)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            hidden = self.model(wave, output_hidden_states=True).hidden_states[self.config.layer]
        return hidden[0].float().cpu().numpy()

    def fingerprint(self) -> dict[str, Any]:
        return {"extractor": "ssl", "model": self.config.model, "layer": self.config.layer,
                "sample_rate": self.sample_rate, "hop_seconds": self.hop_samples / self.sample_rate, "dim": self.dim}


def _limit_heap_fragmentation() -> None:
    """Serve large allocations with mmap so memory goes back to the system after each segment.

    Encoder activations differ in length from segment to segment; glibc's heap fragments under
    them and peak memory then grows with the number of distinct lengths, that is with corpus size
    (measured with bench/tokenize_speed.py). Only the ssl extractor needs it: it costs training speed.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _wants_normalized_input(feature_extractor_class, model: str) -> bool:
    try:
        return bool(getattr(feature_extractor_class.from_pretrained(model), "do_normalize", True))
    except (OSError, ValueError):
        return True  # wav2vec2-style encoders are trained on zero-mean, unit-variance input


def _receptive_field(model_config) -> int:
    kernels = getattr(model_config, "conv_kernel", [10, 3, 3, 3, 3, 2, 2])
    strides = getattr(model_config, "conv_stride", [5, 2, 2, 2, 2, 2, 2])
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
