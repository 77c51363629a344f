"""SentencePiece BPE over unit strings, and the motif statistics drawn from it.

Each unit becomes one CJK ideograph (unit u -> chr(0x4E00 + u)), so SentencePiece sees plain
characters with no whitespace and no normalisation surprises.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BASE = 0x4E00
log = logging.getLogger(__name__)


def units_to_text(units: Iterable[int]) -> str:
    return "".join(chr(_BASE + int(u)) for u in units)


def text_to_units(text: str) -> list[int]:
    return [ord(c) - _BASE for c in text if ord(c) >= _BASE]


def sequence(row: dict[str, Any], deduplicate: bool) -> tuple[list[int], list[int]]:
    """Units of one segment and the frames each stands for (runs when deduplicated, else single frames)."""
    if deduplicate:
        return row["run_units"], row["run_durations"]
    return row["units"], [1] * len(row["units"])


@dataclass
class TrainedModel:
    model_path: Path
    vocab_size: int
    requested: int
    notes: list[str] = field(default_factory=list)


def train(text_path: Path, model_prefix: Path, vocab_size: int, threads: int = 1) -> TrainedModel:
    """Train BPE; a vocabulary the data cannot support is lowered to the largest it can, with a warning."""
    import sentencepiece

    requested, size, notes = vocab_size, vocab_size, []
    for _ in range(3):
        try:
            sentencepiece.SentencePieceTrainer.train(
                input=str(text_path), model_prefix=str(model_prefix), vocab_size=size, model_type="bpe",
                character_coverage=1.0, split_by_whitespace=False, add_dummy_prefix=False,
                normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1,
                max_sentence_length=1 << 24, max_sentencepiece_length=16, num_threads=threads,
                hard_vocab_limit=True, minloglevel=2,
            )
            return TrainedModel(Path(f"{model_prefix}.model"), size, requested, notes)
        except RuntimeError as error:
            limit = _supported_size(str(error))
            if limit is None or limit == size:
                raise
            note = f"bpe.vocab_size: {size} is more than the data supports; lowered to {limit}"
            if limit > size:
                note = f"bpe.vocab_size: {size} is below the {limit} pieces needed for every unit; raised to {limit}"
            log.warning(note)
            notes.append(note)
            size = limit
    raise RuntimeError(f"bpe.vocab_size: SentencePiece refused {requested} and every adjusted size")


def _supported_size(message: str) -> int | None:
    """The vocabulary size SentencePiece says it can build, from its error message."""
    match = re.search(r"value <= (\d+)", message)
    if match:
        return int(match.group(1))
    match = re.search(r"vocab_size.*?(\d+).*?required.*?(\d+)", message, re.IGNORECASE | re.DOTALL)
    if match:
        return int(match.group(2))
    return None


@dataclass
class MotifCounter:
    """Counts of BPE pieces over a corpus, with the frames each occurrence covers."""

    hop_seconds: float
    counts: Counter = field(default_factory=Counter)
    frames: Counter = field(default_factory=Counter)
    total_frames: int = 0
    total_pieces: int = 0
    total_units: int = 0

    def add(self, pieces: list[str], durations: list[int]) -> None:
        position = 0
        for piece in pieces:
            length = len(piece)
            self.counts[piece] += 1
            self.frames[piece] += int(sum(durations[position : position + length]))
            position += length
        self.total_frames += int(sum(durations))
        self.total_pieces += len(pieces)
        self.total_units += len(durations)

    def motifs(self, top: int, min_units: int) -> list[dict[str, Any]]:
        ranked = sorted((p for p in self.counts if len(text_to_units(p)) >= min_units),
                        key=lambda p: (-self.counts[p], p))[:top]
        return [
            {
                "units": text_to_units(piece),
                "length": len(text_to_units(piece)),
                "count": self.counts[piece],
                "mean_duration_seconds": round(self.frames[piece] * self.hop_seconds / self.counts[piece], 4),
                "coverage": round(self.frames[piece] / max(1, self.total_frames), 6),
            }
            for piece in ranked
        ]

    def length_histogram(self) -> dict[str, int]:
        lengths = Counter()
        for piece, count in self.counts.items():
            lengths[len(text_to_units(piece))] += count
        return {str(length): lengths[length] for length in sorted(lengths)}

    def summary(self) -> dict[str, Any]:
        multi = sum(f for p, f in self.frames.items() if len(text_to_units(p)) > 1)
        return {
            "units": self.total_units, "pieces": self.total_pieces,
            "units_per_piece": round(self.total_units / max(1, self.total_pieces), 4),
            "distinct_pieces_used": len(self.counts),
            "coverage_by_multi_unit_motifs": round(multi / max(1, self.total_frames), 6),
            "mean_piece_seconds": round(self.total_frames * self.hop_seconds / max(1, self.total_pieces), 4),
        }
