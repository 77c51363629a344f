"""train: the unit-to-waveform GAN vocoder, resumable, single process or DDP under torchrun.

Run: unitvox train --config jobs/base.yaml --run ./runs/exp1
     torchrun --nproc-per-node 2 -m unitvox train --config jobs/base.yaml --run-root ./runs/exp1
(torchrun reads `--run` as its own `--run-path`, so under torchrun the run root is spelt `--run-root`.)
Writes train/checkpoints/{latest,best,step_N}.pt, train/training_log.jsonl, train/samples/ and
train/_SUCCESS.json once training ends (max_steps or early stopping).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from unitvox.config import Config, ConfigError
from unitvox.filterlist import filter_list_fingerprint, read_filter_list
from unitvox.stages import Context, IncompleteError, Phase, Unhealthy
from unitvox.stages.record import upstream, write_success
from unitvox.stages.tokenize import CODEBOOK, UNITS
from unitvox.store import Store, split_uri
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.data import AudioReader, UnitAudioDataset, load_items, speaker_index, split_items
from unitvox.vocoder.loop import LOG, Distributed, StopFlag, Trainer
from unitvox.vocoder.state import build_state

LOGGER = logging.getLogger(__name__)
PHASES = (Phase("fit"),)
SPLIT = "train/split.json"
LATEST = f"{ckpt.CHECKPOINTS}/latest.pt"
BEST = f"{ckpt.CHECKPOINTS}/best.pt"


def inputs(config: Config, store: Store) -> dict[str, Any]:
    units = upstream(store, "tokenize", UNITS, "train")
    return {**units, **filter_list_fingerprint(config.train.exclude, "train.exclude")}


def device_for(name: str) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # torchrun's rank on this node
    return torch.device(name)


def codebook_fingerprint(store: Store) -> dict[str, Any]:
    return store.read_json(f"{CODEBOOK}/codebook.json")


def check_hop(config: Config, codebook: dict[str, Any]) -> None:
    """The generator must upsample one unit frame to exactly the samples of one feature hop."""
    hop = int(round(codebook["hop_seconds"] * config.prepare.sample_rate))
    if config.train.generator.hop_samples != hop:
        raise ConfigError(
            f"train.generator.hop_samples: {config.train.generator.hop_samples}, but the units come every {hop} "
            f"samples ({codebook['hop_seconds']} s at {config.prepare.sample_rate} Hz); set it and upsample_rates to match"
        )


def window_frames(config: Config) -> int:
    """Unit frames in one training window of `train.segment_seconds`."""
    return max(1, int(config.train.segment_seconds * config.prepare.sample_rate) // config.train.generator.hop_samples)


def build_datasets(config: Config, store: Store, training: list, validation: list, speakers: dict[str, int],
                   num_units: int) -> tuple[UnitAudioDataset, UnitAudioDataset]:
    """(training windows cropped at random, whole validation items padded to the longest of them)."""
    settings = config.train
    reference = int(settings.speaker.reference_seconds * config.prepare.sample_rate) if settings.speaker.enabled else 0
    common = dict(hop=settings.generator.hop_samples, pad_unit=num_units, speakers=speakers, seed=settings.seed,
                  reference_samples=reference)
    reader = AudioReader(store)
    train_set = UnitAudioDataset(training, reader, frames=window_frames(config), crop=True, **common)
    longest = max(len(i.units) for i in validation) if validation else 1
    return train_set, UnitAudioDataset(validation, reader, frames=longest, crop=False, **common)


def build_trainer(context: Context, stop: StopFlag | None = None) -> Trainer:
    """Everything the loop needs, resumed from the latest checkpoint when one exists."""
    config, store, settings = context.config, context.store, context.config.train
    codebook = codebook_fingerprint(store)
    check_hop(config, codebook)
    device = device_for(settings.device)
    distributed = Distributed.from_environment(device)
    items = load_items(store, excluded=read_filter_list(settings.exclude, "train.exclude"))
    training, validation = split_items(items, settings.validation_fraction, settings.seed, settings.validation_items)
    validation = validation[: settings.validation_items]
    if not training:
        raise IncompleteError(f"train: no training items in {store.url(UNITS)}")
    distributed.when_main(lambda: store.write_json(SPLIT, {"train": [i.segment_id for i in training],
                                                           "validation": [i.segment_id for i in validation]}))
    train_set, validation_set = build_datasets(config, store, training, validation, speaker_index(items),
                                               int(codebook["k"]))
    description = ckpt.describe_model(config, codebook)
    resuming = store.exists(LATEST) and not context.force
    initial = None if resuming or not settings.init_from else initial_generator(settings.init_from, description)
    state = build_state(settings, int(codebook["k"]), device, initial)
    if resuming:
        payload = ckpt.load(store, LATEST)
        ckpt.check_matches(payload["model"], description, store.url(LATEST))
        state.load_state_dict(payload)
    if distributed.world > 1:
        wrap = torch.nn.parallel.DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        state.generator = wrap(state.generator, device_ids=ids)
        state.discriminators = wrap(state.discriminators, device_ids=ids)
        if state.speaker_encoder is not None and not settings.speaker.freeze_encoder:
            state.speaker_encoder = wrap(state.speaker_encoder, device_ids=ids)
    return Trainer(config, store, state, train_set, validation_set, description, device, context.metrics,
                   distributed, stop or StopFlag())


def _linger(context: Context) -> None:
    """Keep a served /metrics up a little longer, so the critical verdict is scraped before the pod goes."""
    seconds = context.config.metrics.linger_seconds
    if getattr(context.metrics, "port", None) and seconds:
        LOGGER.warning("training stopped on critical health; serving /metrics %.0f s more", seconds)
        time.sleep(seconds)


def initial_generator(uri: str, description: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Generator weights to start from: the architecture must match, LoRA aside (adapters are added after)."""
    source, key = split_uri(uri)
    payload = ckpt.load(source, key)
    without_lora = lambda d: {**d, "generator": {k: v for k, v in d["generator"].items() if k != "lora"}}
    ckpt.check_matches(without_lora(payload["model"]), without_lora(description), f"train.init_from {uri}")
    if payload["model"]["generator"]["lora"]["rank"]:
        raise ConfigError(f"train.init_from: {uri} has LoRA adapters; merge them into a plain checkpoint first")
    return payload["generator"]


def fit(context: Context, stop: StopFlag | None = None) -> dict[str, Any]:
    stop = stop or StopFlag()
    stop.install()
    trainer = build_trainer(context, stop)
    try:
        summary = trainer.run()
    except Unhealthy:
        _linger(context)
        raise
    if trainer.distributed.is_main:
        outputs = [LATEST, LOG] + ([BEST] if context.store.exists(BEST) else [])
        write_success(
            context.store, "train", config_hash=context.config.stage_hash("train"),
            inputs=inputs(context.config, context.store), outputs=outputs, started=context.started,
            extra={"stage": "train", "config": context.config.to_dict()["train"], "summary": summary},
        )
    return summary
