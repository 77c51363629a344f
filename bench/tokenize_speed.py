"""Benchmark of the tokenize stage: audio seconds per wall second and peak memory, per extractor and corpus size.

Run: .venv/bin/python bench/tokenize_speed.py
     .venv/bin/python bench/tokenize_speed.py --scales 1 4 --extractors mfcc ssl --work /tmp/unitvox-bench

Every configuration (extractor x scale) gets its own run folder. `unitvox prepare` runs once first; its
rate is printed too but is not part of the tokenize figures. `unitvox tokenize` then runs in a child
process, timed from start to exit, and its peak resident memory comes from `os.wait4`. A scale of N
links every corpus file N times under speaker folders `<speaker>_copy<n>`, so segment ids stay unique.
Beside the stage's rate it prints the extractor's own on the same segments, config and layer (built
once and not timed, audio read beforehand) and their ratio: the stage's overhead over the encoder;
and each scale's peak memory over the smallest scale's.

The ssl extractor uses a wav2vec2-base-sized encoder (transformers defaults: 12 layers, hidden 768)
with random weights, saved to a local folder, so nothing is downloaded and the cost is that of the real
model. Peak memory should not grow with the scale (the design's "Bounded memory" rule).
"""

from __future__ import annotations

import os
import sys

# This file's name shadows the standard library's `tokenize` (which dataclasses and torch import)
# while its folder is first on sys.path, as it is when run as a script; so drop that folder first.
if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402 (after the sys.path fix above)
import json  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

# No numpy or torch up here: a child's ru_maxrss starts at its parent's RSS when it forks, so this
# process stays small and does its heavy work (corpus, model, torch facts) in fresh processes.

REPO = Path(__file__).resolve().parent.parent
CONFIG = "jobs/demo.yaml"
DEFAULT_CORPUS = "../shared/corpus/librispeech-mini"
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
SSL_LAYER = 6


@dataclass
class Measurement:
    """One child process: how long it ran, its peak resident memory and its exit code."""

    wall_seconds: float
    peak_rss_mib: float
    exit_code: int


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `unitvox tokenize` per extractor and corpus scale; print audio-s per wall-s and peak RSS.",
        epilog="example:\n  .venv/bin/python bench/tokenize_speed.py --scales 1 4 --extractors mfcc ssl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="corpus copies per run (default: 1 4)")
    parser.add_argument("--extractors", nargs="+", default=["mfcc", "ssl"], choices=["mfcc", "logmel", "ssl"],
                        help="feature extractors to time (default: mfcc ssl)")
    parser.add_argument("--work", help="folder for inputs, runs and logs, kept afterwards (default: a temporary one)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help=f"audio folder laid out <speaker>/..., relative to the repo root "
                             f"(default: {DEFAULT_CORPUS})")
    arguments = parser.parse_args()
    if any(scale < 1 for scale in arguments.scales):
        parser.error("--scales: every scale must be at least 1")
    return arguments


# ---------------------------------------------------------------------------------------------
# Inputs: the corpus, its scaled copies and the random ssl model


def find_corpus(requested: str, work: Path) -> tuple[Path, str]:
    """The corpus folder and a line saying what it is; generated audio when `requested` has none."""
    folder = (REPO / requested).resolve()
    if folder.is_dir() and _audio_files(folder):
        return folder, f"{requested} ({len(_audio_files(folder))} files)"
    generated = work / "generated-corpus"
    kind = in_fresh_process(_generate_corpus, generated)
    return generated, f"GENERATED {kind} in {generated} ({requested} is missing or has no audio)"


def in_fresh_process(function, *arguments):
    """`function(*arguments)` in a new interpreter, so its imports and memory never reach this process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, arguments)


def _generate_corpus(folder: Path) -> str:
    """Speech from the demo's synthesiser when it is there and works, else tones; says which."""
    try:
        from unitvox.demo import synthesise_corpus

        synthesise_corpus(folder)
        return "espeak-ng speech from unitvox.demo.synthesise_corpus"
    except (ImportError, RuntimeError):
        _write_tone_corpus(folder)
        return "noise and tones"


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _write_tone_corpus(folder: Path, speakers: int = 6, files_per_speaker: int = 10, sample_rate: int = 16000) -> None:
    """Gliding tones over a noise floor, 4 to 12 s a file, in `<speaker>/<speaker>-NNNN.wav` folders."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    for speaker in range(speakers):
        (folder / f"s{speaker}").mkdir(parents=True, exist_ok=True)
        for number in range(files_per_speaker):
            time_axis = np.arange(int(rng.uniform(4, 12) * sample_rate)) / sample_rate
            pitch = 120 + 40 * speaker + 30 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * time_axis)
            tone = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate)
            samples = (tone + 0.01 * rng.standard_normal(len(time_axis))).astype(np.float32)
            soundfile.write(folder / f"s{speaker}" / f"s{speaker}-{number:04d}.wav", samples, sample_rate)


def scaled_input(corpus: Path, scale: int, work: Path) -> Path:
    """A folder of symlinks holding every corpus file `scale` times, under `<speaker>_copy<n>/...`."""
    folder = work / "inputs" / f"x{scale}"
    for copy in range(scale):
        for source in _audio_files(corpus):
            speaker, *rest = source.relative_to(corpus).parts
            link = folder.joinpath(f"{speaker}_copy{copy}", *rest)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(source)
    return folder


def random_wav2vec2(folder: Path) -> Path:
    """A wav2vec2-base-sized encoder with seeded random weights and its feature extractor, saved to `folder`.

    Call it through `in_fresh_process`: torch and a 95M-parameter model would otherwise inflate this
    process and, through it, every peak RSS measured after.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as transformers_logging

    if not (folder / "config.json").exists():
        transformers_logging.disable_progress_bar()  # its bars would garble the report
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
        Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Running and measuring one command


