"""Tiny training runs for the health tests: the shipped demo config shrunk, on one thread.

These models are tiny, so extra intra-op threads buy nothing and slow a shared runner down.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tiny_training import SHRINK


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
    from unitvox.metrics import MemorySink
    from unitvox.stages import Context
    from unitvox.stages.train import build_trainer
    from unitvox.store import LocalStore

    def build(*overrides: str, sink=None):
        root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tokenized_run, root)
        config = load("jobs/demo.yaml", [*SHRINK, *overrides])
        store = LocalStore(str(root))
        return build_trainer(Context(config, store, sink if sink is not None else MemorySink()))

    return build

