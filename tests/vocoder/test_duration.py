"""Deduplicated units: run-length collapse and expansion, windows of runs, and the duration predictor."""

import numpy as np
import pytest
import torch

from unitvox.vocoder.duration import DurationPredictor, collapse, duration_loss, expand, run_window


def _random_frames(seed: int, length: int, k: int = 12) -> np.ndarray:
    """Frame units with runs of 1 to 6 frames, as a tokenizer gives them."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, k, size=length)
    runs[1:][runs[1:] == runs[:-1]] = (runs[1:][runs[1:] == runs[:-1]] + 1) % k  # neighbours differ
    return np.repeat(runs, rng.integers(1, 7, size=length))


@pytest.mark.parametrize("seed", range(5))
def test_collapse_and_expand_are_inverse(seed):
    frames = _random_frames(seed, 50)
    runs, durations = collapse(frames)
    assert (np.diff(runs) != 0).all() and (durations >= 1).all()
    assert durations.sum() == len(frames)
    np.testing.assert_array_equal(expand(runs, durations), frames)


def test_collapse_of_nothing_is_nothing():
    runs, durations = collapse([])
    assert runs.shape == durations.shape == (0,)


@pytest.mark.parametrize("runs, durations, named", [([1, 2], [3], "1 durations for 2 units"),
                                                    ([1, 2], [3, 0], "duration 0 at position 1")])
def test_expand_refuses_bad_durations_naming_them(runs, durations, named):
    with pytest.raises(ValueError, match=named):
        expand(runs, durations)


def test_a_run_window_holds_whole_runs():
    frames = np.array([4, 4, 4, 7, 7, 1, 1, 1, 1, 9])
    runs, durations = run_window(frames, 2)
    np.testing.assert_array_equal(runs, [4, 7])
    np.testing.assert_array_equal(durations, [3, 2])
    runs, durations = run_window(frames, 10, np.random.default_rng(0))  # fewer runs than asked: all of them
    np.testing.assert_array_equal(runs, [4, 7, 1, 9])
    starts = {tuple(run_window(frames, 2, np.random.default_rng(seed))[0]) for seed in range(20)}
    assert starts == {(4, 7), (7, 1), (1, 9)}


def test_duration_loss_leaves_padding_out():
    log_predicted = torch.tensor([[0.0, 1.0, 5.0]])
    durations = torch.tensor([[1, 2, 0]])  # the third is padding
    expected = ((0.0 - np.log(2.0)) ** 2 + (1.0 - np.log(3.0)) ** 2) / 2
    assert float(duration_loss(log_predicted, durations)) == pytest.approx(expected, rel=1e-6)
    assert float(duration_loss(log_predicted, torch.zeros_like(durations))) == 0.0


def _trained_predictor(sequences, steps=150):
    torch.manual_seed(0)
    predictor = DurationPredictor(num_units=12, embedding_dim=16, channels=16, dropout=0.1)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    width = max(len(runs) for runs, _ in sequences)
    runs = torch.stack([torch.from_numpy(np.pad(r, (0, width - len(r)), constant_values=12)) for r, _ in sequences])
    durations = torch.stack([torch.from_numpy(np.pad(d, (0, width - len(d)))) for _, d in sequences])
    for _ in range(steps):
        optimizer.zero_grad()
        duration_loss(predictor(runs), durations).backward()
        optimizer.step()
    return predictor


def test_the_predictor_learns_durations_that_depend_on_the_unit():
    # Each unit has its own length: what a predictor must learn from the run units alone.
    rng = np.random.default_rng(1)
    own = rng.integers(1, 8, size=12)
    sequences = []
    for _ in range(16):
        runs = rng.permutation(12)[:10]
        sequences.append((runs, own[runs]))
    untrained = DurationPredictor(num_units=12, embedding_dim=16, channels=16)
    predictor = _trained_predictor(sequences)
    runs, durations = sequences[0]
    error = np.abs(predictor.durations(runs) - durations).mean()
    assert error < np.abs(untrained.durations(runs) - durations).mean()
    assert error < 1.0  # within a frame per run on what it was trained on


def test_calibration_keeps_the_typical_length():
    sequences = [collapse(_random_frames(seed, 40)) for seed in range(9)]
    predictor = _trained_predictor(sequences, steps=20)  # briefly trained: its lengths are off
    scale = predictor.calibrate(sequences)
    assert scale == pytest.approx(float(predictor.length_scale))
    ratios = [predictor.durations(r).sum() / d.sum() for r, d in sequences]
    assert abs(np.median(ratios) - 1) < 0.05
    for runs, _ in sequences:
        frames = predictor.durations(runs)
        assert frames.dtype == np.int64 and frames.shape == runs.shape and (frames >= 1).all()


def test_an_item_with_a_long_pause_does_not_stretch_the_others():
    sequences = [collapse(_random_frames(seed, 40)) for seed in range(9)]
    predictor = _trained_predictor(sequences, steps=60)
    scale = predictor.calibrate(sequences)
    paused = [(np.append(runs, 11), np.append(durations, 400)) for runs, durations in sequences[:2]]
    assert predictor.calibrate(paused + sequences[2:]) == pytest.approx(scale, rel=0.1)


def test_calibration_is_kept_in_the_weights():
    sequences = [collapse(_random_frames(seed, 30)) for seed in range(4)]
    predictor = _trained_predictor(sequences, steps=5)
    predictor.calibrate(sequences)
    again = DurationPredictor(num_units=12, embedding_dim=16, channels=16, dropout=0.1)
    again.load_state_dict(predictor.state_dict())
    np.testing.assert_array_equal(again.durations(sequences[0][0]), predictor.durations(sequences[0][0]))


def test_the_predictor_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="odd kernel_size"):
        DurationPredictor(num_units=4, kernel_size=4)
