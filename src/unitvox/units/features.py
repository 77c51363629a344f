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
    K-Means sample for assignment instead of extracting them twice. One that sets `batchable = True`
    also has `extract_batch(chunks)`: a list of (T_i,) chunks -> a list of (frames of T_i, dim), each
    as `extract` gives it alone; `extract_many` then runs several chunks in one forward.
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
    chunks = _chunks(extractor, len(samples), config)
    if not chunks:
        return np.zeros((0, extractor.dim), dtype=np.float32)
    pieces = [chunk.keep(extractor.extract(samples[chunk.begin : chunk.end])) for chunk in chunks]
    return _finish(np.concatenate(pieces), config)


def extract_many(extractor: FeatureExtractor, segments: list[np.ndarray], config: FeaturesConfig) -> list[np.ndarray]:
    """Features of each segment, as `extract` gives them (equal within float tolerance), in fewer forwards.

    With a `batchable` extractor and a positive `batch_seconds`, the chunks of all the segments are
    sorted by length and go through `extract_batch` in padded batches of at most `batch_seconds`
    (a longer chunk goes alone); otherwise segment by segment.
    """
    batch_samples = int(config.batch_seconds * extractor.sample_rate)
    if not getattr(extractor, "batchable", False) or batch_samples <= 0:
        return [extract(extractor, samples, config) for samples in segments]
    chunks = [(index, chunk) for index, samples in enumerate(segments)
              for chunk in _chunks(extractor, len(samples), config)]
    chunks.sort(key=lambda item: item[1].end - item[1].begin)
    pieces: dict[tuple[int, int], np.ndarray] = {}
    for group in _padded_groups([chunk.end - chunk.begin for _, chunk in chunks], batch_samples):
        batch = [chunks[position] for position in group]
        outputs = extractor.extract_batch([segments[index][chunk.begin : chunk.end] for index, chunk in batch])
        for (index, chunk), frames in zip(batch, outputs):
            pieces[index, chunk.first] = chunk.keep(frames)
    results = []
    for index, samples in enumerate(segments):
        own = [pieces[index, chunk.first] for chunk in _chunks(extractor, len(samples), config)]
        results.append(_finish(np.concatenate(own), config) if own else np.zeros((0, extractor.dim), np.float32))
    return results


@dataclass(frozen=True)
class _Chunk:
    """One encoder call of a segment: samples [begin, end) in, frames [first, last) of the segment kept."""

    first: int
    last: int
    begin: int
    end: int
    context: int  # frames before `first` that the call also returns

    def keep(self, frames: np.ndarray) -> np.ndarray:
        return _fit_frames(frames[self.context : self.context + self.last - self.first], self.last - self.first)


