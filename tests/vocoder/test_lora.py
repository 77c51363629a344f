"""LoRA adapters: what trains, and merging without changing outputs."""

import pytest
import torch
from torch import nn

from unitvox.config import GeneratorConfig, LoraConfig
from unitvox.vocoder.generator import UnitGenerator
from unitvox.vocoder.lora import LoraConv, apply_lora, lora_parameters, merge_lora

NUM_UNITS = 20


def _generator(resblock: str = "hifigan") -> UnitGenerator:
    torch.manual_seed(0)
    return UnitGenerator(GeneratorConfig(resblock=resblock), NUM_UNITS)


def _perturb_adapters(model: nn.Module) -> None:
    """Fresh adapters change nothing (up is zero); give them values as training would."""
    with torch.no_grad():
        for parameter in lora_parameters(model):
            parameter.normal_(0.0, 0.05)


def test_only_adapters_train_in_lora_only_mode():
    model = apply_lora(_generator(), LoraConfig(rank=2, targets=["resblocks", "upsamples"]))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    adapters = {id(p) for p in lora_parameters(model)}
    assert trainable == adapters and adapters
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoraConv)]
    assert all(name.startswith(("resblocks.", "upsamples.")) for name in wrapped)
    assert any(name.startswith("upsamples.") for name in wrapped)


def test_fresh_adapters_leave_outputs_unchanged_and_base_can_stay_trainable():
    model = _generator().eval()
    units = torch.randint(0, NUM_UNITS, (1, 4))
    with torch.no_grad():
        before = model(units)
        apply_lora(model, LoraConfig(rank=2, lora_only=False))
        after = model(units)
    torch.testing.assert_close(after, before)
    assert model.pre_conv.parametrizations.weight.original1.requires_grad


def test_rank_zero_changes_nothing():
    model = _generator()
    apply_lora(model, LoraConfig(rank=0))
    assert not any(isinstance(module, LoraConv) for module in model.modules())


def test_unmatched_targets_are_refused():
    with pytest.raises(ValueError, match="no Conv1d"):
        apply_lora(_generator(), LoraConfig(rank=2, targets=["attention"]))


@pytest.mark.parametrize("resblock", ["hifigan", "grouped"])
def test_merge_keeps_outputs_and_removes_wrappers(resblock):
    model = apply_lora(_generator(resblock), LoraConfig(rank=3, alpha=4.0)).eval()
    _perturb_adapters(model)
    units = torch.randint(0, NUM_UNITS, (2, 5))
    with torch.no_grad():
        plain = UnitGenerator(GeneratorConfig(resblock=resblock), NUM_UNITS)
        before = model(units)
        merge_lora(model)
        after = model(units)
    assert not any(isinstance(module, LoraConv) for module in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    # Weight norm is back, so a merged checkpoint loads into a model that never had adapters.
    assert set(model.state_dict()) == set(plain.state_dict())


@pytest.mark.parametrize(
    "base",
    [nn.Conv1d(8, 6, 5, padding=4, dilation=2, groups=2),
     nn.ConvTranspose1d(8, 6, 10, stride=5, padding=3, output_padding=1)],
    ids=["grouped_conv", "transposed_conv"],
)
def test_adapter_output_equals_a_conv_with_its_delta_weight(base):
    torch.manual_seed(0)
    wrapper = LoraConv(base, rank=2, alpha=3.0)
    _perturb_adapters(wrapper)
    features = torch.randn(2, 8, 11)
    merged_weight = base.weight + wrapper.delta_weight()
    with torch.no_grad():
        expected = wrapper(features)
        if isinstance(base, nn.ConvTranspose1d):
            actual = nn.functional.conv_transpose1d(features, merged_weight, base.bias, base.stride, base.padding,
                                                    base.output_padding)
        else:
            actual = nn.functional.conv1d(features, merged_weight, base.bias, base.stride, base.padding,
                                          base.dilation, base.groups)
    assert not torch.allclose(expected, base(features))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
