"""The `vocos` generator: output length, the iSTFT head, speaker FiLM, LoRA, receptive field, bf16, presets,
and a vocos run through the real train stage, its checkpoint refused by a hifigan config and diagnosed.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/vocoder/test_vocos.py -q
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_training import SHRINK

from unitvox.config import GENERATOR_TYPES, ConfigError, LoraConfig, generator_preset, load
from unitvox.diagnostics.checkpoint.checkpoint_diagnosis import diagnose_checkpoint
from unitvox.layout import LATEST_CHECKPOINT
from unitvox.stages import Context, run_stage
from unitvox.stages.train import fit
from unitvox.store import LocalStore
from unitvox.vocoder import checkpoint as ckpt
from unitvox.vocoder.generator import GENERATORS, build_generator
from unitvox.vocoder.inference import Vocoder
from unitvox.vocoder.lora import LoraLinear, apply_lora, lora_parameters, merge_lora
from unitvox.vocoder.vocos import ISTFTHead, VocosGenerator

NUM_UNITS = 50
HOP = 320
SMALL = dict(num_units=NUM_UNITS, hop_samples=HOP, embedding_dim=16, dim=32, intermediate_dim=48, num_layers=2)


def _generator(**changes) -> VocosGenerator:
    torch.manual_seed(0)
    return VocosGenerator(**{**SMALL, **changes})


@pytest.mark.parametrize("frames_per_unit", [1, 2, 4, 5])
@pytest.mark.parametrize("frames", [1, 2, 7, 50])
def test_output_is_exactly_one_hop_per_unit(frames, frames_per_unit):
    generator = _generator(frames_per_unit=frames_per_unit).eval()
    with torch.no_grad():
        wave = generator(torch.randint(0, NUM_UNITS + 1, (3, frames)))
    assert wave.shape == (3, 1, frames * HOP)
    assert wave.dtype == torch.float32 and torch.isfinite(wave).all()


def test_head_inverts_the_stft_of_real_audio():
    """What the head predicts (log-magnitude and phase of centred frames) makes the wave it came from."""
    head = ISTFTHead(dim=8, n_fft=640, stft_hop=160)
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(40 * 160) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * time) + 0.05 * torch.randn(2, time.numel(), generator=generator)
    log_magnitude, phase = head.analyse(wave)
    assert log_magnitude.shape == phase.shape == (2, 321, 41)  # one frame per hop, plus one at the end
    torch.testing.assert_close(head.synthesize(log_magnitude, phase), wave, atol=1e-4, rtol=0)


def test_head_refuses_windows_that_do_not_overlap():
    with pytest.raises(ValueError, match="at least twice"):
        ISTFTHead(dim=8, n_fft=160, stft_hop=160)


def test_padding_index_embeds_to_zero():
    generator = _generator()
    assert torch.count_nonzero(generator.embedding.weight[NUM_UNITS]) == 0
    generator(torch.full((1, 4), NUM_UNITS)).sum().backward()
    assert torch.count_nonzero(generator.embedding.weight.grad[NUM_UNITS]) == 0


def test_film_changes_the_output_with_the_speaker():
    generator = _generator(speaker_embedding_dim=8).eval()
    assert len(generator.films) == len(generator.resblocks) == 2
    units = torch.randint(0, NUM_UNITS, (2, 5))
    with torch.no_grad():
        first = generator(units, torch.randn(2, 8))
        second = generator(units, torch.randn(2, 8))
    assert first.shape == (2, 1, 5 * HOP)
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="speaker embedding of shape"):
        generator(units)
    with pytest.raises(ValueError, match="no speaker conditioning"):
        _generator()(units, torch.randn(2, 8))


def test_lora_adapters_attach_to_the_backbone_and_train_alone():
    model = apply_lora(_generator(frames_per_unit=2), LoraConfig(rank=2))  # default targets
    adapters = {id(p) for p in lora_parameters(model)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert adapters and trainable == adapters
    wrapped = {name for name, module in model.named_modules() if hasattr(module, "delta_weight")}
    assert {name.split(".")[0] for name in wrapped} == {"resblocks", "upsamples"}
    assert {"resblocks.0.pwconv1", "resblocks.0.pwconv2", "resblocks.1.dwconv", "upsamples.0"} <= wrapped
    assert isinstance(model.resblocks[0].pwconv1, LoraLinear)
    units = torch.randint(0, NUM_UNITS, (1, 6))
    model(units).square().mean().backward()
    assert all(p.grad is not None for p in lora_parameters(model))
    assert all(p.grad is None for p in model.parameters() if id(p) not in adapters)


def test_merged_adapters_keep_outputs_and_plain_names():
    plain_names = set(_generator().state_dict())
    model = apply_lora(_generator(), LoraConfig(rank=2)).eval()
    with torch.no_grad():
        for parameter in lora_parameters(model):
            parameter.normal_(0.0, 0.05)
        units = torch.randint(0, NUM_UNITS, (1, 6))
        before = model(units)
        merge_lora(model)
        after = model(units)
    assert set(model.state_dict()) == plain_names
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("frames_per_unit", [1, 2])
def test_receptive_field_matches_the_samples_one_unit_moves(frames_per_unit):
    """The derivative of every output sample along a change of one unit's embedding, by a Jacobian-vector product."""
    generator = _generator(frames_per_unit=frames_per_unit).double().eval()
    units = torch.randint(0, NUM_UNITS, (1, 40))
    position = 20
    embedded = generator.embedding(units).detach()
    tangent = torch.zeros_like(embedded)
    tangent[0, position] = torch.randn(embedded.shape[-1], dtype=torch.double)
    hooked = lambda values: generator_from_embeddings(generator, values)  # noqa: E731
    _, change = torch.autograd.functional.jvp(hooked, embedded, tangent)
    moved = torch.nonzero(change[0, 0]).flatten()
    first, last = generator.influence_span()
    assert moved.min().item() == position * HOP + first
    assert moved.max().item() == position * HOP + last
    assert generator.receptive_field() == last - first + 1 > HOP


