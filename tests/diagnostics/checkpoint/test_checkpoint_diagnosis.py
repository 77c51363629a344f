"""`unitvox diagnose checkpoint`: plant each way a checkpoint can miss the model and check the diagnosis and its fix.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/diagnostics/checkpoint/test_checkpoint_diagnosis.py -q

Models come from the demo config (tiny generators, no training); a run is a folder with a codebook.json.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from unitvox.cli import main
from unitvox.config import ConfigError, load
from unitvox.diagnostics.checkpoint.checkpoint_diagnosis import REMAPPED, build_generator, diagnose_checkpoint
from unitvox.layout import CODEBOOK
from unitvox.store import LocalStore
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.inference import Vocoder
from unitvox.vocoder.speaker_encoder import build_speaker_encoder

from tiny_training import HIFIGAN_DEMO

DEMO = "jobs/demo.yaml"
UNITS = 20
NO_SPEAKER = ("train.speaker.enabled=false", "train.generator.speaker_embedding_dim=0")
MORE_BLOCKS = ("train.generator.resblock_kernel_sizes=[3,7,11]",
               "train.generator.resblock_dilations=[[1,3],[1,3],[1,5]]")


@pytest.fixture
def run(tmp_path) -> LocalStore:
    store = LocalStore(str(tmp_path / "run"))
    store.write_json(f"{CODEBOOK}/codebook.json", {"hash": "c0de" * 16, "k": UNITS, "extractor": "mfcc",
                                                   "model": None, "layer": None, "sample_rate": 16000,
                                                   "hop_seconds": 0.02})
    return store


def _config(*overrides: str):
    return load(DEMO, [*HIFIGAN_DEMO, *overrides])


def _generator(config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    generator = build_generator(config.train.generator, UNITS).eval()
    # Weight norm starts every g at |v|; perturb it so a swapped magnitude or direction would show in the output.
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            if name.endswith("original0"):
                tensor.mul_(torch.rand_like(tensor) + 0.5)
    return generator


def _save_unitvox(store: LocalStore, key: str, config, generator_state: dict, **extra) -> None:
    codebook = store.read_json(f"{CODEBOOK}/codebook.json")
    payload = {"model": ckpt.describe_model(config, codebook), "generator": generator_state, "discriminators": {},
               "counters": {"step": 7, "epoch": 0, "batch_in_epoch": 0}, "log": "[]", **extra}
    if config.train.speaker.enabled and "speaker_encoder" not in extra:
        payload["speaker_encoder"] = build_speaker_encoder(config.train.speaker).state_dict()
    ckpt.save(store, key, payload)


def _loads_strictly(config, state: dict) -> bool:
    build_generator(config.train.generator, UNITS).load_state_dict(state, strict=True)
    return True


def _output(generator: torch.nn.Module, speaker_dim: int) -> torch.Tensor:
    units = torch.arange(UNITS).repeat(2)[None]
    speaker = torch.linspace(-1, 1, speaker_dim)[None] if speaker_dim else None
    with torch.no_grad():
        return generator(units, speaker)


@pytest.mark.parametrize("saved_as", ["unitvox", "bare"])
def test_more_fusion_blocks_are_found_and_the_suggested_change_loads_it(run, saved_as):
    """A checkpoint whose fusion layers have three blocks (kernels 3, 7, 11), for a config with two."""
    source = _config(*MORE_BLOCKS)
    state = _generator(source).state_dict()
    if saved_as == "unitvox":
        _save_unitvox(run, "other.pt", source, state)
    else:
        torch.save(state, run.local_root / "other.pt")

    diagnosis = diagnose_checkpoint(_config(), run, "other.pt")

    details = diagnosis.to_dict()
    assert diagnosis.status == "problem" and not details["loads"]
    assert list(details["groups"]) == [f"resblocks.{stage}.blocks.2" for stage in range(4)]
    for found in details["groups"].values():
        assert (len(found["missing"]), len(found["unexpected"]), found["mismatched"]) == (0, 12, [])
        assert all(".conv1s." in key or ".conv2s." in key for key in found["unexpected"])
    structure = details["structure"]
    assert structure["blocks_per_fusion"] == [3, 3, 3, 3]
    assert structure["resblock_kernel_sizes"] == [3, 7, 11]
    assert structure["dilations_per_block"] == [2, 2, 2]
    assert "the checkpoint has 3 blocks per fusion layer (kernel sizes [3, 7, 11]), the config 2" in diagnosis.verdict
    fix = next(suggestion for suggestion in details["suggestions"] if suggestion["verified"])
    # Dilation values are not in the weights: the saved description has them, a bare state dict gets a guess.
    dilations = "[[1,3],[1,3],[1,5]]" if saved_as == "unitvox" else "[[1,3],[1,3],[1,3]]"
    assert fix["overrides"] == ["train.generator.resblock_kernel_sizes=[3,7,11]",
                                f"train.generator.resblock_dilations={dilations}"]
    assert not fix["needs_remap"]
    assert "--set 'train.generator.resblock_kernel_sizes=[3,7,11]'" in diagnosis.verdict
    fixed = _config(*fix["overrides"])
    assert _loads_strictly(fixed, state)
    if saved_as == "unitvox":
        codebook = run.read_json(f"{CODEBOOK}/codebook.json")
        ckpt.check_matches(ckpt.load(run, "other.pt")["model"], ckpt.describe_model(fixed, codebook), "other.pt")


def test_grouped_checkpoint_with_one_conv_list_is_remapped_to_the_same_outputs(run):
    """An older grouped block kept its two convolutions in one ModuleList `conv` (`conv.0`, `conv.1`, where
    the block now has `conv1`, `conv2`) and used `torch.nn.utils.weight_norm` (`weight_g`, `weight_v`).
    Its unitvox checkpoint must be found renamable and, remapped, compute exactly what the old weights did."""
    config = _config("train.generator.resblock=grouped")
    original = _generator(config)

    def old_name(key: str) -> str:
        key = key.replace(".conv1.", ".conv.0.").replace(".conv2.", ".conv.1.")
        return key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")

    _save_unitvox(run, "old.pt", config, {old_name(key): value for key, value in original.state_dict().items()})

    diagnosis = diagnose_checkpoint(config, run, "old.pt", remap_to=REMAPPED)

    details = diagnosis.to_dict()
    assert diagnosis.status == "problem" and not details["loads"]
    assert len(details["groups"]["resblocks.0.blocks.1"]["missing"]) == 6
    assert details["remapping"]["found"]
    renames = {(rule["old"], rule["new"]) for rule in details["remapping"]["rules"] if rule["kind"] == "rename"}
    assert renames == {("resblocks.*.blocks.*.conv.0", "resblocks.*.blocks.*.conv1"),
                       ("resblocks.*.blocks.*.conv.1", "resblocks.*.blocks.*.conv2")}
    assert "weight_norm_names" in {rule["kind"] for rule in details["remapping"]["rules"]}
    assert details["remapping"]["renamed"]["resblocks.2.blocks.1.conv.1.weight_v"] == \
        "resblocks.2.blocks.1.conv2.parametrizations.weight.original1"
    assert details["remap"]["written"] == run.url(REMAPPED)
    assert run.url(REMAPPED) in diagnosis.verdict
    written = ckpt.load(run, REMAPPED)
    assert written["counters"]["step"] == 7, "a unitvox payload keeps everything but the generator's key names"
    assert list(written["generator"]) == list(original.state_dict())
    vocoder = Vocoder(config, run, REMAPPED)
    torch.testing.assert_close(_output(vocoder.generator, 64), _output(original, 64), rtol=0, atol=1e-6)


def test_bare_state_dict_with_module_prefix_is_converted_to_a_unitvox_checkpoint(run):
    """A DistributedDataParallel state dict (`module.` on every key) nested under `state_dict`."""
    config = _config(*NO_SPEAKER)
    original = _generator(config)
    torch.save({"state_dict": {f"module.{key}": value for key, value in original.state_dict().items()}, "epoch": 3},
               run.local_root / "ddp.pt")

    diagnosis = diagnose_checkpoint(config, run, "ddp.pt", remap_to="converted.pt")

    details = diagnosis.to_dict()
    assert details["checkpoint"]["format"] == "state_dict" and details["checkpoint"]["found_under"] == "state_dict"
    assert "module.pre_conv" in details["groups"] and "pre_conv" in details["groups"]
    assert len(details["groups"]["module.resblocks.1.blocks.0"]["unexpected"]) == 12
    assert [(rule["kind"], rule["old"]) for rule in details["remapping"]["rules"]] == [("prefix", "module.")]
    assert "dropping the prefix module. makes it load" in diagnosis.verdict
    assert details["remap"]["written"] == run.url("converted.pt")
    assert any("evaluate.checkpoint=" in use for use in details["remap"]["use"])
    vocoder = Vocoder(config, run, "converted.pt")
    torch.testing.assert_close(_output(vocoder.generator, 0), _output(original, 0), rtol=0, atol=0)


def test_whole_gan_state_dict_is_read_from_under_its_generator_name(run):
    """One state dict of a compiled GAN: `_orig_mod.generator.*` beside `_orig_mod.discriminators.*`."""
    config = _config(*NO_SPEAKER)
    state = _generator(config).state_dict()
    whole = {**{f"_orig_mod.generator.{key}": value for key, value in state.items()},
             "_orig_mod.discriminators.mpd.0.weight": torch.zeros(3)}
    torch.save(whole, run.local_root / "gan.pt")

    diagnosis = diagnose_checkpoint(config, run, "gan.pt")

    rules = diagnosis.details["remapping"]["rules"]
    assert [(rule["old"], rule["keys"]) for rule in rules] == [("_orig_mod.", len(state) + 1),
                                                               ("generator.", len(state))]
    assert "1 key outside it left out" in rules[1]["how"]
    assert diagnosis.details["remapping"]["loads_after"]


def test_lora_checkpoint_is_inferred_with_its_rank(run):
    """Adapters of rank 4 on the default targets, saved as safetensors, for a config without LoRA."""
    adapted = _config("train.generator.lora.rank=4")
    state = _generator(adapted).state_dict()
    save_file(state, str(run.local_root / "adapted.safetensors"))

    diagnosis = diagnose_checkpoint(_config(), run, "adapted.safetensors")

    details = diagnosis.to_dict()
    assert details["checkpoint"]["format"] == "safetensors"
    lora = details["structure"]["lora"]
    assert lora["rank"] == 4 and set(lora["targets"]) == {"resblocks", "upsamples"}
    assert lora["wrapped"] == 4 + 4 * 2 * 2 * 2  # every upsample; conv1s and conv2s of 2 dilations, 2 blocks, 4 stages
    assert "LoRA rank: the checkpoint has 4" in diagnosis.verdict
    assert any("lora.alpha" in unknown for unknown in details["structure"]["unknown"])
    fix = next(suggestion for suggestion in details["suggestions"] if suggestion["verified"])
    assert fix["overrides"] == ["train.generator.lora.rank=4"]
    assert _loads_strictly(_config(*fix["overrides"]), state)


def test_matching_checkpoint_is_ok_and_needs_no_conversion(run):
    config = _config()
    _save_unitvox(run, "train/checkpoints/latest.pt", config, _generator(config).state_dict())

    diagnosis = diagnose_checkpoint(config, run, remap_to=REMAPPED)

    assert diagnosis.status == "ok"
    assert diagnosis.verdict == "loads into the model the config builds"
    assert diagnosis.details["description_differences"] == []
    assert diagnosis.details["remap"]["written"] is None
    assert "nothing to convert" in diagnosis.details["remap"]["reason"]
    assert not run.exists(REMAPPED)


def test_weights_that_load_but_a_description_that_differs_is_a_warning(run):
    """Dilation values are not in the weights: other ones load, but evaluate would refuse the checkpoint."""
    saved = _config("train.generator.resblock_dilations=[[1,5],[1,5]]")
    _save_unitvox(run, "dilated.pt", saved, _generator(saved).state_dict())

    diagnosis = diagnose_checkpoint(_config(), run, "dilated.pt")

    assert diagnosis.status == "warning" and diagnosis.details["loads"]
    assert diagnosis.details["description_differences"] == [
        "generator.resblock_dilations: checkpoint [[1, 5], [1, 5]], expected [[1, 3], [1, 3]]"]
    assert "--set 'train.generator.resblock_dilations=[[1,5],[1,5]]'" in diagnosis.verdict


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "list"])
def test_a_file_that_is_no_checkpoint_gets_an_error_naming_it(run, content):
    path = run.local_root / "notes.pt"
    if content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(run.url("notes.pt"))):
        diagnose_checkpoint(_config(), run, "notes.pt")


def test_mismatch_errors_point_at_the_diagnosis():
    with pytest.raises(ckpt.CheckpointMismatch, match="unitvox diagnose checkpoint"):
        ckpt.check_matches({"num_units": 20}, {"num_units": 50}, "old.pt")


def test_cli_writes_the_report_and_the_converted_checkpoint(run, capsys):
    config = _config(*NO_SPEAKER)
    torch.save({f"_orig_mod.{key}": value for key, value in _generator(config).state_dict().items()},
               run.local_root / "compiled.pt")
    code = main(["diagnose", "checkpoint", "--config", DEMO, *(f"--set={override}" for override in NO_SPEAKER),
                 "--run", str(run.local_root), "--checkpoint", str(run.local_root / "compiled.pt"), "--remap"])
    assert code == 0
    report = json.loads(run.read_text("diagnose/checkpoint/report.json"))
    assert report["kind"] == "checkpoint" and report["status"] == "problem"
    assert report["remap"]["written"] == run.url(REMAPPED)
    assert "## Keys by module group" in run.read_text("diagnose/checkpoint/report.md")
    assert _loads_strictly(config, ckpt.load(run, REMAPPED)["generator"])
    assert "checkpoint: PROBLEM: does not load" in capsys.readouterr().out
