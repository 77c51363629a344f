"""The vocoder's training loop: GAN steps, validation, early stopping, checkpoints, samples, SIGTERM, health.

Single process or DDP under torchrun (gloo on CPU, nccl on GPU): every rank runs the same loop on
its share of each batch list; rank 0 alone writes to the store and judges training health.
"""

from __future__ import annotations

import io
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile
import torch

from unitvox.config import Config
from unitvox.errors import Interrupted, Unhealthy
from unitvox.health import norms
from unitvox.health.monitor import CRITICAL, HealthMonitor, HealthReport
from unitvox.layout import (
    BEST_CHECKPOINT, HEALTH_LATEST, LATEST_CHECKPOINT, TRAIN_SAMPLES, TRAINING_LOG, critical_checkpoint, step_checkpoint,
)
from unitvox.prometheus import MetricsSink
from unitvox.prometheus.training import export_health, export_progress, export_row, export_started
from unitvox.store import Store
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.dataset import UnitAudioDataset
from unitvox.vocoder.discriminators import DiscriminatorOutputs
from unitvox.vocoder.duration import DURATION_PREDICTOR, collapse, duration_loss
from unitvox.vocoder.losses import (MelSpectrogram, MultiScaleMel, discriminator_loss, generator_loss, generator_terms,
                                     mel_loss)
from unitvox.vocoder.speaker_encoder import contrastive_speaker_loss
from unitvox.vocoder.state import TrainState


# Training items whose whole run sequences calibrate the duration predictor's length scale.
CALIBRATION_ITEMS = 256


@dataclass
class StopFlag:
    """Set by SIGTERM (or a test); the loop checks it between steps."""

    requested: bool = False
    after_step: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))

    def should_stop(self, step: int) -> bool:
        return self.requested or (self.after_step is not None and step >= self.after_step)