def run_measured(command: list[str], log: Path) -> Measurement:
    """Run `command` from the repo root with output to `log`; wall time and peak RSS from `os.wait4`."""
    with open(log, "w") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        # wait4 rather than RUSAGE_CHILDREN: the latter is a maximum over all children reaped so far.
        _, status, usage = os.wait4(child.pid, 0)
        wall_seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return Measurement(wall_seconds, usage.ru_maxrss / 1024, child.returncode)  # ru_maxrss is KiB on Linux


def unitvox_command(stage: str, run: Path, overrides: list[str]) -> list[str]:
    sets = [item for override in overrides for item in ("--set", override)]
    return [sys.executable, "-m", "unitvox", stage, "--config", CONFIG, "--run", str(run), *sets]


def overrides_for(extractor: str, input_folder: Path, model: Path | None) -> list[str]:
    overrides = [f"prepare.input={input_folder}", "prepare.shards=1", "tokenize.shards=1",
                 f"tokenize.features.extractor={extractor}"]
    if extractor == "ssl":
        overrides += [f"tokenize.features.model={model}", f"tokenize.features.layer={SSL_LAYER}"]
    return overrides


def manifest_seconds(run: Path) -> float:
    """Total duration of the segments in the run's prepare manifest."""
    with open(run / "prepare" / "manifest.jsonl") as rows:
        return sum(json.loads(line)["duration"] for line in rows if line.strip())


def stage_seconds(log: Path) -> float:
    """The stage's own time as the CLI reports it (`tokenize: ran (...) in 12.3 s`): no interpreter start-up."""
    found = re.search(r": ran \(.*\) in ([0-9.]+) s$", log.read_text(), re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def _checked(measurement: Measurement, command: list[str], log: Path) -> Measurement:
    if measurement.exit_code != 0:
        tail = log.read_text().splitlines()[-20:]
        raise SystemExit(f"failed (exit {measurement.exit_code}): {shlex.join(command)}\n" + "\n".join(tail))
    return measurement


def time_extractor(run: Path, overrides: list[str]) -> float:
    """Audio seconds per second of the extractor alone over the run's segments: built once, untimed,
    then `features.extract` on each segment's audio, read beforehand. The stage's ceiling.

    Only the segments of the first copy are timed: the other copies are the same files, so their rate
    is the same, and timing them all would make this the longest part of the benchmark."""
    import time as clock

    from unitvox import audio
    from unitvox.config import load
    from unitvox.store import LocalStore
    from unitvox.units import features

    config = load(str(REPO / CONFIG), overrides)
    store = LocalStore(str(run))
    extractor = features.build_extractor(config.tokenize.features, config.prepare.sample_rate)
    seconds = busy = 0.0
    rows = list(store.read_jsonl("prepare/manifest.jsonl"))
    for row in [row for row in rows if row["speaker"].endswith("_copy0")] or rows:
        with store.local_copy(row["audio"]) as path:
            samples = audio.read_mono(path)[0]
        started = clock.perf_counter()
        features.extract(extractor, samples, config.tokenize.features)
        busy += clock.perf_counter() - started
        seconds += len(samples) / config.prepare.sample_rate
    return seconds / busy


def bench_one(extractor: str, scale: int, input_folder: Path, model: Path | None, work: Path) -> dict:
    """Prepare, then time tokenize, for one configuration; a row of the results table."""
    run = work / "runs" / f"{extractor}-x{scale}"
    overrides = overrides_for(extractor, input_folder, model)
    results, logs = {}, {}
    for stage in ("prepare", "tokenize"):
        command = unitvox_command(stage, run, overrides)
        logs[stage] = work / f"{extractor}-x{scale}-{stage}.log"
        print(f"  {stage}: {shlex.join(command)}", flush=True)
        results[stage] = _checked(run_measured(command, logs[stage]), command, logs[stage])
    audio_seconds = manifest_seconds(run)
    prepare, tokenize = results["prepare"], results["tokenize"]
    extractor_rate = in_fresh_process(time_extractor, run, overrides)
    return {
        "extractor": extractor, "scale": scale, "audio_seconds": audio_seconds,
        "wall_seconds": tokenize.wall_seconds, "rate": audio_seconds / tokenize.wall_seconds,
        "peak_rss_mib": tokenize.peak_rss_mib, "in_stage_seconds": stage_seconds(logs["tokenize"]),
        "extractor_rate": extractor_rate,
        "prepare_rate": audio_seconds / prepare.wall_seconds, "prepare_peak_rss_mib": prepare.peak_rss_mib,
    }


# ---------------------------------------------------------------------------------------------
# Report


def machine_lines(load_at_start: tuple[float, ...]) -> list[str]:
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown")
    parent_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}",
        f"torch {in_fresh_process(_torch_facts)}",
        f"load average (1, 5, 15 min) at start {_load(load_at_start)}, at end {_load(os.getloadavg())}: "
        "other work on the machine slows every figure",
        f"peak RSS floor: {parent_mib:.0f} MiB (a child's ru_maxrss includes this process's RSS when it forked)",
    ]


