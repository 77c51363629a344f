"""Training setup in one place: the codebook check, training windows, datasets, and a ready Trainer.

`unitvox train` builds its trainer here (resuming from the latest checkpoint), `unitvox diagnose
training` rebuilds one from a saved checkpoint and its split (`load_trainer`), and bench/vocoder.py
times steps on `trainer_without_data` with windows of `window_frames`; so all three set training up
the same way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from unitvox.config import Config, ConfigError
from unitvox.errors import IncompleteError
from unitvox.filterlist import read_filter_list
from unitvox.layout import LATEST_CHECKPOINT, SPLIT, UNITS
from unitvox.prometheus import MetricsSink, NullSink
from unitvox.store import Store, split_uri
from unitvox.units.kmeans import read_fingerprint, unit_count
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.dataset import AudioReader, Item, UnitAudioDataset, load_items, speaker_index, split_items
from unitvox.vocoder.duration import DURATION_RUNS
from unitvox.vocoder.loop import Distributed, StopFlag, Trainer
from unitvox.vocoder.state import build_state

LOGGER = logging.getLogger(__name__)


def device_for(name: str) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # torchrun's rank on this node
    return torch.device(name)


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
                  reference_samples=reference, runs=DURATION_RUNS if settings.units == "deduplicated" else 0)
    reader = AudioReader(store)
    train_set = UnitAudioDataset(training, reader, frames=window_frames(config), crop=True, **common)
    longest = max(len(i.units) for i in validation) if validation else 1
    return train_set, UnitAudioDataset(validation, reader, frames=longest, crop=False, **common)


def build_trainer(config: Config, store: Store, *, metrics: MetricsSink | None = None, force: bool = False,
                  stop: StopFlag | None = None, inputs: dict[str, Any] | None = None) -> Trainer:
    """What `unitvox train` runs: a fresh split, resumed from the latest checkpoint when it may be (see `resumable`).

    `inputs` are the stage's input fingerprints (units, filter list), recorded with the codebook's hash
    in every checkpoint so that a later resume can tell whether they changed.

    Raises:
        ResumeRefused: (exit code 2) the latest checkpoint was trained with another config or other
            inputs, and `train.resume` is `auto`; nothing has been written.
    """
    settings = config.train
    codebook = read_fingerprint(store)
    check_hop(config, codebook)
    device = device_for(settings.device)
    distributed = Distributed.from_environment(device)
    current = ckpt.lineage(config, codebook, inputs or {})
    payload = resumable(store, current, mode=settings.resume, force=force, distributed=distributed)
    items = load_items(store, excluded=read_filter_list(settings.exclude, "train.exclude"))
    training, validation = split_items(items, settings.validation_fraction, settings.seed, settings.validation_items)
    validation = validation[: settings.validation_items]
    if not training:
        raise IncompleteError(f"train: no training items in {store.url(UNITS)}")
    distributed.when_main(lambda: store.write_json(SPLIT, {"train": [i.segment_id for i in training],
                                                           "validation": [i.segment_id for i in validation]}))
    trainer = _assemble(config, store, codebook, items, training, validation, device, metrics or NullSink(),
                        payload=payload, where=store.url(LATEST_CHECKPOINT),
                        init_from=None if payload is not None else settings.init_from, distributed=distributed,
                        stop=stop)
    trainer.state.lineage = current
    if distributed.world > 1:
        _wrap_for_ddp(trainer, device)
    return trainer


def resumable(store: Store, current: dict[str, Any], *, mode: str = "auto", force: bool = False,
              distributed: Distributed | None = None) -> dict[str, Any] | None:
    """The latest checkpoint's payload when this run continues it, or None when it starts over.

    It continues when the checkpoint's lineage (train config less RESUME_KEYS, inputs, codebook)
    matches `current`. Otherwise `mode` "auto" refuses, naming what changed; "fresh" (and `force`,
    whatever the checkpoint) starts over, after moving the old checkpoints and training log under
    train/checkpoints.old/<UTC time>/. A checkpoint from before lineages were recorded is resumed by
    "auto" (unchecked, with a warning) and set aside by "fresh".
    """
    distributed = distributed or Distributed()
    if not store.exists(LATEST_CHECKPOINT):
        return None
    where = store.url(LATEST_CHECKPOINT)
    if not force:
        payload = ckpt.load(store, LATEST_CHECKPOINT)
        saved = payload.get("lineage") or {}
        changes = ckpt.lineage_changes(saved, current) if saved else []
        if not changes and (saved or mode == "auto"):
            if not saved:
                LOGGER.warning("%s records no config or inputs (an older unitvox made it): resumed without checking "
                               "them; --set train.resume=fresh starts over instead", where)
            return payload
        if mode == "auto":
            raise ckpt.refuse_resume(where, changes)
        LOGGER.warning("train.resume=fresh: starting over instead of resuming %s (%s)", where,
                       "; ".join(changes) or "it records no config or inputs")
    distributed.barrier()  # every rank has read the checkpoint before the main one moves it
    distributed.when_main(lambda: LOGGER.warning("the previous checkpoints are kept under %s",
                                                 store.url(ckpt.archive(store) or "")))
    distributed.barrier()
    return None


def load_trainer(config: Config, store: Store, uri: str, payload: dict[str, Any]) -> Trainer:
    """The run's models, optimizers and data as saved in a checkpoint (read from `uri`), on the CPU, writing nothing.

    Raises:
        IncompleteError: the run has no split yet.
        CheckpointMismatch: the checkpoint was made for another model or codebook.
    """
    if not store.exists(SPLIT):
        raise IncompleteError(f"{store.url(SPLIT)} does not exist: training has not started")
    codebook = read_fingerprint(store)
    check_hop(config, codebook)
    split = store.read_json(SPLIT)
    items = load_items(store)
    by_id = {item.segment_id: item for item in items}
    training = [by_id[name] for name in split["train"] if name in by_id]
    validation = [by_id[name] for name in split["validation"] if name in by_id]
    return _assemble(config, store, codebook, items, training, validation, torch.device("cpu"), NullSink(),
                     payload=payload, where=uri)


def trainer_without_data(config: Config, store: Store, num_units: int, device: torch.device) -> Trainer:
    """A Trainer around fresh models and empty datasets, for timing `train_step` on batches of one's own.

    `train_step` reads only the state, the train config, the mel spectrogram and the autocast choice;
    the datasets, store and sink serve validation, samples and checkpoints, which such a caller never runs.
    """
    state = build_state(config.train, num_units, device)  # with the speaker encoder when the config asks for one
    empty = UnitAudioDataset([], AudioReader(store), frames=1, hop=config.train.generator.hop_samples,
                             pad_unit=num_units, speakers={}, crop=False)
    return Trainer(config, store, state, empty, empty, model_description={}, device=device, metrics=NullSink())


def initial_generator(uri: str, description: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Generator weights to start from: the architecture must match, LoRA aside (adapters are added after)."""
    source, key = split_uri(uri)
    payload = ckpt.load(source, key)
    without_lora = lambda d: {**d, "generator": {k: v for k, v in d["generator"].items() if k != "lora"}}
    ckpt.check_matches(without_lora(payload["model"]), without_lora(description), f"train.init_from {uri}")
    if payload["model"]["generator"]["lora"]["rank"]:
        raise ConfigError(f"train.init_from: {uri} has LoRA adapters; merge them into a plain checkpoint first")
    return payload["generator"]


