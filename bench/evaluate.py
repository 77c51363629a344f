"""Benchmark of the evaluation metrics: seconds of compute per second of audio, metric by metric.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/evaluate.py
     .venv/bin/python bench/evaluate.py --utterances 12 --seconds 6 --corpus ../shared/corpus/librispeech-mini

Each metric runs over the same utterances (the first of each reader, cut to --seconds), with the
original plus white noise at 20 dB standing in for a resynthesis. A figure is CPU seconds (and wall
seconds) per second of audio scored, for one call: a metric that analyses both sides (MCD, PESQ,
STOI, F0 errors) counts both in its time but the audio once. Loading a model (pocketsphinx, DNSMOS,
resemblyzer) is timed once and printed apart. The last line estimates an evaluation of N held-out
utterances: every metric on the resynthesis, and the original's own row (its ASR transcript, F0 track,
DNSMOS and speaker embedding), as the evaluate stage does. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import os
import argparse
import resource
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = "../shared/corpus/librispeech-mini"
RATE = 16000


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds of compute per second of audio for each evaluation metric.",
        epilog="example:\n  OMP_NUM_THREADS=1 .venv/bin/python bench/evaluate.py --utterances 6 --seconds 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--utterances", type=int, default=6, help="utterances to score (default: 6)")
    parser.add_argument("--seconds", type=float, default=5.0, help="cut each to this many seconds (default: 5)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help=f"audio folder laid out <speaker>/..., relative to the repo root "
                             f"(default: {DEFAULT_CORPUS})")
    parser.add_argument("--demo-utterances", type=int, default=12,
                        help="held-out utterances in the estimate of a whole evaluation (default: 12, the demo's)")
    parser.add_argument("--demo-seconds", type=float, default=3.0,
                        help="their mean length in seconds (default: 3, the demo corpus's sentences)")
    return parser.parse_args()


def load_utterances(corpus: str, count: int, seconds: float) -> tuple[list[np.ndarray], str]:
    """Utterances of the corpus (readers in turn), or the demo's synthetic speech when it is missing."""
    import soundfile
    import soxr

    folder = (REPO / corpus).resolve()
    if not folder.is_dir():
        import tempfile

        from unitvox.demo import synthesise_corpus

        folder = Path(tempfile.mkdtemp(prefix="unitvox-bench-corpus-"))
        synthesise_corpus(folder, speakers=4, utterances_per_speaker=4)
        described = f"GENERATED espeak-ng speech in {folder} ({corpus} is missing)"
    else:
        described = str(corpus)
    readers = [sorted(p for p in reader.iterdir() if p.suffix in (".flac", ".wav"))
               for reader in sorted(p for p in folder.iterdir() if p.is_dir())]
    files = [reader[i] for i in range(max(map(len, readers))) for reader in readers if i < len(reader)][:count]
    waves = []
    for path in files:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
        wave = soxr.resample(wave, rate, RATE).astype(np.float32) if rate != RATE else wave
        waves.append(wave[: int(seconds * RATE)])
    return waves, f"{described}: {len(waves)} utterances, {sum(map(len, waves)) / RATE:.1f} s"


def with_noise(wave: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(wave)).astype(np.float32)
    return wave + noise * np.sqrt(np.mean(wave ** 2) / 10 ** (snr_db / 10))


