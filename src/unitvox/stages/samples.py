"""samples: listening material from a trained vocoder, each with its metadata.

Run: unitvox samples --config jobs/base.yaml --run ./runs/exp1
Writes, under samples/:
    <segment>/original.wav, reconstruction.wav, to_<speaker>.wav (voice conversions), metadata.json
    multi_speaker/<segment>/<speaker>.wav and metadata.json   (one content, several voices)
    long_form/long_form.wav and metadata.json                 (several segments of one speaker joined)
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile

from unitvox.config import Config
from unitvox.stages import Context, Phase
from unitvox.stages.evaluate import held_out
from unitvox.stages.evaluate import inputs as evaluate_inputs
from unitvox.layout import SAMPLES as ROOT
from unitvox.stages.record import write_success
from unitvox.store import Store
from unitvox.vocoder.dataset import AudioReader
from unitvox.vocoder.inference import Vocoder

PHASES = (Phase("render"),)
PAUSE_SECONDS = 0.3


def inputs(config: Config, store: Store) -> dict[str, Any]:
    return evaluate_inputs(config, store) | {"checkpoint_name": config.samples.checkpoint}


def render(context: Context) -> dict[str, Any]:
    config, store, settings = context.config, context.store, context.config.samples
    items, references = held_out(store, config)
    vocoder = Vocoder(config, store, settings.checkpoint)
    rate, reader = config.prepare.sample_rate, AudioReader(store)
    position = {item.segment_id: i for i, item in enumerate(references.items)}
    speakers = sorted(references.by_speaker)
    clip_of = (lambda item: references.reference(position[item.segment_id])) if vocoder.conditioned else (lambda _: None)
    written = []
    for item in items[: settings.count]:
        folder = f"{ROOT}/{item.segment_id}"
        _write_wav(store, f"{folder}/original.wav", reader.read(item.audio_key), rate)
        _write_wav(store, f"{folder}/reconstruction.wav", vocoder.generate(item.units, clip_of(item)), rate)
        targets = [s for s in speakers if s != item.speaker][: settings.conversions] if vocoder.conditioned else []
        for target in targets:
            clip = references.reference(position[item.segment_id], speaker=target)
            _write_wav(store, f"{folder}/to_{target}.wav", vocoder.generate(item.units, clip), rate)
        store.write_json(f"{folder}/metadata.json", {
            "segment": item.segment_id, "speaker": item.speaker, "source_audio": store.url(item.audio_key),
            "checkpoint": vocoder.uri, "step": vocoder.step, "conversions": targets, "units": len(item.units),
            "note": None if vocoder.conditioned else "no voice conversions: train.speaker.enabled is false",
        })
        written.append(folder)
    if vocoder.conditioned and items:
        written.append(_multi_speaker(store, vocoder, items[0], references, position, speakers, settings.voices, rate))
    written.append(_long_form(store, vocoder, items, clip_of, settings.long_form_segments, rate))
    write_success(store, "samples", config_hash=config.stage_hash("samples"), inputs=inputs(config, store),
                  outputs=[f"{folder}/metadata.json" for folder in written], started=context.started,
                  extra={"stage": "samples"})
    return {"folders": len(written), "under": store.url(ROOT)}


def _multi_speaker(store, vocoder, item, references, position, speakers, voices, rate) -> str:
    folder = f"{ROOT}/multi_speaker/{item.segment_id}"
    chosen = speakers[:voices]
    for speaker in chosen:
        clip = references.reference(position[item.segment_id], speaker=speaker)
        _write_wav(store, f"{folder}/{speaker}.wav", vocoder.generate(item.units, clip), rate)
    store.write_json(f"{folder}/metadata.json", {"segment": item.segment_id, "content_speaker": item.speaker,
                                                 "voices": chosen, "checkpoint": vocoder.uri})
    return folder


def _long_form(store, vocoder, items, clip_of, count, rate) -> str:
    """Segments of the most represented speaker, synthesised one by one and joined with short pauses."""
    speaker = max({i.speaker for i in items}, key=lambda s: sum(i.speaker == s for i in items))
    chosen = [i for i in items if i.speaker == speaker][:count]
    pause = np.zeros(int(PAUSE_SECONDS * rate), dtype=np.float32)
    pieces = []
    for item in chosen:
        pieces += [vocoder.generate(item.units, clip_of(chosen[0])), pause]
    folder = f"{ROOT}/long_form"
    _write_wav(store, f"{folder}/long_form.wav", np.concatenate(pieces[:-1]), rate)
    store.write_json(f"{folder}/metadata.json", {
        "speaker": speaker, "segments": [i.segment_id for i in chosen], "pause_seconds": PAUSE_SECONDS,
        "seconds": round(sum(len(p) for p in pieces[:-1]) / rate, 2), "checkpoint": vocoder.uri,
    })
    return folder


def _write_wav(store: Store, key: str, wave: np.ndarray, rate: int) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1, 1), rate, format="WAV", subtype="PCM_16")
    store.write_bytes(key, buffer.getvalue())
