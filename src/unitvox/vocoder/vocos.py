"""Vocos-style generator: units -> ConvNeXt backbone at the frame rate -> STFT frames -> inverse FFT.

After Siuzdak 2023, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders
for high-quality audio synthesis" (arXiv:2306.00112): instead of upsampling to the sample rate
through transposed convolutions, the network stays at the frame rate and predicts the log-magnitude
and phase of each STFT frame; `torch.istft` makes the samples. Most of the compute is at 50 frames
a second rather than 16000 samples a second, which is why it is so much faster on a CPU.

units (B, T) -> embedding -> pre_conv -> LayerNorm -> [ConvNeXt block, FiLM?] * num_layers
-> upsample to frames_per_unit STFT frames per unit? -> LayerNorm -> head (T * r + 1 frames) -> istft
-> wave (B, 1, T * hop_samples).

The head predicts frames at the boundaries between STFT hops (a kernel-2 convolution over
neighbouring features), so a centred `torch.istft` of T * r + 1 frames is exactly T * hop_samples
long, as the HiFi-GAN generator's output is; losses and data need no change.
"""

from __future__ import annotations

import torch
from torch import nn

# ConvNeXt's depthwise kernel, the unit-rate pre-conv, and Vocos's safeguard on predicted magnitudes.
DEPTHWISE_KERNEL = 7
PRE_CONV_KERNEL = 7
MAX_MAGNITUDE = 100.0
LAYER_NORM_EPS = 1e-6
INIT_STD = 0.02
# Log-magnitude floor when analysing real audio (round trips and tests); the head itself never sees zeros.
LOG_FLOOR = 1e-7


