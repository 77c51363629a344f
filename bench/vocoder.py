"""Vocoder speed: the generator's real-time factor and training samples per second, per generator preset.

Run: .venv/bin/python bench/vocoder.py
     .venv/bin/python bench/vocoder.py --presets tiny v1 --steps 5 --threads 2 --device cpu
     .venv/bin/python bench/vocoder.py --threads 2 --rtf-only      # real-time factors of every preset alone

For each preset it prints parameter counts, then:
- real-time factor (RTF): seconds of compute per second of audio, for one 10 s utterance (500 unit
  frames, batch 1) under torch.inference_mode, the median of `--runs` calls after one warm-up call;
  once as training leaves the generator (weight norm on, as `Trainer.generate` runs it) and once with
  weight norm folded into plain weights (`remove_weight_norm`, what an exported model would run);
  with speaker conditioning on, the generator runs on a speaker vector embedded beforehand, and the
  encoder's time to embed one reference clip is its own figure (made once per reference, not per
  second of audio);
- training steps per second through `Trainer.train_step` itself: generator-only steps (the warm-up
  phase, mel loss alone) and full GAN steps (a discriminator update, then a generator update with
  the adversarial and feature-matching terms, and the contrastive speaker term where the config has
  speaker conditioning), on random units, audio and references of the configured batch size and
  segment length; and GAN-step training samples per second (batch / seconds per step), with its
  ratio to the `v1` preset's, as the real-time factors have theirs.
The setups: `tiny` trains with jobs/demo.yaml's `train:` section and the hifigan `tiny` generator
(the demo's own is vocos), `v1` with jobs/base.yaml's (the default discriminators) and hifigan `v1`; `vocos-tiny` and `vocos-base` are the same two
setups with `train.generator.type=vocos` (and `size=base`), the iSTFT-head generator. On a GPU (`--device cuda`) the trainer's own
autocast (precision=auto: bf16) applies to both figures.
"""

from __future__ import annotations

import os
import sys


import argparse
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unitvox import config as configuration
from unitvox.store.local import LocalStore
from unitvox.vocoder.build import trainer_without_data, window_frames
from unitvox.vocoder.generator import make_generator, remove_weight_norm
from unitvox.vocoder.loop import Trainer

REPO = Path(__file__).resolve().parent.parent
NUM_UNITS = 100
RTF_SECONDS = 10.0
# Each preset's training setup: a config and its overrides, and how many steps to time by default
# (v1 at the base batch takes a minute or more per GAN step on a small CPU, so it gets two).
# The type is always named: jobs/demo.yaml's own generator is a vocos one.
SETUPS = {
    "tiny": ("jobs/demo.yaml", ["train.generator.type=hifigan", "train.generator.size=tiny"], 10),
    "v1": ("jobs/base.yaml", ["train.generator.type=hifigan", "train.generator.size=v1"], 2),
    "vocos-tiny": ("jobs/demo.yaml", ["train.generator.type=vocos", "train.generator.size=tiny"], 10),
    "vocos-base": ("jobs/base.yaml", ["train.generator.type=vocos", "train.generator.size=base"], 2),
}
REFERENCE = "v1"  # every real-time factor is also given as a multiple of this preset's
SMALL = "tiny"  # and of this one's (the demo's vocos tiny against hifigan tiny)


