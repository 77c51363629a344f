"""HiFi-GAN-style generator from discrete units (one every hop) to a waveform, and the generator registry.

units (B, T) -> embedding -> pre-conv -> [upsample, FiLM?, multi-receptive-field fusion] per stage
-> post-conv -> tanh -> wave (B, 1, T * hop).

`GENERATORS` maps `train.generator.type` to a builder from the config: `hifigan` (this file) and
`vocos` (vocoder/vocos.py, built from plain keyword arguments here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from unitvox.config import GeneratorConfig
from unitvox.vocoder.blocks import (
    LEAKY_RELU_SLOPE,
    MultiReceptiveFieldFusion,
    build_residual_block,
    small_weight_norm,
)
from unitvox.registry import registrar, unknown
from unitvox.vocoder.lora import apply_lora
from unitvox.vocoder.vocos import VocosGenerator

# Pre- and post-convs as in HiFi-GAN: a short context at the unit rate and at the sample rate.
PRE_CONV_KERNEL = 7
POST_CONV_KERNEL = 7


class FiLM(nn.Module):
    """Feature-wise linear modulation: features * (1 + scale) + shift, both predicted from a speaker vector."""

    def __init__(self, speaker_embedding_dim: int, channels: int):
        super().__init__()
        self.projection = nn.Linear(speaker_embedding_dim, 2 * channels)

    def forward(self, features: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """features (B, C, T), speaker (B, S) -> (B, C, T)."""
        scale, shift = self.projection(speaker).unsqueeze(-1).chunk(2, dim=1)
        return features * (1 + scale) + shift


class UnitGenerator(nn.Module):
    """Generates 16 kHz audio from unit indices; index `num_units` is padding and embeds to zeros.

    Args:
        config: the architecture; validated here.
        num_units: the codebook size k; embeddings cover k units plus the padding index.
    """

    def __init__(self, config: GeneratorConfig, num_units: int):
        super().__init__()
        config.check("generator")
        if num_units < 1:
            raise ValueError(f"num_units must be positive, got {num_units}")
        self.config = config
        self.num_units = num_units
        self.padding_index = num_units
        self.hop_samples = config.hop_samples
        self.embedding = nn.Embedding(num_units + 1, config.embedding_dim, padding_idx=self.padding_index)
        self.pre_conv = weight_norm(nn.Conv1d(config.embedding_dim, config.upsample_initial_channels,
                                              PRE_CONV_KERNEL, padding=PRE_CONV_KERNEL // 2))
        channels_in = [config.upsample_initial_channels, *config.stage_channels()[:-1]]
        self.upsamples = nn.ModuleList(
            _upsampling_conv(c_in, c_out, rate, kernel)
            for c_in, c_out, rate, kernel in zip(channels_in, config.stage_channels(), config.upsample_rates,
                                                  config.upsample_kernel_sizes)
        )
        self.resblocks = nn.ModuleList(_fusion(config, channels) for channels in config.stage_channels())
        self.films = None
        if config.speaker_embedding_dim > 0:
            self.films = nn.ModuleList(FiLM(config.speaker_embedding_dim, c) for c in config.stage_channels())
        self.post_conv = small_weight_norm(nn.Conv1d(config.stage_channels()[-1], 1, POST_CONV_KERNEL,
                                                     padding=POST_CONV_KERNEL // 2))

    def forward(self, units: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """units (B, T_units) int64, speaker (B, S) or None -> wave (B, 1, T_units * hop_samples) in [-1, 1]."""
        self._check_speaker(speaker)
        features = self.pre_conv(self.embedding(units).transpose(1, 2))
        for stage, (upsample, fusion) in enumerate(zip(self.upsamples, self.resblocks)):
            features = upsample(nn.functional.leaky_relu(features, LEAKY_RELU_SLOPE))
            if self.films is not None:
                features = self.films[stage](features, speaker)
            features = fusion(features)
        # HiFi-GAN's last activation keeps leaky_relu's default slope.
        return torch.tanh(self.post_conv(nn.functional.leaky_relu(features)))

    def _check_speaker(self, speaker: torch.Tensor | None) -> None:
        if self.films is None and speaker is not None:
            raise ValueError("this generator has no speaker conditioning (speaker_embedding_dim is 0)")
        if self.films is not None:
            expected = self.config.speaker_embedding_dim
            if speaker is None or speaker.dim() != 2 or speaker.shape[1] != expected:
                shape = None if speaker is None else tuple(speaker.shape)
                raise ValueError(f"expected a speaker embedding of shape (B, {expected}), got {shape}")

    def influence_span(self) -> tuple[int, int]:
        """First and last output sample that unit t can change, as offsets from sample t * hop_samples.

        Worked out layer by layer from kernels, dilations, strides and paddings (ignoring the edges
        of the sequence, where zero padding cuts the span short).
        """
        first, last = -(PRE_CONV_KERNEL // 2), PRE_CONV_KERNEL // 2
        for upsample, fusion in zip(self.upsamples, self.resblocks):
            conv = _base_conv(upsample)
            stride, padding, kernel = conv.stride[0], conv.padding[0], conv.kernel_size[0]
            # Input position i of a transposed conv writes output positions i * stride - padding + [0, kernel).
            first, last = first * stride - padding, last * stride - padding + (kernel - 1) * conv.dilation[0]
            first, last = first - fusion.context_samples(), last + fusion.context_samples()
        return first - POST_CONV_KERNEL // 2, last + POST_CONV_KERNEL // 2

    def receptive_field(self) -> int:
        """How many output samples one unit can change; also how far apart two samples can share a unit."""
        first, last = self.influence_span()
        return last - first + 1


GeneratorBuilder = Callable[[GeneratorConfig, int], nn.Module]
GENERATORS: dict[str, GeneratorBuilder] = {}
# A builder takes (config, num_units) and returns a module mapping units (B, T) and an optional
# speaker (B, S) to a wave (B, 1, T * hop_samples).
register_generator = registrar(GENERATORS)


@register_generator("hifigan")
def _hifigan(config: GeneratorConfig, num_units: int) -> nn.Module:
    return UnitGenerator(config, num_units)


@register_generator("vocos")
def _vocos(config: GeneratorConfig, num_units: int) -> nn.Module:
    config.check("generator")
    return VocosGenerator(num_units=num_units, hop_samples=config.hop_samples, embedding_dim=config.embedding_dim,
                          dim=config.backbone_dim, intermediate_dim=config.backbone_intermediate_dim,
                          num_layers=config.backbone_layers, frames_per_unit=config.frames_per_unit,
                          n_fft=config.n_fft, speaker_embedding_dim=config.speaker_embedding_dim)


def make_generator(config: GeneratorConfig, num_units: int) -> nn.Module:
    """The plain generator of `config.type`, without LoRA adapters."""
    if config.type not in GENERATORS:
        raise ValueError(unknown("generator type", config.type, GENERATORS))
    return GENERATORS[config.type](config, num_units)


def build_generator(config: GeneratorConfig, num_units: int) -> nn.Module:
    """The generator as training builds it, with LoRA adapters added when `lora.rank` is set."""
    generator = make_generator(config, num_units)
    if config.lora.rank:
        apply_lora(generator, config.lora)
    return generator


def _upsampling_conv(in_channels: int, out_channels: int, rate: int, kernel: int) -> nn.Module:
    # Padding and output padding chosen so the output is exactly `rate` times longer for any kernel >= rate.
    padding, output_padding = (kernel - rate + 1) // 2, (kernel - rate) % 2
    return small_weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel, stride=rate, padding=padding,
                                                output_padding=output_padding))


def _fusion(config: GeneratorConfig, channels: int) -> MultiReceptiveFieldFusion:
    return MultiReceptiveFieldFusion([
        build_residual_block(config.resblock, channels, kernel, dilations, config.groups)
        for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilations)
    ])


def _base_conv(module: nn.Module) -> nn.Module:
    """The convolution itself, looking through a LoRA wrapper if there is one."""
    return getattr(module, "base", module)


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrisation into a plain weight (same outputs, faster inference); in place."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
