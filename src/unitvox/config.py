"""Typed configuration: one dataclass per stage, loaded from YAML with includes and overrides.

Check a config without running anything: unitvox validate --config jobs/base.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that cannot run; the message names the dotted key at fault."""


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


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
    """Decode, resample, split and check raw recordings."""

    input: str = ""
    extensions: list[str] = field(default_factory=lambda: ["wav", "flac", "ogg", "mp3"])
    sample_rate: int = 16000
    speaker_pattern: str = r"^(?P<speaker>[^/]+)/"
    split: SplitConfig = field(default_factory=SplitConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    shards: int = 1

    EXECUTION_KEYS = ("shards",)

    def check(self, key: str) -> None:
        import re

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
    device: str = "auto"

    EXECUTION_KEYS = ("device",)

    def check(self, key: str) -> None:
        from unitvox.units.features import EXTRACTORS

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
        _require(self.device in ("auto", "cpu") or self.device.startswith("cuda"), f"{key}.device",
                 f"must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class KMeansConfig:
    """MiniBatchKMeans fitted on a bounded, reproducible sample of frames."""

    k: int = 100
    sample_frames: int = 100_000
    sample_max_seconds: float = 36_000.0
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

    stages: list[str] = field(default_factory=lambda: ["prepare", "tokenize", "bpe"])
    workers: int = 0

    EXECUTION_KEYS = ("stages", "workers")

    def check(self, key: str) -> None:
        from unitvox.stages import STAGES

        for index, stage in enumerate(self.stages):
            _require(stage in STAGES, f"{key}.stages[{index}]", f"unknown stage {stage!r}; known: {list(STAGES)}")
        _require(self.workers >= 0, f"{key}.workers", "must not be negative (0 means one per core)")


@dataclass
class Config:
    """The whole pipeline's configuration; one section per stage."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    bpe: BpeConfig = field(default_factory=BpeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def check(self) -> None:
        for section in dataclasses.fields(self):
            getattr(self, section.name).check(section.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, stage: str) -> str:
        """Hash of what a stage's outputs depend on: its section, less the keys that only change how it runs."""
        return _hash_json(_semantic(getattr(self, stage)))


def _semantic(section: Any) -> Any:
    if not dataclasses.is_dataclass(section):
        return section
    skip = set(getattr(section, "EXECUTION_KEYS", ()))
    return {f.name: _semantic(getattr(section, f.name)) for f in dataclasses.fields(section) if f.name not in skip}


def _hash_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Vocoder: generator, discriminators and loss weights (not yet a section of `Config`)

GENERATOR_SIZES = ("tiny", "v1", "custom")
RESIDUAL_BLOCKS = ("hifigan", "grouped")


@dataclass
class LoraConfig:
    """Low-rank adapters on the generator's convolutions; rank 0 leaves the model untouched.

    `targets` are module-name patterns: a pattern matches a dotted module name when it equals one of
    its segments (`resblocks` matches `resblocks.0.blocks.1.conv1s.0`) or matches it as a glob.
    """

    rank: int = 0
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["resblocks", "upsamples"])
    lora_only: bool = True

    def check(self, key: str) -> None:
        _require(self.rank >= 0, f"{key}.rank", f"must not be negative (0 turns LoRA off), got {self.rank}")
        _require(self.alpha > 0, f"{key}.alpha", f"must be positive, got {self.alpha}")
        _require(self.rank == 0 or bool(self.targets), f"{key}.targets", "must name at least one layer pattern")


@dataclass
class GeneratorConfig:
    """HiFi-GAN-style unit-to-waveform generator; the defaults are the `tiny` preset.

    `size` records which preset the fields came from (`generator_preset` fills them); set it to
    `custom` when changing the architecture by hand. Stage i has upsample_initial_channels / 2**(i+1)
    channels.
    """

    size: str = "tiny"
    hop_samples: int = 320
    embedding_dim: int = 128
    upsample_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 11, 8, 4])
    upsample_initial_channels: int = 64
    resblock: str = "hifigan"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7])
    resblock_dilations: list[list[int]] = field(default_factory=lambda: [[1, 3], [1, 3]])
    groups: int = 4
    lora: LoraConfig = field(default_factory=LoraConfig)
    speaker_embedding_dim: int = 0

    def stage_channels(self) -> list[int]:
        return [self.upsample_initial_channels // 2 ** (stage + 1) for stage in range(len(self.upsample_rates))]

    def check(self, key: str) -> None:
        _require(self.size in GENERATOR_SIZES, f"{key}.size", f"unknown {self.size!r}; choose one of {GENERATOR_SIZES}")
        _require(self.embedding_dim >= 1, f"{key}.embedding_dim", "must be positive")
        _require(bool(self.upsample_rates) and all(r >= 1 for r in self.upsample_rates), f"{key}.upsample_rates",
                 "must list positive rates")
        _require(math.prod(self.upsample_rates) == self.hop_samples, f"{key}.upsample_rates",
                 f"product {math.prod(self.upsample_rates)} must equal hop_samples {self.hop_samples}")
        _require(len(self.upsample_kernel_sizes) == len(self.upsample_rates), f"{key}.upsample_kernel_sizes",
                 "needs one kernel size per upsample rate")
        for index, (kernel, rate) in enumerate(zip(self.upsample_kernel_sizes, self.upsample_rates)):
            # Length T * rate exactly needs kernel >= rate; an odd excess needs output_padding < rate.
            _require(kernel >= rate and (rate > 1 or (kernel - rate) % 2 == 0),
                     f"{key}.upsample_kernel_sizes[{index}]", f"{kernel} does not fit upsample rate {rate}")
        _require(self.stage_channels()[-1] >= 1, f"{key}.upsample_initial_channels",
                 f"too few to halve {len(self.upsample_rates)} times")
        _require(self.resblock in RESIDUAL_BLOCKS, f"{key}.resblock",
                 f"unknown {self.resblock!r}; choose one of {RESIDUAL_BLOCKS}")
        _require(bool(self.resblock_kernel_sizes), f"{key}.resblock_kernel_sizes", "must list at least one kernel")
        for index, kernel in enumerate(self.resblock_kernel_sizes):
            _require(kernel >= 1 and kernel % 2 == 1, f"{key}.resblock_kernel_sizes[{index}]",
                     f"must be odd so the block keeps the length, got {kernel}")
        _require(len(self.resblock_dilations) == len(self.resblock_kernel_sizes), f"{key}.resblock_dilations",
                 "needs one dilation list per resblock kernel size")
        for index, dilations in enumerate(self.resblock_dilations):
            _require(bool(dilations) and all(d >= 1 for d in dilations), f"{key}.resblock_dilations[{index}]",
                     "must list positive dilations")
        _require(self.groups >= 1, f"{key}.groups", "must be positive")
        if self.resblock == "grouped":
            for channels in self.stage_channels():
                _require(channels % self.groups == 0, f"{key}.groups",
                         f"{self.groups} does not divide the {channels} channels of a stage")
        _require(self.speaker_embedding_dim >= 0, f"{key}.speaker_embedding_dim", "must not be negative (0 = none)")
        self.lora.check(f"{key}.lora")


def generator_preset(name: str) -> GeneratorConfig:
    """The named generator architecture: `tiny` (fast on CPU) or `v1` (HiFi-GAN V1 sizes at a 320 hop)."""
    if name == "tiny":
        return GeneratorConfig()
    if name == "v1":
        return GeneratorConfig(
            size="v1", embedding_dim=256, upsample_rates=[10, 8, 2, 2], upsample_kernel_sizes=[20, 16, 4, 4],
            upsample_initial_channels=512, resblock_kernel_sizes=[3, 7, 11],
            resblock_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], groups=8,
        )
    raise ConfigError(f"size: no preset named {name!r}; choose one of {GENERATOR_SIZES[:-1]}")


