"""The Vocos-style generator: output length, the iSTFT head, speaker FiLM, LoRA, receptive field, bf16."""

import pytest
import torch

from unitvox.config import LoraConfig
from unitvox.vocoder.lora import apply_lora, lora_parameters, merge_lora
from unitvox.vocoder.vocos import ISTFTHead, VocosGenerator

NUM_UNITS = 50
HOP = 320
SMALL = dict(num_units=NUM_UNITS, hop_samples=HOP, embedding_dim=16, dim=32, intermediate_dim=48, num_layers=2)


def _generator(**changes) -> VocosGenerator:
    torch.manual_seed(0)
    return VocosGenerator(**{**SMALL, **changes})


@pytest.mark.parametrize("frames_per_unit", [1, 2, 4, 5])
@pytest.mark.parametrize("frames", [1, 2, 7, 50])
def test_output_is_exactly_one_hop_per_unit(frames, frames_per_unit):
    generator = _generator(frames_per_unit=frames_per_unit).eval()
    with torch.no_grad():
        wave = generator(torch.randint(0, NUM_UNITS + 1, (3, frames)))
    assert wave.shape == (3, 1, frames * HOP)
    assert wave.dtype == torch.float32 and torch.isfinite(wave).all()


def test_head_inverts_the_stft_of_real_audio():
    """What the head predicts (log-magnitude and phase of centred frames) makes the wave it came from."""
    head = ISTFTHead(dim=8, n_fft=640, stft_hop=160)
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(40 * 160) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * time) + 0.05 * torch.randn(2, time.numel(), generator=generator)
    log_magnitude, phase = head.analyse(wave)
    assert log_magnitude.shape == phase.shape == (2, 321, 41)  # one frame per hop, plus one at the end
    torch.testing.assert_close(head.synthesize(log_magnitude, phase), wave, atol=1e-4, rtol=0)


def test_head_refuses_windows_that_do_not_overlap():
    with pytest.raises(ValueError, match="at least twice"):
        ISTFTHead(dim=8, n_fft=160, stft_hop=160)


def test_padding_index_embeds_to_zero():
    generator = _generator()
    assert torch.count_nonzero(generator.embedding.weight[NUM_UNITS]) == 0
    generator(torch.full((1, 4), NUM_UNITS)).sum().backward()
    assert torch.count_nonzero(generator.embedding.weight.grad[NUM_UNITS]) == 0


def test_film_changes_the_output_with_the_speaker():
    generator = _generator(speaker_embedding_dim=8).eval()
    assert len(generator.films) == len(generator.resblocks) == 2
    units = torch.randint(0, NUM_UNITS, (2, 5))
    with torch.no_grad():
        first = generator(units, torch.randn(2, 8))
        second = generator(units, torch.randn(2, 8))
    assert first.shape == (2, 1, 5 * HOP)
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="speaker embedding of shape"):
        generator(units)
    with pytest.raises(ValueError, match="no speaker conditioning"):
        _generator()(units, torch.randn(2, 8))


def test_lora_adapters_attach_to_the_backbone_and_train_alone():
    model = apply_lora(_generator(frames_per_unit=2), LoraConfig(rank=2))  # default targets
    adapters = {id(p) for p in lora_parameters(model)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert adapters and trainable == adapters
    wrapped = {name.split(".")[0] for name, module in model.named_modules() if hasattr(module, "delta_weight")}
    assert wrapped == {"resblocks", "upsamples"}
    units = torch.randint(0, NUM_UNITS, (1, 6))
    model(units).square().mean().backward()
    assert all(p.grad is not None for p in lora_parameters(model))
    assert all(p.grad is None for p in model.parameters() if id(p) not in adapters)


def test_merged_adapters_keep_outputs_and_plain_names():
    plain_names = set(_generator().state_dict())
    model = apply_lora(_generator(), LoraConfig(rank=2)).eval()
    with torch.no_grad():
        for parameter in lora_parameters(model):
            parameter.normal_(0.0, 0.05)
        units = torch.randint(0, NUM_UNITS, (1, 6))
        before = model(units)
        merge_lora(model)
        after = model(units)
    assert set(model.state_dict()) == plain_names
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("frames_per_unit", [1, 2])
def test_receptive_field_matches_the_samples_one_unit_moves(frames_per_unit):
    """The derivative of every output sample along a change of one unit's embedding, by a Jacobian-vector product."""
    generator = _generator(frames_per_unit=frames_per_unit).double().eval()
    units = torch.randint(0, NUM_UNITS, (1, 40))
    position = 20
    embedded = generator.embedding(units).detach()
    tangent = torch.zeros_like(embedded)
    tangent[0, position] = torch.randn(embedded.shape[-1], dtype=torch.double)
    hooked = lambda values: generator_from_embeddings(generator, values)  # noqa: E731
    _, change = torch.autograd.functional.jvp(hooked, embedded, tangent)
    moved = torch.nonzero(change[0, 0]).flatten()
    first, last = generator.influence_span()
    assert moved.min().item() == position * HOP + first
    assert moved.max().item() == position * HOP + last
    assert generator.receptive_field() == last - first + 1 > HOP


def generator_from_embeddings(generator: VocosGenerator, embedded: torch.Tensor) -> torch.Tensor:
    """The generator's forward pass from unit embeddings (B, T, E) instead of unit indices."""
    hook = generator.embedding.register_forward_hook(lambda module, args, out: embedded)
    try:
        return generator(torch.zeros(embedded.shape[:2], dtype=torch.long))
    finally:
        hook.remove()


def test_bf16_autocast_keeps_the_inverse_fft_in_float32():
    generator = _generator(frames_per_unit=2).eval()
    units = torch.randint(0, NUM_UNITS, (2, 9))
    with torch.no_grad():
        reference = generator(units)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            wave = generator(units)
    assert wave.dtype == torch.float32 and wave.shape == reference.shape
    assert torch.isfinite(wave).all()
    # bf16 keeps about 3 significant digits through the backbone: close, not equal.
    assert (wave - reference).abs().max() < 0.1 * reference.abs().max() + 1e-3
