"""Vocoder losses on inputs whose values are known."""

import math

import pytest
import torch

from unitvox.config import LossWeights, MelSpectrogramConfig
from unitvox.vocoder.discriminators import DiscriminatorOutputs
from unitvox.vocoder.losses import (
    MelSpectrogram,
    MultiScaleMel,
    discriminator_adversarial_loss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    generator_loss,
    mel_loss,
)


@pytest.fixture(scope="module")
def mel() -> MelSpectrogram:
    return MelSpectrogram(MelSpectrogramConfig(n_fft=512, hop=128, win=512, n_mels=40))


def _tone(length: int = 4000) -> torch.Tensor:
    time = torch.arange(length) / 16000
    return (0.5 * torch.sin(2 * math.pi * 440 * time)).view(1, 1, -1)


def test_mel_spectrogram_shape_and_floor(mel):
    spectrogram = mel(torch.zeros(2, 1, 4000))
    assert spectrogram.shape == (2, 40, 4000 // 128 + 1)
    torch.testing.assert_close(spectrogram, torch.full_like(spectrogram, math.log(1e-5)))


def test_mel_loss_is_zero_for_identical_audio_and_positive_against_silence(mel):
    tone = _tone()
    assert mel_loss(mel, tone, tone.clone()).item() == 0.0
    assert mel_loss(mel, tone, torch.zeros_like(tone)).item() > 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        mel_loss(mel, tone, tone[..., :-1])


def test_multi_scale_mel_loss_is_the_mean_over_its_scales():
    config = MelSpectrogramConfig(n_fft=512, hop=128, win=512, n_mels=40, scales=[[64, 8], [256, 32]])
    scales = MultiScaleMel(config)
    assert [(each.config.n_fft, each.config.hop, each.config.n_mels) for each in scales.spectrograms] == [
        (512, 128, 40), (64, 16, 8), (256, 64, 32)]
    tone, noise = _tone(), 0.1 * torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(0))
    expected = sum(mel_loss(each, tone, noise) for each in scales.spectrograms) / 3
    torch.testing.assert_close(mel_loss(scales, tone, noise), expected)
    assert mel_loss(scales, tone, tone.clone()).item() == 0.0


@pytest.mark.parametrize("scales", [[[64]], [[64, 0]], [[8, 1]], [[64, 32]], [["64", 8]]])
def test_a_bad_scale_is_refused_naming_it(scales):
    from unitvox.config import ConfigError

    with pytest.raises(ConfigError, match=r"scales\[0\]"):
        MelSpectrogramConfig(scales=scales).check("train.lambdas.mel_spectrogram")


def test_least_squares_losses_on_constants():
    real = [torch.full((2, 3), 0.5), torch.full((2, 5), 1.0)]
    fake = [torch.full((2, 3), 0.25), torch.full((2, 5), -1.0)]
    # (1 - 0.5)^2 + 0.25^2 + (1 - 1)^2 + (-1)^2
    assert discriminator_adversarial_loss(real, fake).item() == pytest.approx(0.25 + 0.0625 + 0.0 + 1.0)
    # (1 - 0.25)^2 + (1 + 1)^2
    assert generator_adversarial_loss(fake).item() == pytest.approx(0.5625 + 4.0)


def test_feature_matching_sums_layer_means():
    real = [[torch.zeros(2, 4), torch.ones(2, 3)], [torch.full((1, 2), 2.0)]]
    fake = [[torch.full((2, 4), 0.5), torch.ones(2, 3)], [torch.full((1, 2), -1.0)]]
    assert feature_matching_loss(real, fake).item() == pytest.approx(0.5 + 0.0 + 3.0)


def _outputs(fake_value: float, real_feature: float, fake_feature: float) -> DiscriminatorOutputs:
    return DiscriminatorOutputs(
        real_logits=[torch.ones(2, 4)],
        fake_logits=[torch.full((2, 4), fake_value)],
        real_features=[[torch.full((2, 3), real_feature)]],
        fake_features=[[torch.full((2, 3), fake_feature)]],
    )


def test_generator_total_is_the_weighted_sum_of_named_terms(mel):
    weights = LossWeights(mel=3.0, adversarial=0.5, feature_matching=7.0)
    real, fake = _tone(), 0.5 * _tone()
    outputs = {"mpd": _outputs(0.0, 1.0, 0.0), "mrd": _outputs(0.5, 2.0, 1.5)}
    total, metrics = generator_loss(real, fake, outputs, weights, mel)
    expected_mel = mel_loss(mel, real, fake).item()
    adversarial = 1.0 + 0.25
    matching = 1.0 + 0.5
    assert metrics["loss/mel"] == pytest.approx(expected_mel)
    assert metrics["loss/adv_gen"] == pytest.approx(adversarial)
    assert metrics["loss/feature_matching"] == pytest.approx(matching)
    assert metrics["adv_gen/mrd"] == pytest.approx(0.25)
    assert metrics["feature_matching/mpd"] == pytest.approx(1.0)
    assert total.item() == pytest.approx(3.0 * expected_mel + 0.5 * adversarial + 7.0 * matching, rel=1e-6)
    assert metrics["loss/gen_total"] == pytest.approx(total.item())


def test_generator_loss_without_discriminators_is_the_weighted_mel_loss(mel):
    real, fake = _tone(), torch.zeros(1, 1, 4000, requires_grad=True)
    total, metrics = generator_loss(real, fake, None, LossWeights(mel=2.0), mel)
    assert set(metrics) == {"loss/mel", "loss/gen_total"}
    assert total.item() == pytest.approx(2.0 * metrics["loss/mel"])
    total.backward()
    assert fake.grad is not None


def test_discriminator_loss_and_its_metrics():
    total, metrics = discriminator_loss({"mpd": _outputs(0.5, 0.0, 0.0), "mrd": _outputs(-1.0, 0.0, 0.0)})
    assert metrics["disc/mpd"] == pytest.approx(0.25)
    assert metrics["disc/mrd"] == pytest.approx(1.0)
    assert total.item() == pytest.approx(1.25) and metrics["loss/disc"] == pytest.approx(1.25)
    assert metrics["disc_real/mpd"] == pytest.approx(1.0) and metrics["disc_fake/mrd"] == pytest.approx(-1.0)
