"""Deduplicated units: run-length collapse and expansion, and the duration predictor of a deduplicated vocoder.

    runs, durations = collapse(frames)                 # [5, 5, 5, 2, 2] -> [5, 2], [3, 2]
    predictor = DurationPredictor(num_units=100)
    log_durations = predictor(runs_batch)              # (B, R) -> (B, R) log(1 + frames)
    frames = expand(runs, predictor.durations(runs))   # what the generator is fed

As fairseq's unit HiFi-GAN with `--dur-prediction` (Polyak et al. 2021; SeamlessM4T's vocoder is the
same): the predictor regresses log(1 + duration) with an MSE loss, trained beside the generator on the
true durations, while the generator sees the units expanded by those true durations and so is the
frame-unit generator unchanged. One difference: log-domain regression is biased short once exponentiated
(the mean of a log is below the log of the mean, and dropout in training moves it further) and rounding
each run adds to that. So training sets a `length_scale`, the median training item's true frames over the
predictor's own (`calibrate`, at every validation and checkpoint), and `durations` scales its predictions
by it and rounds their cumulative sum, so an item's length is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

# The predictor's name in checkpoints, bundles and the training log's grad_norm/param_norm figures.
DURATION_PREDICTOR = "duration_predictor"
# Runs per training example the predictor learns from (about 10 s of speech at a 20 ms hop).
DURATION_RUNS = 256


def collapse(units: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run-length form of frame units (T,): (the unit of each run (R,), the frames each lasts (R,)), int64."""
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    if len(units) == 0:
        return units, np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(units)) + 1])
    return units[starts], np.diff(np.concatenate([starts, [len(units)]])).astype(np.int64)


def expand(runs: Any, durations: Any) -> np.ndarray:
    """Frame units: each run unit repeated for its duration (R,), (R,) -> (sum(durations),) int64."""
    runs, durations = np.asarray(runs, dtype=np.int64), np.asarray(durations, dtype=np.int64)
    if runs.shape != durations.shape:
        raise ValueError(f"{len(durations)} durations for {len(runs)} units: give one duration per unit")
    if (durations < 1).any():
        position = int(np.flatnonzero(durations < 1)[0])
        raise ValueError(f"duration {int(durations[position])} at position {position} is not a positive "
                         "number of frames")
    return np.repeat(runs, durations)


def run_window(units: Any, count: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` consecutive runs of frame units (T,), each with its whole duration: (runs, durations).

    From a random run with `rng` (training), else from the first. The predictor learns from whole
    runs over a long stretch, not only those under the generator's short audio window: with a 0.5 s
    window that is 12 runs a step, and no run longer than the window.
    """
    runs, durations = collapse(units)
    start = 0
    if rng is not None and len(runs) > count:
        start = int(rng.integers(0, len(runs) - count + 1))
    return runs[start : start + count], durations[start : start + count]


def duration_loss(log_predicted: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """MSE of log(1 + frames) over the runs; a duration of 0 marks padding. (B, R), (B, R) -> ()."""
    mask = durations > 0
    if not mask.any():
        return log_predicted.sum() * 0.0
    target = torch.log1p(durations.float())
    return torch.mean((log_predicted.float()[mask] - target[mask]) ** 2)


class DurationPredictor(nn.Module):
    """Frames per run unit, regressed as log(1 + frames) from the run units around it.

    Args:
        num_units: the codebook size k; index k is padding and embeds to zeros.
        embedding_dim: size of the predictor's own unit embedding (the generator's is not shared, so
            training the predictor leaves the generator as a frame-unit model would be).
        channels, kernel_size, layers: the convolution stack (odd kernels keep the length).
        dropout: after each convolution, in training.
    """

    def __init__(self, *, num_units: int, embedding_dim: int = 128, channels: int = 128, kernel_size: int = 3,
                 layers: int = 2, dropout: float = 0.5):
        super().__init__()
        if num_units < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need num_units >= 1 and an odd kernel_size, got {num_units} and {kernel_size}")
        self.num_units = num_units
        self.embedding = nn.Embedding(num_units + 1, embedding_dim, padding_idx=num_units)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim if i == 0 else channels, channels, kernel_size,
                                             padding=kernel_size // 2) for i in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(channels, 1)
        # True over predicted frames on the training items (`calibrate`); 1 until calibrated.
        self.register_buffer("length_scale", torch.ones(()))

    def forward(self, runs: torch.Tensor) -> torch.Tensor:
        """runs (B, R) long -> log(1 + frames) (B, R) float; padded positions are not meaningful."""
        hidden = self.embedding(runs).transpose(1, 2)  # (B, D, R)
        for conv, norm in zip(self.convs, self.norms):
            hidden = torch.relu(conv(hidden))
            hidden = self.dropout(norm(hidden.transpose(1, 2)).transpose(1, 2))
        return self.projection(hidden.transpose(1, 2)).squeeze(-1)

    @torch.no_grad()
    def calibrate(self, sequences: Iterable[tuple[Any, Any]]) -> float:
        """Set `length_scale` from (runs (R,), durations (R,)) sequences (the training items); returns it.

        The scale is the median over the sequences of true over predicted frames, so the typical item
        keeps its length: a few items with long pauses (runs no predictor can time from the units) do
        not stretch every other item, as a ratio of totals would. Left as it was when no sequence has runs.
        """
        was_training = self.training
        self.eval()
        ratios = []
        device = self.length_scale.device
        for runs, durations in sequences:
            if len(runs):
                tensor = torch.as_tensor(np.asarray(runs, dtype=np.int64))[None].to(device)
                predicted = float(self._frames(self(tensor)).double().sum())
                ratios.append(float(np.sum(durations)) / predicted)
        self.train(was_training)
        if ratios:
            self.length_scale.fill_(float(np.median(ratios)))
        return float(self.length_scale)

    @staticmethod
    def _frames(log_predicted: torch.Tensor) -> torch.Tensor:
        """Continuous frames of each run, at least one (a run lasts one frame or more)."""
        return torch.clamp(torch.expm1(log_predicted.float()), min=1.0)

    @torch.no_grad()
    def durations(self, runs: Any) -> np.ndarray:
        """Whole frames per run (R,) int64, each at least 1, for one sequence of run units (R,).

        The calibrated continuous durations are rounded through their cumulative sum, so rounding
        errors do not add up over a long sequence (each run is still within a frame of its estimate).
        """
        tensor = torch.as_tensor(np.asarray(runs, dtype=np.int64)).reshape(1, -1)
        if tensor.shape[1] == 0:
            return np.zeros(0, dtype=np.int64)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        frames = self._frames(self(tensor.to(device)))[0].double().cpu().numpy() * float(self.length_scale)
        self.train(was_training)
        frames = np.maximum(frames, 1.0)
        ends = np.floor(np.cumsum(frames) + 0.5).astype(np.int64)
        return np.diff(np.concatenate([[0], ends])).astype(np.int64)


def build_duration_predictor(config: Any, num_units: int) -> DurationPredictor:
    """The predictor from `train.duration_predictor` (a DurationPredictorConfig or its dict)."""
    fields = config if isinstance(config, dict) else {name: getattr(config, name) for name in
                                                     ("embedding_dim", "channels", "kernel_size", "layers", "dropout")}
    return DurationPredictor(num_units=num_units, **fields)
