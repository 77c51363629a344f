"""Probing a saved training state: discriminator AUC on held-out audio, and each loss term's share.

`unitvox diagnose training` loads a checkpoint with its models and data, as training would resume
it, and measures what the log cannot show:

- discriminator AUC: how well each discriminator tells held-out real audio from the generator's
  resynthesis of it (0.5: not at all; 1.0: perfectly, so its gradients may no longer guide the generator);
- loss balance: each generator term's weighted share of the total, and of the gradient norm it
  sends into the generator (a term can be small in value yet dominate the gradient, or the reverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unitvox.vocoder.build import load_trainer, window_frames
from unitvox.vocoder.dataset import UnitAudioDataset
from unitvox.vocoder.loop import Trainer

__all__ = ["DiscriminatorAuc", "discriminator_auc", "load_trainer"]


@dataclass
class DiscriminatorAuc:
    """One discriminator's scores on held-out real and generated windows, and the AUC between them."""

    name: str
    auc: float
    real_mean: float
    generated_mean: float
    items: int

    def to_dict(self) -> dict[str, Any]:
        return {"discriminator": self.name, "auc": self.auc, "real_mean_score": self.real_mean,
                "generated_mean_score": self.generated_mean, "items": self.items}


@torch.no_grad()
def discriminator_auc(trainer: Trainer, items: int) -> list[DiscriminatorAuc]:
    """Each discriminator's ROC AUC for held-out real versus generated windows of the training length.

    Held-out items are the validation split (the discriminators never trained on them); each is
    scored as a training window from its start, real against the generator's version of it.
    """
    from sklearn.metrics import roc_auc_score

    held_out = _held_out_windows(trainer, items)
    if len(held_out) == 0:
        return []
    trainer.state.generator.eval()
    scores: dict[str, tuple[list[float], list[float]]] = {}
    for batch in _batches(held_out, trainer.settings.batch_size):
        real = batch["audio"].unsqueeze(1)
        mask = (torch.arange(real.shape[-1])[None] < batch["valid"][:, None]).unsqueeze(1)
        fake = trainer.state.generator(batch["units"], trainer.embed(batch.get("reference"))) * mask
        for name, output in trainer.state.discriminators(real, fake).items():
            real_scores, fake_scores = scores.setdefault(name, ([], []))
            real_scores += _item_scores(output.real_logits)
            fake_scores += _item_scores(output.fake_logits)
    found = []
    for name, (real_scores, fake_scores) in scores.items():
        labels = [1] * len(real_scores) + [0] * len(fake_scores)
        values = np.asarray(real_scores + fake_scores)
        auc = float(roc_auc_score(labels, values)) if np.isfinite(values).all() else math.nan
        found.append(DiscriminatorAuc(name, auc, float(np.mean(real_scores)), float(np.mean(fake_scores)),
                                      len(real_scores)))
    return found


def _held_out_windows(trainer: Trainer, items: int) -> UnitAudioDataset:
    validation = trainer.validation_set
    return UnitAudioDataset(validation.items[:items], validation.reader, frames=window_frames(trainer.config),
                            hop=validation.hop, pad_unit=validation.pad_unit, speakers=validation.speakers,
                            crop=False, seed=validation.seed, reference_samples=validation.reference_samples)


def _batches(dataset: torch.utils.data.Dataset, size: int):
    return torch.utils.data.DataLoader(dataset, batch_size=size, shuffle=False)


def _item_scores(logits: list[torch.Tensor]) -> list[float]:
    """Per item, the mean score over every sub-discriminator's logits: (B,) as a list."""
    per_sub = [part.float().reshape(part.shape[0], -1).mean(dim=1) for part in logits]
    return torch.stack(per_sub).mean(dim=0).tolist()


def loss_balance(trainer: Trainer, batches: int) -> list[dict[str, Any]]:
    """Per weighted generator term: its weight, mean value, share of the weighted total, and the
    norm and share of the gradient its weighted value sends into the generator, over `batches` batches.

    Terms with weight 0 are left out: they are not part of the loss.
    """
    weights = trainer.settings.lambdas.weights()
    parameters = [p for p in trainer.networks["generator"].parameters() if p.requires_grad]
    values: dict[str, list[float]] = {}
    norms: dict[str, list[float]] = {}
    trainer.state.generator.train()
    # Shuffled as training draws them: batches of one speaker would leave the contrastive term empty.
    order = torch.Generator().manual_seed(trainer.settings.seed)
    loader = torch.utils.data.DataLoader(trainer.train_set, batch_size=trainer.settings.batch_size, shuffle=True,
                                         generator=order)
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        terms = {name: term for name, term in trainer.loss_terms(batch).items() if weights.get(name, 0) > 0}
        for name, term in terms.items():
            weighted = weights[name] * term
            gradients = torch.autograd.grad(weighted, parameters, retain_graph=True, allow_unused=True)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients
                                                         if g is not None] or [torch.zeros(())]))
            values.setdefault(name, []).append(float(term.detach()))
            norms.setdefault(name, []).append(float(norm))
    return _balance_rows(weights, values, norms)


def _balance_rows(weights: dict[str, float], values: dict[str, list[float]],
                  norms: dict[str, list[float]]) -> list[dict[str, Any]]:
    weighted = {name: weights[name] * abs(float(np.mean(found))) for name, found in values.items()}
    gradient = {name: float(np.mean(found)) for name, found in norms.items()}
    total, gradient_total = sum(weighted.values()), sum(gradient.values())
    return [{"term": name, "weight": weights[name], "value": float(np.mean(values[name])),
             "weighted": weighted[name], "loss_share": weighted[name] / total if total > 0 else math.nan,
             "gradient_norm": gradient[name],
             "gradient_share": gradient[name] / gradient_total if gradient_total > 0 else math.nan}
            for name in sorted(weighted, key=weighted.get, reverse=True)]
