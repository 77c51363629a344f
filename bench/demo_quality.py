"""Demo quality at the demo's budget: train variants of jobs/demo.yaml on one tokenized corpus and evaluate each.

Run: .venv/bin/python bench/demo_quality.py --corpus ../shared/corpus/librispeech-mini --work /tmp/demo-quality
     .venv/bin/python bench/demo_quality.py --corpus runs/demo-corpus --variants hifigan vocos

prepare and tokenize run once per content setting (the tokenize overrides of a variant); every variant
then trains from a copy of that run and is evaluated with the demo's own evaluate section. It prints,
per variant, training seconds, the step and validation mel L1 of best.pt (the checkpoint evaluated),
and the listeners' figures (CER, WER, DNSMOS overall, STOI, MCD-DTW, speaker similarity). Variants
run one after another, so the seconds compare on a quiet machine; the evaluation figures do not
depend on load.
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

# name -> --set overrides on top of jobs/demo.yaml. Keys under tokenize. choose the content run.
SCALES = "train.lambdas.mel_spectrogram.scales=[[64,8],[128,16],[256,32],[512,64],[2048,128]]"
VOCOS = ["train.generator.type=vocos", "train.generator.size=tiny", "train.lr_generator=0.0005", SCALES,
         "train.generator_warmup_steps=2500", "train.max_steps=2700"]
# resemblyzer's pretrained d-vector, frozen: the demo's speaker encoder since issue 16
RESEMBLYZER = ["train.speaker.encoder=resemblyzer", "train.speaker.freeze_encoder=true"]
VARIANTS = {
    # jobs/demo.yaml before issue 14: hifigan tiny, one mel scale, k=50
    "hifigan": ["tokenize.kmeans.k=50", "train.generator.type=hifigan", "train.generator.size=tiny",
                "train.lr_generator=0.002", "train.lambdas.mel_spectrogram.scales=[]",
                "train.generator_warmup_steps=1500", "train.max_steps=1700"],
    "vocos-k50": ["tokenize.kmeans.k=50", *VOCOS],
    "vocos": ["tokenize.kmeans.k=100", *VOCOS],  # jobs/demo.yaml before issue 16 (a learned speaker encoder)
    "vocos-k200": ["tokenize.kmeans.k=200", *VOCOS],
    # the demo's content and vocoder with log-mel features in place of MFCCs
    "vocos-logmel": ["tokenize.kmeans.k=100", "tokenize.features.extractor=logmel", *VOCOS, *RESEMBLYZER],
    "vocos-logmel-k200": ["tokenize.kmeans.k=200", "tokenize.features.extractor=logmel", *VOCOS, *RESEMBLYZER],
    # the same with a GAN phase twice as long (400 of 2700 steps): jobs/demo.yaml now
    "vocos-logmel-gan400": ["tokenize.kmeans.k=100", "tokenize.features.extractor=logmel", *VOCOS, *RESEMBLYZER,
                            "train.generator_warmup_steps=2300"],
    # 400 GAN steps in about the demo's time: a shorter warm-up (1700 + 400 steps, a GAN step ~4 mel-only ones)
    "vocos-logmel-gan400-short": ["tokenize.kmeans.k=100", "tokenize.features.extractor=logmel", *VOCOS, *RESEMBLYZER,
                                  "train.generator_warmup_steps=1700", "train.max_steps=2100"],
    # resemblyzer's pretrained d-vector, frozen, as the speaker encoder (bench/voice_conversion.py: it
    # converts voices far better than the learned one at the same steps; here, its cost and quality)
    "vocos-resemblyzer": ["tokenize.kmeans.k=100", *VOCOS, *RESEMBLYZER],  # jobs/demo.yaml now
}
FIGURES = ("cer_mean", "wer_mean", "dnsmos_overall_mean", "stoi_mean", "mcd_dtw_mean", "speaker_similarity_mean")


def _unitvox(command: str, run: Path, sets: list[str], log: Path) -> float:
    started = time.perf_counter()
    argv = [*UNITVOX, command, "--config", str(CONFIG), "--run", str(run), *(a for s in sets for a in ("--set", s))]
    with log.open("w") as sink:
        code = subprocess.run(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
    if code not in (0, 3):  # 3: evaluation gates failed, the figures are still written
        raise SystemExit(f"{' '.join(argv)} exited {code}; see {log}")
    return time.perf_counter() - started


def _content_run(work: Path, corpus: str, sets: list[str]) -> Path:
    content = sorted(s for s in sets if s.startswith("tokenize."))
    run = work / ("content-" + ("-".join(s.split("=", 1)[1] for s in content) or "default"))
    if not (run / "tokenize" / "_SUCCESS.json").exists():
        run.mkdir(parents=True, exist_ok=True)
        _unitvox("pipeline", run, [f"prepare.input={corpus}", *content, "pipeline.stages=[prepare,tokenize]"],
                 run.with_suffix(".log"))
    return run


def _best(run: Path) -> tuple[int, float]:
    """Step and validation mel L1 of best.pt, which evaluate scores: the log's last improved validation."""
    rows = [json.loads(line) for line in (run / "train" / "training_log.jsonl").read_text().splitlines()]
    row = [row for row in rows if row.get("validation/improved")][-1]
    return int(row["step"]), float(row["validation/mel"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a folder of recordings (prepare.input)")
    parser.add_argument("--work", default="/tmp/demo-quality", help="where the runs go")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    work = Path(args.work).resolve()
    corpus = str(Path(args.corpus).resolve())
    print(f"{'variant':<14} {'train s':>8} {'best step':>9} {'val mel':>8} " + " ".join(f"{f.removesuffix('_mean'):>18}" for f in FIGURES))
    for name in args.variants:
        sets = [f"prepare.input={corpus}", *VARIANTS[name]]
        content = _content_run(work, corpus, sets)
        run = work / name
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        for stage in ("prepare", "tokenize"):
            shutil.copytree(content / stage, run / stage)
        seconds = _unitvox("train", run, sets, work / f"{name}.train.log")
        _unitvox("evaluate", run, sets, work / f"{name}.evaluate.log")
        summary = json.loads((run / "evaluate" / "metrics.json").read_text()).get("summary", {})
        figures = " ".join(f"{summary.get(f, float('nan')):>18.3f}" for f in FIGURES)
        step, mel = _best(run)
        print(f"{name:<14} {seconds:>8.0f} {step:>9} {mel:>8.3f} {figures}", flush=True)


if __name__ == "__main__":
    main()
