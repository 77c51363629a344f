"""Frame features: padded batches through the ssl encoder give the features of one chunk at a time."""

import numpy as np
import pytest

from unitvox import audio
from unitvox.config import load
from unitvox.store import LocalStore
from unitvox.units import features

from tiny_encoders import save_tiny_wav2vec2


@pytest.fixture(scope="module", params=["layer", "group"])
def encoder(request, tmp_path_factory):
    """(front-end norm, model folder) of a tiny random wav2vec2."""
    folder = tmp_path_factory.mktemp(f"wav2vec2-{request.param}")
    return request.param, save_tiny_wav2vec2(folder, front_end_norm=request.param)


@pytest.fixture(scope="module")
def segments(prepared_run):
    """The prepared corpus's first segments, and one made of several of them: longer than a 4 s chunk."""
    store = LocalStore(str(prepared_run))
    found = []
    for row in list(store.read_jsonl("prepare/manifest.jsonl"))[:8]:
        with store.local_copy(row["audio"]) as path:
            found.append(audio.read_mono(path)[0])
    return [*found, np.concatenate(found[:3])]


def _settings(model, batch_seconds):
    return load("jobs/demo.yaml", [
        "tokenize.features.extractor=ssl", f"tokenize.features.model={model}", "tokenize.features.layer=2",
        "tokenize.features.chunk_seconds=4", "tokenize.features.overlap_seconds=0.5",
        f"tokenize.features.batch_seconds={batch_seconds}",
    ]).tokenize.features


def _forward_sizes(extractor, monkeypatch):
    """Chunks per encoder forward, recorded as `extract_batch` is called."""
    sizes, original = [], extractor.extract_batch

    def counted(chunks):
        sizes.append(len(chunks))
        return original(chunks)

    monkeypatch.setattr(extractor, "extract_batch", counted)
    return sizes


def test_batched_extraction_matches_one_by_one(encoder, segments, monkeypatch):
    norm, model = encoder
    settings = _settings(model, batch_seconds=20)
    monkeypatch.setattr(features, "_batching_pays", lambda device: True)  # as on a GPU
    extractor = features.build_extractor(settings, 16000)
    alone = [features.extract(extractor, samples, settings) for samples in segments]
    sizes = _forward_sizes(extractor, monkeypatch)
    batched = features.extract_many(extractor, segments, settings)
    assert [f.shape for f in batched] == [f.shape for f in alone] == [(len(s) // 320, 32) for s in segments]
    chunks = sum(len(features._chunks(extractor, len(s), settings)) for s in segments)
    assert sum(sizes) == chunks
    if norm == "layer":
        # A per-frame front end: padded chunks share forwards, and their real frames do not change.
        assert extractor.batchable and max(sizes) > 1 and len(sizes) < chunks
        for one, many in zip(alone, batched):
            np.testing.assert_allclose(many, one, atol=1e-4, rtol=1e-4)
    else:
        # wav2vec2-base's group norm over time would see the padding: one chunk per forward, as before.
        assert not extractor.batchable and set(sizes) == {1}
        assert all(np.array_equal(one, many) for one, many in zip(alone, batched))


def test_a_cpu_extracts_one_chunk_at_a_time(encoder):
    """On a CPU padded batches measured slower than one by one, so even a layer-norm encoder does not batch."""
    _, model = encoder
    assert not features.build_extractor(_settings(model, batch_seconds=20), 16000).batchable


def test_padding_would_change_a_group_norm_front_end(encoder, segments):
    """Why a group-norm encoder is not batched: the same chunk beside a longer one gets other features."""
    norm, model = encoder
    extractor = features.build_extractor(_settings(model, batch_seconds=20), 16000)
    short, long = sorted(segments[:2], key=len)
    alone = extractor.extract_batch([short])[0]
    padded = extractor.extract_batch([short, long])[0]
    assert padded.shape == alone.shape
    assert np.allclose(padded, alone, atol=1e-4) == (norm == "layer")


def test_padded_groups_stay_within_the_budget():
    lengths = [1, 2, 2, 3, 5, 9, 20]
    groups = features._padded_groups(lengths, budget=8)
    assert sorted(p for group in groups for p in group) == list(range(len(lengths)))
    for group in groups:
        assert len(group) == 1 or len(group) * max(lengths[p] for p in group) <= 8
    assert groups[0] == [0, 1, 2] and [6] in groups  # what fits goes together; too long goes alone
    assert features._padded_groups(lengths, budget=0) == [[p] for p in range(len(lengths))]



@pytest.mark.parametrize("model_type, stable", [("wav2vec2", False), ("wav2vec2", True), ("hubert", False),
                                                ("hubert", True), ("wavlm", False), ("wavlm", True)])
def test_the_chosen_layer_is_the_full_models_with_the_layers_above_it_dropped(model_type, stable, tmp_path):
    """Dropping the encoder layers above the chosen one (or all but one) leaves its features as the whole model's."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(
        model_type, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    model.save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    samples = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for layer in (1, 2, 4):
        settings = load("jobs/demo.yaml", ["tokenize.features.extractor=ssl", f"tokenize.features.model={tmp_path}",
                                           f"tokenize.features.layer={layer}"]).tokenize.features
        extractor = features.build_extractor(settings, 16000)
        kept = len(extractor.model.encoder.layers)
        assert kept == (layer + 1 if stable else layer) or kept == 4 == layer
        wave = torch.from_numpy(samples)[None]
        if extractor.normalize_input:
            wave = (wave - wave.mean()) / torch.sqrt(wave.var() + 1e-7)
        with torch.inference_mode():
            whole = model(wave, output_hidden_states=True).hidden_states[layer][0].numpy()
        np.testing.assert_allclose(extractor.extract(samples), whole, atol=1e-5)
