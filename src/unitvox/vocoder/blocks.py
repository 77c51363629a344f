"""Residual blocks of the generator's multi-receptive-field fusion, behind a registry.

`hifigan` is HiFi-GAN's dilated block (pairs of convolutions per dilation); `grouped` is a cheaper
block of two grouped convolutions with a channel shuffle between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from unitvox.registry import registrar

# HiFi-GAN's slope: small enough to act like ReLU, large enough to keep gradients alive.
LEAKY_RELU_SLOPE = 0.1


class ResidualBlock(Protocol):
    """A length-preserving residual block on (B, C, T) features."""

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, C, T) -> (B, C, T)."""

    def context_samples(self) -> int:
        """How many positions either side of an output position it reads (its one-sided reach)."""


ResidualBlockFactory = Callable[[int, int, Sequence[int], int], nn.Module]
RESIDUAL_BLOCKS: dict[str, ResidualBlockFactory] = {}


# A block class takes (channels, kernel, dilations, groups).
register_residual_block = registrar(RESIDUAL_BLOCKS)


def build_residual_block(name: str, channels: int, kernel_size: int, dilations: Sequence[int],
                         groups: int) -> nn.Module:
    if name not in RESIDUAL_BLOCKS:
        raise ValueError(f"unknown residual block {name!r}; choose one of {sorted(RESIDUAL_BLOCKS)}")
    return RESIDUAL_BLOCKS[name](channels, kernel_size, dilations, groups)


def same_length_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                     groups: int = 1) -> nn.Module:
    """A weight-normalised Conv1d whose output is as long as its input (odd kernel)."""
    padding = (kernel_size - 1) * dilation // 2
    return small_weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding,
                                       groups=groups))


def small_weight_norm(conv: nn.Module, std: float = 0.01) -> nn.Module:
    """Weight norm over a small normal init, as in HiFi-GAN, so the untrained generator starts quiet."""
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
    return weight_norm(conv)


def _leaky_relu(features: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(features, LEAKY_RELU_SLOPE)


@register_residual_block("hifigan")
class DilatedResidualBlock(nn.Module):
    """Per dilation d: x + conv2(lrelu(conv1_d(lrelu(x)))), conv1 dilated by d, conv2 undilated."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], groups: int = 1):
        super().__init__()
        del groups  # the dense block ignores groups; accepted so every block builds the same way
        self.kernel_size = kernel_size
        self.dilations = list(dilations)
        self.conv1s = nn.ModuleList(same_length_conv(channels, channels, kernel_size, d) for d in self.dilations)
        self.conv2s = nn.ModuleList(same_length_conv(channels, channels, kernel_size) for _ in self.dilations)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.conv1s, self.conv2s):
            features = features + conv2(_leaky_relu(conv1(_leaky_relu(features))))
        return features

    def context_samples(self) -> int:
        half = (self.kernel_size - 1) // 2
        return sum(half * dilation + half for dilation in self.dilations)


@register_residual_block("grouped")
class GroupedResidualBlock(nn.Module):
    """x + conv2(shuffle(lrelu(conv1(lrelu(x))))), both convs grouped.

    conv1 is dilated by the largest dilation to keep a wide context at a fraction of the dense cost;
    the channel shuffle lets conv2 mix what different groups of conv1 saw.
    """

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"groups={groups} does not divide channels={channels}")
        self.kernel_size = kernel_size
        self.dilation = max(dilations)
        self.groups = groups
        self.conv1 = same_length_conv(channels, channels, kernel_size, self.dilation, groups=groups)
        self.conv2 = same_length_conv(channels, channels, kernel_size, groups=groups)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = _leaky_relu(self.conv1(_leaky_relu(features)))
        return features + self.conv2(_shuffle_channels(hidden, self.groups))

    def context_samples(self) -> int:
        half = (self.kernel_size - 1) // 2
        return half * self.dilation + half


def _shuffle_channels(features: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, length = features.shape
    return features.view(batch, groups, channels // groups, length).transpose(1, 2).reshape(batch, channels, length)


class MultiReceptiveFieldFusion(nn.Module):
    """The mean of several residual blocks with different kernels, each seeing a different context."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        total = self.blocks[0](features)
        for block in self.blocks[1:]:
            total = total + block(features)
        return total / len(self.blocks)

    def context_samples(self) -> int:
        return max(block.context_samples() for block in self.blocks)
