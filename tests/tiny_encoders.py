"""Randomly initialised speech encoders for tests, saved like hub models and loaded back with from_pretrained."""

from __future__ import annotations

from pathlib import Path


def save_tiny_wav2vec2(folder: Path, *, front_end_norm: str = "group") -> Path:
    """A three-layer wav2vec2 (hidden 32) in `folder`.

    `front_end_norm` is wav2vec2's `feat_extract_norm`: `group` (wav2vec2-base: a group norm over
    time in the first convolution) or `layer` (XLSR-53, large-lv60: a layer norm per frame, with the
    stable-layer-norm encoder those models use).
    """
    import transformers

    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm=front_end_norm, do_stable_layer_norm=front_end_norm == "layer",
    )
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder
