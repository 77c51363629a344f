"""The bundle: what export writes, loading it (or the run) anywhere, and what a mismatched or altered one gets."""

import io
import json
import shutil

import numpy as np
import pytest

from unitvox.layout import UNITS
from unitvox.model import bundle as bundles
from unitvox.model.unit_model import UnitModel
from unitvox.units.kmeans import centroids_hash


def test_export_writes_weights_codebook_fingerprints_and_a_card(exported, sampled_run):
    names = sorted(p.name for p in exported.iterdir())
    assert names == sorted([bundles.MODEL_JSON, bundles.GENERATOR_FILE, bundles.SPEAKER_ENCODER_FILE,
                            bundles.CODEBOOK_FILE, bundles.MODEL_CARD_FILE])
    meta = json.loads((exported / bundles.MODEL_JSON).read_text())
    assert sorted(meta["files"]) == sorted(set(names) - {bundles.MODEL_JSON})
    assert meta["codebook"]["k"] == 20 and meta["vocoder"]["num_units"] == 20
    assert meta["features"]["extractor"] == meta["codebook"]["extractor"]
    assert meta["checkpoint"]["step"] == 2 and {"unitvox", "torch", "python"} <= set(meta["versions"])
    card = (exported / bundles.MODEL_CARD_FILE).read_text()
    report = json.loads((sampled_run / "prepare" / "report.json").read_text())
    assert f"segments_kept: {report['segments_kept']}" in card and "k=20" in card
    assert b"pickle" not in (exported / bundles.GENERATOR_FILE).read_bytes()[:8]


def test_a_bundle_and_its_run_vocode_the_same(exported, sampled_run):
    from_bundle, from_run = UnitModel.from_pretrained(str(exported)), UnitModel.from_pretrained(str(sampled_run))
    row = json.loads((sampled_run / UNITS).read_text().splitlines()[0])
    reference = np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32)
    wave = from_bundle.vocode(row["units"], reference)
    assert wave.shape == (len(row["units"]) * from_bundle.hop_samples,) and wave.dtype == np.float32
    np.testing.assert_array_equal(wave, from_run.vocode(row["units"], reference))


def test_vocoding_in_chunks_matches_one_pass(exported, monkeypatch):
    from unitvox.model import unit_model

    model = UnitModel.from_pretrained(str(exported))
    units = np.random.default_rng(1).integers(0, model.k, 300)
    speaker = model.embed(np.random.default_rng(2).uniform(-0.3, 0.3, 16000))
    whole = model.vocode(units, speaker)
    monkeypatch.setattr(unit_model, "VOCODE_CHUNK_FRAMES", 70)
    np.testing.assert_allclose(model.vocode(units, speaker), whole, atol=1e-5)


