"""What `diagnose embeddings` embeds, and with what: the items, the embedder, real and resynthesised audio.

Items are the validation split, topped up when it has too few items per speaker; a run with no split
yet gets a seeded sample of its manifest. Silent or unreadable audio is counted and skipped.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitvox.config import Config, ConfigError
from unitvox.diagnostics.embeddings.speaker_separation import EmbeddedSet
from unitvox.evaluation.speaker import SilentInputError, SpeakerEmbedder, build_speaker_embedder
from unitvox.errors import IncompleteError
from unitvox.layout import MANIFEST, SPLIT, UNITS
from unitvox.stages.evaluate import held_out
from unitvox.store import Store
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.dataset import AudioReader, Item, load_items
from unitvox.vocoder.inference import Vocoder, existing_checkpoint
from unitvox.vocoder.speaker_encoder import build_speaker_encoder

EMBEDDER_KEY = "diagnose.embeddings.embedder"
ENCODER_RATE = 16_000  # the trained speaker encoders read 16 kHz audio
_SILENT_PEAK = 1e-5


@dataclass
class Selection:
    """The items to embed and how they were chosen.

    Attributes:
        items: segments in the order they are embedded.
        source: `validation`, `validation+training` (topped up) or `sample` (no split yet).
        validation: how many of `items` are in the validation split.
        note: a sentence for the report when the items are not the validation split as it is.
    """

    items: list[Item]
    source: str
    validation: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        speakers = Counter(item.speaker for item in self.items)
        return {"source": self.source, "chosen": len(self.items), "validation": self.validation,
                "topped_up": len(self.items) - self.validation if self.source != "sample" else 0,
                "speakers": len(speakers), "per_speaker": dict(sorted(speakers.items()))}


@dataclass
class Skipped:
    """Items that could not be embedded, counted by reason, with the first few ids of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, item: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(item)

    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total(), "counts": dict(self.counts), "examples": self.examples}


def select_items(config: Config, store: Store) -> Selection:
    """The validation split (topped up from other segments when too few speakers have two items), or a sample."""
    settings = config.diagnose.embeddings
    everything = _all_items(store)
    budget = settings.max_items or len(everything)
    if not store.exists(SPLIT):
        chosen = _balanced(everything, [], budget, config.train.seed)
        return Selection(chosen, "sample", 0, f"no validation split yet ({store.url(SPLIT)}): "
                                              f"a seeded sample of {len(chosen)} of the {len(everything)} segments")
    wanted = set(store.read_json(SPLIT)["validation"])
    validation = [item for item in everything if item.segment_id in wanted][:budget]
    if not _too_few_per_speaker(validation) or len(validation) >= budget:
        return Selection(validation, "validation", len(validation))
    others = [item for item in everything if item.segment_id not in wanted]
    chosen = _balanced(others, validation, budget, config.train.seed)
    added = len(chosen) - len(validation)
    return Selection(chosen, "validation+training", len(validation),
                     f"too few of the validation split's speakers have two items, so {added} "
                     f"training segments were added to its {len(validation)} (seen in training: judge "
                     "the vocoder's output on them with care)" if added else "")


def _all_items(store: Store) -> list[Item]:
    """Every segment; with units when the run is tokenized (the vocoder needs them), else from the manifest."""
    if store.exists(UNITS):
        return load_items(store)
    return [Item(row["id"], row["speaker"], row["audio"], ()) for row in store.read_jsonl(MANIFEST)]


def _too_few_per_speaker(items: list[Item]) -> bool:
    """True when fewer than two speakers, or fewer than half the speakers, have two items or more."""
    counts = Counter(item.speaker for item in items)
    paired = sum(count >= 2 for count in counts.values())
    return paired < 2 or paired < len(counts) / 2


def _balanced(pool: list[Item], start: list[Item], budget: int, seed: int) -> list[Item]:
    """`start` plus items of `pool` (seeded order per speaker), always to the speaker with fewest so far."""
    rng = np.random.default_rng(seed)
    queues: dict[str, list[Item]] = {}
    for item in pool:
        queues.setdefault(item.speaker, []).append(item)
    for speaker in queues:
        queues[speaker] = [queues[speaker][i] for i in rng.permutation(len(queues[speaker]))]
    chosen = list(start)
    counts = Counter(item.speaker for item in chosen)
    while len(chosen) < budget and any(queues.values()):
        speaker = min((s for s in queues if queues[s]), key=lambda s: (counts[s], s))
        chosen.append(queues[speaker].pop(0))
        counts[speaker] += 1
    return chosen


def build_embedder(config: Config, store: Store) -> SpeakerEmbedder:
    """The embedder `diagnose.embeddings.embedder` names (`evaluate` follows `evaluate.speaker_embedder`)."""
    choice = config.diagnose.embeddings.embedder
    if choice == "checkpoint":
        return TrainedSpeakerEmbedder.from_checkpoint(config, store)
    if choice == "evaluate":
        choice = "mfcc_stats" if config.evaluate.speaker_embedder == "none" else config.evaluate.speaker_embedder
    return build_speaker_embedder(choice)


