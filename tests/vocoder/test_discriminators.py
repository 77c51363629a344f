"""Multi-period and multi-resolution discriminators and the container running them."""

import pytest
import torch

from unitvox.config import ConfigError, DiscriminatorConfig
from unitvox.vocoder.discriminators import (
    Discriminators,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)

LENGTH = 2000  # not a multiple of 3, 7 or 11: exercises the reflect padding
RESOLUTIONS = [[256, 64, 256], [128, 32, 96]]


def test_period_discriminator_outputs_one_entry_per_period():
    torch.manual_seed(0)
    periods = [2, 3, 7]
    logits, features = MultiPeriodDiscriminator(periods, channels=2)(torch.randn(2, 1, LENGTH))
    assert len(logits) == len(features) == len(periods)
    for period, item, maps in zip(periods, logits, features):
        assert item.dim() == 2 and item.shape[0] == 2
        assert len(maps) == 6  # five conv layers and the output layer
        assert all(m.shape[0] == 2 and m.shape[-1] == period for m in maps)
        assert maps[-1].shape[1] == 1 and item.shape[1] == maps[-1][0].numel()


def test_resolution_discriminator_outputs_one_entry_per_resolution():
    torch.manual_seed(0)
    logits, features = MultiResolutionDiscriminator(RESOLUTIONS, channels=2)(torch.randn(2, 1, LENGTH))
    assert len(logits) == len(features) == len(RESOLUTIONS)
    for (n_fft, hop, _), item, maps in zip(RESOLUTIONS, logits, features):
        frames = LENGTH // hop + 1
        assert maps[0].shape == (2, 2, frames, n_fft // 2 + 1)
        assert maps[-1].shape == (2, 1, frames, (n_fft // 2 + 1 + 7) // 8)
        assert item.shape == (2, maps[-1][0].numel())


@pytest.mark.parametrize("mpd, mrd, names", [(True, True, ["mpd", "mrd"]), (True, False, ["mpd"]),
                                             (False, True, ["mrd"])])
def test_container_runs_the_enabled_discriminators_on_real_and_fake(mpd, mrd, names):
    torch.manual_seed(0)
    config = DiscriminatorConfig(mpd_enabled=mpd, mrd_enabled=mrd, periods=[2, 5], resolutions=RESOLUTIONS,
                                 channels=2)
    discriminators = Discriminators(config)
    real, fake = torch.randn(3, 1, LENGTH), torch.randn(3, 1, LENGTH)
    outputs = discriminators(real, fake)
    assert list(outputs) == names
    for name, output in outputs.items():
        alone_logits, alone_features = discriminators.discriminators[name](fake)
        assert len(output.real_logits) == len(output.fake_logits) == len(alone_logits)
        # Running real and fake together must equal running fake alone.
        for together, alone in zip(output.fake_logits, alone_logits):
            torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
        assert all(m.shape[0] == 3 for maps in output.real_features for m in maps)


def test_both_switched_off_is_a_config_error():
    with pytest.raises(ConfigError, match="mpd_enabled"):
        Discriminators(DiscriminatorConfig(mpd_enabled=False, mrd_enabled=False))


def _flatten(outputs):
    return [tensor for name in sorted(outputs) for part in (outputs[name].real_logits, outputs[name].fake_logits)
            for tensor in part] + [
        tensor for name in sorted(outputs) for part in (outputs[name].real_features, outputs[name].fake_features)
        for maps in part for tensor in maps]


def _generator_objective(outputs):
    """An adversarial and a feature-matching term, as the generator's loss has."""
    total = 0
    for output in outputs.values():
        total = total + sum(((1 - logits) ** 2).mean() for logits in output.fake_logits)
        total = total + sum((real.detach() - fake).abs().mean() for real_maps, fake_maps in
                            zip(output.real_features, output.fake_features) for real, fake in zip(real_maps, fake_maps))
    return total


def test_judging_generated_audio_gives_the_same_outputs_and_gradient_without_weight_gradients():
    torch.manual_seed(0)
    discriminators = Discriminators(DiscriminatorConfig(periods=[2, 3], resolutions=RESOLUTIONS, channels=2))
    real = torch.randn(2, 1, LENGTH)
    fake = torch.randn(2, 1, LENGTH, requires_grad=True)

    reference = discriminators(real, fake)
    _generator_objective(reference).backward()
    expected_gradient = fake.grad.clone()
    fake.grad = None
    discriminators.zero_grad(set_to_none=True)

    judged = discriminators.judge_generated(real, fake)
    for mine, theirs in zip(_flatten(judged), _flatten(reference), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert all(not tensor.requires_grad for name in judged for maps in judged[name].real_features for tensor in maps)
    _generator_objective(judged).backward()
    torch.testing.assert_close(fake.grad, expected_gradient, rtol=1e-4, atol=1e-7)
    # The weights took no gradient and are trainable again for the discriminator's own step.
    assert all(parameter.grad is None and parameter.requires_grad for parameter in discriminators.parameters())


def test_judging_audio_of_different_shapes_is_refused():
    discriminators = Discriminators(DiscriminatorConfig(periods=[2], resolutions=RESOLUTIONS, channels=2))
    with pytest.raises(ValueError, match="differ in shape"):
        discriminators.judge_generated(torch.randn(1, 1, LENGTH), torch.randn(1, 1, LENGTH - 1))
