"""The train section: generator, discriminators, losses, speaker conditioning, LoRA and the training loop."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from unitvox.config.common import ConfigError, require as _require
from unitvox.config.health import HealthConfig

# Each generator type's presets (`size`); `custom` keeps the fields as given. The types are those
# vocoder/generator.py registers (a test holds the two to each other).
GENERATOR_PRESETS = {"hifigan": ("tiny", "v1"), "vocos": ("tiny", "base")}
GENERATOR_TYPES = tuple(GENERATOR_PRESETS)
GENERATOR_SIZES = (*dict.fromkeys(size for sizes in GENERATOR_PRESETS.values() for size in sizes), "custom")
# The fields only one generator type reads; the others are common to every type.
HIFIGAN_FIELDS = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channels", "resblock",
                  "resblock_kernel_sizes", "resblock_dilations", "groups")
VOCOS_FIELDS = ("backbone_dim", "backbone_intermediate_dim", "backbone_layers", "frames_per_unit", "n_fft")
TYPE_FIELDS = {"hifigan": HIFIGAN_FIELDS, "vocos": VOCOS_FIELDS}
RESIDUAL_BLOCKS = ("hifigan", "grouped")
# What the vocoder is trained on: frame units, or run-length-collapsed units with a duration predictor.
UNIT_FORMS = ("frames", "deduplicated")


@dataclass
class LoraConfig:
    """Low-rank adapters on the generator's convolutions and linear layers; rank 0 leaves the model untouched.

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
    """The unit-to-waveform generator; the defaults are the `hifigan` `tiny` preset.

    `type` picks the network: `hifigan` (transposed-convolution upsampling with multi-receptive-field
    fusion; stage i has upsample_initial_channels / 2**(i+1) channels) or `vocos` (a ConvNeXt backbone
    at the unit rate whose head predicts STFT frames for an inverse FFT: `frames_per_unit` frames per
    unit, `n_fft` 0 meaning 4 STFT hops). Each reads its own fields (`TYPE_FIELDS`) and ignores the
    other's. `size` records which preset of the type the fields came from (`generator_preset` fills
    them); set it to `custom` when changing the architecture by hand.
    """

    size: str = "tiny"
    type: str = "hifigan"
    hop_samples: int = 320
    embedding_dim: int = 128
    upsample_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 11, 8, 4])
    upsample_initial_channels: int = 64
    resblock: str = "hifigan"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7])
    resblock_dilations: list[list[int]] = field(default_factory=lambda: [[1, 3], [1, 3]])
    groups: int = 4
    backbone_dim: int = 128
    backbone_intermediate_dim: int = 384
    backbone_layers: int = 4
    frames_per_unit: int = 2
    n_fft: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    speaker_embedding_dim: int = 0

    def stage_channels(self) -> list[int]:
        return [self.upsample_initial_channels // 2 ** (stage + 1) for stage in range(len(self.upsample_rates))]

    def described(self) -> dict:
        """The fields this type builds from: what a checkpoint records. A `hifigan` one has no `type`,
        as checkpoints had before there were two types."""
        everything = dataclasses.asdict(self)
        other = {name for kind, names in TYPE_FIELDS.items() if kind != self.type for name in names}
        return {name: value for name, value in everything.items()
                if name not in other and not (name == "type" and value == "hifigan")}

    def check(self, key: str) -> None:
        _require(self.type in GENERATOR_TYPES, f"{key}.type", f"unknown {self.type!r}; choose one of {GENERATOR_TYPES}")
        sizes = (*GENERATOR_PRESETS[self.type], "custom")
        _require(self.size in sizes, f"{key}.size", f"unknown {self.size!r} for a {self.type} generator; "
                                                    f"choose one of {sizes}")
        _require(self.embedding_dim >= 1, f"{key}.embedding_dim", "must be positive")
        _require(self.speaker_embedding_dim >= 0, f"{key}.speaker_embedding_dim", "must not be negative (0 = none)")
        self.lora.check(f"{key}.lora")
        if self.type == "vocos":
            self._check_vocos(key)
        else:
            self._check_hifigan(key)

    def _check_vocos(self, key: str) -> None:
        for name in ("backbone_dim", "backbone_intermediate_dim", "backbone_layers"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be positive")
        _require(self.frames_per_unit >= 1 and self.hop_samples % self.frames_per_unit == 0, f"{key}.frames_per_unit",
                 f"must divide hop_samples {self.hop_samples}, got {self.frames_per_unit}")
        stft_hop = self.hop_samples // max(1, self.frames_per_unit)
        _require(self.n_fft == 0 or self.n_fft >= 2 * stft_hop, f"{key}.n_fft",
                 f"must be 0 (4 STFT hops) or at least twice the STFT hop {stft_hop}, got {self.n_fft}")

    def _check_hifigan(self, key: str) -> None:
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


def generator_preset(name: str, generator_type: str = "hifigan") -> GeneratorConfig:
    """The named architecture of a generator type.

    `hifigan`: `tiny` (fast on CPU) or `v1` (HiFi-GAN V1 sizes at a 320 hop). `vocos`: `tiny` (the
    CPU demo's, 0.8 M parameters) or `base` (Vocos's 13.5 M: 8 ConvNeXt blocks of 512 channels); both
    at a 160-sample STFT hop (two frames per unit) and a 640-point FFT.
    """
    if generator_type not in GENERATOR_PRESETS:
        raise ConfigError(f"type: no generator type {generator_type!r}; choose one of {GENERATOR_TYPES}")
    if generator_type == "vocos" and name == "tiny":
        return GeneratorConfig(type="vocos")
    if generator_type == "vocos" and name == "base":
        return GeneratorConfig(size="base", type="vocos", backbone_dim=512, backbone_intermediate_dim=1536,
                               backbone_layers=8)
    if generator_type == "hifigan" and name == "tiny":
        return GeneratorConfig()
    if generator_type == "hifigan" and name == "v1":
        return GeneratorConfig(
            size="v1", embedding_dim=256, upsample_rates=[10, 8, 2, 2], upsample_kernel_sizes=[20, 16, 4, 4],
            upsample_initial_channels=512, resblock_kernel_sizes=[3, 7, 11],
            resblock_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], groups=8,
        )
    raise ConfigError(f"size: no {generator_type} preset named {name!r}; choose one of {GENERATOR_PRESETS[generator_type]}")


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
    # Further resolutions for the training loss, [n_fft, n_mels] each (window n_fft, hop n_fft / 4): the
    # mel term becomes the mean L1 over all of them, as in the multi-scale mel loss of DAC (Kumar et al.
    # 2023). Short windows pin down timing and phase that one 1024-point spectrogram leaves free.
    # Validation always compares the single spectrogram above, so runs stay comparable.
    scales: list[list[int]] = field(default_factory=list)

    def check(self, key: str) -> None:
        for index, scale in enumerate(self.scales):
            _require(len(scale) == 2 and all(isinstance(v, int) for v in scale), f"{key}.scales[{index}]",
                     f"must be [n_fft, n_mels], got {scale!r}")
            n_fft, n_mels = scale
            _require(n_fft >= 16 and 1 <= n_mels <= n_fft // 4, f"{key}.scales[{index}]",
                     f"needs n_fft >= 16 and 1 <= n_mels <= n_fft / 4, got {scale!r}")
        _require(self.n_fft >= 2, f"{key}.n_fft", "must be at least 2")
        _require(self.hop >= 1, f"{key}.hop", "must be positive")
        _require(1 <= self.win <= self.n_fft, f"{key}.win", f"must be in [1, n_fft={self.n_fft}]")
        _require(self.n_mels >= 1, f"{key}.n_mels", "must be positive")
        _require(0 <= self.fmin < self.fmax, f"{key}.fmin", "must be in [0, fmax)")
        _require(self.fmax <= self.sample_rate / 2, f"{key}.fmax", f"must not exceed {self.sample_rate / 2} Hz")


# The metric each weighted generator term (a `LossWeights.WEIGHT_KEYS` name) is logged as.
TERM_METRICS = {"mel": "loss/mel", "adversarial": "loss/adv_gen", "feature_matching": "loss/feature_matching",
                "contrastive": "loss/contrastive"}


@dataclass
class LossWeights:
    """The generator's loss is sum(weight * term) over WEIGHT_KEYS (HiFi-GAN's 45, 1, 2 by default;
    `contrastive` weighs the speaker loss when speaker conditioning is on)."""

    mel: float = 45.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    contrastive: float = 1.0
    # The duration predictor's log-duration MSE (train.units deduplicated), logged as loss/duration. It
    # shares no parameters with the generator, so it is not one of the generator's balanced WEIGHT_KEYS.
    duration: float = 1.0
    mel_spectrogram: MelSpectrogramConfig = field(default_factory=MelSpectrogramConfig)

    WEIGHT_KEYS = tuple(TERM_METRICS)

    def weights(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.WEIGHT_KEYS}

    def check(self, key: str) -> None:
        for name, weight in {**self.weights(), "duration": self.duration}.items():
            _require(weight >= 0, f"{key}.{name}", f"must not be negative, got {weight}")
        self.mel_spectrogram.check(f"{key}.mel_spectrogram")


SPEAKER_ENCODERS = ("learned", "resemblyzer")
PRECISIONS = ("auto", "fp32", "bf16")
RESUME_MODES = ("auto", "fresh")


@dataclass
class SpeakerConfig:
    """Speaker conditioning for voice conversion: an encoder of reference audio, FiLM, a contrastive loss.

    `negatives` other-speaker references per item feed the contrastive loss; with `hard_negatives`
    they are the most similar other speakers in the batch, else random ones.
    """

    enabled: bool = False
    encoder: str = "learned"
    embedding_dim: int = 64
    freeze_encoder: bool = False
    reference_seconds: float = 2.0
    negatives: int = 4
    hard_negatives: bool = True
    temperature: float = 0.1

    def check(self, key: str) -> None:
        _require(self.encoder in SPEAKER_ENCODERS, f"{key}.encoder",
                 f"unknown {self.encoder!r}; choose one of {SPEAKER_ENCODERS}")
        _require(self.embedding_dim >= 1, f"{key}.embedding_dim", "must be positive")
        _require(self.reference_seconds > 0, f"{key}.reference_seconds", "must be positive")
        _require(self.negatives >= 1, f"{key}.negatives", "must be at least 1")
        _require(self.temperature > 0, f"{key}.temperature", "must be positive")


@dataclass
class DurationPredictorConfig:
    """The duration predictor of a `train.units: deduplicated` vocoder: log(1 + frames) of each run unit.

    As fairseq's unit HiFi-GAN (`--dur-prediction`): an embedding of the run units, `layers` convolutions
    of `kernel_size` over them (ReLU, layer norm, dropout), a linear projection; trained by MSE.
    It has its own learning rate: a small regressor that learns from whole runs wants a larger step
    than a GAN generator (fairseq shares the generator's, which leaves it barely trained in a short run).
    """

    embedding_dim: int = 128
    channels: int = 128
    kernel_size: int = 3
    layers: int = 2
    dropout: float = 0.5
    lr: float = 0.002

    def check(self, key: str) -> None:
        for name in ("embedding_dim", "channels", "layers"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", f"must be positive, got {getattr(self, name)}")
        _require(self.kernel_size >= 1 and self.kernel_size % 2 == 1, f"{key}.kernel_size",
                 f"must be odd so the predictor keeps the length, got {self.kernel_size}")
        _require(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(0 < self.lr < 1, f"{key}.lr", f"must be in (0, 1), got {self.lr}")


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation mel error has not improved by `min_delta` for `patience` validations."""

    patience: int = 10
    min_delta: float = 0.001

    def check(self, key: str) -> None:
        _require(self.patience >= 1, f"{key}.patience", "must be at least 1")
        _require(self.min_delta >= 0, f"{key}.min_delta", "must not be negative")


@dataclass
class TrainConfig:
    """The unit vocoder's training run.

    `init_from` names a checkpoint (a URI, or `best`/`latest` of another run given as a URI) whose
    generator starts this run; with `generator.lora` set, only the adapters then train (speaker
    adaptation). Resuming this run's own latest checkpoint always wins over it.
    `resume` says what to do with this run's latest checkpoint: `auto` resumes it when it was trained
    with the same config (less RESUME_KEYS) and inputs, and refuses otherwise, naming what changed;
    `fresh` starts over instead of refusing, keeping the old checkpoints under train/checkpoints.old/
    (a checkpoint that does match is still resumed, so a preempted pod rerun with the same command
    continues; `--force` always starts over).
    `exclude` is the path or URI of a filter list (as `prepare.exclude`): its segment ids are left out
    before the training/validation split. Empty: nothing is excluded.
    `units` is what the vocoder takes: `frames` (one unit per feature hop) or `deduplicated` (runs of
    a unit collapsed to one, with a `duration_predictor` trained beside the generator on the runs'
    true durations; the generator itself still sees the units expanded by those durations).
    """

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    lambdas: LossWeights = field(default_factory=LossWeights)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    units: str = "frames"
    duration_predictor: DurationPredictorConfig = field(default_factory=DurationPredictorConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    segment_seconds: float = 1.0
    batch_size: int = 16
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    lr_decay: float = 0.999996
    grad_clip: float = 100.0
    generator_warmup_steps: int = 0
    max_steps: int = 200_000
    validate_every: int = 1000
    validation_fraction: float = 0.05
    validation_items: int = 8
    checkpoint_every: int = 1000
    keep_every: int = 10_000
    sample_every: int = 5000
    log_every: int = 50
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    init_from: str = ""
    exclude: str = ""
    resume: str = "auto"

    # The health monitor only watches (and may stop) a run: its settings do not change what training makes.
    EXECUTION_KEYS = ("precision", "device", "num_workers", "log_every", "health", "resume")
    # Keys a resumed checkpoint may differ in: how long and how often, not what is trained. Raising
    # max_steps continues a run; init_from is ignored once there is a checkpoint to resume.
    RESUME_KEYS = ("max_steps", "validate_every", "checkpoint_every", "keep_every", "sample_every",
                   "early_stopping", "init_from")

    def check(self, key: str) -> None:
        self.generator.check(f"{key}.generator")
        self.discriminator.check(f"{key}.discriminator")
        self.lambdas.check(f"{key}.lambdas")
        self.speaker.check(f"{key}.speaker")
        _require(self.units in UNIT_FORMS, f"{key}.units", f"unknown {self.units!r}; choose one of {UNIT_FORMS}")
        self.duration_predictor.check(f"{key}.duration_predictor")
        _require(self.units != "deduplicated" or self.lambdas.duration > 0, f"{key}.lambdas.duration",
                 "must be positive with train.units deduplicated (it trains the duration predictor)")
        self.early_stopping.check(f"{key}.early_stopping")
        self.health.check(f"{key}.health")
        _require(self.segment_seconds > 0, f"{key}.segment_seconds", "must be positive")
        _require(self.batch_size >= 1, f"{key}.batch_size", "must be at least 1")
        for name in ("lr_generator", "lr_discriminator"):
            _require(getattr(self, name) > 0, f"{key}.{name}", "must be positive")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}.betas",
                 f"must be two numbers in [0, 1), got {self.betas}")
        _require(0 < self.lr_decay <= 1, f"{key}.lr_decay", "must be in (0, 1]")
        _require(self.grad_clip > 0, f"{key}.grad_clip", "must be positive")
        _require(self.generator_warmup_steps >= 0, f"{key}.generator_warmup_steps", "must not be negative")
        _require(self.max_steps >= 1, f"{key}.max_steps", "must be at least 1")
        for name in ("validate_every", "checkpoint_every", "keep_every", "sample_every", "log_every"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be at least 1")
        _require(0 < self.validation_fraction < 1, f"{key}.validation_fraction", "must be in (0, 1)")
        _require(self.validation_items >= 1, f"{key}.validation_items", "must be at least 1")
        _require(self.precision in PRECISIONS, f"{key}.precision", f"choose one of {PRECISIONS}")
        _require(self.device in ("auto", "cpu") or self.device.startswith("cuda"), f"{key}.device",
                 f"must be auto, cpu or cuda[:N], got {self.device!r}")
        _require(self.num_workers >= 0, f"{key}.num_workers", "must not be negative")
        _require(self.resume in RESUME_MODES, f"{key}.resume", f"choose one of {RESUME_MODES}, got {self.resume!r}")
        expected = self.speaker.embedding_dim if self.speaker.enabled else 0
        _require(self.generator.speaker_embedding_dim == expected, f"{key}.generator.speaker_embedding_dim",
                 f"is {self.generator.speaker_embedding_dim}, but must be {expected} with train.speaker.enabled "
                 f"{str(self.speaker.enabled).lower()} (FiLM conditioning takes the speaker encoder's embedding)")


def expand_generator_preset(raw: dict) -> dict:
    """Fill `train.generator` from its `size` preset; keys given next to `size` still win."""
    generator = raw.get("train", {}).get("generator") if isinstance(raw.get("train"), dict) else None
    if not isinstance(generator, dict) or generator.get("size", "tiny") == "custom":
        return raw
    preset = dataclasses.asdict(generator_preset(generator.get("size", "tiny"), generator.get("type", "hifigan")))
    preset.pop("lora")
    return {**raw, "train": {**raw["train"], "generator": {**preset, **generator}}}