class SpeakerFiLM(nn.Module):
    """Scale and shift of (B, C, T) features from a speaker vector (B, S): features * (1 + scale) + shift.

    Applied after a block's LayerNorm, this is Vocos's adaptive layer norm with a speaker embedding
    as the condition.
    """

    def __init__(self, speaker_embedding_dim: int, channels: int):
        super().__init__()
        self.projection = nn.Linear(speaker_embedding_dim, 2 * channels)

    def forward(self, features: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """features (B, C, T), speaker (B, S) -> (B, C, T)."""
        scale, shift = self.projection(speaker).unsqueeze(-1).chunk(2, dim=1)
        return features * (1 + scale) + shift


def _channel_norm(norm: nn.LayerNorm, features: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of (B, C, T) features."""
    return norm(features.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """x + gamma * pw2(gelu(pw1(FiLM?(norm(dwconv(x)))))), the pointwise layers as Linear on (B, T, C).

    Args:
        dim: channels C in and out.
        intermediate_dim: width of the pointwise bottleneck (Vocos: 3 * dim).
        layer_scale: initial value of the per-channel residual scale gamma.
    """

    def __init__(self, *, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, DEPTHWISE_KERNEL, padding=DEPTHWISE_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, features: torch.Tensor, film: SpeakerFiLM | None = None,
                speaker: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, C, T), speaker (B, S) when `film` is given -> (B, C, T)."""
        hidden = self.norm(self.dwconv(features).transpose(1, 2))
        if film is not None:
            hidden = film(hidden.transpose(1, 2), speaker).transpose(1, 2)
        hidden = self.pwconv2(nn.functional.gelu(self.pwconv1(hidden))) * self.gamma
        return features + hidden.transpose(1, 2)


class ISTFTHead(nn.Module):
    """Log-magnitude and phase of STFT frames from features, and the waveform they make.

    Args:
        dim: feature channels C.
        n_fft: FFT size, also the Hann window's length; at least 2 * stft_hop so windows overlap.
        stft_hop: samples between STFT frames.
    """

    def __init__(self, *, dim: int, n_fft: int, stft_hop: int):
        super().__init__()
        if stft_hop < 1 or n_fft < 2 * stft_hop:
            raise ValueError(f"n_fft ({n_fft}) must be at least twice stft_hop ({stft_hop})")
        self.n_fft, self.stft_hop = n_fft, stft_hop
        # Kernel 2 with padding 1: frame j sits on the boundary between features j - 1 and j.
        self.out = nn.Conv1d(dim, n_fft + 2, kernel_size=2, padding=1)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, C, N) -> wave (B, N * stft_hop), float32."""
        log_magnitude, phase = self.out(features).chunk(2, dim=1)
        return self.synthesize(log_magnitude, phase)

    def synthesize(self, log_magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """log_magnitude, phase (B, n_fft // 2 + 1, N + 1) -> wave (B, N * stft_hop), float32 (float64 for float64).

        The inverse FFT runs in float32 whatever autocast says: bf16 has too few mantissa bits for it.
        """
        dtype = torch.promote_types(log_magnitude.dtype, torch.float32)  # float64 stays float64
        with torch.autocast(device_type=log_magnitude.device.type, enabled=False):
            magnitude = torch.exp(log_magnitude.to(dtype)).clamp(max=MAX_MAGNITUDE)
            phase = phase.to(dtype)
            spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
            length = (spectrum.shape[-1] - 1) * self.stft_hop
            return torch.istft(spectrum, self.n_fft, hop_length=self.stft_hop, win_length=self.n_fft,
                               window=self.window.to(dtype), center=True, length=length)

    def analyse(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wave (B, N * stft_hop) -> (log_magnitude, phase), each (B, n_fft // 2 + 1, N + 1); `synthesize` inverts it."""
        spectrum = torch.stft(wave.float(), self.n_fft, hop_length=self.stft_hop, win_length=self.n_fft,
                              window=self.window.float(), center=True, return_complex=True)
        return torch.log(spectrum.abs().clamp(min=LOG_FLOOR)), torch.angle(spectrum)


class VocosGenerator(nn.Module):
    """Generates audio from unit indices through STFT frames; index `num_units` is padding and embeds to zeros.

    Args:
        num_units: the codebook size k; embeddings cover k units plus the padding index.
        hop_samples: output samples per unit.
        embedding_dim: unit embedding width.
        dim: backbone channels.
        intermediate_dim: ConvNeXt bottleneck width.
        num_layers: ConvNeXt blocks, all at the unit rate.
        frames_per_unit: STFT frames per unit r (the STFT hop is hop_samples / r); r > 1 adds a
            transposed convolution after the backbone.
        n_fft: FFT and window size; 0 means 4 * the STFT hop, Vocos's overlap.
        speaker_embedding_dim: width S of the speaker vector for FiLM after every block's norm; 0: none.
    """

    def __init__(self, *, num_units: int, hop_samples: int, embedding_dim: int, dim: int, intermediate_dim: int,
                 num_layers: int, frames_per_unit: int = 1, n_fft: int = 0, speaker_embedding_dim: int = 0):
        super().__init__()
        if num_units < 1:
            raise ValueError(f"num_units must be positive, got {num_units}")
        if frames_per_unit < 1 or hop_samples % frames_per_unit:
            raise ValueError(f"frames_per_unit ({frames_per_unit}) must divide hop_samples ({hop_samples})")
        if min(embedding_dim, dim, intermediate_dim, num_layers) < 1:
            raise ValueError("embedding_dim, dim, intermediate_dim and num_layers must be positive")
        self.num_units = num_units
        self.padding_index = num_units
        self.hop_samples = hop_samples
        self.speaker_embedding_dim = speaker_embedding_dim
        stft_hop = hop_samples // frames_per_unit
        self.embedding = nn.Embedding(num_units + 1, embedding_dim, padding_idx=num_units)
        self.pre_conv = nn.Conv1d(embedding_dim, dim, PRE_CONV_KERNEL, padding=PRE_CONV_KERNEL // 2)
        self.input_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.resblocks = nn.ModuleList(
            ConvNeXtBlock(dim=dim, intermediate_dim=intermediate_dim, layer_scale=1 / num_layers)
            for _ in range(num_layers)
        )
        self.films = None
        if speaker_embedding_dim > 0:
            self.films = nn.ModuleList(SpeakerFiLM(speaker_embedding_dim, dim) for _ in range(num_layers))
        self.upsamples = nn.ModuleList([_upsampler(dim, frames_per_unit)] if frames_per_unit > 1 else [])
        self.output_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = ISTFTHead(dim=dim, n_fft=n_fft or 4 * stft_hop, stft_hop=stft_hop)
        self.apply(_init_weights)

    def forward(self, units: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """units (B, T_units) int64, speaker (B, S) or None -> wave (B, 1, T_units * hop_samples) float32.

        The wave is not squashed into [-1, 1] (no tanh, as in Vocos); it stays near it once trained.
        """
        self._check_speaker(speaker)
        features = self.pre_conv(self.embedding(units).transpose(1, 2))
        features = _channel_norm(self.input_norm, features)
        for index, block in enumerate(self.resblocks):
            film = self.films[index] if self.films is not None else None
            features = block(features, film, speaker)
        for upsample in self.upsamples:
            features = upsample(nn.functional.gelu(features))
        return self.head(_channel_norm(self.output_norm, features)).unsqueeze(1)

    def _check_speaker(self, speaker: torch.Tensor | None) -> None:
        if self.films is None and speaker is not None:
            raise ValueError("this generator has no speaker conditioning (speaker_embedding_dim is 0)")
        if self.films is not None:
            expected = self.speaker_embedding_dim
            if speaker is None or speaker.dim() != 2 or speaker.shape[1] != expected:
                shape = None if speaker is None else tuple(speaker.shape)
                raise ValueError(f"expected a speaker embedding of shape (B, {expected}), got {shape}")

    def influence_span(self) -> tuple[int, int]:
        """First and last output sample that unit t can change, as offsets from sample t * hop_samples.

        A unit reaches its neighbours through the pre-conv and every depthwise kernel; the transposed
        upsampler widens that to its kernel, the kernel-2 head adds a frame, and frame j's window covers
        samples j * stft_hop +- n_fft / 2 (a Hann window is zero at its first sample). Sequence edges,
        where zero padding cuts the span short, are ignored.
        """
        reach = PRE_CONV_KERNEL // 2 + len(self.resblocks) * (DEPTHWISE_KERNEL // 2)
        rate, stft_hop, half = self.hop_samples // self.head.stft_hop, self.head.stft_hop, self.head.n_fft // 2
        if self.upsamples:
            padding = self.upsamples[0].padding[0]
            first_frame, last_frame = -reach * rate - padding, reach * rate - padding + 2 * rate
        else:
            first_frame, last_frame = -reach, reach + 1
        return first_frame * stft_hop - half + 1, last_frame * stft_hop + half - 1

    def receptive_field(self) -> int:
        """How many output samples one unit can change."""
        first, last = self.influence_span()
        return last - first + 1


def _upsampler(dim: int, rate: int) -> nn.ConvTranspose1d:
    # Kernel 2 * rate; padding and output padding chosen so the output is exactly `rate` times longer.
    kernel = 2 * rate
    return nn.ConvTranspose1d(dim, dim, kernel, stride=rate, padding=(kernel - rate + 1) // 2,
                              output_padding=(kernel - rate) % 2)


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal weights and zero biases for every convolution and linear layer, as Vocos starts."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
