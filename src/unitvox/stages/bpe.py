"""bpe: SentencePiece BPE over unit strings, and the corpus's most frequent unit motifs.

Run: unitvox bpe --config jobs/base.yaml --run ./runs/exp1
Writes bpe/bpe.model, bpe/bpe.vocab, bpe/motifs.json and bpe/_SUCCESS.json.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from unitvox.config import Config
from unitvox.errors import IncompleteError
from unitvox.layout import BPE_MODEL as MODEL, BPE_MOTIFS as MOTIFS, BPE_VOCAB as VOCAB, UNITS
from unitvox.stages import Context, Phase
from unitvox.stages.record import upstream, write_success
from unitvox.store import Store
from unitvox.units import bpe

PHASES = (Phase("train"),)


def inputs(config: Config, store: Store) -> dict[str, Any]:
    return upstream(store, "tokenize", UNITS, "bpe")


def train(context: Context) -> dict[str, Any]:
    """Train BPE on every segment's unit string, then count the motifs it finds."""
    config, store = context.config, context.store
    settings = config.bpe
    with tempfile.TemporaryDirectory(prefix="unitvox-bpe-") as folder:
        text_path = Path(folder) / "units.txt"
        hop_seconds, segments = _write_unit_text(store, text_path, settings.deduplicate)
        if segments == 0:
            raise IncompleteError(f"bpe: {store.url(UNITS)} holds no segments")
        trained = bpe.train(text_path, Path(folder) / "bpe", settings.vocab_size, threads=os.cpu_count() or 1)
        store.upload_file(trained.model_path, MODEL)
        store.upload_file(trained.model_path.with_suffix(".vocab"), VOCAB)
        counter = _count_motifs(store, trained.model_path, hop_seconds, settings.deduplicate)
    motifs = {
        "vocab_size_requested": trained.requested,
        "vocab_size": trained.vocab_size,
        "notes": trained.notes,
        "deduplicated": settings.deduplicate,
        "segments": segments,
        "hop_seconds": hop_seconds,
        **counter.summary(),
        "piece_length_histogram": counter.length_histogram(),
        "motifs": counter.motifs(settings.top_motifs, settings.min_motif_units),
    }
    store.write_json(MOTIFS, motifs)
    write_success(
        store, "bpe", config_hash=config.stage_hash("bpe"), inputs=inputs(config, store),
        outputs=[MODEL, VOCAB, MOTIFS], started=context.started,
        extra={"stage": "bpe", "config": config.to_dict()["bpe"], "notes": trained.notes},
    )
    return {"vocab_size": trained.vocab_size, "motifs": len(motifs["motifs"]), "notes": trained.notes}


def _write_unit_text(store: Store, path: Path, deduplicate: bool) -> tuple[float, int]:
    hop_seconds, segments = 0.02, 0
    with open(path, "w", encoding="utf-8") as out:
        for row in store.read_jsonl(UNITS):
            units, _ = bpe.sequence(row, deduplicate)
            if units:
                out.write(bpe.units_to_text(units) + "\n")
                segments += 1
            hop_seconds = row["hop_seconds"]
    return hop_seconds, segments


def _count_motifs(store: Store, model_path: Path, hop_seconds: float, deduplicate: bool) -> bpe.MotifCounter:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    counter = bpe.MotifCounter(hop_seconds)
    for row in store.read_jsonl(UNITS):
        units, durations = bpe.sequence(row, deduplicate)
        if units:
            counter.add(processor.encode(bpe.units_to_text(units), out_type=str), durations)
    return counter