def generator_from_embeddings(generator: VocosGenerator, embedded: torch.Tensor) -> torch.Tensor:
    """The generator's forward pass from unit embeddings (B, T, E) instead of unit indices."""
    hook = generator.embedding.register_forward_hook(lambda module, args, out: embedded)
    try:
        return generator(torch.zeros(embedded.shape[:2], dtype=torch.long))
    finally:
        hook.remove()


def test_bf16_autocast_keeps_the_inverse_fft_in_float32():
    generator = _generator(frames_per_unit=2).eval()
    units = torch.randint(0, NUM_UNITS, (2, 9))
    with torch.no_grad():
        reference = generator(units)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            wave = generator(units)
    assert wave.dtype == torch.float32 and wave.shape == reference.shape
    assert torch.isfinite(wave).all()
    # bf16 keeps about 3 significant digits through the backbone: close, not equal.
    assert (wave - reference).abs().max() < 0.1 * reference.abs().max() + 1e-3


# Presets and config ------------------------------------------------------------------------------


def test_config_types_are_the_registered_generators():
    assert set(GENERATOR_TYPES) == set(GENERATORS) == {"hifigan", "vocos"}


@pytest.mark.parametrize("size, smallest, largest", [("tiny", 0.3e6, 1.5e6), ("base", 0.85 * 13.5e6, 1.15 * 13.5e6)])
def test_preset_parameter_counts(size, smallest, largest):
    """`tiny` for the CPU demo; `base` comparable to Vocos's 13.5 M parameters."""
    config = generator_preset(size, "vocos")
    config.check("generator")
    generator = build_generator(config, 100)
    assert isinstance(generator, VocosGenerator)
    assert smallest <= sum(p.numel() for p in generator.parameters()) <= largest


def test_type_picks_the_vocos_preset_and_checkpoints_record_only_its_fields():
    generator = load("jobs/demo.yaml", ["train.generator.type=vocos"]).train.generator
    assert (generator.type, generator.size, generator.backbone_dim, generator.speaker_embedding_dim) == \
        ("vocos", "tiny", 128, 64)
    described = generator.described()
    assert described["type"] == "vocos" and "upsample_rates" not in described and "backbone_layers" in described
    hifigan = load("jobs/demo.yaml", ["train.generator.type=hifigan"]).train.generator.described()
    assert "type" not in hifigan and "backbone_dim" not in hifigan and "upsample_rates" in hifigan
    with pytest.raises(ConfigError, match="no vocos preset named 'v1'"):
        load("jobs/demo.yaml", ["train.generator.type=vocos", "train.generator.size=v1"])
    with pytest.raises(ConfigError, match="train.generator.frames_per_unit"):
        load("jobs/demo.yaml", ["train.generator.type=vocos", "train.generator.frames_per_unit=3"])


# Through the train stage -----------------------------------------------------------------------

VOCOS = ["train.generator.type=vocos", "train.max_steps=2", "train.generator_warmup_steps=1"]


@pytest.fixture(scope="module")
def vocos_run(tokenized_run, tmp_path_factory) -> LocalStore:
    """A run trained for two steps (one generator-only, one GAN) with the vocos demo preset."""
    root = tmp_path_factory.mktemp("vocos") / "run"
    shutil.copytree(tokenized_run, root)
    store = LocalStore(str(root))
    result = run_stage(load("jobs/demo.yaml", [*SHRINK, *VOCOS]), store, "train")
    assert result.status == "ran" and result.summary["steps"] == 2
    return store


