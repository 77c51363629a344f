"""The per-step numbers training health is judged on: gradient and parameter norms per network (and
gradient clipping, which measures them), spectral spread, speaker similarity.

The trainer adds these to a step's metrics (and so to the training log); `health.monitor` judges them.
Row keys: `grad_norm/<network>`, `param_norm/<network>`, `mode/spectral_variance_ratio`,
`mode/output_diversity_ratio`, `speaker/similarity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

# Keeps a ratio finite when real audio is silent, and clip_grad_norm_'s guard against a zero norm.
_EPSILON = 1e-6
SPEAKER_ENCODER = "speaker_encoder"


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper, or the module itself."""
    return getattr(module, "module", module)


def networks(generator: nn.Module, discriminators: nn.Module,
             speaker_encoder: nn.Module | None = None) -> dict[str, nn.Module]:
    """The networks health reports on, by name: `generator`, each discriminator (`mpd`, `mrd`), `speaker_encoder`."""
    found = {"generator": unwrap(generator), **dict(unwrap(discriminators).discriminators.items())}
    if speaker_encoder is not None:
        found[SPEAKER_ENCODER] = unwrap(speaker_encoder)
    return found


def _gradient_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor | None:
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def clip_gradients(modules: Mapping[str, nn.Module], limit: float) -> dict[str, float]:
    """Clip the modules' gradients together to norm `limit`, as clip_grad_norm_ does.

    Returns:
        Each module's gradient norm before clipping (modules without gradients are left out).
    """
    norms = {name: _gradient_norm(module.parameters()) for name, module in modules.items()}
    norms = {name: norm for name, norm in norms.items() if norm is not None}
    if not norms:
        return {}
    total = torch.linalg.vector_norm(torch.stack(list(norms.values())))
    scale = torch.clamp(limit / (total + _EPSILON), max=1.0)
    for module in modules.values():
        for parameter in module.parameters():
            if parameter.grad is not None:
                parameter.grad.detach().mul_(scale.to(parameter.grad.dtype))
    return {name: float(norm) for name, norm in norms.items()}


def gradient_norms(modules: Mapping[str, nn.Module]) -> dict[str, float]:
    """Each module's current gradient norm, for modules that have gradients."""
    norms = {name: _gradient_norm(module.parameters()) for name, module in modules.items()}
    return {name: float(norm) for name, norm in norms.items() if norm is not None}


@torch.no_grad()
def parameter_norms(modules: Mapping[str, nn.Module]) -> dict[str, float]:
    """Each module's norm over its state dict (parameters and persistent buffers), as a checkpoint holds it."""
    return {name: state_dict_norm(module.state_dict()) for name, module in modules.items()}


def state_dict_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm over every floating-point tensor of a state dict."""
    norms = [torch.linalg.vector_norm(t.detach().float()) for t in tensors.values() if t.is_floating_point()]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def checkpoint_parameter_norms(payload: Mapping[str, object]) -> dict[str, float]:
    """Per-network norms from a vocoder checkpoint's state dicts (the keys `networks` would name live)."""
    found = {"generator": state_dict_norm(payload["generator"])}
    by_discriminator: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in payload["discriminators"].items():
        # Keys look like discriminators.<name>.<layer...>: group them by <name>.
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "discriminators":
            by_discriminator.setdefault(parts[1], {})[key] = tensor
    found.update({name: state_dict_norm(tensors) for name, tensors in by_discriminator.items()})
    if payload.get(SPEAKER_ENCODER):
        found[SPEAKER_ENCODER] = state_dict_norm(payload[SPEAKER_ENCODER])
    return found


@torch.no_grad()
def spectral_figures(real_mel: torch.Tensor, fake_mel: torch.Tensor) -> dict[str, float]:
    """How much generated audio varies, relative to real audio of the same batch.

    Args:
        real_mel: log-mel spectrograms of real audio (B, n_mels, frames).
        fake_mel: log-mel spectrograms of the generated audio for the same items (B, n_mels, frames).

    Returns:
        `mode/spectral_variance_ratio`: generated log-mel variance over items and frames (mean over
        mel bands) as a fraction of real audio's; `mode/output_diversity_ratio` (with two or more
        items): the mean distance between the outputs for different inputs as a fraction of the
        distance between the real items. Both are near 0 when the generator has collapsed to one output.
    """
    real, fake = real_mel.float(), fake_mel.float()
    figures = {"mode/spectral_variance_ratio": _ratio(_band_variance(fake), _band_variance(real))}
    if real.shape[0] >= 2:
        figures["mode/output_diversity_ratio"] = _ratio(_pairwise_distance(fake), _pairwise_distance(real))
    return figures


def _band_variance(mel: torch.Tensor) -> torch.Tensor:
    return mel.transpose(0, 1).reshape(mel.shape[1], -1).var(dim=1).mean()


def _pairwise_distance(mel: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the spectrograms of every pair of items."""
    flat = mel.reshape(mel.shape[0], -1)
    distances = torch.cdist(flat, flat, p=1) / flat.shape[1]
    count = flat.shape[0]
    return distances.sum() / (count * (count - 1))


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    return float(numerator / torch.clamp(denominator, min=_EPSILON))


@torch.no_grad()
def speaker_similarity(generated: torch.Tensor, references: torch.Tensor) -> float:
    """Mean cosine similarity of generated audio's speaker embeddings (B, D) to their references' (B, D)."""
    return float(nn.functional.cosine_similarity(generated.float(), references.float(), dim=-1).mean())
