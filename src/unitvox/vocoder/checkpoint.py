"""Vocoder checkpoints: written atomically through the store, loaded with `weights_only=True`.

A checkpoint carries the full model description (generator config, unit count, speaker setup) and
the codebook fingerprint; loading it for another model or another codebook is refused with a list
of what differs.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch

from unitvox.config import Config, ConfigError
from unitvox.store import Store
from unitvox.units.kmeans import unit_count

FORMAT = "unitvox-vocoder/1"
CODEBOOK_KEYS = ("hash", "k", "extractor", "model", "layer", "sample_rate", "hop_seconds")
DIAGNOSE_HINT = ("`unitvox diagnose checkpoint --config ... --run ... --checkpoint URI` shows what it expects "
                 "and the config change or key remapping (--remap) that makes it load")


class CheckpointMismatch(ConfigError):
    """A checkpoint that does not fit the model or codebook at hand; the message lists the differences."""


def describe_model(config: Config, codebook: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to load: architecture, units and the codebook that made them."""
    speaker = config.train.speaker
    return {
        "generator": dataclasses.asdict(config.train.generator),
        "num_units": unit_count(codebook),
        "speaker": dataclasses.asdict(speaker) if speaker.enabled else None,
        "codebook": {key: codebook.get(key) for key in CODEBOOK_KEYS},
    }


def differences(saved: Any, expected: Any, path: str = "") -> list[str]:
    """Dotted paths where two nested descriptions differ, with both values."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        found = []
        for key in sorted(set(saved) | set(expected)):
            found += differences(saved.get(key), expected.get(key), f"{path}.{key}" if path else key)
        return found
    return [] if saved == expected else [f"{path}: checkpoint {saved!r}, expected {expected!r}"]


def check_matches(saved: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    found = differences(saved, expected)
    if found:
        raise CheckpointMismatch(f"{where} does not fit this model and codebook:\n  " + "\n  ".join(found)
                                 + f"\n{DIAGNOSE_HINT}")


def save(store: Store, key: str, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    store.write_bytes(key, buffer.getvalue())


def load(store: Store, key: str) -> dict[str, Any]:
    """A checkpoint's payload; tensors on the CPU. Only tensors and plain data are unpickled."""
    payload = torch.load(io.BytesIO(store.read_bytes(key)), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointMismatch(f"{store.url(key)} is not a unitvox vocoder checkpoint ({FORMAT}); {DIAGNOSE_HINT}")
    return payload


def load_generator_weights(store: Store, key: str, expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The generator's state dict from a checkpoint, after checking it fits `expected`."""
    payload = load(store, key)
    check_matches(payload["model"], expected, store.url(key))
    return payload["generator"]