def _load(averages: tuple[float, ...]) -> str:
    return "/".join(f"{value:.1f}" for value in averages)


def _torch_facts() -> str:
    import torch

    return f"{torch.__version__}: {torch.get_num_threads()} threads, cuda available: {torch.cuda.is_available()}"


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []


def table_lines(rows: list[dict]) -> list[str]:
    header = (f"{'extractor':<9} {'scale':>5} {'audio s':>8} {'wall s':>8} {'stage x RT':>10} "
              f"{'extractor x RT':>14} {'ratio':>6} {'peak RSS MiB':>12} {'in-stage s':>10}   "
              f"{'RSS / smallest':>14}   {'prepare x RT':>12} {'prepare RSS MiB':>15}")
    lines = [header, "-" * len(header)]
    smallest = {}  # extractor -> the peak RSS of its smallest scale, which every scale is compared with
    for row in sorted(rows, key=lambda row: row["scale"]):
        smallest.setdefault(row["extractor"], row["peak_rss_mib"])
    for row in rows:
        lines.append(
            f"{row['extractor']:<9} {str(row['scale']) + 'x':>5} {row['audio_seconds']:>8.1f} "
            f"{row['wall_seconds']:>8.1f} {row['rate']:>10.2f} {row['extractor_rate']:>14.2f} "
            f"{row['rate'] / row['extractor_rate']:>6.2f} {row['peak_rss_mib']:>12.0f} "
            f"{row['in_stage_seconds']:>10.1f} {row['peak_rss_mib'] / smallest[row['extractor']]:>14.3f}   "
            f"{row['prepare_rate']:>12.2f} {row['prepare_peak_rss_mib']:>15.0f}"
        )
    return lines


def reproduce_command(arguments: argparse.Namespace, work: Path | None) -> str:
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable
    command = [python, "bench/tokenize_speed.py", "--scales", *map(str, arguments.scales),
               "--extractors", *arguments.extractors, "--corpus", arguments.corpus]
    return shlex.join(command + (["--work", str(work)] if work else []))


def main() -> int:
    arguments = parse_arguments()
    load_at_start = os.getloadavg()
    kept = Path(arguments.work).resolve() if arguments.work else None
    with tempfile.TemporaryDirectory(prefix="unitvox-bench-") as scratch:
        work = kept or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        corpus, corpus_line = find_corpus(arguments.corpus, work)
        model = None
        if "ssl" in arguments.extractors:
            model = in_fresh_process(random_wav2vec2, work / "wav2vec2-base-random")
        rows = []
        for scale in arguments.scales:
            input_folder = scaled_input(corpus, scale, work)
            for extractor in arguments.extractors:
                print(f"{extractor} at {scale}x:", flush=True)
                rows.append(bench_one(extractor, scale, input_folder, model, work))
        print()
        print(f"corpus: {corpus_line}")
        print(f"config: {CONFIG}, one shard per stage; ssl: random wav2vec2-base (12 layers, hidden 768), "
              f"layer {SSL_LAYER}")
        print("\n".join(machine_lines(load_at_start)))
        print("wall s: the whole `unitvox tokenize` process (start-up, sample, fit, assign, merge); "
              "in-stage s: the same less interpreter start-up, as the CLI reports it")
        print("stage x RT: audio seconds per wall second of that process; extractor x RT: the extractor alone "
              "(built once, untimed) on the same segments (those of the first copy), config and layer; ratio: stage / "
              "extractor; RSS / smallest: peak RSS over that of the smallest scale (flat memory: 1.0)")
        print("\n".join(table_lines(rows)))
        print(f"reproduce: {reproduce_command(arguments, kept)}")
        if kept is None:
            print(f"(work folder {work} removed; pass --work DIR to keep runs and logs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
