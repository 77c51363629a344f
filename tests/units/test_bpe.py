"""BPE over unit strings: round trips, vocabulary lowering, motif statistics."""

import pytest

from unitvox.units import bpe


def test_unit_text_round_trip():
    units = [0, 5, 99, 5, 1023]
    assert bpe.text_to_units(bpe.units_to_text(units)) == units


def _corpus(path, lines):
    path.write_text("".join(bpe.units_to_text(units) + "\n" for units in lines))
    return path


def test_vocabulary_too_large_is_lowered_with_a_note(tmp_path, caplog):
    text = _corpus(tmp_path / "units.txt", [[1, 2, 3, 1, 2, 3, 4, 5], [3, 4, 5, 1, 2]] * 20)
    trained = bpe.train(text, tmp_path / "model", vocab_size=5000)
    assert trained.requested == 5000
    assert 5 < trained.vocab_size < 5000
    assert trained.model_path.is_file()
    assert "lowered to" in trained.notes[0]
    assert any("bpe.vocab_size: 5000 is more than the data supports" in r.message for r in caplog.records)


def test_motif_counter_durations_and_coverage():
    counter = bpe.MotifCounter(hop_seconds=0.02)
    a, b = bpe.units_to_text([1, 2]), bpe.units_to_text([3])
    counter.add([a, b, a], [2, 4, 1, 3, 5])
    motifs = counter.motifs(top=5, min_units=2)
    assert motifs == [{"units": [1, 2], "length": 2, "count": 2, "mean_duration_seconds": 0.14,
                       "coverage": pytest.approx(14 / 15, abs=1e-6)}]
    assert counter.summary()["units_per_piece"] == pytest.approx(5 / 3, abs=1e-3)
    assert counter.length_histogram() == {"1": 1, "2": 2}