@dataclass
class DiscriminatorConfig:
    """Multi-period (waveform folded by period) and multi-resolution (STFT magnitude) discriminators.

    `channels` is the base width: period discriminators widen it 1, 4, 16, 32, 32 times (HiFi-GAN's
    32..1024 at the default), resolution discriminators keep it.
    """

    mpd_enabled: bool = True
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mrd_enabled: bool = True
    resolutions: list[list[int]] = field(
        default_factory=lambda: [[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]]
    )
    channels: int = 32

    def check(self, key: str) -> None:
        _require(self.mpd_enabled or self.mrd_enabled, f"{key}.mpd_enabled",
                 "at least one of mpd_enabled and mrd_enabled must be true")
        _require(self.channels >= 1, f"{key}.channels", "must be positive")
        if self.mpd_enabled:
            _require(bool(self.periods), f"{key}.periods", "must list at least one period")
            for index, period in enumerate(self.periods):
                _require(period >= 1, f"{key}.periods[{index}]", f"must be positive, got {period}")
        if self.mrd_enabled:
            _require(bool(self.resolutions), f"{key}.resolutions", "must list at least one [n_fft, hop, win]")
            for index, resolution in enumerate(self.resolutions):
                _require(len(resolution) == 3 and all(v >= 1 for v in resolution), f"{key}.resolutions[{index}]",
                         f"must be three positive numbers [n_fft, hop, win], got {resolution}")
                n_fft, _, win = resolution
                _require(win <= n_fft, f"{key}.resolutions[{index}]", f"window {win} is longer than n_fft {n_fft}")


