"""Unit files for `vocode`: which rows hold run units, and bad rows named by file and line."""

import json

from unitvox.units.bpe import units_to_text
from unitvox.use.inputs import read_unit_file


def _write(path, rows):
    path.write_text("".join((json.dumps(row) if isinstance(row, dict) else row) + "\n" for row in rows))
    return str(path)


def test_the_form_of_each_row_is_read_from_the_row(tmp_path):
    pieces = list(units_to_text([3, 1, 4]))
    uri = _write(tmp_path / "u.jsonl", [{"id": "frames", "units": [1, 1, 2]},
                                        {"id": "timed", "units": [1, 2], "durations": [2, 1]},
                                        {"id": "runs", "units": [1, 2], "deduplicated": True},
                                        {"id": "motif", "pieces": pieces}])
    for deduplicated_pieces in (True, False, None):
        sequences, failures = read_unit_file(uri, 10, deduplicated_pieces)
        assert not failures
        forms = {s.name: s.deduplicated for s in sequences}
        assert forms == {"frames": False, "timed": True, "runs": True, "motif": deduplicated_pieces}
        assert sequences[3].units == [3, 1, 4] and sequences[1].durations == [2, 1]
    text = tmp_path / "lm.txt"
    text.write_text("1 2 3\n")
    sequences, _ = read_unit_file(str(text), 10)
    assert sequences[0].deduplicated is None  # the model's own form


def test_bad_durations_are_named_by_line(tmp_path):
    uri = _write(tmp_path / "u.jsonl", [{"id": "ok", "units": [1, 2], "durations": [1, 1]},
                                        {"units": [1, 2], "durations": [1]},
                                        {"units": [1, 2], "durations": [1, 0]},
                                        {"units": [1, 2], "durations": [1, 1.5]},
                                        {"units": [1, 2], "durations": [1, 1], "deduplicated": False},
                                        {"units": [1, 2], "deduplicated": "yes"}])
    sequences, failures = read_unit_file(uri, 10)
    assert [s.name for s in sequences] == ["ok"]
    reasons = {failure.line: failure.reason for failure in failures}
    assert "1 entries for 2 units" in reasons[2]
    assert "duration 0 at position 1" in reasons[3]
    assert "duration 1 1.5 is not an integer" in reasons[4]
    assert "durations belong to run units" in reasons[5]
    assert "`deduplicated` must be true or false" in reasons[6]
    assert all(str(tmp_path / "u.jsonl") in failure.where for failure in failures)
