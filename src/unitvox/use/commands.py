"""export, encode, vocode and resynthesize: a trained model on files of one's own.

Run: unitvox export --run ./runs/exp1 --out model/
     unitvox encode --model model/ in.wav more/ --out units.jsonl [--deduplicate]
     unitvox vocode --model model/ --units units.jsonl --out wavs/ [--speaker ref.wav]
     unitvox resynthesize --model model/ in.wav --out wavs/ [--speaker ref.wav]
An input that cannot be used is reported (file, line, reason) and skipped; the others are done, and
the command then exits 2 (bad input: a Job should not retry it) instead of 0.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass, field

import numpy as np
import soundfile
from tqdm import tqdm

from unitvox import exitcodes
from unitvox.config import ConfigError
from unitvox.store import open_store, split_uri
from unitvox.use.inputs import (Failure, audio_sources, check_levels, read_recording, read_unit_file,
                                unit_file_name)

HELP = {
    "export": "write a run's model as a self-contained bundle (weights, codebook, fingerprints, model card)",
    "encode": "turn recordings into units with a trained model (a bundle or a run)",
    "vocode": "turn units (units.jsonl or text, one utterance a line) into audio with a trained model",
    "resynthesize": "encode then vocode recordings; voice conversion with --speaker",
}
EXAMPLES = {
    "export": """examples:
  unitvox export --run ./runs/exp1 --out model/
  unitvox export --run s3://bucket/runs/exp1 --out s3://bucket/models/exp1 --checkpoint latest""",
    "encode": """examples:
  unitvox encode --model model/ in.wav more/ --out units.jsonl
  unitvox encode --model s3://bucket/runs/exp1 s3://bucket/raw/ --out units.jsonl --deduplicate""",
    "vocode": """examples:
  unitvox vocode --model model/ --units units.jsonl --out wavs/
  unitvox vocode --model model/ --units lm_samples.txt --out wavs/ --speaker ref.wav   # one utterance a line""",
    "resynthesize": """examples:
  unitvox resynthesize --model model/ in.wav --out wavs/
  unitvox resynthesize --model model/ recordings/ --out wavs/ --speaker target.wav   # voice conversion""",
}


NO_DURATIONS = ("run units without durations: this model was trained on frame units (train.units frames) and has "
                "no duration predictor; give `durations` beside the units (`unitvox encode --deduplicate` writes "
                "them) or use a model trained with train.units deduplicated")


@dataclass
class Outcome:
    """What a command wrote and what it skipped."""

    written: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exitcodes.CONFIG if self.failures else exitcodes.DONE

    def skip(self, failure: Failure) -> None:
        self.failures.append(failure)
        print(f"unitvox: skipped {failure}", file=sys.stderr)


def export(run: str, out: str, checkpoint: str = "best") -> list[str]:
    """Write the bundle of `run`'s checkpoint under `out`; returns the file names written."""
    from unitvox.model import bundle as bundles  # torch: loaded once a command runs

    made = bundles.from_run(open_store(run), checkpoint)
    bundles.check_fingerprints(made.description, made.centroids, {}, made.where)
    return bundles.write(made, open_store(out))


def load_model(source: str, checkpoint: str = "best", device: str = "cpu"):
    from unitvox.model.unit_model import UnitModel  # torch: loaded once a command runs

    return UnitModel.from_pretrained(source, checkpoint=checkpoint, device=device)


def encode(model, inputs: list[str], out: str, deduplicate: bool = False) -> Outcome:
    """Units of every recording under `inputs`, as JSON lines at `out` (the run's units.jsonl format)."""
    from unitvox.model.unit_model import deduplicated  # torch: loaded once a command runs

    outcome, rows = Outcome(), []
    sources, failures = audio_sources(inputs)
    for failure in failures:
        outcome.skip(failure)
    for source in tqdm(sources, desc="encode", unit="file", disable=None):
        wave = _recording(source, model, outcome)
        if wave is None:
            continue
        units = model.encode(wave, model.sample_rate, progress=source.source_id)
        row = {"id": source.source_id, "source": source.uri, "duration": round(len(wave) / model.sample_rate, 4),
               "hop_seconds": model.hop_seconds, "codebook": model.codebook.hash}
        if deduplicate:
            run_units, run_durations = deduplicated(units)
            row.update(units=run_units.tolist(), durations=run_durations.tolist(), deduplicated=True)
        else:
            row["units"] = units.tolist()
        rows.append(row)
    if rows:
        store, key = split_uri(out)
        store.write_jsonl(key, rows)
        outcome.written.append(store.url(key))
    return outcome


def vocode(model, unit_files: list[str], out: str, speaker: str | None = None) -> Outcome:
    """One `<id>.wav` under `out` per utterance of the unit files (JSON lines or whitespace-separated text)."""
    outcome, store = Outcome(), open_store(out)
    embedding = _speaker_embedding(model, speaker)
    if model.conditioned and embedding is None:
        raise ConfigError("--speaker: this model is speaker-conditioned; give a reference recording of the voice")
    for uri in unit_files:
        sequences, failures = read_unit_file(uri, model.k, model.pieces_deduplicated)
        for failure in failures:
            outcome.skip(failure)
        for sequence in tqdm(sequences, desc=f"vocode {uri}", unit="utt", disable=None):
            if sequence.deduplicated and sequence.durations is None and not model.deduplicated:
                outcome.skip(Failure(unit_file_name(uri), NO_DURATIONS, sequence.line))
                continue
            wave = model.vocode(sequence.units, embedding, durations=sequence.durations,
                                deduplicated=sequence.deduplicated)
            outcome.written.append(write_wav(store, f"{sequence.name}.wav", wave, model.sample_rate))
    return outcome


