"""train: the unit-to-waveform GAN vocoder, resumable, single process or DDP under torchrun.

Run: unitvox train --config jobs/base.yaml --run ./runs/exp1
     torchrun --nproc-per-node 2 -m unitvox train --config jobs/base.yaml --run-root ./runs/exp1
(torchrun reads `--run` as its own `--run-path`, so under torchrun the run root is spelt `--run-root`.)
Writes train/checkpoints/{latest,best,step_N}.pt, train/training_log.jsonl, train/samples/ and
train/_SUCCESS.json once training ends (max_steps or early stopping).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from unitvox.config import Config
from unitvox.errors import Unhealthy
from unitvox.filterlist import filter_list_fingerprint
from unitvox.layout import BEST_CHECKPOINT as BEST, LATEST_CHECKPOINT as LATEST, TRAINING_LOG, UNITS
from unitvox.stages import Context, Phase
from unitvox.stages.record import upstream, write_success
from unitvox.store import Store
from unitvox.vocoder.build import build_trainer
from unitvox.vocoder.loop import StopFlag

LOGGER = logging.getLogger(__name__)
PHASES = (Phase("fit"),)


def inputs(config: Config, store: Store) -> dict[str, Any]:
    units = upstream(store, "tokenize", UNITS, "train")
    return {**units, **filter_list_fingerprint(config.train.exclude, "train.exclude")}


def _linger(context: Context) -> None:
    """Keep a served /metrics up a little longer, so the critical verdict is scraped before the pod goes."""
    seconds = context.config.metrics.linger_seconds
    if getattr(context.metrics, "port", None) and seconds:
        LOGGER.warning("training stopped on critical health; serving /metrics %.0f s more", seconds)
        time.sleep(seconds)


def fit(context: Context, stop: StopFlag | None = None) -> dict[str, Any]:
    stop = stop or StopFlag()
    stop.install()
    trainer = build_trainer(context.config, context.store, metrics=context.metrics, force=context.force, stop=stop,
                            inputs=inputs(context.config, context.store))
    try:
        summary = trainer.run()
    except Unhealthy:
        _linger(context)
        raise
    if trainer.distributed.is_main:
        outputs = [LATEST, TRAINING_LOG] + ([BEST] if context.store.exists(BEST) else [])
        write_success(
            context.store, "train", config_hash=context.config.stage_hash("train"),
            inputs=inputs(context.config, context.store), outputs=outputs, started=context.started,
            extra={"stage": "train", "config": context.config.to_dict()["train"], "summary": summary},
        )
    return summary
