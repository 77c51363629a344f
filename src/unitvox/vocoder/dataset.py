"""Training data for the vocoder: unit sequences paired with their audio, cropped or padded to one length.

Items stream from the run's store (audio is read per item, never all at once); the split into
training and validation is a seeded hash of the segment id, so it is stable across runs and shards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from unitvox import audio
from unitvox.layout import MANIFEST, UNITS
from unitvox.store import Store
from unitvox.vocoder.duration import run_window


@dataclass(frozen=True)
class Item:
    """One segment: its units (frames at the codebook's hop) and where its audio is."""

    segment_id: str
    speaker: str
    audio_key: str
    units: tuple[int, ...]


def load_items(store: Store, allowed: set[str] | None = None, excluded: Collection[str] = ()) -> list[Item]:
    """Units joined with the manifest's audio keys, in manifest order.

    `allowed` keeps only those ids; `excluded` (a filter list's entries, `train.exclude`) drops ids.
    """
    audio_keys = {row["id"]: (row["audio"], row["speaker"]) for row in store.read_jsonl(MANIFEST)}
    items = []
    for row in store.read_jsonl(UNITS):
        if row["id"] not in audio_keys or row["id"] in excluded or (allowed is not None and row["id"] not in allowed):
            continue
        key, speaker = audio_keys[row["id"]]
        items.append(Item(row["id"], speaker, key, tuple(row["units"])))
    return items


def is_validation(segment_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{segment_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_items(items: list[Item], fraction: float, seed: int, minimum: int = 1) -> tuple[list[Item], list[Item]]:
    """(training, validation): a seeded hash picks validation items; at least `minimum` of them."""
    validation = [item for item in items if is_validation(item.segment_id, fraction, seed)]
    if len(validation) < minimum and len(items) > minimum:
        ranked = sorted(items, key=lambda i: hashlib.sha256(f"{seed}:{i.segment_id}".encode()).digest())
        validation = ranked[:minimum]
    chosen = {item.segment_id for item in validation}
    return [item for item in items if item.segment_id not in chosen], validation


class AudioReader:
    """Reads segment audio through the store, keeping a local copy for stores that are not local."""

    def __init__(self, store: Store, cache_dir: str | Path | None = None):
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lengths: dict[str, int] = {}

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) of a segment (all of it by default), decoding no more than that window."""
        with self._local(key) as path:
            return audio.read_mono(path, start, stop)[0]

    def length(self, key: str) -> int:
        """A segment's length in samples, from its header."""
        if key not in self._lengths:  # one int per segment; spares a remote store a second download
            with self._local(key) as path:
                self._lengths[key] = audio.frame_count(path)
        return self._lengths[key]

    @contextmanager
    def _local(self, key: str):
        if self.store.local_root is not None:
            yield self.store.local_root / key
        elif self.cache_dir is None:
            with self.store.local_copy(key) as path:
                yield path
        else:
            path = self.cache_dir / key
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                self.store.download_file(key, path)
            yield path


class UnitAudioDataset(torch.utils.data.Dataset):
    """Fixed-length windows of (units, audio); shorter items are padded and carry their valid length.

    Returns per item: units (F,) long, audio (F * hop,) float, valid samples (), speaker index (),
    and with `reference_samples` set, reference (R,) float: another segment of the same speaker
    (the item itself when the speaker has one segment), for speaker conditioning; with `runs` > 0
    (a deduplicated vocoder), runs (runs,) long and durations (runs,) long: up to that many consecutive run
    units of the item, each with its whole duration in frames (padded with `pad_unit` and 0), for the
    duration predictor (from a random run when cropping).
    With `crop` set (training) a window starts at a random unit frame; otherwise at the start.
    """

    def __init__(self, items: list[Item], reader: AudioReader, *, frames: int, hop: int, pad_unit: int,
                 speakers: dict[str, int], crop: bool, seed: int = 0, reference_samples: int = 0,
                 runs: int = 0):
        self.items, self.reader = items, reader
        self.frames, self.hop, self.pad_unit = frames, hop, pad_unit
        self.speakers, self.crop, self.seed = speakers, crop, seed
        self.reference_samples = reference_samples
        self.runs = runs
        self.by_speaker: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            self.by_speaker.setdefault(item.speaker, []).append(index)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Crops depend on (seed, epoch, index) only, so a resumed run draws the same windows."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        units = np.asarray(item.units, dtype=np.int64)
        usable = min(len(units), self.reader.length(item.audio_key) // self.hop)
        start = 0
        if self.crop and usable > self.frames:
            start = int(np.random.default_rng([self.seed, self.epoch, index]).integers(0, usable - self.frames + 1))
        everything, units = units, units[start : min(usable, start + self.frames)]
        # Only the window is decoded: a 0.5 s crop of a 15 s segment costs 0.5 s of FLAC decoding.
        wave = self.reader.read(item.audio_key, start * self.hop, (start + len(units)) * self.hop)
        valid = len(wave)
        units = np.pad(units, (0, self.frames - len(units)), constant_values=self.pad_unit)
        wave = np.pad(wave, (0, self.frames * self.hop - len(wave)))
        example = {
            "units": torch.from_numpy(units),
            "audio": torch.from_numpy(wave.astype(np.float32)),
            "valid": torch.tensor(valid),
            "speaker": torch.tensor(self.speakers.get(item.speaker, 0)),
        }
        if self.runs:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1]) if self.crop else None
            run_units, durations = run_window(everything, self.runs, rng)
            pad = self.runs - len(run_units)
            example["runs"] = torch.from_numpy(np.pad(run_units, (0, pad), constant_values=self.pad_unit))
            example["durations"] = torch.from_numpy(np.pad(durations, (0, pad)))
        if self.reference_samples:
            example["reference"] = torch.from_numpy(self.reference(index))
        return example

    def reference(self, index: int, speaker: str | None = None) -> np.ndarray:
        """A clip of `reference_samples` from another segment of the item's (or the named) speaker."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        same = self.by_speaker.get(speaker or self.items[index].speaker, [index])
        others = [i for i in same if i != index] or same
        key = self.items[int(rng.choice(others))].audio_key
        length, available = self.reference_samples, self.reader.length(key)
        start = int(rng.integers(0, available - length + 1)) if available > length else 0
        clip = self.reader.read(key, start, start + length)
        return np.pad(clip, (0, length - len(clip))).astype(np.float32)


def speaker_index(items: list[Item]) -> dict[str, int]:
    return {name: index for index, name in enumerate(sorted({item.speaker for item in items}))}
