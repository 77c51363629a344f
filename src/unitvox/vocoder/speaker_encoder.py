"""Speaker conditioning: encoders that embed reference audio, and the contrastive speaker loss.

Encoders are differentiable from the waveform (their front-end is torch.stft), so the contrastive
loss on generated audio trains the generator to carry the reference speaker's voice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from unitvox.config import ConfigError, SpeakerConfig
from unitvox.registry import Requirement, registrar


class SpeakerEncoder(Protocol):
    """Embeds speech: audio (B, T) at 16 kHz -> unit-norm embeddings (B, D)."""

    embedding_dim: int

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


SPEAKER_ENCODERS: dict[str, Callable[[SpeakerConfig], nn.Module]] = {}


register_speaker_encoder = registrar(SPEAKER_ENCODERS)  # a builder takes the SpeakerConfig


def build_speaker_encoder(config: SpeakerConfig) -> nn.Module:
    if config.encoder not in SPEAKER_ENCODERS:
        raise ConfigError(f"train.speaker.encoder: unknown {config.encoder!r}; choose one of {sorted(SPEAKER_ENCODERS)}")
    encoder = SPEAKER_ENCODERS[config.encoder](config)
    if config.freeze_encoder:
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
    return encoder


class LogMel(nn.Module):
    """Log mel spectrogram in torch: audio (B, T) -> (B, n_mels, frames)."""

    def __init__(self, n_mels: int, n_fft: int = 400, hop: int = 160, sample_rate: int = 16000):
        super().__init__()
        import librosa

        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        return torch.log(self.filters @ spectrum + 1e-6)


@register_speaker_encoder("learned")
class LearnedSpeakerEncoder(nn.Module):
    """A small convolutional encoder over log-mels with mean and standard-deviation pooling."""

    def __init__(self, config: SpeakerConfig, channels: int = 128, n_mels: int = 40):
        super().__init__()
        self.embedding_dim = config.embedding_dim
        self.front = LogMel(n_mels)
        layers, width = [], n_mels
        for dilation in (1, 2, 3):
            layers += [nn.Conv1d(width, channels, 5, dilation=dilation, padding=2 * dilation), nn.ReLU(),
                       nn.BatchNorm1d(channels)]
            width = channels
        self.convs = nn.Sequential(*layers)
        self.project = nn.Linear(2 * channels, config.embedding_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = self.front(audio)
        hidden = self.convs(mel - mel.mean(-1, keepdim=True))
        pooled = torch.cat([hidden.mean(-1), hidden.std(-1)], dim=1)
        return F.normalize(self.project(pooled), dim=-1)


_RESEMBLYZER_INSTALL = "pip install --no-deps resemblyzer webrtcvad-wheels"


@register_speaker_encoder("resemblyzer")
class ResemblyzerSpeakerEncoder(nn.Module):
    """Resemblyzer's pretrained voice encoder (shipped in its wheel) with a torch mel front-end and a projection.

    Frozen with `freeze_encoder`, else fine-tuned; the projection to `embedding_dim` always trains.
    """

    requires = (Requirement("resemblyzer", _RESEMBLYZER_INSTALL), Requirement("webrtcvad", _RESEMBLYZER_INSTALL))

    def __init__(self, config: SpeakerConfig):
        super().__init__()
        try:
            from resemblyzer import VoiceEncoder, hparams
        except ImportError:
            raise ConfigError(
                "train.speaker.encoder: resemblyzer is not installed; run "
                "`pip install --no-deps resemblyzer webrtcvad-wheels` or use encoder: learned"
            ) from None
        self.voice = VoiceEncoder(device="cpu", verbose=False)
        self.front = LogMel(hparams.mel_n_channels, n_fft=int(16000 * hparams.mel_window_length / 1000),
                            hop=int(16000 * hparams.mel_window_step / 1000))
        self.embedding_dim = config.embedding_dim
        self.project = nn.Linear(256, config.embedding_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = self.front(audio).exp().transpose(1, 2)  # resemblyzer's LSTM reads linear mel energies
        _, (hidden, _) = self.voice.lstm(mel)
        embedding = F.relu(self.voice.linear(hidden[-1]))
        return F.normalize(self.project(embedding), dim=-1)


def contrastive_speaker_loss(generated: torch.Tensor, references: torch.Tensor, speakers: torch.Tensor,
                             negatives: int, hard: bool, temperature: float,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """InfoNCE pulling each generated clip's embedding to its own speaker's reference, away from others'.

    Args:
        generated: embeddings of generated audio (B, D), unit norm.
        references: embeddings of the conditioning references (B, D), unit norm.
        speakers: speaker index per item (B,).
        negatives: other-speaker references per item.
        hard: take the most similar other-speaker references (hard negatives) rather than random ones.

    Returns:
        The mean loss over items that have at least one other-speaker reference in the batch; zero
        when none has (a batch of one speaker teaches nothing about speakers).
    """
    similarity = generated @ references.T / temperature  # (B, B)
    other = speakers[None, :] != speakers[:, None]
    usable = other.any(dim=1)
    if not usable.any():
        return generated.sum() * 0.0
    count = min(negatives, int(other.sum(dim=1)[usable].min()))
    if hard:
        scores = similarity.detach().masked_fill(~other, float("-inf"))
    else:
        noise = torch.rand(similarity.shape, generator=generator, device=similarity.device)
        scores = noise.masked_fill(~other, float("-inf"))
    chosen = scores.topk(count, dim=1).indices  # (B, count)
    positive = similarity.diagonal().unsqueeze(1)
    logits = torch.cat([positive, similarity.gather(1, chosen)], dim=1)[usable]
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