def resynthesize(model, inputs: list[str], out: str, speaker: str | None = None) -> Outcome:
    """encode then vocode each recording to `out/<id>.wav`; in the voice of `speaker` when given, else its own."""
    outcome, store = Outcome(), open_store(out)
    embedding = _speaker_embedding(model, speaker)
    sources, failures = audio_sources(inputs)
    for failure in failures:
        outcome.skip(failure)
    for source in tqdm(sources, desc="resynthesize", unit="file", disable=None):
        wave = _recording(source, model, outcome)
        if wave is None:
            continue
        voice = embedding if embedding is not None or not model.conditioned else model.embed(wave)
        frames = model.encode(wave, model.sample_rate, progress=source.source_id)
        estimate = model.vocode(frames, voice, deduplicated=False)  # the recording's own timing, either model
        outcome.written.append(write_wav(store, f"{source.source_id}.wav", estimate, model.sample_rate))
    return outcome


def _recording(source, model, outcome: Outcome) -> np.ndarray | None:
    """The recording at the model's rate, or None (and a Failure) when it cannot be used."""
    from unitvox.audio import AudioError

    try:
        wave = read_recording(source, model.sample_rate)
    except (AudioError, FileNotFoundError) as error:
        outcome.skip(Failure(source.uri, f"{getattr(error, 'reason', 'missing')}: {error}"))
        return None
    if len(wave) < model.hop_samples:
        outcome.skip(Failure(source.uri, f"too_short: {len(wave)} samples, less than one unit frame "
                                         f"({model.hop_samples} samples)"))
        return None
    warning = check_levels(wave, model.sample_rate, model.bundle.description.get("levels", {}))
    if warning:
        print(f"unitvox: warning: {source.uri}: {warning} (encoded anyway)", file=sys.stderr)
    return wave


def _speaker_embedding(model, speaker: str | None):
    if speaker is None:
        return None
    if not model.conditioned:
        raise ConfigError("--speaker: this model has no speaker conditioning (trained with train.speaker.enabled false)")
    sources, failures = audio_sources([speaker])
    if failures or len(sources) != 1:
        raise ConfigError(f"--speaker {speaker}: expected one readable recording"
                          + (f"; {failures[0]}" if failures else f", found {len(sources)}"))
    outcome = Outcome()
    wave = _recording(sources[0], model, outcome)
    if wave is None:
        raise ConfigError(f"--speaker {speaker}: {outcome.failures[0]}")
    return model.embed(wave)


def write_wav(store, key: str, wave: np.ndarray, rate: int) -> str:
    """16-bit WAV, as the samples stage writes its reconstructions; returns the file's URI."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1, 1), rate, format="WAV", subtype="PCM_16")
    store.write_bytes(key, buffer.getvalue())
    return store.url(key)


# ---------------------------------------------------------------------------------------------
# The command line (cli.py's table points here)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "export":
        parser.add_argument("--run", "--run-root", dest="run", required=True,
                            help="run root: ./runs/NAME, file:///abs/path or s3://bucket/prefix")
        parser.add_argument("--out", required=True, help="folder (or s3:// prefix) to write the bundle into")
        parser.add_argument("--checkpoint", default="best", help="best (default), latest, or a checkpoint URI")
        return
    parser.add_argument("--model", required=True, help="a bundle folder (unitvox export) or a run root, local or s3://")
    parser.add_argument("--checkpoint", default="best", help="with a run root: best (default), latest or a URI")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    if name == "vocode":
        parser.add_argument("--units", dest="inputs", action="append", required=True, metavar="FILE",
                            help="units as JSON lines (units.jsonl) or text, one utterance a line (repeatable)")
    else:
        parser.add_argument("inputs", nargs="+", metavar="INPUT",
                            help="audio files, folders, list files (one path a line) or s3:// prefixes")
    parser.add_argument("--out", required=True,
                        help="the units file to write" if name == "encode" else "folder (or s3:// prefix) for the wavs")
    if name == "encode":
        parser.add_argument("--deduplicate", action="store_true", help="write run units with their durations")
    else:
        parser.add_argument("--speaker", help="reference recording of the voice to speak in (conditioned models)")


def run(name: str, args: argparse.Namespace) -> int:
    if name == "export":
        written = export(args.run, args.out, args.checkpoint)
        print(f"exported {args.run} to {args.out}: {', '.join(written)}")
        return exitcodes.DONE
    model = load_model(args.model, args.checkpoint, args.device)
    if name == "encode":
        outcome = encode(model, args.inputs, args.out, args.deduplicate)
    elif name == "vocode":
        outcome = vocode(model, args.inputs, args.out, args.speaker)
    else:
        outcome = resynthesize(model, args.inputs, args.out, args.speaker)
    done = "units file" if name == "encode" else "wavs"
    print(f"{name}: {len(outcome.written)} {done} written to {args.out}"
          + (f"; {len(outcome.failures)} inputs skipped (listed above)" if outcome.failures else ""))
    return outcome.exit_code
