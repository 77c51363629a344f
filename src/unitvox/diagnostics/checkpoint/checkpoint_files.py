"""Reading any generator checkpoint `diagnose checkpoint` is given, and writing the converted one.

Read: a unitvox checkpoint, a bare state dict in a torch file (possibly under `generator`,
`state_dict` or `model`), or a `.safetensors` file. Torch files are read with `weights_only=True`,
so nothing but tensors and plain data is ever loaded.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from unitvox.config import ConfigError
from unitvox.store import Store, split_uri
from unitvox.vocoder import checkpoint as ckpt
from unitvox.errors import IncompleteError
from unitvox.vocoder.inference import existing_checkpoint

UNITVOX, STATE_DICT, SAFETENSORS = "unitvox", "state_dict", "safetensors"
# Where training scripts commonly keep a model's state dict inside a larger checkpoint.
NESTED = ("generator", "state_dict", "model_state_dict", "model", "module")


@dataclass
class Source:
    """A checkpoint as read: its generator state dict and, for a unitvox checkpoint, the whole payload."""

    uri: str
    format: str
    state: dict[str, torch.Tensor]
    found_under: str = ""
    payload: dict[str, Any] | None = None
    speaker_encoder: dict[str, torch.Tensor] | None = None
    sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "format": self.format, "found_under": self.found_under or None,
                "keys": len(self.state), "sha256": self.sha256}


def read_checkpoint(store: Store, name: str) -> Source:
    """The checkpoint `name` names: `latest`, `best`, a key in the run, a path or a URI.

    Raises:
        ConfigError: it does not exist, or holds no state dict that unitvox can read safely.
    """
    try:
        source_store, key = existing_checkpoint(store, name)
    except IncompleteError as missing:  # a checkpoint to diagnose was named: a bad argument, not a wait
        raise ConfigError(str(missing)) from None
    uri = source_store.url(key)
    data = source_store.read_bytes(key)
    sha256 = source_store.sha256(key)
    if key.endswith(".safetensors") or _looks_like_safetensors(data):
        return Source(uri, SAFETENSORS, _read_safetensors(data, uri), sha256=sha256)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types here; all mean "not a file of tensors"
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(f"{uri} is not a checkpoint unitvox can read: neither a torch file of tensors "
                          f"(read with weights_only=True) nor safetensors ({type(error).__name__}: {first[:200]})"
                          ) from None
    if isinstance(payload, dict) and payload.get("format") == ckpt.FORMAT:
        return Source(uri, UNITVOX, dict(payload["generator"]), "generator", payload=payload,
                      speaker_encoder=payload.get("speaker_encoder"), sha256=sha256)
    found = _find_state_dict(payload, [])
    if found is None:
        raise ConfigError(f"{uri} holds {_kind(payload)} but no state dict of tensors (looked at the top level "
                          f"and under {', '.join(NESTED)})")
    state, path = found
    encoder = payload.get("speaker_encoder") if isinstance(payload, dict) else None
    return Source(uri, STATE_DICT, dict(state), ".".join(path), sha256=sha256,
                  speaker_encoder=encoder if _is_tensor_dict(encoder) else None)


def _looks_like_safetensors(data: bytes) -> bool:
    # A safetensors file opens with an 8-byte header length, then the JSON header.
    return len(data) > 8 and data[8:9] == b"{"


def _read_safetensors(data: bytes, uri: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as error:  # safetensors raises its own error type for any malformed file
        raise ConfigError(f"{uri} is not a readable safetensors file ({str(error)[:200]})") from None


def _is_tensor_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _find_state_dict(value: Any, path: list[str]) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    if _is_tensor_dict(value):
        return value, path
    if isinstance(value, dict):
        for name in NESTED:
            found = _find_state_dict(value[name], [*path, name]) if name in value else None
            if found is not None:
                return found
    return None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:8]}"
    return f"a {type(value).__name__}"


def remap_location(store: Store, target: str) -> tuple[Store, str]:
    """Where to write: a URI or absolute path, else a key in the run."""
    if "://" in target or target.startswith("/"):
        return split_uri(target)
    return store, target


def converted_payload(source: Source, state: Mapping[str, torch.Tensor], description: dict[str, Any],
                      rules: list[str]) -> dict[str, Any]:
    """A unitvox checkpoint holding `state`: the source's payload with its generator replaced, or, for a bare
    state dict, a fresh payload described as the model `description` names (step 0, no discriminators)."""
    origin = {"uri": source.uri, "sha256": source.sha256, "format": source.format, "rules": list(rules)}
    if source.payload is not None:
        kept = {key: value for key, value in source.payload.items() if key != "format"}
        return {**kept, "generator": dict(state), "remapped_from": origin}
    payload = {"model": description, "generator": dict(state), "discriminators": {},
               "counters": {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_validation": math.inf,
                            "validations_without_improvement": 0},
               "log": "[]", "remapped_from": origin}
    if source.speaker_encoder is not None:
        payload["speaker_encoder"] = source.speaker_encoder
    return payload