def _assemble(config: Config, store: Store, codebook: dict[str, Any], items: list[Item], training: list[Item],
              validation: list[Item], device: torch.device, metrics: MetricsSink, *,
              payload: dict[str, Any] | None, where: str, init_from: str | None = None,
              distributed: Distributed | None = None, stop: StopFlag | None = None) -> Trainer:
    """Datasets, state (restored from `payload`, read from `where`, when given) and the Trainer around them."""
    num_units = unit_count(codebook)
    train_set, validation_set = build_datasets(config, store, training, validation, speaker_index(items), num_units)
    description = ckpt.describe_model(config, codebook)
    initial = initial_generator(init_from, description) if init_from else None
    state = build_state(config.train, num_units, device, initial)
    if payload is not None:
        ckpt.check_matches(payload["model"], description, where)
        state.load_state_dict(payload)
    return Trainer(config, store, state, train_set, validation_set, description, device, metrics,
                   distributed or Distributed(), stop or StopFlag())


def _wrap_for_ddp(trainer: Trainer, device: torch.device) -> None:
    state, settings = trainer.state, trainer.settings
    wrap = torch.nn.parallel.DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    state.generator = wrap(state.generator, device_ids=ids)
    state.discriminators = wrap(state.discriminators, device_ids=ids)
    if state.speaker_encoder is not None and not settings.speaker.freeze_encoder:
        state.speaker_encoder = wrap(state.speaker_encoder, device_ids=ids)
    if state.duration_predictor is not None:
        state.duration_predictor = wrap(state.duration_predictor, device_ids=ids)