@dataclass
class Result:
    """One preset's figures."""

    preset: str
    generator_parameters: int
    speaker_encoder_parameters: int | None
    discriminator_parameters: dict[str, int]
    rtf_weight_norm: float
    rtf_folded: float
    embedding_seconds: float | None
    batch_size: int
    segment_seconds: float
    steps: int
    generator_only_seconds: float | None
    gan_seconds: float | None


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the unit vocoder: generator real-time factor and training steps per second.",
        epilog="examples:\n  .venv/bin/python bench/vocoder.py\n"
               "  .venv/bin/python bench/vocoder.py --presets tiny --steps 20 --threads 1\n"
               "  .venv/bin/python bench/vocoder.py --threads 2 --rtf-only\n"
               "  .venv/bin/python bench/vocoder.py --device cuda --batch-size 16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--presets", nargs="+", default=list(SETUPS), choices=list(SETUPS),
                        help=f"generator presets to time (default: all, {' '.join(SETUPS)})")
    parser.add_argument("--rtf-only", action="store_true", help="time the generators only, no training steps")
    parser.add_argument("--steps", type=int,
                        help="timed training steps per phase (default: tiny 10, v1 2)")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="untimed training steps before each phase (default: 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed generator calls for the RTF median (default: 3)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the setup's config)")
    parser.add_argument("--segment-seconds", type=float,
                        help="training segment length in seconds (default: the setup's config)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    arguments = parser.parse_args()
    for name in ("steps", "runs", "batch_size", "threads"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1")
    if arguments.warmup_steps < 0:
        parser.error("--warmup-steps: must not be negative")
    if arguments.segment_seconds is not None and arguments.segment_seconds <= 0:
        parser.error("--segment-seconds: must be positive")
    if arguments.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    return arguments


# ---------------------------------------------------------------------------------------------
# Building a trainer without a run folder


def load_setup(preset: str, arguments: argparse.Namespace) -> configuration.Config:
    path, overrides, _ = SETUPS[preset]
    overrides = list(overrides)
    if arguments.batch_size is not None:
        overrides.append(f"train.batch_size={arguments.batch_size}")
    if arguments.segment_seconds is not None:
        overrides.append(f"train.segment_seconds={arguments.segment_seconds}")
    return configuration.load(str(REPO / path), overrides)


def build_trainer(config: configuration.Config, device: torch.device, scratch: Path) -> Trainer:
    """A real Trainer, so `train_step` times exactly what training runs, with no copy of the step to drift
    from the loop; an empty scratch store stands in for the run it never reads."""
    return trainer_without_data(config, LocalStore(str(scratch)), NUM_UNITS, device)


def random_batch(config: configuration.Config, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch shaped as the loader makes it: units (B, F), audio (B, F * hop), valid and
    speaker (B,), and with speaker conditioning reference (B, R)."""
    settings = config.train
    hop = settings.generator.hop_samples
    frames = window_frames(config)  # the windows training takes
    batch = settings.batch_size
    generator = torch.Generator().manual_seed(0)
    found = {
        "units": torch.randint(0, NUM_UNITS, (batch, frames), generator=generator),
        "audio": random_audio((batch, frames * hop), generator),
        "valid": torch.full((batch,), frames * hop),
        # Pairs of items share a speaker, so every item has other speakers' references as negatives.
        "speaker": torch.arange(batch) // 2,
    }
    if settings.speaker.enabled:
        found["reference"] = random_audio((batch, reference_samples(config)), generator)
    return {name: value.to(device) for name, value in found.items()}


def random_audio(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return (0.1 * torch.randn(shape, generator=generator)).clamp(-1, 1)


def reference_samples(config: configuration.Config) -> int:
    return int(config.train.speaker.reference_seconds * config.prepare.sample_rate)  # as stages/train.py


# ---------------------------------------------------------------------------------------------
# Timing


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(trainer: Trainer, batch: dict[str, torch.Tensor], adversarial: bool,
                     warmup: int, steps: int) -> float:
    """Mean wall seconds of `Trainer.train_step` over `steps` calls after `warmup` untimed ones.

    train_step itself decides whether a step is adversarial (`step >= generator_warmup_steps`); with
    that set to 1, holding the step counter (which only the loop advances) at 0 or 1 picks the phase.
    """
    trainer.settings.generator_warmup_steps = 1
    trainer.state.step = 1 if adversarial else 0
    for _ in range(warmup):
        trainer.train_step(batch)
    synchronise(trainer.device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    synchronise(trainer.device)
    return (time.perf_counter() - started) / steps


def real_time_factor(trainer: Trainer, generator: torch.nn.Module, runs: int) -> tuple[float, float | None]:
    """Median compute seconds per second of audio for one RTF_SECONDS utterance, after a warm-up call,
    and the median seconds the speaker encoder takes to embed one reference clip (None without one).

    The generator is timed alone, on a speaker vector embedded beforehand: an embedding is made once
    per reference, however much audio is then generated in that voice, so it is a separate figure.
    """
    config, encoder = trainer.config, trainer.state.speaker_encoder
    sample_rate, hop = config.prepare.sample_rate, generator.hop_samples
    frames = int(RTF_SECONDS * sample_rate) // hop
    random = torch.Generator().manual_seed(1)
    units = torch.randint(0, NUM_UNITS, (1, frames), generator=random).to(trainer.device)
    reference = random_audio((1, reference_samples(config)), random).to(trainer.device) if encoder else None
    modules = [module for module in (generator, encoder) if module is not None]
    for module in modules:
        module.eval()

    def timed(work: Callable[[], object]) -> float:
        work()  # warm-up
        return statistics.median(_seconds(trainer, work) for _ in range(runs))

    with torch.inference_mode(), trainer.autocast():
        speaker = encoder(reference) if encoder else None
        embedding = timed(lambda: encoder(reference)) if encoder else None
        elapsed = timed(lambda: generator(units, speaker))
    for module in modules:
        module.train()
    return elapsed / (frames * hop / sample_rate), embedding


def _seconds(trainer: Trainer, work: Callable[[], object]) -> float:
    synchronise(trainer.device)
    started = time.perf_counter()
    work()
    synchronise(trainer.device)
    return time.perf_counter() - started


def folded_copy(config: configuration.Config, generator: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A separate generator with the same weights and weight norm removed (a vocos one has none to remove).

    Not copy.deepcopy: a deep copy shares the parametrized module classes with the original, and
    removing the parametrization from the copy deletes `weight` from those shared classes.
    """
    folded = make_generator(config.train.generator, NUM_UNITS).to(device)
    folded.load_state_dict(generator.state_dict())
    return remove_weight_norm(folded)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bench_preset(preset: str, arguments: argparse.Namespace, device: torch.device, scratch: Path,
                 say: Callable[[str], None]) -> Result:
    config = load_setup(preset, arguments)
    trainer = build_trainer(config, device, scratch)
    state, settings = trainer.state, config.train
    steps = arguments.steps or SETUPS[preset][2]
    say(f"{preset}: real-time factor ({arguments.runs} runs)")
    rtf_weight_norm, embedding_seconds = real_time_factor(trainer, state.generator, arguments.runs)
    rtf_folded, _ = real_time_factor(trainer, folded_copy(config, state.generator, device), arguments.runs)
    generator_only = gan = None
    if not arguments.rtf_only:
        batch = random_batch(config, device)
        say(f"{preset}: {steps} generator-only steps, batch {settings.batch_size} x {settings.segment_seconds} s")
        generator_only = seconds_per_step(trainer, batch, False, arguments.warmup_steps, steps)
        say(f"{preset}: {steps} GAN steps")
        gan = seconds_per_step(trainer, batch, True, arguments.warmup_steps, steps)
    return Result(
        preset=preset,
        generator_parameters=parameters(state.generator),
        speaker_encoder_parameters=parameters(state.speaker_encoder) if state.speaker_encoder else None,
        discriminator_parameters={name: parameters(module)
                                  for name, module in state.discriminators.discriminators.items()},
        rtf_weight_norm=rtf_weight_norm, rtf_folded=rtf_folded, embedding_seconds=embedding_seconds,
        batch_size=settings.batch_size, segment_seconds=settings.segment_seconds, steps=steps,
        generator_only_seconds=generator_only, gan_seconds=gan,
    )


# ---------------------------------------------------------------------------------------------
# Report


def machine_busy_seconds() -> float:
    """CPU seconds every process has used since boot, from /proc/stat (NaN where there is none)."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return float("nan")
    user, nice, system, idle, iowait, *rest = (int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:])
    return (user + nice + system + sum(rest[:3])) / os.sysconf("SC_CLK_TCK")  # irq, softirq, steal


def own_busy_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_lines(device: torch.device, other_seconds: float, wall_seconds: float) -> list[str]:
    model = "unknown"
    if Path("/proc/cpuinfo").exists():
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    other_share = other_seconds / (wall_seconds * (os.cpu_count() or 1))
    lines = [
        f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}",
        f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op threads",
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)}), autocast as precision=auto: bf16"
                               if device.type == "cuda" else ", fp32 (precision=auto on a CPU)"),
        f"other processes used {other_seconds:.0f} CPU s during the {wall_seconds:.0f} s run "
        f"({other_share:.0%} of the machine)",
    ]
    if other_share > 0.05:
        # Measured: on 2 shared cores, 2-thread training steps ran 10-25x slower than on idle ones.
        lines.append("WARNING: other work shared the CPUs; torch's threads wait on each other when cores are "
                     "shared, so figures may be many times too slow (rerun on an idle machine, or with --threads 1)")
    return lines


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def samples_per_second(result: Result) -> float:
    """Training items (segments of `segment_seconds`) per second through full GAN steps."""
    return result.batch_size / result.gan_seconds


def table_lines(results: list[Result]) -> list[str]:
    reference = next((r for r in results if r.preset == REFERENCE), None)
    small = next((r for r in results if r.preset == SMALL), None)
    header = (f"{'preset':<10} {'G params':>8} {'speaker enc':>11} {'embed ms':>8} {'D params (mpd+mrd)':>22} {'RTF':>7} {'x-real':>7} "
              f"{'RTF folded':>10} {'x-real':>7} {f'x {REFERENCE}':>6} {f'x {SMALL}':>6}   {'batch':>11} {'steps':>5} "
              f"{'G-only s/step':>13} {'G-only step/s':>13} {'GAN s/step':>10} {'GAN step/s':>10} {'D share':>7} "
              f"{'GAN samples/s':>13} {f'x {REFERENCE}':>6}")
    lines = [header, "-" * len(header)]
    for r in results:
        discriminators = "+".join(_millions(count) for count in r.discriminator_parameters.values())
        encoder = "off" if r.speaker_encoder_parameters is None else _millions(r.speaker_encoder_parameters)
        embed = f"{'-':>8}" if r.embedding_seconds is None else f"{1000 * r.embedding_seconds:>8.1f}"
        ratio = " ".join(f"{other.rtf_folded / r.rtf_folded:>6.1f}" if other else f"{'-':>6}"
                         for other in (reference, small))
        steps = f"{'-':>13} {'-':>13} {'-':>10} {'-':>10} {'-':>7} {'-':>13} {'-':>6}"
        if r.gan_seconds is not None:
            share = (r.gan_seconds - r.generator_only_seconds) / r.gan_seconds
            samples_ratio = (f"{samples_per_second(r) / samples_per_second(reference):>6.2f}"
                             if reference and reference.gan_seconds is not None else f"{'-':>6}")
            steps = (f"{r.generator_only_seconds:>13.3f} {1 / r.generator_only_seconds:>13.3g} {r.gan_seconds:>10.3f} "
                     f"{1 / r.gan_seconds:>10.3g} {share:>7.0%} {samples_per_second(r):>13.3g} {samples_ratio}")
        lines.append(
            f"{r.preset:<10} {_millions(r.generator_parameters):>8} {encoder:>11} {embed} {discriminators:>22} "
            f"{r.rtf_weight_norm:>7.4f} {1 / r.rtf_weight_norm:>7.1f} {r.rtf_folded:>10.4f} {1 / r.rtf_folded:>7.1f}"
            f" {ratio}   {f'{r.batch_size} x {r.segment_seconds:g} s':>11} {r.steps:>5} {steps}"
        )
    return lines


def reproduce_command(arguments: argparse.Namespace) -> str:
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable
    command = [python, "bench/vocoder.py", "--presets", *arguments.presets, "--device", arguments.device,
               "--warmup-steps", str(arguments.warmup_steps), "--runs", str(arguments.runs)]
    command += ["--rtf-only"] if arguments.rtf_only else []
    for flag in ("steps", "batch_size", "segment_seconds", "threads"):
        value = getattr(arguments, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    return shlex.join(command)


def main() -> int:
    arguments = parse_arguments()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    started, machine_at_start, own_at_start = time.perf_counter(), machine_busy_seconds(), own_busy_seconds()
    results = []
    with tempfile.TemporaryDirectory(prefix="unitvox-bench-vocoder-") as scratch:
        for preset in arguments.presets:
            results.append(bench_preset(preset, arguments, device, Path(scratch), lambda line: print(line, flush=True)))
    wall_seconds = time.perf_counter() - started
    other_seconds = machine_busy_seconds() - machine_at_start - (own_busy_seconds() - own_at_start)
    print()
    print("\n".join(machine_lines(device, other_seconds, wall_seconds)))
    print(f"RTF: compute s per audio s, one {RTF_SECONDS:g} s utterance, batch 1, inference_mode, median of "
          f"{arguments.runs} after a warm-up, the generator alone; folded: weight norm removed. x-real = 1 / RTF; "
          f"x {REFERENCE}, x {SMALL}: folded x-real over that preset's, in this run")
    print(f"steps: Trainer.train_step on random data, mean of the timed steps after {arguments.warmup_steps} "
          "warm-up; G-only: generator warm-up phase (mel loss only); GAN: discriminator + generator update; "
          "D share = (GAN - G-only) / GAN; GAN samples/s = batch / GAN s/step (training items per second), "
          f"x {REFERENCE}: over {REFERENCE}'s in this run (compare at the same --batch-size and --segment-seconds)")
    print("setups: tiny = jobs/demo.yaml train section + hifigan size=tiny; v1 = jobs/base.yaml train section + "
          "hifigan size=v1; "
          "vocos-tiny, vocos-base: the same with train.generator.type=vocos (vocos-base: size=base); "
          "speaker enc: the speaker encoder's parameters when the setup conditions on speakers (its "
          "contrastive loss is in both step kinds); embed ms: its median time to embed one reference clip, "
          "made once per reference and so not in the RTF")
    print("\n".join(table_lines(results)))
    print(f"total {wall_seconds:.0f} s; reproduce: {reproduce_command(arguments)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
