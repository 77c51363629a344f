"""A briefly trained, speaker-conditioned run with its samples, and its exported bundle."""

import shutil

import pytest

from tiny_training import SHRINK, one_torch_thread  # noqa: F401 (an autouse fixture)

STEPS = ["train.max_steps=2", "train.generator_warmup_steps=1", "samples.count=1", "samples.conversions=0",
         "samples.voices=0", "samples.long_form_segments=1"]


def tiny_config(*overrides):
    """The demo config shrunk to two training steps and one rendered sample."""
    from unitvox.config import load

    return load("jobs/demo.yaml", [*SHRINK, *STEPS, *overrides])


@pytest.fixture(name="tiny_config", scope="session")
def tiny_config_fixture():
    return tiny_config


@pytest.fixture(scope="session")
def sampled_run(tokenized_run, tmp_path_factory):
    """A run of the demo config trained two steps (speaker conditioning on), with its samples rendered."""
    from unitvox.stages import run_stage
    from unitvox.store import LocalStore

    root = tmp_path_factory.mktemp("model") / "run"
    shutil.copytree(tokenized_run, root)
    store = LocalStore(str(root))
    config = tiny_config()
    for stage in ("train", "samples"):
        run_stage(config, store, stage)
    return root


@pytest.fixture(scope="session")
def exported(sampled_run, tmp_path_factory):
    """The run's bundle, written by `unitvox export`; copy it before changing it."""
    from unitvox.cli import main

    out = tmp_path_factory.mktemp("bundle") / "model"
    assert main(["export", "--run", str(sampled_run), "--out", str(out)]) == 0
    return out
