"""The unit generator: shapes, padding, receptive field, residual blocks and FiLM."""

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

from unitvox.config import GeneratorConfig, generator_preset
from unitvox.vocoder.blocks import RESIDUAL_BLOCKS, GroupedResidualBlock
from unitvox.vocoder.generator import UnitGenerator, remove_weight_norm

NUM_UNITS = 100


@pytest.fixture(scope="module")
def tiny() -> UnitGenerator:
    torch.manual_seed(0)
    return UnitGenerator(generator_preset("tiny"), NUM_UNITS).eval()


def test_tiny_output_is_one_hop_per_unit_and_bounded(tiny):
    units = torch.randint(0, NUM_UNITS + 1, (3, 7))
    with torch.no_grad():
        wave = tiny(units)
    assert wave.shape == (3, 1, 7 * 320)
    assert wave.abs().max() <= 1.0


def test_v1_output_shape():
    torch.manual_seed(0)
    generator = UnitGenerator(generator_preset("v1"), NUM_UNITS).eval()
    with torch.no_grad():
        wave = generator(torch.randint(0, NUM_UNITS, (1, 2)))
    assert wave.shape == (1, 1, 2 * 320)


def test_padding_index_embeds_to_zero_and_gets_no_gradient(tiny):
    assert tiny.padding_index == NUM_UNITS
    assert tiny.embedding.num_embeddings == NUM_UNITS + 1
    assert torch.count_nonzero(tiny.embedding.weight[NUM_UNITS]) == 0
    generator = UnitGenerator(generator_preset("tiny"), NUM_UNITS)
    generator(torch.full((1, 4), NUM_UNITS)).sum().backward()
    assert torch.count_nonzero(generator.embedding.weight.grad[NUM_UNITS]) == 0


# torch loads its forward-mode decompositions through torch.jit.script, which now warns.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("resblock", sorted(RESIDUAL_BLOCKS))
def test_receptive_field_matches_the_samples_one_unit_moves(resblock):
    """Forward-mode derivative of the output along a change of one unit's embedding.

    Comparing two forward passes would miss the span's edges: there the change is a product of
    many small weights (around 1e-37), far below the rounding of an output near 0.1.
    """
    torch.manual_seed(1)
    generator = UnitGenerator(GeneratorConfig(resblock=resblock), NUM_UNITS).double().eval()
    units = torch.randint(0, NUM_UNITS, (1, 40))
    position = 20
    tangent = torch.zeros(1, 40, generator.config.embedding_dim, dtype=torch.double)
    tangent[0, position] = torch.randn(generator.config.embedding_dim, dtype=torch.double)
    with forward_ad.dual_level():
        hook = generator.embedding.register_forward_hook(lambda module, args, out: forward_ad.make_dual(out, tangent))
        try:
            moved = torch.nonzero(forward_ad.unpack_dual(generator(units)).tangent[0, 0]).flatten()
        finally:
            hook.remove()
    first, last = generator.influence_span()
    assert moved.min().item() == position * 320 + first
    assert moved.max().item() == position * 320 + last
    assert generator.receptive_field() == last - first + 1 > 320


def test_grouped_block_has_grouped_conv1_and_conv2():
    generator = UnitGenerator(GeneratorConfig(resblock="grouped", groups=4), NUM_UNITS)
    blocks = [block for block in generator.modules() if isinstance(block, GroupedResidualBlock)]
    assert len(blocks) == 4 * 2  # stages x kernels
    for block in blocks:
        assert block.conv1.groups == 4 and block.conv2.groups == 4
        channels = block.conv1.in_channels
        assert block.conv1.weight.shape[1] == channels // 4
    dense = UnitGenerator(GeneratorConfig(resblock="hifigan"), NUM_UNITS)
    count = lambda model: sum(p.numel() for p in model.resblocks.parameters())  # noqa: E731
    assert count(generator) < count(dense)


def test_film_changes_the_output_with_the_speaker():
    torch.manual_seed(0)
    generator = UnitGenerator(GeneratorConfig(speaker_embedding_dim=8), NUM_UNITS).eval()
    assert generator.films is not None and len(generator.films) == 4
    units = torch.randint(0, NUM_UNITS, (2, 5))
    with torch.no_grad():
        first = generator(units, torch.randn(2, 8))
        second = generator(units, torch.randn(2, 8))
    assert first.shape == (2, 1, 5 * 320)
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="speaker embedding of shape"):
        generator(units)


def test_no_film_without_a_speaker_dimension(tiny):
    assert tiny.films is None
    assert not any("film" in name for name, _ in tiny.named_modules())
    with pytest.raises(ValueError, match="no speaker conditioning"):
        tiny(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 8))


def test_remove_weight_norm_keeps_outputs():
    torch.manual_seed(0)
    generator = UnitGenerator(generator_preset("tiny"), NUM_UNITS).eval()
    units = torch.randint(0, NUM_UNITS, (1, 6))
    with torch.no_grad():
        before = generator(units)
        after = remove_weight_norm(generator)(units)
    assert not any("parametrizations" in name for name, _ in generator.named_parameters())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
