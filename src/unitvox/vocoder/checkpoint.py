"""Vocoder checkpoints: written atomically through the store, loaded with `weights_only=True`.

A checkpoint carries the full model description (generator config, unit count, speaker setup) and
the codebook fingerprint; loading it for another model or another codebook is refused with a list
of what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from typing import Any

import torch

from unitvox.config import Config, ConfigError, TrainConfig
from unitvox.layout import CHECKPOINTS, CHECKPOINTS_ARCHIVE, TRAINING_LOG, archived_checkpoints
from unitvox.store import Store
from unitvox.units.kmeans import unit_count

FORMAT = "unitvox-vocoder/1"
CODEBOOK_KEYS = ("hash", "k", "extractor", "model", "layer", "sample_rate", "hop_seconds")
DIAGNOSE_HINT = ("`unitvox diagnose checkpoint --config ... --run ... --checkpoint URI` shows what it expects "
                 "and the config change or key remapping (--remap) that makes it load")


class CheckpointMismatch(ConfigError):
    """A checkpoint that does not fit the model or codebook at hand; the message lists the differences."""


class ResumeRefused(CheckpointMismatch):
    """The run's latest checkpoint was trained with another config or other inputs; the message lists them."""


def describe_model(config: Config, codebook: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to load: architecture, units and the codebook that made them.

    A deduplicated vocoder adds `units` and its `duration_predictor`; a frame-unit one names neither,
    as checkpoints did before there were two forms.
    """
    speaker = config.train.speaker
    described = {
        "generator": config.train.generator.described(),
        "num_units": unit_count(codebook),
        "speaker": dataclasses.asdict(speaker) if speaker.enabled else None,
        "codebook": {key: codebook.get(key) for key in CODEBOOK_KEYS},
    }
    if config.train.units == "deduplicated":
        described.update(units="deduplicated",
                         duration_predictor=dataclasses.asdict(config.train.duration_predictor))
    return described


def unit_form(description: dict[str, Any]) -> str:
    """`frames` or `deduplicated`: what the vocoder a model description records was trained on."""
    return description.get("units") or "frames"


def differences(saved: Any, expected: Any, path: str = "", *, now: str = "expected") -> list[str]:
    """Dotted paths where two nested descriptions differ, with both values (`now` names the second)."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        found = []
        for key in sorted(set(saved) | set(expected)):
            found += differences(saved.get(key), expected.get(key), f"{path}.{key}" if path else key, now=now)
        return found
    return [] if saved == expected else [f"{path}: checkpoint {saved!r}, {now} {expected!r}"]


def lineage(config: Config, codebook: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """What a line of checkpoints is trained with, saved in each of them and compared before a resume.

    `config` is the train section less its EXECUTION_KEYS and RESUME_KEYS (raising max_steps continues
    a run); `inputs` the stage's input fingerprints (units, filter list) and the codebook's hash.
    """
    section = _lineage_section(config)
    return {"config_hash": _digest(section), "config": section,
            "inputs": {"codebook": codebook.get("hash"), **inputs}}


def _lineage_section(config: Config) -> dict[str, Any]:
    return {key: value for key, value in config.stage_section("train").items() if key not in TrainConfig.RESUME_KEYS}


def _digest(section: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(section, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _with_defaults(saved: Any, defaults: Any) -> Any:
    """`saved` with the keys it lacks taken from `defaults`, at every level: a train key added to unitvox
    after a checkpoint was made (train.units, say) did then what its default does now."""
    if not (isinstance(saved, dict) and isinstance(defaults, dict)):
        return saved
    return {**{key: value for key, value in defaults.items() if key not in saved},
            **{key: _with_defaults(value, defaults.get(key)) for key, value in saved.items()}}


def lineage_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's lineage and this run's: dotted train keys, then inputs.

    Keys the checkpoint's config lacks (added to unitvox since) count as their defaults.
    """
    if saved.get("config_hash") == current["config_hash"] and saved.get("inputs") == current["inputs"]:
        return []
    recorded = _with_defaults(saved.get("config", {}), _lineage_section(Config())) if saved.get("config") else {}
    if recorded and _digest(recorded) == current["config_hash"] and saved.get("inputs") == current["inputs"]:
        return []
    changed = differences(recorded, current["config"], "train", now="now")
    changed += [f"input {line}" for line in differences(saved.get("inputs", {}), current["inputs"], now="now")]
    return changed or ["train: the recorded config hash differs (the config recorded with it is incomplete)"]


def refuse_resume(where: str, changes: list[str]) -> ResumeRefused:
    return ResumeRefused(
        f"{where} was trained with another config or other inputs, so it is not resumed:\n  " + "\n  ".join(changes)
        + "\nUndo the change to resume it, or start over with --set train.resume=fresh (or --force); the old "
        f"checkpoints are then kept under {CHECKPOINTS_ARCHIVE}/<UTC time>/"
    )


def archive(store: Store, now: float | None = None) -> str | None:
    """Move the run's checkpoints and training log under a folder of the UTC time; returns it (None: nothing to move).

    Everything is copied before anything is deleted, so an interrupted archive loses nothing.
    """
    keys = [*store.list(f"{CHECKPOINTS}/"), *([TRAINING_LOG] if store.exists(TRAINING_LOG) else [])]
    if not keys:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    folder, suffix = archived_checkpoints(stamp), 1
    while any(True for _ in store.list(f"{folder}/")):  # two fresh starts within a second
        folder, suffix = archived_checkpoints(f"{stamp}-{suffix}"), suffix + 1
    for key in keys:
        with store.local_copy(key) as path:
            store.upload_file(path, f"{folder}/{key.rsplit('/', 1)[-1]}")
    for key in keys:
        store.delete(key)
    return folder


def generator_type(description: dict[str, Any]) -> str:
    """The generator type a model description records (`hifigan` when it names none, as older checkpoints)."""
    generator = description.get("generator")
    return generator.get("type", "hifigan") if isinstance(generator, dict) else "hifigan"


def check_matches(saved: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    found = differences(saved, expected)
    if unit_form(saved) != unit_form(expected):
        found.insert(0, f"the checkpoint holds a vocoder of {unit_form(saved)} units, the config trains one of "
                        f"{unit_form(expected)} units (train.units); the fields below follow from that")
    if generator_type(saved) != generator_type(expected):
        found.insert(0, f"the checkpoint holds a {generator_type(saved)!r} generator, the config builds a "
                        f"{generator_type(expected)!r} one (train.generator.type); the fields below follow from that")
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
