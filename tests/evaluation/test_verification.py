"""Speaker-verification EER of real-against-resynthesis trials."""

import math

import numpy as np
import pytest

from unitvox.evaluation.verification import equal_error_rate, verification_trials


def test_perfectly_separated_scores_have_zero_eer_and_reversed_ones_full():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([True, True, True, False, False])
    assert equal_error_rate(scores, labels).eer == 0.0
    assert 0.2 < equal_error_rate(scores, labels).threshold <= 0.7  # accept at or above it
    assert equal_error_rate(-scores, labels).eer == pytest.approx(1.0)


def test_eer_where_false_acceptance_meets_false_rejection():
    # Targets 0.9, 0.6, 0.4, 0.3; non-targets 0.5, 0.2, 0.1, 0.05. At a threshold of 0.6 one target in
    # four is rejected and no non-target accepted; at 0.5 one in four of each: the EER is 1/4.
    scores = np.array([0.9, 0.6, 0.4, 0.3, 0.5, 0.2, 0.1, 0.05])
    labels = np.array([True] * 4 + [False] * 4)
    result = equal_error_rate(scores, labels)
    assert result.eer == pytest.approx(0.25)
    assert (result.targets, result.non_targets) == (4, 4)


def test_random_scores_give_chance():
    rng = np.random.default_rng(0)
    scores, labels = rng.standard_normal(4000), rng.random(4000) < 0.3
    assert equal_error_rate(scores, labels).eer == pytest.approx(0.5, abs=0.03)


def test_ties_are_one_threshold():
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert equal_error_rate(scores, np.array([True, False, True, False])).eer == pytest.approx(0.5)


def test_no_target_or_no_non_target_trials_give_nan():
    assert math.isnan(equal_error_rate(np.array([0.1, 0.2]), np.array([True, True])).eer)
    assert math.isnan(equal_error_rate(np.array([]), np.array([], dtype=bool)).eer)


def test_trials_pair_different_utterances_of_a_speaker_and_every_cross_speaker_pair():
    speakers = ["a", "a", "a", "b", "b", "c"]
    rng = np.random.default_rng(1)
    real = rng.standard_normal((6, 8))
    trials = verification_trials(real, real + 0.01 * rng.standard_normal((6, 8)), speakers)
    # a: 3 x 2 ordered pairs, b: 2 x 1, c: its one utterance against itself
    assert trials.targets == 6 + 2 + 1
    assert trials.non_targets == 36 - (9 + 4 + 1)
    assert len(trials.scores) == trials.targets + trials.non_targets
    assert np.all(np.abs(trials.scores) <= 1.0 + 1e-9)


def test_embeddings_that_keep_voices_apart_verify_and_swapped_ones_do_not():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((4, 16)) * 3.0
    speakers = np.repeat(np.arange(4), 3)
    real = centres[speakers] + rng.standard_normal((12, 16))
    faithful = centres[speakers] + rng.standard_normal((12, 16))
    swapped = centres[(speakers + 1) % 4] + rng.standard_normal((12, 16))
    good = verification_trials(real, faithful, speakers)
    bad = verification_trials(real, swapped, speakers)
    assert equal_error_rate(good.scores, good.same_speaker).eer < 0.05
    assert equal_error_rate(bad.scores, bad.same_speaker).eer >= 0.45  # chance or worse


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        verification_trials(np.zeros((3, 4)), np.zeros((2, 4)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="must be"):
        verification_trials(np.zeros((3, 4)), np.zeros((3, 4)), ["a", "b"])
