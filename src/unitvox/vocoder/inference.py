"""A trained vocoder for evaluation and samples: checkpoint checked against the config and codebook, then units -> audio."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unitvox.config import Config, ConfigError, GeneratorConfig, SpeakerConfig
from unitvox.errors import IncompleteError
from unitvox.layout import BEST_CHECKPOINT, LATEST_CHECKPOINT
from unitvox.store import Store, split_uri
from unitvox.units.kmeans import read_fingerprint, unit_count
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.duration import DURATION_PREDICTOR, build_duration_predictor
from unitvox.vocoder.generator import build_generator
from unitvox.vocoder.lora import merge_lora
from unitvox.vocoder.speaker_encoder import build_speaker_encoder

NAMED = {"best": BEST_CHECKPOINT, "latest": LATEST_CHECKPOINT}


def checkpoint_location(store: Store, name: str) -> tuple[Store, str]:
    """The store and key of `best`, `latest` (best falls back to latest before any validation) or a URI."""
    if name in NAMED:
        key = NAMED[name]
        if name == "best" and not store.exists(key):
            key = NAMED["latest"]
        if not store.exists(key):
            raise ConfigError(f"{name} checkpoint: {store.url(key)} does not exist; run train first")
        return store, key
    if "://" in name or name.startswith("/"):
        return split_uri(name)
    return store, name


def existing_checkpoint(store: Store, name: str) -> tuple[Store, str]:
    """Where `checkpoint_location` points, once the checkpoint is there.

    Raises:
        IncompleteError: the checkpoint has not been written (yet); the message names it.
    """
    try:
        source, key = checkpoint_location(store, name)
    except ConfigError as missing:  # latest or best before training wrote one
        raise IncompleteError(str(missing)) from None
    if not source.exists(key):
        raise IncompleteError(f"checkpoint {source.url(key)} does not exist; run train first or name another")
    return source, key


def inference_generator(config: GeneratorConfig, num_units: int, weights: dict[str, torch.Tensor],
                        device: torch.device) -> torch.nn.Module:
    """The generator as training saved it, LoRA merged, in eval mode; one way for samples, evaluate and bundles."""
    generator = build_generator(config, num_units)
    generator.load_state_dict(weights)
    if config.lora.rank:
        merge_lora(generator)
    return generator.to(device).eval()


def inference_speaker_encoder(config: SpeakerConfig, weights: dict[str, torch.Tensor],
                              device: torch.device) -> torch.nn.Module:
    encoder = build_speaker_encoder(config)
    encoder.load_state_dict(weights)
    return encoder.to(device).eval()


def inference_duration_predictor(config: Any, num_units: int, weights: dict[str, torch.Tensor],
                                 device: torch.device) -> torch.nn.Module:
    """A deduplicated vocoder's duration predictor as training saved it (calibration included), in eval mode."""
    predictor = build_duration_predictor(config, num_units)
    predictor.load_state_dict(weights)
    return predictor.to(device).eval()


class Vocoder:
    """Generator (and speaker encoder, when conditioned) loaded for inference on one device."""

    def __init__(self, config: Config, store: Store, checkpoint: str, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        codebook = read_fingerprint(store)
        self.source_store, self.key = checkpoint_location(store, checkpoint)
        payload = ckpt.load(self.source_store, self.key)
        self.sha256 = self.source_store.sha256(self.key)
        ckpt.check_matches(payload["model"], ckpt.describe_model(config, codebook), self.source_store.url(self.key))
        self.generator = inference_generator(config.train.generator, unit_count(codebook), payload["generator"],
                                             self.device)
        self.encoder = None
        if config.train.speaker.enabled:
            self.encoder = inference_speaker_encoder(config.train.speaker, payload["speaker_encoder"], self.device)
        self.duration_predictor = None
        if config.train.units == "deduplicated":
            self.duration_predictor = inference_duration_predictor(
                config.train.duration_predictor, unit_count(codebook), payload[DURATION_PREDICTOR], self.device)
        self.step = int(payload["counters"]["step"])
        self.hop = config.train.generator.hop_samples
        self.pad_unit = unit_count(codebook)

    @property
    def conditioned(self) -> bool:
        return self.encoder is not None

    @property
    def deduplicated(self) -> bool:
        """Whether the vocoder was trained on deduplicated units (it then has a duration predictor)."""
        return self.duration_predictor is not None

    def predict_durations(self, runs: Any) -> np.ndarray:
        """Frames per run unit (R,) int64, each at least 1, from the duration predictor."""
        if self.duration_predictor is None:
            raise ValueError("this vocoder has no duration predictor (train.units is frames)")
        return self.duration_predictor.durations(runs)

    @property
    def uri(self) -> str:
        return self.source_store.url(self.key)

    @torch.inference_mode()
    def embed(self, reference: np.ndarray) -> torch.Tensor:
        if self.encoder is None:
            raise ValueError("this vocoder has no speaker conditioning (train.speaker.enabled is false)")
        return self.encoder(torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))[None].to(self.device))

    @torch.inference_mode()
    def generate(self, units: Any, reference: np.ndarray | None = None) -> np.ndarray:
        """Audio (len(units) * hop,) float32 for a unit sequence, in the voice of `reference` when conditioned."""
        tensor = torch.as_tensor(np.asarray(units, dtype=np.int64))[None].to(self.device)
        speaker = self.embed(reference) if self.encoder is not None and reference is not None else None
        if self.encoder is not None and speaker is None:
            raise ValueError("a speaker-conditioned vocoder needs a reference clip")
        return self.generator(tensor, speaker).float().cpu().numpy().reshape(-1)
