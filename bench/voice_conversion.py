"""Voice conversion: how far `resynthesize --speaker` moves each speaker's voice towards another's.

Run: .venv/bin/python bench/voice_conversion.py --corpus ../shared/corpus/librispeech-mini
     .venv/bin/python bench/voice_conversion.py --corpus runs/demo-corpus --variants learned-300 resemblyzer

prepare and tokenize (MFCC, k=20, as the tests' tokenized run) run once; every variant trains the demo
config from a copy of that run (mel and contrastive losses only, no discriminators) and then converts
each speaker's first segment to every other speaker's voice. Per variant it prints the training
seconds and, over the ordered speaker pairs, with the evaluation's speaker embedder (resemblyzer):
  nearer   pairs whose conversion is nearer the reference than the source (the issue 16 criterion)
  margin   mean of similarity-to-reference minus similarity-to-source
  shift    mean gain in similarity to the reference over resynthesising the segment in its own voice
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITVOX = [sys.executable, "-m", "unitvox"]
CONFIG = ROOT / "jobs" / "demo.yaml"
CONTENT = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000"]
MAX_SPEAKERS = 6


def _warmup_only(steps: int, lr: float) -> list[str]:
    return [f"train.max_steps={steps}", f"train.generator_warmup_steps={steps}", f"train.validate_every={steps}",
            f"train.checkpoint_every={steps}", "train.segment_seconds=0.5", "train.batch_size=8",
            f"train.lr_generator={lr}", "train.validation_items=2", "metrics.port=0"]


FROZEN_RESEMBLYZER = ["train.speaker.encoder=resemblyzer", "train.speaker.freeze_encoder=true"]
VARIANTS = {
    "learned-300": _warmup_only(300, 0.0005),  # the voice-conversion test before issue 16 closed
    "learned": _warmup_only(1000, 0.002),
    "resemblyzer": [*FROZEN_RESEMBLYZER, *_warmup_only(1000, 0.002)],  # tests/model/test_voice_conversion.py
}


def _unitvox(*argv: str, log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as sink:
        code = subprocess.run([*UNITVOX, *argv], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"unitvox {' '.join(argv)} exited {code}; see {log}")
    return time.perf_counter() - started


def _sets(overrides: list[str]) -> list[str]:
    return [argument for override in overrides for argument in ("--set", override)]


def _first_segments(run: Path) -> dict[str, Path]:
    first: dict[str, Path] = {}
    for line in (run / "prepare" / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        first.setdefault(row["speaker"], run / row["audio"])
    return dict(sorted(first.items())[:MAX_SPEAKERS])


def _score(run: Path, embedder) -> dict[str, float]:
    import numpy as np
    import soundfile

    from unitvox.evaluation import speaker_similarity

    def read(path: Path):
        return soundfile.read(path, dtype="float32")[0]

    first = _first_segments(run)
    converted = {}
    for reference, reference_path in first.items():
        folder = run / "conversions" / f"to_{reference}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        _unitvox("resynthesize", "--model", str(run), *map(str, first.values()), "--out", str(folder),
                 "--speaker", str(reference_path), log=folder.with_suffix(".log"))
        for source, source_path in first.items():
            converted[source, reference] = read(folder / f"{source_path.stem}.wav")
    pairs = [(a, b) for a in first for b in first if a != b]

    def similarity(speaker, audio):
        return speaker_similarity(embedder, read(first[speaker]), audio, 16000)

    margins = [similarity(b, converted[a, b]) - similarity(a, converted[a, b]) for a, b in pairs]
    shifts = [similarity(b, converted[a, b]) - similarity(b, converted[a, a]) for a, b in pairs]
    return {"pairs": len(pairs), "nearer": int(sum(m > 0 for m in margins)),
            "margin": float(np.mean(margins)), "shift": float(np.mean(shifts))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a folder of recordings of several speakers (prepare.input)")
    parser.add_argument("--work", default="/tmp/voice-conversion", help="where the runs go")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    from unitvox.evaluation import build_speaker_embedder

    work = Path(args.work).resolve()
    content = work / "content"
    if not (content / "tokenize" / "_SUCCESS.json").exists():
        content.mkdir(parents=True, exist_ok=True)
        _unitvox("pipeline", "--config", str(CONFIG), "--run", str(content),
                 *_sets([f"prepare.input={Path(args.corpus).resolve()}", *CONTENT, "pipeline.stages=[prepare,tokenize]"]),
                 log=work / "content.log")
    embedder = build_speaker_embedder("resemblyzer")
    print(f"{'variant':<14} {'train s':>8} {'nearer':>8} {'margin':>8} {'shift':>8}", flush=True)
    for name in args.variants:
        run = work / name
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(content, run)
        seconds = _unitvox("train", "--config", str(CONFIG), "--run", str(run), *_sets([*CONTENT, *VARIANTS[name]]),
                           log=work / f"{name}.log")
        figures = _score(run, embedder)
        print(f"{name:<14} {seconds:>8.0f} {figures['nearer']:>3} of {figures['pairs']:<2} "
              f"{figures['margin']:>8.3f} {figures['shift']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
