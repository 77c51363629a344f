"""The training state: every model, optimizer, scheduler, counter and RNG state, built in one place."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unitvox.config import TrainConfig
from unitvox.health.norms import unwrap
from unitvox.health.progress import last_improvement
from unitvox.vocoder.discriminators import Discriminators
from unitvox.vocoder.duration import build_duration_predictor
from unitvox.vocoder.generator import make_generator
from unitvox.vocoder.lora import apply_lora, lora_parameters
from unitvox.vocoder.speaker_encoder import build_speaker_encoder


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly where it stopped."""

    generator: nn.Module
    discriminators: nn.Module
    optimizer_generator: torch.optim.Optimizer
    optimizer_discriminator: torch.optim.Optimizer
    scheduler_generator: torch.optim.lr_scheduler.LRScheduler
    scheduler_discriminator: torch.optim.lr_scheduler.LRScheduler
    speaker_encoder: nn.Module | None = None
    # The run units' duration predictor of a `train.units: deduplicated` vocoder; steps with the generator.
    duration_predictor: nn.Module | None = None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_validation: float = math.inf
    # The step best.pt was saved at (0: none yet), so best.pt can be kept to the adversarial phase.
    best_step: int = 0
    validations_without_improvement: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    # What this line of checkpoints is trained with (`checkpoint.lineage`); a resume must match it.
    lineage: dict[str, Any] = field(default_factory=dict)

    def modules(self) -> dict[str, nn.Module]:
        found = {"generator": self.generator, "discriminators": self.discriminators}
        if self.speaker_encoder is not None:
            found["speaker_encoder"] = self.speaker_encoder
        if self.duration_predictor is not None:
            found["duration_predictor"] = self.duration_predictor
        return found

    def state_dict(self) -> dict[str, Any]:
        return {
            **{name: unwrap(module).state_dict() for name, module in self.modules().items()},
            "optimizer_generator": self.optimizer_generator.state_dict(),
            "optimizer_discriminator": self.optimizer_discriminator.state_dict(),
            "scheduler_generator": self.scheduler_generator.state_dict(),
            "scheduler_discriminator": self.scheduler_discriminator.state_dict(),
            "counters": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                         "best_validation": self.best_validation, "best_step": self.best_step,
                         "validations_without_improvement": self.validations_without_improvement},
            "log": json.dumps(self.log),
            "lineage": self.lineage,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            unwrap(module).load_state_dict(payload[name])
        self.optimizer_generator.load_state_dict(payload["optimizer_generator"])
        self.optimizer_discriminator.load_state_dict(payload["optimizer_discriminator"])
        self.scheduler_generator.load_state_dict(payload["scheduler_generator"])
        self.scheduler_discriminator.load_state_dict(payload["scheduler_discriminator"])
        for name, value in payload["counters"].items():
            setattr(self, name, value)
        self.log = json.loads(payload["log"])
        if "best_step" not in payload["counters"]:  # saved before it was recorded: the log's last improvement
            self.best_step = last_improvement(self.log) or 0
        self.lineage = dict(payload.get("lineage") or {})  # checkpoints before it was recorded have none
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])


def build_state(config: TrainConfig, num_units: int, device: torch.device,
                initial_generator: dict[str, torch.Tensor] | None = None) -> TrainState:
    """Models, optimizers and schedulers from the config; seeded so every rank starts identical.

    `initial_generator` (weights of a plain generator of the same architecture) is loaded before
    LoRA adapters are added, which is how a trained vocoder is adapted to a new speaker. A
    deduplicated vocoder's duration predictor always trains (LoRA or not): a parameter group of the
    generator's optimizer at its own `duration_predictor.lr`, decayed by the same schedule.
    """
    torch.manual_seed(config.seed)
    speaker_encoder = build_speaker_encoder(config.speaker) if config.speaker.enabled else None
    generator = make_generator(config.generator, num_units)
    if initial_generator is not None:
        generator.load_state_dict(initial_generator)
    if config.generator.lora.rank:
        apply_lora(generator, config.generator.lora)
    discriminators = Discriminators(config.discriminator, key="train.discriminator")
    generator.to(device)
    discriminators.to(device)
    trainable = list(lora_parameters(generator)) if config.generator.lora.rank and config.generator.lora.lora_only \
        else [p for p in generator.parameters() if p.requires_grad]
    if speaker_encoder is not None:
        speaker_encoder.to(device)
        if not config.speaker.freeze_encoder:
            trainable += [p for p in speaker_encoder.parameters() if p.requires_grad]
    groups = [{"params": trainable}]
    duration_predictor = None
    if config.units == "deduplicated":
        duration_predictor = build_duration_predictor(config.duration_predictor, num_units).to(device)
        groups.append({"params": list(duration_predictor.parameters()), "lr": config.duration_predictor.lr})
    betas = tuple(config.betas)
    optimizer_generator = torch.optim.AdamW(groups, lr=config.lr_generator, betas=betas)
    optimizer_discriminator = torch.optim.AdamW(discriminators.parameters(), lr=config.lr_discriminator, betas=betas)
    return TrainState(
        generator=generator,
        discriminators=discriminators,
        optimizer_generator=optimizer_generator,
        optimizer_discriminator=optimizer_discriminator,
        scheduler_generator=torch.optim.lr_scheduler.ExponentialLR(optimizer_generator, config.lr_decay),
        scheduler_discriminator=torch.optim.lr_scheduler.ExponentialLR(optimizer_discriminator, config.lr_decay),
        speaker_encoder=speaker_encoder,
        duration_predictor=duration_predictor,
    )
