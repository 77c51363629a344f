"""Peak memory of `prepare` on one long recording: it must not grow with the recording's length.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/prepare_memory.py --hours 3

Writes a generated recording (speech-like bursts between pauses, 16 kHz mono 16-bit WAV, written in
blocks so making it takes no memory) to a temporary folder, runs the prepare stage on it in a child
process and prints the child's peak resident memory (ru_maxrss), the segments kept and the time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np
import soundfile

BLOCK_SECONDS = 60


def speech_block(rate: int, seconds: int = BLOCK_SECONDS, seed: int = 0) -> np.ndarray:
    """`seconds` of harmonic bursts (2 to 6 s) separated by 0.7 s pauses at -70 dBFS, (T,) float32."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < seconds * rate:
        burst = int(rng.uniform(2, 6) * rate)
        t = np.arange(burst) / rate
        phase = 2 * np.pi * np.cumsum(130 + 25 * np.sin(2 * np.pi * 0.6 * t)) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
        pieces += [0.1 * voiced / np.sqrt(np.mean(voiced**2)), 10 ** (-70 / 20) * rng.standard_normal(int(0.7 * rate))]
        total += burst + int(0.7 * rate)
    return np.concatenate(pieces)[: seconds * rate].astype(np.float32)


def write_long_recording(path: Path, hours: float, rate: int = 16000) -> Path:
    """A `hours`-long WAV written a minute at a time (memory stays at one minute of audio)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = speech_block(rate)
    minutes = int(round(hours * 60 * 60 / BLOCK_SECONDS))
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as out:
        for _ in range(minutes):
            out.write(block)
    return path


def child(folder: str, run: str, config: str) -> None:
    """In the measured process: prepare `folder` into `run`, then print the figures as JSON."""
    from unitvox.config import load
    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    started = time.time()
    store = LocalStore(run)
    run_stage(load(config, [f"prepare.input={folder}"]), store, "prepare")
    report = store.read_json("prepare/report.json")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(time.time() - started, 1),
                      "segments_kept": report["segments_kept"], "hours_kept": report["hours_kept"]}))


def measure(hours: float, workdir: Path, python_path: str | None = None) -> dict:
    """Write the recording under `workdir`, prepare it in a child process and return its figures.

    `python_path` puts another checkout's `src` first (its `jobs/demo.yaml` beside it), to measure
    an older version of prepare.
    """
    recording = write_long_recording(workdir / "raw" / "lecture" / "lecture.wav", hours)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (python_path, str(root / "src"), env.get("PYTHONPATH")) if p)
    config = Path(python_path).parent / "jobs" / "demo.yaml" if python_path else root / "jobs" / "demo.yaml"
    done = subprocess.run([sys.executable, __file__, "--child", str(recording.parent.parent), str(workdir / "run"),
                           str(config)],
                          env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"prepare failed on {recording} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"hours": hours, "file_mib": round(recording.stat().st_size / 2**20, 1), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0, help="length of the generated recording")
    parser.add_argument("--src", help="measure the prepare of another checkout's src folder (e.g. an older one: "
                                      "git archive HEAD src jobs | tar -x -C /tmp/old, then --src /tmp/old/src)")
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "RUN", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="unitvox-prepare-memory-") as folder:
        figures = measure(args.hours, Path(folder), args.src)
    print(f"prepare of a {figures['hours']:g} h recording ({figures['file_mib']} MiB WAV): "
          f"peak RSS {figures['peak_rss_mib']} MiB, {figures['segments_kept']} segments "
          f"({figures['hours_kept']} h) kept in {figures['seconds']} s")


if __name__ == "__main__":
    main()
