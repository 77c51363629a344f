"""Unit-to-waveform GAN vocoder: generator, discriminators, losses and LoRA adapters."""

from unitvox.vocoder.blocks import RESIDUAL_BLOCKS, ResidualBlock, register_residual_block
from unitvox.vocoder.discriminators import (
    DiscriminatorOutputs,
    Discriminators,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from unitvox.vocoder.generator import (
    GENERATORS,
    FiLM,
    UnitGenerator,
    build_generator,
    register_generator,
    remove_weight_norm,
)
from unitvox.vocoder.lora import LoraConv, LoraLinear, apply_lora, lora_parameters, merge_lora
from unitvox.vocoder.losses import MelSpectrogram, discriminator_loss, generator_loss
from unitvox.vocoder.vocos import VocosGenerator

__all__ = [
    "RESIDUAL_BLOCKS", "ResidualBlock", "register_residual_block",
    "DiscriminatorOutputs", "Discriminators", "MultiPeriodDiscriminator", "MultiResolutionDiscriminator",
    "GENERATORS", "FiLM", "UnitGenerator", "build_generator", "register_generator", "remove_weight_norm",
    "VocosGenerator",
    "LoraConv", "LoraLinear", "apply_lora", "lora_parameters", "merge_lora",
    "MelSpectrogram", "discriminator_loss", "generator_loss",
]
