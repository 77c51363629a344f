"""The shipped demo config shrunk to a few seconds of training, for tests that need real training steps.

k matches the `tokenized_run` fixture; every step is logged so a health check sees every step; the
monitor's window is short so a few steps fill it; no /metrics endpoint unless a test opens one.
The fixtures below are shared by tests/health/ and tests/diagnostics/, whose conftests import them.
"""

import shutil

import pytest
import torch

SHRINK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", "train.log_every=1", "train.validate_every=1000", "train.sample_every=1000",
          "train.validation_items=2", "metrics.port=0", "train.health.window=8", "train.health.min_rows=4"]
# The demo's vocoder before it became vocos (issue 14): the health monitor's and checkpoint diagnosis's
# tests were written on its structure (fusion blocks, residual-block types) and its GAN dynamics.
HIFIGAN_DEMO = ["train.generator.type=hifigan", "train.lr_generator=0.002", "train.lambdas.mel_spectrogram.scales=[]"]
# Without speaker conditioning a step is cheaper.
NO_SPEAKER = ["train.speaker.enabled=false", "train.generator.speaker_embedding_dim=0"]


def poison(trainer, at_step: int) -> None:
    """Put NaN into the audio of the batch after `at_step` steps, as a corrupt file would."""
    batches = trainer._batches

    def poisoned():
        for batch in batches():
            if trainer.state.step == at_step:
                batch["audio"][:, :50] = float("nan")
            yield batch

    trainer._batches = poisoned


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_trainer(tokenized_run, tmp_path):
    """Build a Trainer on a fresh copy of the tokenized run: `make_trainer(*overrides, sink=None)`."""
    from unitvox.config import load
    from unitvox.prometheus import MemorySink
    from unitvox.store import LocalStore
    from unitvox.vocoder.build import build_trainer

    def build(*overrides: str, sink=None):
        root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tokenized_run, root)
        config = load("jobs/demo.yaml", [*SHRINK, *overrides])
        store = LocalStore(str(root))
        return build_trainer(config, store, metrics=sink if sink is not None else MemorySink())

    return build
