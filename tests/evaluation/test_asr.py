"""ASR engines, text normalisation, WER/CER and word alignments."""

import json
import math

import numpy as np
import pytest

from unitvox.evaluation.asr import (
    ASR_ENGINES,
    build_asr_engine,
    error_rates,
    normalise_text,
    word_alignment,
)

RATE = 16000


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalise_text("  Hello, World!  It's  TWO-thirty.") == "hello world it's two thirty"
    assert normalise_text("'Quoted' words; (brackets) & symbols_") == "quoted words brackets symbols"
    assert normalise_text("Ça coûte 5 €") == "ça coûte 5"
    assert normalise_text("...") == ""


def test_error_rates_count_edits_after_normalisation():
    rates = error_rates("The cat sat on the mat.", "the BAT sat on mat")
    assert (rates.substitutions, rates.deletions, rates.insertions, rates.reference_words) == (1, 1, 0, 6)
    assert rates.wer == pytest.approx(2 / 6)
    assert 0 < rates.cer < rates.wer
    assert error_rates("Hello, world!", "hello world").wer == 0.0
    assert error_rates("one", "one two three").wer == pytest.approx(2.0)  # insertions can take WER past 1


def test_error_rates_with_empty_sides():
    assert error_rates("", "").wer == 0.0
    assert math.isnan(error_rates("", "words out of nowhere").wer)
    silent = error_rates("three words here", "")
    assert (silent.wer, silent.cer, silent.deletions) == (1.0, 1.0, 3)


def test_word_alignment_marks_every_word_once():
    ops = word_alignment("the cat sat on the mat", "the bat sat on mat today")
    kinds = [op.kind for op in ops]
    assert kinds.count("substitute") >= 1 and kinds.count("equal") >= 3
    assert [op.reference for op in ops if op.reference] == "the cat sat on the mat".split()
    assert [op.hypothesis for op in ops if op.hypothesis] == "the bat sat on mat today".split()
    edits = sum(op.kind != "equal" for op in ops)
    assert edits == sum(vars(error_rates("the cat sat on the mat", "the bat sat on mat today")).get(k)
                        for k in ("substitutions", "deletions", "insertions"))
    assert [op.kind for op in word_alignment("a b", "")] == ["delete", "delete"]
    assert [op.kind for op in word_alignment("", "c")] == ["insert"]


def test_unknown_engine_and_language_are_refused():
    with pytest.raises(ValueError, match="unknown ASR engine 'whisperx'.*pocketsphinx"):
        build_asr_engine("whisperx")
    with pytest.raises(ValueError, match="'pocketsphinx' does not understand language 'fr'"):
        build_asr_engine("pocketsphinx", language="fr")
    assert {"pocketsphinx", "transformers"} <= set(ASR_ENGINES)


@pytest.fixture(scope="module")
def pocketsphinx():
    pytest.importorskip("pocketsphinx")
    return build_asr_engine("pocketsphinx", language="en-US")


def test_pocketsphinx_hears_words_in_real_speech_and_none_in_silence(pocketsphinx, corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=4.0)[0].wave
    heard = pocketsphinx.transcribe(wave, RATE)
    assert len(heard.split()) >= 3, heard
    assert heard == normalise_text(heard)
    assert pocketsphinx.transcribe(wave, RATE) == heard  # deterministic: the original's WER is 0
    assert len(pocketsphinx.transcribe(np.zeros(RATE, dtype=np.float32), RATE).split()) <= 1


def test_pocketsphinx_hears_the_same_audio_alike_whatever_came_before(pocketsphinx, corpus_utterances):
    waves = [u.wave for u in corpus_utterances(3, 1, seconds=3.0)]
    first = [pocketsphinx.transcribe(wave, RATE) for wave in waves]
    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.3
    again = []
    for wave in reversed(waves):
        pocketsphinx.transcribe(noise, RATE)
        again.append(pocketsphinx.transcribe(wave, RATE))
    assert again[::-1] == first


def test_pocketsphinx_resamples_other_rates(pocketsphinx, corpus_utterances):
    import soxr

    wave = corpus_utterances(1, 1, seconds=4.0)[0].wave
    at_8k = soxr.resample(wave, RATE, 8000).astype(np.float32)
    assert error_rates(pocketsphinx.transcribe(wave, RATE), pocketsphinx.transcribe(at_8k, 8000)).wer < 0.8


def _tiny_ctc_model(folder, letter_bias: str | None):
    """A randomly initialised Wav2Vec2ForCTC with its processor, saved to `folder`; when `letter_bias`
    is given the output layer always says that token, so the transcript is known."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    folder.mkdir(parents=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=False)
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    config = transformers.Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(config)
    if letter_bias is not None:
        with torch.no_grad():
            model.lm_head.weight.zero_()
            model.lm_head.bias.fill_(-10.0)
            model.lm_head.bias[vocab[letter_bias]] = 10.0
    model.save_pretrained(folder)
    return folder


def test_transformers_engine_decodes_a_local_ctc_model(tmp_path):
    folder = _tiny_ctc_model(tmp_path / "says-b", letter_bias="b")
    engine = build_asr_engine("transformers", language="de", model=str(folder))
    wave = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    assert engine.transcribe(wave, RATE) == "b"  # every frame says b; CTC collapses the repeats
    assert engine.transcribe(wave[::2].copy(), RATE // 2) == "b"  # resampled to the model's rate


def test_transformers_engine_with_random_weights_gives_vocabulary_text(tmp_path):
    folder = _tiny_ctc_model(tmp_path / "random", letter_bias=None)
    engine = build_asr_engine("transformers", model=str(folder))
    heard = engine.transcribe(np.random.default_rng(1).standard_normal(RATE).astype(np.float32) * 0.1, RATE)
    assert set(heard) <= set("abc '")
    with pytest.raises(ValueError, match="needs a model"):
        build_asr_engine("transformers")
