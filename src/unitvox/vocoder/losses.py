"""Vocoder losses: log-mel L1, least-squares GAN and feature matching, weighted by `LossWeights`.

Each loss function returns (total, metrics); metrics is a flat dict of floats with namespaced
keys ("loss/mel", "adv_gen/mpd", ...), ready for a metrics sink.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from unitvox.config import TERM_METRICS, LossWeights, MelSpectrogramConfig
from unitvox.vocoder.discriminators import DiscriminatorOutputs, FeatureMaps, Logits

# log() of silence would be -inf; HiFi-GAN clamps magnitudes at this floor.
LOG_FLOOR = 1e-5



def _value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


class MelSpectrogram(nn.Module):
    """Log-mel magnitude spectrogram with a librosa (Slaney) mel filter bank."""

    def __init__(self, config: MelSpectrogramConfig):
        super().__init__()
        import librosa

        self.config = config
        filters = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                      fmin=config.fmin, fmax=config.fmax)
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.win), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, T) or (B, T) -> log mel (B, n_mels, frames)."""
        if audio.dim() == 3:
            audio = audio.squeeze(1)
        spectrum = torch.stft(audio, self.config.n_fft, self.config.hop, self.config.win, window=self.window,
                              center=True, return_complex=True)
        mel = torch.matmul(self.filters, spectrum.abs())
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))


class MultiScaleMel(nn.Module):
    """The configured log-mel spectrogram and one more per `scales` entry (window n_fft, hop n_fft / 4)."""

    def __init__(self, config: MelSpectrogramConfig):
        super().__init__()
        self.spectrograms = nn.ModuleList([MelSpectrogram(config)] + [
            MelSpectrogram(dataclasses.replace(config, n_fft=n_fft, win=n_fft, hop=n_fft // 4, n_mels=n_mels, scales=[]))
            for n_fft, n_mels in config.scales
        ])


def mel_loss(mel: MelSpectrogram | MultiScaleMel, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms (averaged over the scales of a `MultiScaleMel`);
    real and fake (B, 1, T) of the same shape."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} audio differ in shape")
    spectrograms = mel.spectrograms if isinstance(mel, MultiScaleMel) else [mel]
    return sum(nn.functional.l1_loss(each(fake), each(real)) for each in spectrograms) / len(spectrograms)


def discriminator_adversarial_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Least-squares GAN: sum over sub-discriminators of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    return sum(torch.mean((1 - real) ** 2) + torch.mean(fake**2) for real, fake in zip(real_logits, fake_logits))


def generator_adversarial_loss(fake_logits: Logits) -> torch.Tensor:
    """Least-squares GAN: sum over sub-discriminators of mean((1 - D(fake))^2)."""
    return sum(torch.mean((1 - fake) ** 2) for fake in fake_logits)


def feature_matching_loss(real_features: FeatureMaps, fake_features: FeatureMaps) -> torch.Tensor:
    """Sum over sub-discriminators and layers of mean |real - fake|; real maps are targets (detached)."""
    return sum(
        torch.mean(torch.abs(real.detach() - fake))
        for real_maps, fake_maps in zip(real_features, fake_features)
        for real, fake in zip(real_maps, fake_maps)
    )


def generator_terms(
    real: torch.Tensor,
    fake: torch.Tensor,
    outputs: Mapping[str, DiscriminatorOutputs] | None,
    mel: MelSpectrogram | MultiScaleMel,
    extra_terms: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The generator's unweighted loss terms by weight name, and per-discriminator metrics.

    Args:
        real: target audio (B, 1, T).
        fake: generated audio (B, 1, T), attached to the generator's graph.
        outputs: the discriminators run on (real, fake), by name; None trains on the mel loss alone
            (the "no GAN" ablation).
        mel: the spectrogram the mel loss compares.
        extra_terms: further named terms (e.g. "contrastive" from the speaker loss).

    Returns:
        Terms "mel", and with `outputs` "adversarial" and "feature_matching", plus `extra_terms`;
        metrics "adv_gen/<name>" and "feature_matching/<name>" per discriminator.
    """
    terms = {"mel": mel_loss(mel, real, fake)}
    metrics: dict[str, float] = {}
    if outputs is not None:
        adversarial, matching = {}, {}
        for name, output in outputs.items():
            adversarial[name] = generator_adversarial_loss(output.fake_logits)
            matching[name] = feature_matching_loss(output.real_features, output.fake_features)
            metrics[f"adv_gen/{name}"] = _value(adversarial[name])
            metrics[f"feature_matching/{name}"] = _value(matching[name])
        terms["adversarial"] = sum(adversarial.values())
        terms["feature_matching"] = sum(matching.values())
    terms.update(extra_terms or {})
    return terms, metrics


def generator_loss(
    real: torch.Tensor,
    fake: torch.Tensor,
    outputs: Mapping[str, DiscriminatorOutputs] | None,
    weights: LossWeights,
    mel: MelSpectrogram | MultiScaleMel,
    extra_terms: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator's total loss, sum(weight * term) over `generator_terms`, and its metrics.

    Returns:
        The total and metrics "loss/mel", "loss/adv_gen", "loss/feature_matching", "loss/gen_total",
        plus "adv_gen/<name>" and "feature_matching/<name>" per discriminator.
    """
    terms, metrics = generator_terms(real, fake, outputs, mel, extra_terms)
    lambdas = weights.weights()
    total = sum(lambdas[name] * term for name, term in terms.items())
    metrics.update({TERM_METRICS[name]: _value(term) for name, term in terms.items()})
    metrics["loss/gen_total"] = _value(total)
    return total, metrics


def discriminator_loss(outputs: Mapping[str, DiscriminatorOutputs]) -> tuple[torch.Tensor, dict[str, float]]:
    """The discriminators' least-squares loss summed over discriminators, and its metrics.

    `outputs` must come from detached generated audio. Metrics: "loss/disc" and, per discriminator,
    "disc/<name>", "disc_real/<name>" (mean D(real)) and "disc_fake/<name>" (mean D(fake)); the last
    two show which side is winning.
    """
    if not outputs:
        raise ValueError("no discriminator outputs to compute a loss from")
    metrics: dict[str, float] = {}
    losses = []
    for name, output in outputs.items():
        loss = discriminator_adversarial_loss(output.real_logits, output.fake_logits)
        losses.append(loss)
        metrics[f"disc/{name}"] = _value(loss)
        metrics[f"disc_real/{name}"] = _value(torch.stack([logits.mean() for logits in output.real_logits]).mean())
        metrics[f"disc_fake/{name}"] = _value(torch.stack([logits.mean() for logits in output.fake_logits]).mean())
    total = sum(losses)
    metrics["loss/disc"] = _value(total)
    return total, metrics