class TrainedSpeakerEmbedder:
    """The speaker encoder trained with the vocoder, as a `SpeakerEmbedder`: wave (T,) -> (D,) unit norm.

    Args:
        encoder: a module mapping audio (B, T) at 16 kHz to unit-norm embeddings (B, D).
    """

    name = "checkpoint"

    def __init__(self, encoder):
        self.encoder = encoder.eval()

    @classmethod
    def from_checkpoint(cls, config: Config, store: Store) -> TrainedSpeakerEmbedder:
        """The encoder in `evaluate.checkpoint` (loaded with weights_only=True).

        Raises:
            ConfigError: naming `diagnose.embeddings.embedder`, when the run has no such checkpoint
                or was trained without speaker conditioning.
        """
        if not config.train.speaker.enabled:
            raise ConfigError(f"{EMBEDDER_KEY}: 'checkpoint' needs the speaker encoder trained with the vocoder, "
                              "but train.speaker.enabled is false; choose evaluate, resemblyzer or mfcc_stats")
        try:
            source, key = existing_checkpoint(store, config.evaluate.checkpoint)
        except IncompleteError as missing:
            raise ConfigError(f"{EMBEDDER_KEY}: 'checkpoint' reads the speaker encoder from evaluate.checkpoint "
                              f"({config.evaluate.checkpoint}), but {missing}; or choose another embedder") from None
        payload = ckpt.load(source, key)
        if "speaker_encoder" not in payload:
            raise ConfigError(f"{EMBEDDER_KEY}: {source.url(key)} holds no speaker encoder (trained without "
                              "speaker conditioning); choose evaluate, resemblyzer or mfcc_stats")
        expected = dataclasses.asdict(config.train.speaker)
        ckpt.check_matches({"speaker": payload["model"]["speaker"]}, {"speaker": expected}, source.url(key))
        encoder = build_speaker_encoder(config.train.speaker)
        encoder.load_state_dict(payload["speaker_encoder"])
        return cls(encoder)

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        import soxr
        import torch

        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0 or not np.all(np.isfinite(wave)):
            raise ValueError(f"checkpoint: expected a finite, non-empty mono wave, got shape {wave.shape}")
        if float(np.max(np.abs(wave))) < _SILENT_PEAK:
            raise SilentInputError("checkpoint: the wave is silent, there is no voice to embed")
        if sample_rate != ENCODER_RATE:
            wave = soxr.resample(wave, sample_rate, ENCODER_RATE, quality="HQ").astype(np.float32)
        with torch.inference_mode():
            embedding = self.encoder(torch.from_numpy(np.ascontiguousarray(wave))[None])[0].double().numpy()
        norm = float(np.linalg.norm(embedding))
        if not np.isfinite(norm) or norm == 0.0:
            raise SilentInputError("checkpoint: the speaker encoder gave no usable embedding for this audio")
        return (embedding / norm).astype(np.float32)


def embed_real(items: list[Item], store: Store, embedder: SpeakerEmbedder, rate: int) -> tuple[EmbeddedSet, Skipped]:
    """Embeddings of the items' audio; silent, unreadable or unusable audio is counted, not raised."""
    reader, skipped = AudioReader(store), Skipped()
    rows, speakers, ids = [], [], []
    for item in items:
        try:
            wave = reader.read(item.audio_key)
        except (OSError, RuntimeError):  # soundfile's errors are RuntimeErrors
            skipped.add("unreadable", item.segment_id)
            continue
        embedding = _embed_or_skip(embedder, wave, rate, item.segment_id, skipped)
        if embedding is not None:
            rows.append(embedding)
            speakers.append(item.speaker)
            ids.append(item.segment_id)
    return _embedded(rows, speakers, ids), skipped


def embed_generated(config: Config, store: Store, real: EmbeddedSet, items: list[Item],
                    embedder: SpeakerEmbedder) -> tuple[EmbeddedSet | None, Skipped, str]:
    """Embeddings of the vocoder's resynthesis of every embedded real item, or None and why not.

    A speaker-conditioned vocoder speaks with a reference clip of the item's own speaker, picked the
    way `evaluate` picks it.
    """
    skipped = Skipped()
    if not config.diagnose.embeddings.generated:
        return None, skipped, "diagnose.embeddings.generated is off: real audio only"
    try:
        existing_checkpoint(store, config.evaluate.checkpoint)
    except IncompleteError as missing:
        return None, skipped, f"no vocoder checkpoint ({missing}): real audio only"
    if not store.exists(SPLIT) or not store.exists(UNITS):
        return None, skipped, f"no held-out split ({store.url(SPLIT)}) or units: real audio only"
    vocoder = Vocoder(config, store, config.evaluate.checkpoint)
    _, references = held_out(store, config)
    position = {item.segment_id: index for index, item in enumerate(references.items)}
    by_id = {item.segment_id: item for item in items}
    rows, speakers, ids = [], [], []
    for segment_id in real.items:
        item = by_id[segment_id]
        clip = references.reference(position[segment_id]) if vocoder.conditioned else None
        wave = vocoder.generate(item.units, clip)
        embedding = _embed_or_skip(embedder, wave, config.prepare.sample_rate, segment_id, skipped)
        if embedding is not None:
            rows.append(embedding)
            speakers.append(item.speaker)
            ids.append(segment_id)
    return _embedded(rows, speakers, ids), skipped, f"resynthesised with {vocoder.uri} (step {vocoder.step})"


def _embed_or_skip(embedder: SpeakerEmbedder, wave: np.ndarray, rate: int, item: str,
                   skipped: Skipped) -> np.ndarray | None:
    try:
        return np.asarray(embedder.embed(wave, rate), dtype=np.float64)
    except SilentInputError:
        skipped.add("silent", item)
    except ValueError:  # empty, too short or not finite
        skipped.add("unusable", item)
    return None


def _embedded(rows: list[np.ndarray], speakers: list[str], ids: list[str]) -> EmbeddedSet:
    embeddings = np.stack(rows) if rows else np.zeros((0, 0))
    return EmbeddedSet(embeddings, speakers, ids)