@dataclass
class Distributed:
    """Rank and world size under torchrun; `when_main` runs rank-0-only side effects."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(torch.distributed.get_rank(), world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def when_main(self, action: Callable[[], Any]) -> None:
        if self.is_main:
            action()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says so (a SIGTERM may reach one pod first)."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)])
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())


@dataclass
class Trainer:
    """One training run's moving parts; `run` is the loop."""

    config: Config
    store: Store
    state: TrainState
    train_set: UnitAudioDataset
    validation_set: UnitAudioDataset
    model_description: dict[str, Any]
    device: torch.device
    metrics: MetricsSink
    distributed: Distributed = field(default_factory=Distributed)
    stop: StopFlag = field(default_factory=StopFlag)

    def __post_init__(self) -> None:
        self.settings = self.config.train
        self.mel = MelSpectrogram(self.settings.lambdas.mel_spectrogram).to(self.device)
        # The training objective's spectrograms; validation and the spectral figures use `mel` alone.
        self.mel_objective = (MultiScaleMel(self.settings.lambdas.mel_spectrogram).to(self.device)
                              if self.settings.lambdas.mel_spectrogram.scales else self.mel)
        self.autocast = self._autocast()
        self.networks = norms.networks(self.state.generator, self.state.discriminators, self.state.speaker_encoder)
        self.discriminator_networks = {name: net for name, net in self.networks.items()
                                       if name not in ("generator", norms.SPEAKER_ENCODER)}
        if self.state.duration_predictor is not None:
            self.networks[DURATION_PREDICTOR] = getattr(self.state.duration_predictor, "module",
                                                        self.state.duration_predictor)
        self.monitor = HealthMonitor(self.settings.health, self.settings.lambdas.weights(), self.store)
        self._checked_step = -1
        self._throughput = (time.time(), self.state.step)

    def _autocast(self):
        precision = self.settings.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext

    # The loop ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train until max_steps or early stopping; raises Interrupted after a SIGTERM checkpoint."""
        started, stopped_early = time.time(), False
        export_started(self.metrics)
        while self.state.step < self.settings.max_steps and not stopped_early:
            for batch in self._batches():
                if self.distributed.agree(self.stop.should_stop(self.state.step)):
                    self._checkpoint()
                    raise Interrupted(f"stopped at step {self.state.step}; rerun to resume from it")
                row = self.train_step(batch)
                self.state.step += 1
                self.state.batch_in_epoch += 1
                stopped_early = self._after_step(row, started)
                if stopped_early or self.state.step >= self.settings.max_steps:
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
        if self.settings.health.enabled and self._checked_step != self.state.step:
            self._check_health()  # the run's final verdict; a critical one must not become latest.pt
        self._checkpoint()
        return {"steps": self.state.step, "best_validation_mel": self.state.best_validation,
                "stopped_early": stopped_early, "seconds": round(time.time() - started, 1)}

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's batches of the current epoch, from where a resumed run left off."""
        order = np.random.default_rng([self.settings.seed, self.state.epoch]).permutation(len(self.train_set))
        size = self.settings.batch_size
        batches = [order[i : i + size].tolist() for i in range(0, len(order) - size + 1, size)] or [order.tolist()]
        world = self.distributed.world
        if world > 1:  # every rank must take the same number of steps, or their collectives mismatch
            batches = batches[: max(world, len(batches) - len(batches) % world)]
            batches += batches[: world - len(batches) % world] if len(batches) % world else []
        mine = batches[self.distributed.rank :: world]
        self.train_set.set_epoch(self.state.epoch)
        loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=mine[self.state.batch_in_epoch :],
                                             num_workers=self.settings.num_workers)
        for batch in loader:
            yield {name: value.to(self.device) for name, value in batch.items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One discriminator update (after the warm-up) and one generator update."""
        state, settings = self.state, self.settings
        real = batch["audio"].unsqueeze(1)
        mask = _valid_mask(batch["valid"], real.shape[-1]).unsqueeze(1)
        adversarial = state.step >= settings.generator_warmup_steps and settings.lambdas.adversarial > 0
        logged = self._logged(state.step + 1)
        with self.autocast():
            conditioning = self.embed(batch.get("reference"))
            fake = state.generator(batch["units"], conditioning) * mask
        row: dict[str, float] = {}
        if adversarial:
            with self.autocast():
                loss_d, metrics_d = discriminator_loss(state.discriminators(real, fake.detach()))
            state.optimizer_discriminator.zero_grad(set_to_none=True)
            loss_d.backward()
            row.update(_prefixed("grad_norm", norms.clip_gradients(self.discriminator_networks, settings.grad_clip)))
            state.optimizer_discriminator.step()
            state.scheduler_discriminator.step()
            row.update(metrics_d)
        with self.autocast():
            outputs = self.judge(real, fake) if adversarial else None
            extra, similarity = self._speaker_terms(fake, conditioning, batch["speaker"], logged)
            loss_g, metrics_g = generator_loss(real.float(), fake.float(), outputs, settings.lambdas, self.mel_objective, extra)
        duration = self._duration_term(batch)
        if duration is not None:
            row["loss/duration"] = float(duration.detach())
            loss_g = loss_g + settings.lambdas.duration * duration  # shares no parameters with the generator
        state.optimizer_generator.zero_grad(set_to_none=True)
        loss_g.backward()
        if duration is not None:  # clipped on its own: its gradient is not the generator's
            row.update(_prefixed("grad_norm", norms.clip_gradients(
                {DURATION_PREDICTOR: self.networks[DURATION_PREDICTOR]}, settings.grad_clip)))
        stepped = {"generator": self.networks["generator"]}
        if norms.SPEAKER_ENCODER in self.networks and not settings.speaker.freeze_encoder:
            # The speaker encoder steps with the generator's optimizer, so it is clipped with the generator.
            stepped[norms.SPEAKER_ENCODER] = self.networks[norms.SPEAKER_ENCODER]
        row.update(_prefixed("grad_norm", norms.clip_gradients(stepped, settings.grad_clip)))
        state.optimizer_generator.step()
        state.scheduler_generator.step()
        row.update(metrics_g)
        rates = state.scheduler_generator.get_last_lr()
        row["lr/generator"] = rates[0]
        if duration is not None:  # the predictor's own parameter group
            row["lr/duration_predictor"] = rates[1]
        if logged:
            row.update(norms.spectral_figures(self.mel(real.float()), self.mel(fake.detach().float())))
            if similarity is not None:
                row["speaker/similarity"] = similarity
        return row

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The generator's unweighted loss terms on a batch as after warm-up, attached to its graph; no update.

        What `unitvox diagnose training` weighs each term's share of the loss and of the gradient with.
        """
        real = batch["audio"].unsqueeze(1)
        mask = _valid_mask(batch["valid"], real.shape[-1]).unsqueeze(1)
        with self.autocast():
            conditioning = self.embed(batch.get("reference"))
            fake = self.state.generator(batch["units"], conditioning) * mask
            outputs = self.judge(real, fake) if self.settings.lambdas.adversarial > 0 else None
            extra, _ = self._speaker_terms(fake, conditioning, batch["speaker"], False)
            terms, _ = generator_terms(real.float(), fake.float(), outputs, self.mel_objective, extra)
        return terms

    def judge(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, DiscriminatorOutputs]:
        """The discriminators' outputs for the generator's loss, with gradients to the generated audio only."""
        return norms.unwrap(self.state.discriminators).judge_generated(real, fake)

    def _duration_term(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The duration predictor's log-duration MSE on the batch's runs, or None for a frame-unit vocoder."""
        if self.state.duration_predictor is None or "runs" not in batch:
            return None
        return duration_loss(self.state.duration_predictor(batch["runs"]), batch["durations"])

    def embed(self, reference: torch.Tensor | None) -> torch.Tensor | None:
        """Speaker embeddings of the reference clips (B, D), or None without speaker conditioning."""
        if self.state.speaker_encoder is None or reference is None:
            return None
        return self.state.speaker_encoder(reference)

    def _speaker_terms(self, fake: torch.Tensor, conditioning: torch.Tensor | None, speakers: torch.Tensor,
                       logged: bool) -> tuple[dict[str, torch.Tensor], float | None]:
        """The contrastive term (when on) and, on logged steps, generated-to-reference speaker similarity."""
        speaker = self.settings.speaker
        if conditioning is None:
            return {}, None
        if self.settings.lambdas.contrastive == 0:
            if not logged:
                return {}, None
            with torch.no_grad():
                generated = self.state.speaker_encoder(fake.detach().squeeze(1))
            return {}, norms.speaker_similarity(generated, conditioning)
        generated = self.state.speaker_encoder(fake.squeeze(1))
        rng = torch.Generator(device=fake.device).manual_seed(self.settings.seed * 1_000_003 + self.state.step)
        loss = contrastive_speaker_loss(generated, conditioning, speakers, speaker.negatives,
                                        speaker.hard_negatives, speaker.temperature, rng)
        return {"contrastive": loss}, norms.speaker_similarity(generated, conditioning) if logged else None

    def generate(self, units: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """Inference: units (1, F) and an optional reference clip (1, R) -> audio (1, 1, F * hop)."""
        return self.state.generator(units, self.embed(reference))

    def _logged(self, step: int) -> bool:
        """Whether `step` goes into the training log: every log_every steps, the first, and every health check."""
        return step % self.settings.log_every == 0 or step == 1 or self._health_due(step)

    def _health_due(self, step: int) -> bool:
        """Health is checked on schedule and before every checkpoint, so a critical state never replaces latest.pt."""
        return self.monitor.due(step) or (self.settings.health.enabled and step % self.settings.checkpoint_every == 0)

    def _after_step(self, row: dict[str, float], started: float) -> bool:
        """Log, check health, validate, checkpoint and write samples as the step count says; True to stop early."""
        state, settings = self.state, self.settings
        step = state.step
        if self._logged(step):
            row = {**row, **_prefixed("param_norm", norms.parameter_norms(self.networks)),
                   "speed/samples_per_second": self._samples_per_second()}
            state.log.append({"step": step, "epoch": state.epoch, "time": round(time.time() - started, 2), **row})
            export_row(self.metrics, row)
            export_progress(self.metrics, step, settings.max_steps, state.epoch)
        if self._health_due(step):
            self._check_health()
        stop = False
        if step % settings.validate_every == 0 or step == settings.max_steps:  # the last step is a candidate
            stop = self._validate()
        if step % settings.sample_every == 0:
            self.distributed.when_main(self._write_samples)
        if step % settings.checkpoint_every == 0 or stop:
            self._checkpoint()
        if step % settings.keep_every == 0:
            self.distributed.when_main(lambda: self._save(step_checkpoint(step)))
        return stop

    # Validation, checkpoints, samples ---------------------------------------------------------

    @torch.no_grad()
    def validation_mel_error(self) -> float:
        """Mean mel L1 over the validation items, each whole and unpadded."""
        generator = self.state.generator
        generator.eval()
        errors = []
        for index in range(len(self.validation_set)):
            item = self.validation_set[index]
            valid_frames = int(item["valid"]) // self.validation_set.hop
            if valid_frames == 0:
                continue
            units = item["units"][:valid_frames].unsqueeze(0).to(self.device)
            real = item["audio"][: valid_frames * self.validation_set.hop].view(1, 1, -1).to(self.device)
            errors.append(float(mel_loss(self.mel, real, self.generate(units, _reference(item, self.device)).float())))
        generator.train()
        return float(np.mean(errors)) if errors else math.nan

    @torch.no_grad()
    def validation_duration_figures(self) -> dict[str, float]:
        """The duration predictor on the validation items' runs, each whole: mean absolute error in frames
        per run, and the predicted over the true length (mean over items). Empty for a frame-unit vocoder."""
        if DURATION_PREDICTOR not in self.networks:
            return {}
        predictor = self.networks[DURATION_PREDICTOR]
        self.calibrate_durations()
        errors, ratios = [], []
        for item in self.validation_set.items:
            runs, durations = collapse(item.units)
            if len(runs) == 0:
                continue
            predicted = predictor.durations(runs)
            errors.append(np.abs(predicted - durations))
            ratios.append(predicted.sum() / durations.sum())
        if not errors:
            return {}
        return {"validation/duration_mae_frames": float(np.concatenate(errors).mean()),
                "validation/duration_length_ratio": float(np.mean(ratios)),
                "validation/duration_length_scale": float(predictor.length_scale)}

    def calibrate_durations(self) -> None:
        """Set the duration predictor's length scale from (up to CALIBRATION_ITEMS) training items, each whole."""
        if DURATION_PREDICTOR in self.networks:
            items = self.train_set.items[:: max(1, len(self.train_set.items) // CALIBRATION_ITEMS)]
            self.networks[DURATION_PREDICTOR].calibrate(collapse(item.units) for item in items[:CALIBRATION_ITEMS])

    def _samples_per_second(self) -> float:
        """Training examples per second over every rank since the last logged step."""
        now, step = time.time(), self.state.step
        then, before = self._throughput
        self._throughput = (now, step)
        elapsed = now - then
        return (step - before) * self.settings.batch_size * self.distributed.world / elapsed if elapsed > 0 else 0.0

    def _check_health(self) -> None:
        """Judge health on rank 0; when critical and `stop_on_critical`, save the evidence and stop every rank.

        Raises:
            Unhealthy: the verdict was critical; latest.pt (the last good state) is left as it was.
        """
        self._checked_step = step = self.state.step
        report = None
        if self.distributed.is_main:
            report = self.monitor.check(self.state.log, step, norms.parameter_norms(self.networks))
            export_health(self.metrics, report)
        stopping = report is not None and report.status == CRITICAL and self.settings.health.stop_on_critical
        if not self.distributed.agree(stopping):
            return
        evidence = critical_checkpoint(step)
        self.distributed.when_main(lambda: self._save_evidence(evidence))
        self.distributed.barrier()
        raise Unhealthy(self._unhealthy_message(report, evidence))

    def _save_evidence(self, key: str) -> None:
        ckpt.save(self.store, key, {"model": self.model_description, **self.state.state_dict()})
        self.store.write_jsonl(TRAINING_LOG, self.state.log)

    def _unhealthy_message(self, report: HealthReport | None, evidence: str) -> str:
        if report is None:
            return f"rank 0 found training health critical at step {self.state.step}; see {self.store.url(HEALTH_LATEST)}"
        latest = LATEST_CHECKPOINT
        kept = f"the last good checkpoint {self.store.url(latest)} is kept" if self.store.exists(latest) \
            else "no checkpoint was written before it"
        return (f"training health is {report.summary()}. Stopped ({kept}; the state at the check is in "
                f"{self.store.url(evidence)}; report {self.store.url(HEALTH_LATEST)}). Fix the cause and rerun to resume, "
                "or set train.health.stop_on_critical=false to train on regardless")

    def adversarial_from(self) -> int:
        """The last step of the generator-only warm-up: checkpoints after it have seen the discriminators.

        0 for a run without an adversarial loss (every step is of the one kind).
        """
        return self.settings.generator_warmup_steps if self.settings.lambdas.adversarial > 0 else 0

    def _validate(self) -> bool:
        state, stopping = self.state, self.settings.early_stopping
        error = self.validation_mel_error()
        begins = self.adversarial_from()
        if state.step > begins >= state.best_step and math.isfinite(state.best_validation):
            # The first validation of the adversarial phase. A mel-only generator has the lower mel error
            # (the adversarial terms trade some of it for realism), so a best kept from the warm-up would
            # leave best.pt, which evaluate, samples and export use, a vocoder that never saw a discriminator.
            state.best_validation = math.inf
            state.validations_without_improvement = 0
        improved = error < state.best_validation - stopping.min_delta
        state.log.append({"step": state.step, "validation/mel": error, "validation/improved": improved,
                          **self.validation_duration_figures()})
        self.metrics.gauge("train_validation_mel_loss", error)
        if improved:
            state.best_validation, state.best_step = error, state.step
            state.validations_without_improvement = 0
            self.distributed.when_main(lambda: self._save(BEST_CHECKPOINT))
        else:
            state.validations_without_improvement += 1
        return state.validations_without_improvement >= stopping.patience

    def _checkpoint(self) -> None:
        self.distributed.when_main(lambda: self._save(LATEST_CHECKPOINT))
        self.distributed.barrier()

    def _save(self, key: str) -> None:
        self.calibrate_durations()
        ckpt.save(self.store, key, {"model": self.model_description, **self.state.state_dict()})
        self.store.write_jsonl(TRAINING_LOG, self.state.log)
        self.metrics.gauge("train_last_checkpoint_timestamp_seconds", time.time())

    @torch.no_grad()
    def _write_samples(self) -> None:
        generator, hop = self.state.generator, self.validation_set.hop
        generator.eval()
        for index in range(min(2, len(self.validation_set))):
            item = self.validation_set[index]
            frames = int(item["valid"]) // hop
            units = item["units"][:frames].unsqueeze(0).to(self.device)
            wave = self.generate(units, _reference(item, self.device)).float().cpu().numpy().reshape(-1)
            buffer = io.BytesIO()
            soundfile.write(buffer, wave, self.config.prepare.sample_rate, format="WAV", subtype="PCM_16")
            name = self.validation_set.items[index].segment_id
            self.store.write_bytes(f"{TRAIN_SAMPLES}/step_{self.state.step:08d}/{name}.wav", buffer.getvalue())
        generator.train()


def _reference(item: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor | None:
    return item["reference"].unsqueeze(0).to(device) if "reference" in item else None


def _valid_mask(valid: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) 1.0 over each item's valid samples, 0.0 over its padding."""
    return (torch.arange(length, device=valid.device)[None] < valid[:, None]).float()


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in values.items()}