def _chunks(extractor: FeatureExtractor, length: int, config: FeaturesConfig) -> list[_Chunk]:
    """The chunks `extract` cuts a segment of `length` samples into (none when it has no whole frame)."""
    hop = extractor.hop_samples
    total = length // hop
    chunk = max(1, int(config.chunk_seconds * extractor.sample_rate) // hop)
    context = int(math.ceil(config.overlap_seconds * extractor.sample_rate / hop))
    found = []
    for first in range(0, total, chunk):
        last = min(total, first + chunk)
        begin = max(0, first - context)
        end = min(length, (last + context) * hop + _window_extra(extractor))
        found.append(_Chunk(first, last, begin * hop, end, first - begin))
    return found


def _padded_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive positions of ascending `lengths` whose count times the longest stays within `budget`."""
    groups: list[list[int]] = []
    for position, length in enumerate(lengths):
        if groups and (len(groups[-1]) + 1) * length <= budget:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def _finish(features: np.ndarray, config: FeaturesConfig) -> np.ndarray:
    features = features.astype(np.float32, copy=False)
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

        with _one_blas_thread():
            mfcc = librosa.feature.mfcc(
                y=_pad_to_window(samples, self.window_samples), sr=self.sample_rate, n_mfcc=self.config.n_mfcc,
                n_fft=self.window_samples, hop_length=self.hop_samples, n_mels=min(40, self.config.n_mels),
                center=False,
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

        with _one_blas_thread():
            mel = librosa.feature.melspectrogram(
                y=_pad_to_window(samples, self.window_samples), sr=self.sample_rate, n_fft=self.window_samples,
                hop_length=self.hop_samples, n_mels=self.config.n_mels, center=False,
            )
        return np.log(mel + 1e-6).T.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return self.frames.fingerprint("logmel", self.dim, n_mels=self.config.n_mels)


_THREADPOOLS = []  # one threadpoolctl controller, made on first use


def _one_blas_thread():
    """BLAS on one thread for a model-free extractor's filterbank product: a matrix product split across
    threads rounds differently, and a pipeline shard runs with its share of the cores while a direct run
    has them all, so this keeps the features (and the units) the same bits under any runner."""
    if not _THREADPOOLS:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api="blas")


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
        self._drop_layers_above(config.layer, model_config)
        self.normalize_input = _wants_normalized_input(AutoFeatureExtractor, config.model)
        expected_rate = getattr(model_config, "sampling_rate", 16000) if hasattr(model_config, "sampling_rate") else 16000
        if sample_rate != expected_rate:
            raise ConfigError(f"prepare.sample_rate: {sample_rate}, but {config.model} expects {expected_rate} Hz")
        self.conv_kernels = list(getattr(model_config, "conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
        self.conv_strides = list(getattr(model_config, "conv_stride", [5, 2, 2, 2, 2, 2, 2]))
        self.hop_samples = int(np.prod(self.conv_strides))
        self.window_samples = _receptive_field(model_config)
        self.device = _device(config.device)
        # Padding reaches a real frame only through a norm over time in the front end (wav2vec2-base's
        # group norm); with a per-frame layer norm and the attention mask, a padded batch equals one by one.
        per_frame = getattr(model_config, "feat_extract_norm", "layer") == "layer"
        self.batchable = per_frame and _batching_pays(self.device)
        self.dim = int(model_config.hidden_size)
        self.model.to(self.device).eval()
        self._torch = torch

    def _drop_layers_above(self, layer: int, model_config) -> None:
        """Run only the layers the chosen one needs.

        In wav2vec2, HuBERT and WavLM with a post-norm encoder, `hidden_states[layer]` is layer `layer`'s
        own output, so the layers above it are dropped. An encoder that normalises its final output
        (`do_stable_layer_norm`: XLSR-53, large-lv60) or one of another family keeps one more, so
        the chosen layer is never the last and never gets that final norm.
        """
        encoder = getattr(self.model, "encoder", None)
        if encoder is None or not hasattr(encoder, "layers"):
            return
        post_norm = model_config.model_type in POST_NORM_ENCODERS and not getattr(model_config, "do_stable_layer_norm", True)
        encoder.layers = encoder.layers[: layer if post_norm else layer + 1]

    def extract(self, samples: np.ndarray) -> np.ndarray:
        return self.extract_batch([samples])[0]

    def extract_batch(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Features of several chunks in one forward: each (T_i,) -> (frames of T_i, dim), as alone.

        Shorter chunks are zero-padded and masked; only `batchable` encoders (see `__init__`) are
        given more than one, since elsewhere the padding would change the real frames.
        """
        torch = self._torch
        chunks = [_pad_to_window(np.ascontiguousarray(chunk, dtype=np.float32), self.window_samples)
                  for chunk in chunks]
        longest = max(len(chunk) for chunk in chunks)
        wave = torch.zeros(len(chunks), longest)
        mask = torch.zeros(len(chunks), longest, dtype=torch.long)
        for row, chunk in enumerate(chunks):
            samples = torch.from_numpy(chunk)
            if self.normalize_input:  # each chunk on its own, as the encoder was trained
                samples = (samples - samples.mean()) / torch.sqrt(samples.var() + 1e-7)
            wave[row, : len(chunk)], mask[row, : len(chunk)] = samples, 1
        masked = {"attention_mask": mask.to(self.device)} if len(chunks) > 1 else {}
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            output = self.model(wave.to(self.device), output_hidden_states=True, **masked)
        hidden = output.hidden_states[self.config.layer].float().cpu().numpy()
        if len(chunks) == 1:
            return [hidden[0]]
        return [hidden[row, : self._frames(len(chunk))] for row, chunk in enumerate(chunks)]

    def _frames(self, samples: int) -> int:
        """Frames the convolutional front end makes of `samples` samples."""
        for kernel, stride in zip(self.conv_kernels, self.conv_strides):
            samples = (samples - kernel) // stride + 1
        return max(0, samples)

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


# Model types whose encoder (without do_stable_layer_norm) adds each layer's output to hidden_states
# unchanged, with no norm after the last layer (transformers' Wav2Vec2Encoder, HubertEncoder, WavLMEncoder).
POST_NORM_ENCODERS = ("wav2vec2", "hubert", "wavlm")


def _batching_pays(device) -> bool:
    """Padded batches pay on an accelerator; on a CPU one chunk at a time is faster (measured with a
    wav2vec2-base-sized encoder, 1 thread: 8 chunks of 3 s or 8 s in one forward ran at 0.65-0.75x the
    speed of one by one, the 2-15 s segments of librispeech-mini in 30 s batches at 0.94x)."""
    return device.type != "cpu"


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