def _copy(exported, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    return folder, json.loads((folder / bundles.MODEL_JSON).read_text())


def _save(folder, meta, centroids=None):
    """Write model.json (and codebook.npy) back with a consistent file list, so only fingerprints can tell."""
    if centroids is not None:
        buffer = io.BytesIO()
        np.save(buffer, centroids.astype(np.float32), allow_pickle=False)
        (folder / bundles.CODEBOOK_FILE).write_bytes(buffer.getvalue())
        meta["codebook"]["hash"] = centroids_hash(centroids)
    from unitvox.store import LocalStore

    store = LocalStore(str(folder))
    meta["files"] = {name: store.sha256(name) for name in meta["files"]}
    (folder / bundles.MODEL_JSON).write_text(json.dumps(meta))


def _centroids(folder):
    return np.load(folder / bundles.CODEBOOK_FILE)


@pytest.mark.parametrize("edit, named", [
    ("another_run", ["codebook.hash"]),
    ("another_k", ["codebook.k", "num_units"]),
    ("another_layer", ["codebook.layer"]),
    ("another_extractor", ["features.extractor"]),
])
def test_a_codebook_from_elsewhere_is_refused_naming_what_differs(exported, tmp_path, edit, named):
    folder, meta = _copy(exported, tmp_path)
    if edit == "another_run":  # a codebook fitted elsewhere, with its own (consistent) fingerprint
        _save(folder, meta, _centroids(folder) + 0.01)
    elif edit == "another_k":
        meta["codebook"]["k"] = 10
        _save(folder, meta, _centroids(folder)[:10])
    elif edit == "another_layer":
        meta["codebook"]["layer"] = 9
        _save(folder, meta)
    else:
        meta["features"]["extractor"] = "mfcc" if meta["features"]["extractor"] != "mfcc" else "logmel"
        _save(folder, meta)
    with pytest.raises(bundles.BundleError) as refused:
        UnitModel.from_pretrained(str(folder))
    message = str(refused.value)
    assert all(field in message for field in named), message
    assert "altered" not in message and "missing" not in message  # the fingerprints caught it, not the file hashes


def test_weights_of_another_bundle_are_refused(exported, tmp_path):
    folder, meta = _copy(exported, tmp_path)
    meta["codebook"]["hash"] = "0" * 64
    _save(folder, meta, None)
    with pytest.raises(bundles.BundleError, match=r"generator\.safetensors: exported with codebook"):
        UnitModel.from_pretrained(str(folder))


@pytest.mark.parametrize("name", [bundles.GENERATOR_FILE, bundles.CODEBOOK_FILE, bundles.SPEAKER_ENCODER_FILE])
def test_a_removed_or_altered_file_is_refused_naming_it(exported, tmp_path, name):
    folder, _ = _copy(exported, tmp_path)
    (folder / name).unlink()
    with pytest.raises(bundles.BundleError, match=rf"{name} is missing"):
        UnitModel.from_pretrained(str(folder))
    shutil.copy(exported / name, folder / name)
    with (folder / name).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(bundles.BundleError, match=rf"{name} has been altered"):
        UnitModel.from_pretrained(str(folder))


def test_a_folder_that_is_neither_bundle_nor_run_is_refused(tmp_path):
    with pytest.raises(bundles.BundleError, match="not a run root"):
        UnitModel.from_pretrained(str(tmp_path))


def test_import_unitvox_stays_light():
    import subprocess
    import sys

    code = "import sys, unitvox; assert 'torch' not in sys.modules; print(unitvox.UnitModel.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "UnitModel"


def test_a_bundle_and_a_run_load_from_s3(exported, sampled_run, s3_bucket):
    from unitvox.store import open_store

    bucket = open_store(f"s3://{s3_bucket}")
    for path in sorted(sampled_run.rglob("*")):
        if path.is_file() and path.parts[len(sampled_run.parts)] in ("config.yaml", "tokenize", "train"):
            bucket.upload_file(path, f"runs/exp1/{path.relative_to(sampled_run).as_posix()}")
    for path in exported.iterdir():
        bucket.upload_file(path, f"models/exp1/{path.name}")
    local = UnitModel.from_pretrained(str(exported))
    units = json.loads((sampled_run / UNITS).read_text().splitlines()[0])["units"][:50]
    speaker = local.embed(np.random.default_rng(3).uniform(-0.3, 0.3, 16000))
    expected = local.vocode(units, speaker)
    for uri in (f"s3://{s3_bucket}/models/exp1", f"s3://{s3_bucket}/runs/exp1"):
        np.testing.assert_array_equal(UnitModel.from_pretrained(uri).vocode(units, speaker), expected)


def test_a_long_recording_encodes_in_chunks_as_in_one_piece(exported):
    model = UnitModel.from_pretrained(str(exported))
    wave = np.random.default_rng(4).normal(0, 0.1, int(model.features.chunk_seconds * 16000 * 3.5)).astype(np.float32)
    chunked = model.encode(wave, 16000, progress="long")
    assert len(chunked) == len(wave) // model.hop_samples
    np.testing.assert_array_equal(chunked, model.encode(wave, 16000))
    stereo = np.stack([wave, wave])[:, : 44100 * 2]  # (channels, T) at 44.1 kHz
    assert len(model.encode(stereo, 44100)) == 2 * 16000 // model.hop_samples
