"""Multi-period and multi-resolution discriminators, and a container running the enabled ones.

Every discriminator maps audio (B, 1, T) to (list of logits (B, N_i), list of lists of feature maps),
one entry per sub-discriminator; the feature maps feed the feature-matching loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from unitvox.config import ConfigError, DiscriminatorConfig
from unitvox.vocoder.blocks import LEAKY_RELU_SLOPE

Logits = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]

# Width multipliers of the period discriminator's layers (HiFi-GAN's 32..1024 at a base of 32).
PERIOD_WIDTHS = (1, 4, 16, 32, 32)


class Discriminator(Protocol):
    """A set of sub-discriminators judging audio."""

    def __call__(self, audio: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        """audio (B, 1, T) -> logits, one (B, N_i) per sub-discriminator, and each one's feature maps."""


def _run_layers(layers: nn.ModuleList, output: nn.Module, features: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    maps = []
    for layer in layers:
        features = nn.functional.leaky_relu(layer(features), LEAKY_RELU_SLOPE)
        maps.append(features)
    features = output(features)
    maps.append(features)
    return features.flatten(1), maps


class PeriodDiscriminator(nn.Module):
    """2-D convolutions over audio folded into (T / period, period), so each column is one phase."""

    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        widths = [1, *(channels * w for w in PERIOD_WIDTHS)]
        self.layers = nn.ModuleList(
            # Stride 3 along time for all but the last layer, never across the period's columns.
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3 if i < len(widths) - 2 else 1, 1), padding=(2, 0)))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.output = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """audio (B, 1, T) -> logits (B, N), feature maps (B, C_l, T_l / period, period)."""
        batch, channels, length = audio.shape
        remainder = length % self.period
        if remainder:
            audio = nn.functional.pad(audio, (0, self.period - remainder), mode="reflect")
        folded = audio.view(batch, channels, -1, self.period)
        return _run_layers(self.layers, self.output, folded)


class MultiPeriodDiscriminator(nn.Module):
    """One period discriminator per period (HiFi-GAN: 2, 3, 5, 7, 11)."""

    def __init__(self, periods: list[int], channels: int):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(period, channels) for period in periods)

    def forward(self, audio: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        results = [discriminator(audio) for discriminator in self.discriminators]
        return [logits for logits, _ in results], [maps for _, maps in results]


class ResolutionDiscriminator(nn.Module):
    """2-D convolutions over one STFT magnitude (frames x frequency bins)."""

    def __init__(self, n_fft: int, hop: int, win: int, channels: int):
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        self.layers = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4))),
            # Halve the frequency axis three times; keep time resolution for frame-level judgements.
            *(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))) for _ in range(3)),
            weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.output = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, T) -> magnitude (B, 1, frames, n_fft // 2 + 1)."""
        spectrum = torch.stft(audio.squeeze(1), self.n_fft, self.hop, self.win, window=self.window,
                              center=True, return_complex=True)
        return spectrum.abs().transpose(1, 2).unsqueeze(1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """audio (B, 1, T) -> logits (B, N), feature maps (B, C, frames, F_l)."""
        return _run_layers(self.layers, self.output, self.magnitude(audio))


class MultiResolutionDiscriminator(nn.Module):
    """One STFT discriminator per [n_fft, hop, win] resolution (UnivNet style)."""

    def __init__(self, resolutions: list[list[int]], channels: int):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(n_fft, hop, win, channels) for n_fft, hop, win in resolutions
        )

    def forward(self, audio: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        results = [discriminator(audio) for discriminator in self.discriminators]
        return [logits for logits, _ in results], [maps for _, maps in results]


@dataclass
class DiscriminatorOutputs:
    """One discriminator's judgement of a batch of real and of generated audio."""

    real_logits: Logits
    fake_logits: Logits
    real_features: FeatureMaps
    fake_features: FeatureMaps


class Discriminators(nn.Module):
    """The enabled discriminators by name (`mpd`, `mrd`), run together on real and generated audio.

    Raises:
        ConfigError: the config is invalid, e.g. both discriminators are switched off.
    """

    def __init__(self, config: DiscriminatorConfig, key: str = "discriminator"):
        super().__init__()
        config.check(key)
        self.config = config
        self.discriminators = nn.ModuleDict()
        if config.mpd_enabled:
            self.discriminators["mpd"] = MultiPeriodDiscriminator(config.periods, config.channels)
        if config.mrd_enabled:
            self.discriminators["mrd"] = MultiResolutionDiscriminator(config.resolutions, config.channels)
        if not self.discriminators:
            raise ConfigError(f"{key}.mpd_enabled: at least one discriminator must be enabled")

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, DiscriminatorOutputs]:
        """real, fake (B, 1, T) -> each enabled discriminator's outputs, by name.

        Detach `fake` first for the discriminator's step; pass it attached for the generator's.
        """
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} audio differ in shape")
        batch = real.shape[0]
        outputs = {}
        for name, discriminator in self.discriminators.items():
            # One pass over real and fake together: half the kernel launches, same results.
            logits, features = discriminator(torch.cat([real, fake]))
            outputs[name] = DiscriminatorOutputs(
                real_logits=[item[:batch] for item in logits],
                fake_logits=[item[batch:] for item in logits],
                real_features=[[item[:batch] for item in maps] for maps in features],
                fake_features=[[item[batch:] for item in maps] for maps in features],
            )
        return outputs

    def judge_generated(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, DiscriminatorOutputs]:
        """The generator's step: what `forward(real, fake)` gives, with gradients to `fake` alone.

        Real audio is judged without a graph (its feature maps are the feature-matching targets), and
        generated audio with the discriminators' weights frozen, so the generator's backward computes
        no weight gradients the discriminators would discard. On a CPU this halves the generator
        step's discriminator cost (bench/vocoder.py). Call it on the bare module, not a DDP wrapper:
        there is nothing to synchronise.
        """
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} audio differ in shape")
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        for parameter in trainable:
            parameter.requires_grad_(False)
        try:
            outputs = {}
            for name, discriminator in self.discriminators.items():
                with torch.no_grad():
                    real_logits, real_features = discriminator(real)
                fake_logits, fake_features = discriminator(fake)
                outputs[name] = DiscriminatorOutputs(real_logits, fake_logits, real_features, fake_features)
        finally:  # the graph is recorded: unfreezing now gives the weights no gradient from this pass
            for parameter in trainable:
                parameter.requires_grad_(True)
        return outputs
