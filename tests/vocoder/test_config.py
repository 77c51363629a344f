"""Vocoder config sections: presets are valid and bad shapes are refused naming the key."""

import pytest

from unitvox.config import (
    ConfigError,
    DiscriminatorConfig,
    GeneratorConfig,
    LossWeights,
    MelSpectrogramConfig,
    from_dict,
    generator_preset,
)


@pytest.mark.parametrize("name", ["tiny", "v1"])
def test_presets_are_valid_and_match_the_hop(name):
    config = generator_preset(name)
    config.check("generator")
    assert config.size == name
    product = 1
    for rate in config.upsample_rates:
        product *= rate
    assert product == config.hop_samples == 320


def test_v1_preset_has_hifigan_v1_sizes():
    config = generator_preset("v1")
    assert config.upsample_initial_channels == 512
    assert config.resblock_kernel_sizes == [3, 7, 11]
    assert config.resblock_dilations == [[1, 3, 5]] * 3
    assert config.upsample_rates == [10, 8, 2, 2]


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="size"):
        generator_preset("huge")


def test_bad_upsample_product_names_the_key():
    config = GeneratorConfig(size="custom", upsample_rates=[8, 5, 4, 4], upsample_kernel_sizes=[16, 11, 8, 8])
    with pytest.raises(ConfigError, match=r"^vocoder\.generator\.upsample_rates: product 640"):
        config.check("vocoder.generator")


def test_groups_not_dividing_channels_names_the_key():
    config = GeneratorConfig(size="custom", resblock="grouped", groups=3)
    with pytest.raises(ConfigError, match=r"^generator\.groups: 3 does not divide"):
        config.check("generator")


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"resblock_dilations": [[1, 3]]}, "generator.resblock_dilations"),
        ({"upsample_kernel_sizes": [16, 11, 8]}, "generator.upsample_kernel_sizes"),
        ({"upsample_kernel_sizes": [16, 4, 8, 4]}, r"generator.upsample_kernel_sizes\[1\]"),
        ({"resblock_kernel_sizes": [3, 6]}, r"generator.resblock_kernel_sizes\[1\]"),
        ({"resblock": "transformer"}, "generator.resblock"),
        ({"lora": {"rank": -1}}, "generator.lora.rank"),
    ],
)
def test_other_generator_mistakes_name_the_key(changes, key):
    config = from_dict(GeneratorConfig, changes, "generator")
    with pytest.raises(ConfigError, match=f"^{key}:"):
        config.check("generator")


def test_nested_lists_load_from_plain_data():
    config = from_dict(DiscriminatorConfig, {"resolutions": [[256, 64, 256]], "periods": [2]}, "discriminator")
    config.check("discriminator")
    assert config.resolutions == [[256, 64, 256]]


def test_discriminators_both_off_is_refused():
    with pytest.raises(ConfigError, match=r"^d\.mpd_enabled"):
        DiscriminatorConfig(mpd_enabled=False, mrd_enabled=False).check("d")


def test_bad_resolution_names_its_index():
    with pytest.raises(ConfigError, match=r"^d\.resolutions\[0\]"):
        DiscriminatorConfig(resolutions=[[512, 128, 1024]]).check("d")


def test_loss_weights_default_to_hifigan_and_refuse_negative_values():
    weights = LossWeights()
    weights.check("loss")
    assert weights.weights() == {"mel": 45.0, "adversarial": 1.0, "feature_matching": 2.0, "contrastive": 1.0}
    with pytest.raises(ConfigError, match=r"^loss\.feature_matching"):
        LossWeights(feature_matching=-1.0).check("loss")
    with pytest.raises(ConfigError, match=r"^loss\.mel_spectrogram\.fmax"):
        LossWeights(mel_spectrogram=MelSpectrogramConfig(fmax=12000.0)).check("loss")