def timed(function) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of `function()`; CPU counts every thread of this process."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def metric_calls(originals: list[np.ndarray]):
    """metric name -> (load seconds, call(original, resynthesis), sides of the original row it repeats)."""
    from unitvox.evaluation.asr import build_asr_engine
    from unitvox.evaluation.distortion import mel_cepstral_distortion_dtw, pesq_wideband, stoi
    from unitvox.evaluation.naturalness import Dnsmos
    from unitvox.evaluation.pitch import f0_errors, track_f0

    calls = {}
    load, _, engine = timed(lambda: build_asr_engine("pocketsphinx"))
    calls["asr pocketsphinx (one transcript)"] = (load, lambda a, b: engine.transcribe(b, RATE), 2)
    for tracker in ("pyin", "pyin-fine"):
        sides = 2 if tracker == "pyin" else 0  # the stage tracks both sides with pyin; pyin-fine is for comparison
        calls[f"f0 {tracker} (one track)"] = (0.0, lambda a, b, t=tracker: track_f0(b, RATE, tracker=t), sides)
    calls["f0 errors (two tracks)"] = (0.0, lambda a, b: f0_errors(track_f0(a, RATE), track_f0(b, RATE)), 0)
    load, _, dnsmos = timed(Dnsmos)
    calls["dnsmos (one side)"] = (load, lambda a, b: dnsmos.score(b, RATE), 2)
    calls["mcd dtw"] = (0.0, lambda a, b: mel_cepstral_distortion_dtw(a, b, RATE), 1)
    calls["pesq wb"] = (0.0, lambda a, b: pesq_wideband(a, b, RATE), 1)
    calls["stoi"] = (0.0, lambda a, b: stoi(a, b, RATE), 1)
    try:
        from unitvox.evaluation.speaker import build_speaker_embedder

        load, _, embedder = timed(lambda: build_speaker_embedder("resemblyzer"))
        calls["speaker resemblyzer (one embedding)"] = (load, lambda a, b: embedder.embed(b, RATE), 2)
    except ImportError as error:
        print(f"(speaker embedding left out: {error})")
    # Warm-up: numba's first DTW and pyin compile, onnxruntime's first run allocates.
    for _, call, _ in calls.values():
        call(originals[0][: RATE], with_noise(originals[0][: RATE], 20.0, 0))
    return calls


def evaluation_estimate(rows, arguments) -> float:
    """CPU seconds of a whole evaluation: each metric as often as the stage calls it, plus model loads.

    DNSMOS scores a fixed 9 s window however short the clip, so its cost is per clip, not per second,
    when the clips are shorter than a window (and the benchmark's are too).
    """
    total = 0.0
    for name, load, per_second, _, sides, per_call in rows:
        if not sides:
            continue
        if name.startswith("dnsmos") and arguments.demo_seconds <= 9.0 and arguments.seconds <= 9.0:
            total += load + per_call * sides * arguments.demo_utterances
        else:
            total += load + per_second * sides * arguments.demo_utterances * arguments.demo_seconds
    return total


def main() -> int:
    arguments = parse_arguments()
    load_at_start = os.getloadavg()
    originals, described = load_utterances(arguments.corpus, arguments.utterances, arguments.seconds)
    estimates = [with_noise(wave, 20.0, seed) for seed, wave in enumerate(originals)]
    audio_seconds = sum(map(len, originals)) / RATE
    calls = metric_calls(originals)
    rows = []
    for name, (load, call, per_evaluation) in calls.items():
        cpu = wall = 0.0
        for original, resynthesis in zip(originals, estimates):
            spent_cpu, spent_wall, _ = timed(lambda: call(original, resynthesis))
            cpu, wall = cpu + spent_cpu, wall + spent_wall
        rows.append((name, load, cpu / audio_seconds, wall / audio_seconds, per_evaluation, cpu / len(originals)))
    print(f"corpus: {described}; resynthesis stand-in: the original plus white noise at 20 dB")
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at start "
          f"{'/'.join(f'{v:.1f}' for v in load_at_start)}, at end {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    header = f"{'metric':<38} {'load s':>7} {'CPU s / audio s':>16} {'wall s / audio s':>17}"
    print(header + "\n" + "-" * len(header))
    for name, load, cpu, wall, _, _ in rows:
        print(f"{name:<38} {load:>7.2f} {cpu:>16.4f} {wall:>17.4f}")
    print(f"estimate for {arguments.demo_utterances} held-out utterances of {arguments.demo_seconds:g} s "
          f"(the resynthesis and the original's row; pyin): {evaluation_estimate(rows, arguments):.1f} CPU s, "
          "models loaded once")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
