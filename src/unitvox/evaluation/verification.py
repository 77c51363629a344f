"""Speaker verification of resynthesised audio: the equal error rate of real-against-resynthesis trials.

    trials = verification_trials(real_embeddings, resynthesis_embeddings, speakers)
    result = equal_error_rate(trials.scores, trials.same_speaker)   # result.eer in [0, 1], lower is better

Definition. Each utterance i of the held-out set has a speaker s_i, an embedding r_i of its original
recording and an embedding g_i of its resynthesis. A trial pairs an enrolment r_i with a test g_j and
scores it by cosine similarity. It is a target (same-speaker) trial when s_i = s_j and i != j (a
different utterance, so matching content cannot stand in for matching voice), and a non-target trial
when s_i != s_j. A speaker with one utterance only contributes its i = j pair as a target, rather than
none. Accepting every trial scored at or above a threshold t gives a false-acceptance rate (non-targets
accepted) and a false-rejection rate (targets rejected); the EER is the rate at the threshold where the
two are equal, interpolated linearly between neighbouring thresholds.

0 means the resynthesis keeps every voice apart as well as a perfect verifier would; 0.5 is chance (the
voices are gone or swapped). The EER of the originals against themselves (r against r, same rules) is
the ceiling a given embedder allows. NaN when there are no target or no non-target trials (a single
speaker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trials:
    """Scored trials: scores (M,) cosine similarities, same_speaker (M,) bool labels."""

    scores: np.ndarray
    same_speaker: np.ndarray

    @property
    def targets(self) -> int:
        return int(self.same_speaker.sum())

    @property
    def non_targets(self) -> int:
        return int((~self.same_speaker).sum())


@dataclass(frozen=True)
class EqualErrorRate:
    """The EER (a share of trials, 0 to 1) and the cosine threshold where it occurs."""

    eer: float
    threshold: float
    targets: int
    non_targets: int


def verification_trials(enrolment: np.ndarray, test: np.ndarray, speakers) -> Trials:
    """Every trial (enrolment i, test j) as defined in the module docstring.

    Args:
        enrolment: (N, D) embeddings of the original recordings.
        test: (N, D) embeddings of the resynthesised ones, row i the resynthesis of original i.
        speakers: N speaker labels, one per row.

    Raises:
        ValueError: shapes that do not match each other or the labels.
    """
    enrolment, test = np.asarray(enrolment, dtype=np.float64), np.asarray(test, dtype=np.float64)
    labels = np.asarray(list(speakers))
    if enrolment.ndim != 2 or enrolment.shape != test.shape or len(labels) != len(enrolment):
        raise ValueError(f"enrolment {enrolment.shape}, test {test.shape} and {len(labels)} speaker labels "
                         "must be (N, D), (N, D) and N")
    similarity = _unit(enrolment) @ _unit(test).T
    same = labels[:, None] == labels[None, :]
    utterances_per_speaker = same.sum(axis=1)
    diagonal = np.eye(len(labels), dtype=bool)
    # Same-speaker pairs of different utterances; the i = i pair only for a speaker with one utterance.
    keep = ~diagonal | (utterances_per_speaker == 1)[:, None]
    return Trials(scores=similarity[keep], same_speaker=same[keep])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def equal_error_rate(scores: np.ndarray, same_speaker: np.ndarray) -> EqualErrorRate:
    """The EER of trials `scores` (M,) with labels `same_speaker` (M,) bool; higher scores mean "same"."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(same_speaker, dtype=bool)
    targets, non_targets = int(labels.sum()), int((~labels).sum())
    if targets == 0 or non_targets == 0:
        return EqualErrorRate(math.nan, math.nan, targets, non_targets)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Thresholds at each distinct score, from the highest down: accept every trial scoring >= threshold.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    accepted_targets = np.cumsum(sorted_labels)[last_of_run]
    accepted_non_targets = np.cumsum(~sorted_labels)[last_of_run]
    thresholds = sorted_scores[last_of_run]
    # Prepend the threshold above every score, where nothing is accepted.
    false_acceptance = np.r_[0.0, accepted_non_targets / non_targets]
    false_rejection = np.r_[1.0, 1.0 - accepted_targets / targets]
    thresholds = np.r_[np.inf, thresholds]
    # The first threshold where false rejection no longer exceeds false acceptance; interpolate there.
    k = int(np.argmax(false_rejection <= false_acceptance))
    gap_before = false_rejection[k - 1] - false_acceptance[k - 1]
    gap_after = false_acceptance[k] - false_rejection[k]
    weight = gap_before / (gap_before + gap_after) if gap_before + gap_after > 0 else 1.0
    eer = false_acceptance[k - 1] + weight * (false_acceptance[k] - false_acceptance[k - 1])
    threshold = thresholds[k] if not np.isfinite(thresholds[k - 1]) else (
        thresholds[k - 1] + weight * (thresholds[k] - thresholds[k - 1]))
    return EqualErrorRate(float(eer), float(threshold), targets, non_targets)