@dataclass
class MelSpectrogramConfig:
    """The log-mel spectrogram the mel reconstruction loss compares."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0

    def check(self, key: str) -> None:
        _require(self.n_fft >= 2, f"{key}.n_fft", "must be at least 2")
        _require(self.hop >= 1, f"{key}.hop", "must be positive")
        _require(1 <= self.win <= self.n_fft, f"{key}.win", f"must be in [1, n_fft={self.n_fft}]")
        _require(self.n_mels >= 1, f"{key}.n_mels", "must be positive")
        _require(0 <= self.fmin < self.fmax, f"{key}.fmin", "must be in [0, fmax)")
        _require(self.fmax <= self.sample_rate / 2, f"{key}.fmax", f"must not exceed {self.sample_rate / 2} Hz")


@dataclass
class LossWeights:
    """The generator's loss is sum(weight * term) over WEIGHT_KEYS (HiFi-GAN's 45, 1, 2 by default)."""

    mel: float = 45.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    mel_spectrogram: MelSpectrogramConfig = field(default_factory=MelSpectrogramConfig)

    WEIGHT_KEYS = ("mel", "adversarial", "feature_matching")

    def weights(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.WEIGHT_KEYS}

    def check(self, key: str) -> None:
        for name, weight in self.weights().items():
            _require(weight >= 0, f"{key}.{name}", f"must not be negative, got {weight}")
        self.mel_spectrogram.check(f"{key}.mel_spectrogram")


# ---------------------------------------------------------------------------------------------
# Building typed configs from plain data


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and wrong types by dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        dotted = f"{key}.{name}" if key else str(name)
        if name not in names:
            raise ConfigError(f"{dotted}: unknown key; known keys here: {sorted(names)}")
        kwargs[name] = _coerce(hints[name], value, dotted)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {hint.__name__}, got {_describe(value)}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------------------------------------
# YAML files, includes and --set overrides


def merge(base: dict, overlay: dict) -> dict:
    """Deep-merge `overlay` onto `base`: mappings merge, everything else is replaced."""
    result = dict(base)
    for name, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = merge(result[name], value)
        else:
            result[name] = value
    return result


def load_raw(uri: str, _seen: tuple[str, ...] = ()) -> dict:
    """Read a YAML config and the files it includes (`include:` a path or a list, relative to it)."""
    from unitvox.store import read_uri_text

    if uri in _seen:
        raise ConfigError(f"include: {uri} includes itself through {' -> '.join(_seen)}")
    try:
        text = read_uri_text(uri)
    except FileNotFoundError:
        where = f" (included from {_seen[-1]})" if _seen else ""
        raise ConfigError(f"config file not found: {uri}{where}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{uri}: the top level must be a mapping of stage sections")
    includes = data.pop("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{uri}: include: expected a path or a list of paths")
    merged: dict = {}
    for included in includes:
        merged = merge(merged, load_raw(_relative_to(uri, included), (*_seen, uri)))
    return merge(merged, data)


def _relative_to(uri: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{PurePosixPath(rest).parent / path}"
    return str(PurePosixPath(uri).parent / path)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; values are parsed as YAML (`3`, `true`, `[a, b]`)."""
    result = raw
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected dotted.key=value")
        dotted, text = override.split("=", 1)
        parts = dotted.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {override!r}: empty key segment in {dotted!r}")
        value = _parse_value(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        result = merge(result, nested)
    return result


def _parse_value(text: str) -> Any:
    """A --set value as YAML (numbers, booleans, lists); text YAML cannot parse stays a string."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load(uri: str, overrides: list[str] | None = None) -> Config:
    """Load, override, type-check and validate a config; raises ConfigError naming the key."""
    raw = apply_overrides(load_raw(uri), overrides or [])
    config = from_dict(Config, raw)
    config.check()
    return config


def to_yaml(config: Config, header: str = "") -> str:
    body = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return f"{header}{body}"
