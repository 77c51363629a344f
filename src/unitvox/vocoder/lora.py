"""Low-rank adapters (LoRA) for Conv1d, ConvTranspose1d and Linear layers, and merging them back.

A wrapped layer computes base(x) + (alpha / rank) * up(down(x)), two small convolutions whose
composition is a rank-`rank` update of the base weight. The update is added to the layer's output,
not to its weight, so it composes with weight norm on the base: the base keeps its g * v / |v|
parametrisation untouched and only the adapters train.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from unitvox.config import LoraConfig


class LoraConv(nn.Module):
    """A Conv1d or ConvTranspose1d plus a trainable low-rank update of its weight.

    For a grouped Conv1d each group gets its own rank-`rank` update, so the update has the same
    block structure as the weight it changes. `up` starts at zero: a fresh wrapper changes nothing.
    """

    def __init__(self, base: nn.Conv1d | nn.ConvTranspose1d, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        if isinstance(base, nn.ConvTranspose1d):
            if base.groups != 1:
                raise ValueError("LoRA on a grouped ConvTranspose1d is not supported")
            self.down = nn.Conv1d(base.in_channels, rank, 1, bias=False)
            self.up = nn.ConvTranspose1d(rank, base.out_channels, base.kernel_size, stride=base.stride,
                                         padding=base.padding, output_padding=base.output_padding,
                                         dilation=base.dilation, bias=False)
        else:
            groups = base.groups
            self.down = nn.Conv1d(base.in_channels, rank * groups, base.kernel_size, stride=base.stride,
                                  padding=base.padding, dilation=base.dilation, groups=groups, bias=False)
            self.up = nn.Conv1d(rank * groups, base.out_channels, 1, groups=groups, bias=False)
        nn.init.zeros_(self.up.weight)
        reference = base.weight
        self.down.to(device=reference.device, dtype=reference.dtype)
        self.up.to(device=reference.device, dtype=reference.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, C_in, T) -> (B, C_out, T'), as the base layer."""
        return self.base(features) + self.scale * self.up(self.down(features))

    def delta_weight(self) -> torch.Tensor:
        """The scaled update as a weight of the base layer's shape, so base + delta gives the same outputs."""
        if isinstance(self.base, nn.ConvTranspose1d):
            # Weight (C_in, C_out, K): the pointwise `down` comes first, then the transposed `up`.
            delta = torch.einsum("ri,rok->iok", self.down.weight[:, :, 0], self.up.weight)
        else:
            # Weight (C_out, C_in / G, K): per group, up (C_out / G, r) times down (r, C_in / G, K).
            groups = self.base.groups
            ups = self.up.weight[:, :, 0].chunk(groups, dim=0)
            downs = self.down.weight.chunk(groups, dim=0)
            delta = torch.cat([torch.einsum("or,rik->oik", up, down) for up, down in zip(ups, downs)])
        return self.scale * delta


class LoraLinear(nn.Module):
    """A Linear layer plus a trainable rank-`rank` update: base(x) + scale * up(down(x)); `up` starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.up.weight)
        self.down.to(device=base.weight.device, dtype=base.weight.dtype)
        self.up.to(device=base.weight.device, dtype=base.weight.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., C_in) -> (..., C_out), as the base layer."""
        return self.base(features) + self.scale * self.up(self.down(features))

    def delta_weight(self) -> torch.Tensor:
        """The scaled update as a (C_out, C_in) weight."""
        return self.scale * self.up.weight @ self.down.weight


ADAPTED = (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)
WRAPPERS = (LoraConv, LoraLinear)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(pattern in name.split(".") or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def apply_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Wrap every Conv1d / ConvTranspose1d / Linear whose name matches `config.targets`, in place.

    With `config.lora_only` every other parameter is frozen, so an optimizer over the trainable
    parameters trains the adapters alone. Rank 0 returns the model unchanged.

    Raises:
        ValueError: the model already has adapters, or no layer matches the targets.
    """
    if config.rank == 0:
        return model
    if any(isinstance(module, WRAPPERS) for module in model.modules()):
        raise ValueError("the model already has LoRA adapters; merge them before adding new ones")
    targets = [name for name, module in model.named_modules()
               if isinstance(module, ADAPTED) and _matches(name, config.targets)]
    if not targets:
        raise ValueError(f"no Conv1d, ConvTranspose1d or Linear layer matches the LoRA targets {config.targets}")
    if config.lora_only:
        model.requires_grad_(False)
    for name in targets:
        parent, child = _parent_of(model, name)
        base = getattr(parent, child)
        wrapper = LoraLinear if isinstance(base, nn.Linear) else LoraConv
        setattr(parent, child, wrapper(base, config.rank, config.alpha))
    return model


def lora_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The adapters' parameters (down and up of every wrapper)."""
    for module in model.modules():
        if isinstance(module, WRAPPERS):
            yield from module.down.parameters()
            yield from module.up.parameters()


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the base layer back in its place, in place.

    A weight-normalised base is folded to a plain weight, updated, and normalised again, so the
    merged model has the same parameter names as one that never had adapters and the same outputs.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, WRAPPERS)]
    for name in names:
        parent, child = _parent_of(model, name)
        wrapper: LoraConv | LoraLinear = getattr(parent, child)
        base = wrapper.base
        norm_dim = _weight_norm_dim(base)
        if norm_dim is not None:
            parametrize.remove_parametrizations(base, "weight", leave_parametrized=True)
        with torch.no_grad():
            base.weight += wrapper.delta_weight().to(base.weight.dtype)
        if norm_dim is not None:
            base = weight_norm(base, dim=norm_dim)
        setattr(parent, child, base)
    return model


def _weight_norm_dim(module: nn.Module) -> int | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next(p.dim for p in module.parametrizations.weight if hasattr(p, "dim"))


def _parent_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child
