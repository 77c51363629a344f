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