def test_two_step_smoke_train_with_speaker_film_and_health_figures(vocos_run):
    payload = ckpt.load(vocos_run, LATEST_CHECKPOINT)
    assert payload["model"]["generator"]["type"] == "vocos"
    assert any(key.startswith("films.") for key in payload["generator"])  # the demo conditions on the speaker
    log = [row for row in vocos_run.read_jsonl("train/training_log.jsonl") if "validation/mel" not in row]
    assert "loss/disc" not in log[0] and "loss/adv_gen" in log[-1]
    assert all(np.isfinite(row["loss/gen_total"]) for row in log)
    assert all(row["grad_norm/generator"] > 0 for row in log)  # what the health monitor judges


def test_two_step_smoke_train_of_the_base_preset(tokenized_run, tmp_path):
    shutil.copytree(tokenized_run, tmp_path / "run")
    store = LocalStore(str(tmp_path / "run"))
    result = run_stage(load("jobs/demo.yaml", [*SHRINK, *VOCOS, "train.generator.size=base"]), store, "train")
    assert result.status == "ran" and result.summary["steps"] == 2
    generator = ckpt.load(store, LATEST_CHECKPOINT)["model"]["generator"]
    assert (generator["size"], generator["backbone_dim"], generator["backbone_layers"]) == ("base", 512, 8)


def test_vocos_checkpoint_is_refused_by_a_hifigan_config(vocos_run):
    hifigan = load("jobs/demo.yaml", [*SHRINK, "train.max_steps=3", "train.generator.type=hifigan"])
    with pytest.raises(ckpt.CheckpointMismatch) as refused:  # inference, evaluation, init_from
        Vocoder(hifigan, vocos_run, "latest")
    message = str(refused.value)
    assert "holds a 'vocos' generator, the config builds a 'hifigan' one (train.generator.type)" in message
    assert "generator.type: checkpoint 'vocos', expected None" in message
    with pytest.raises(ckpt.CheckpointMismatch) as resumed:  # resuming the run with the other type
        fit(Context(hifigan, vocos_run))
    assert "generator.type" in str(resumed.value)


def test_diagnose_checkpoint_reads_the_vocos_structure_and_finds_the_change(vocos_run):
    diagnosis = diagnose_checkpoint(load("jobs/demo.yaml", [*SHRINK, "train.generator.type=hifigan"]), vocos_run,
                                    "latest")
    details = diagnosis.to_dict()
    assert diagnosis.status == "problem" and not details["loads"]
    structure = details["structure"]
    assert structure["type"] == "vocos"
    assert (structure["backbone_dim"], structure["backbone_intermediate_dim"], structure["backbone_layers"]) == \
        (128, 384, 4)
    assert (structure["frames_per_unit"], structure["n_fft"], structure["speaker_embedding_dim"]) == (2, 642 - 2, 64)
    assert any("the checkpoint has a vocos generator, the config hifigan" in line
               for line in details["structure_differences"])
    fix = next(suggestion for suggestion in details["suggestions"] if suggestion["verified"])
    assert "train.generator.type=vocos" in fix["overrides"]


def test_the_trained_vocos_loads_for_inference_at_one_hop_per_unit(vocos_run):
    vocoder = Vocoder(load("jobs/demo.yaml", [*SHRINK, *VOCOS]), vocos_run, "latest")
    reference = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    assert vocoder.generate(list(range(13)), reference).shape == (13 * 320,)


def test_export_bundle_vocodes_in_chunks_as_in_one_pass(vocos_run, tmp_path, monkeypatch):
    """`unitvox export` and UnitModel: the bundle rebuilds the vocos generator from its saved description,
    and long inputs vocoded in chunks (the receptive field as context) match one pass."""
    from unitvox.cli import main
    from unitvox.model import unit_model
    from unitvox.model.unit_model import UnitModel

    out = tmp_path / "model"  # two steps never validated, so there is no best checkpoint yet
    assert main(["export", "--run", str(vocos_run.local_root), "--out", str(out), "--checkpoint", "latest"]) == 0
    model = UnitModel.from_pretrained(str(out))
    assert isinstance(model.generator, VocosGenerator)
    units = np.random.default_rng(1).integers(0, model.k, 300)
    speaker = model.embed(np.random.default_rng(2).uniform(-0.3, 0.3, 16000))
    whole = model.vocode(units, speaker)
    assert whole.shape == (300 * 320,)
    monkeypatch.setattr(unit_model, "VOCODE_CHUNK_FRAMES", 70)
    np.testing.assert_allclose(model.vocode(units, speaker), whole, atol=1e-5)


@pytest.mark.e2e
def test_two_process_ddp_on_cpu(tokenized_run, tmp_path):
    shutil.copytree(tokenized_run, tmp_path / "run")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "unitvox", "train", "--config", "jobs/demo.yaml", "--run-root", str(tmp_path / "run")]
    for override in [*SHRINK, *VOCOS]:
        argv += ["--set", override]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("train: ran") == 2, "both ranks must finish"
