"""How well embeddings separate speakers: similarity distributions, cluster scores and the closest pairs.

Pure numpy and scikit-learn over unit-norm embeddings (N, D) with a speaker label per row; used by
`diagnose embeddings` for real audio, for the vocoder's resynthesis, and for the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class EmbeddedSet:
    """Embeddings of one kind of audio, a row per item.

    Attributes:
        embeddings: (N, D) float, unit L2 norm per row.
        speakers: the speaker of each row (N,).
        items: the segment id of each row (N,).
    """

    embeddings: np.ndarray
    speakers: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def speaker_names(self) -> list[str]:
        return sorted(set(self.speakers))


@dataclass
class Separation:
    """Same- and different-speaker cosine similarities of one set and the scores derived from them.

    Attributes:
        same: similarity of every pair of items of one speaker (P,).
        different: similarity of every pair of items of two speakers (Q,).
        summary: the JSON body: counts, distributions, separation, AUC, EER, silhouette,
            Davies–Bouldin index, per speaker and per speaker pair (closest pairs first).
    """

    same: np.ndarray
    different: np.ndarray
    summary: dict[str, Any]

    @property
    def separation(self) -> float | None:
        return self.summary["separation"]


def separation(embedded: EmbeddedSet) -> Separation:
    """Similarity distributions and cluster scores of `embedded`; scores that cannot be computed are None."""
    labels = np.asarray(embedded.speakers)
    similarity = _similarities(embedded.embeddings)
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same_speaker = labels[:, None] == labels[None, :]
    same, different = similarity[upper & same_speaker], similarity[upper & ~same_speaker]
    gap = float(same.mean() - different.mean()) if same.size and different.size else None
    auc, eer = _verification(same, different)
    summary = {
        "items": len(embedded), "speakers": len(embedded.speaker_names),
        "same_speaker": distribution(same), "different_speaker": distribution(different),
        "separation": gap, "auc": auc, "eer": eer, **_cluster_scores(embedded.embeddings, labels),
        "per_speaker": _per_speaker(similarity, labels), "pairs": _pairs(similarity, labels),
    }
    return Separation(same, different, summary)


def distribution(values: np.ndarray) -> dict[str, Any]:
    """Count, mean, standard deviation and quantiles of similarities; only the count when there are none."""
    if not values.size:
        return {"count": 0}
    quantiles = np.quantile(values, QUANTILES)
    return {"count": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            **{f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles)}}


def voice_kept(real: EmbeddedSet, generated: EmbeddedSet) -> dict[str, Any]:
    """Does resynthesis keep the voice? Each generated item against the real embeddings.

    Returns:
        Means over generated items of the similarity to their own real item (`own_item`), to other
        real items of their speaker (`same_speaker`) and to real items of other speakers
        (`other_speakers`); `own_minus_other`; and `nearest_speaker_accuracy`, the share of generated
        items whose closest real speaker centroid is their own speaker.
    """
    row = {item: index for index, item in enumerate(real.items)}
    real_labels = np.asarray(real.speakers)
    similarity = generated.embeddings @ real.embeddings.T  # (G, R)
    centroids, names = _centroids(real.embeddings, real_labels)
    nearest = np.asarray(names)[np.argmax(generated.embeddings @ centroids.T, axis=1)]
    own, same, other = [], [], []
    for index, (item, speaker) in enumerate(zip(generated.items, generated.speakers)):
        own.append(similarity[index, row[item]])
        peers = (real_labels == speaker) & (np.arange(len(real)) != row[item])
        same.extend(similarity[index, peers])
        other.extend(similarity[index, real_labels != speaker])
    own_mean, other_mean = _mean(own), _mean(other)
    return {
        "items": len(generated), "own_item": own_mean, "same_speaker": _mean(same), "other_speakers": other_mean,
        "own_minus_other": None if own_mean is None or other_mean is None else own_mean - other_mean,
        "nearest_speaker_accuracy": _mean(nearest == np.asarray(generated.speakers)),
        "own_item_values": [float(value) for value in own],
    }


def combined(first: EmbeddedSet, second: EmbeddedSet) -> EmbeddedSet:
    return EmbeddedSet(np.concatenate([first.embeddings, second.embeddings]), first.speakers + second.speakers,
                       first.items + second.items)


def _similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix (N, N); rows are normalised again in case an embedder drifts from unit norm."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def _verification(same: np.ndarray, different: np.ndarray) -> tuple[float | None, float | None]:
    """(AUC, equal error rate) of telling same-speaker pairs from different-speaker pairs by similarity."""
    if not same.size or not different.size:
        return None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.concatenate([np.ones(same.size), np.zeros(different.size)])
    scores = np.concatenate([same, different])
    false_accept, true_accept, _ = roc_curve(labels, scores)
    false_reject = 1.0 - true_accept
    crossing = int(np.argmin(np.abs(false_accept - false_reject)))
    return float(roc_auc_score(labels, scores)), float((false_accept[crossing] + false_reject[crossing]) / 2)


def _cluster_scores(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Silhouette (cosine) and Davies–Bouldin index; None unless 2 <= speakers <= items - 1, as both require."""
    speakers = len(set(labels.tolist()))
    if not 2 <= speakers <= len(labels) - 1:
        return {"silhouette": None, "davies_bouldin": None}
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    return {"silhouette": float(silhouette_score(embeddings, labels, metric="cosine")),
            "davies_bouldin": float(davies_bouldin_score(embeddings, labels))}


def _per_speaker(similarity: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Each speaker's item count, mean within-speaker similarity and the other speaker closest to it."""
    rows = []
    for speaker in sorted(set(labels.tolist())):
        mine = labels == speaker
        within = similarity[np.ix_(mine, mine)][np.triu_indices(int(mine.sum()), k=1)]
        between = {other: float(similarity[np.ix_(mine, labels == other)].mean())
                   for other in sorted(set(labels.tolist())) if other != speaker}
        nearest = max(between, key=between.get) if between else None
        rows.append({"speaker": speaker, "items": int(mine.sum()), "within": _mean(within),
                     "nearest": nearest, "nearest_similarity": between.get(nearest)})
    return rows


def _pairs(similarity: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Every pair of speakers, least separated first.

    A pair's margin is its speakers' mean within-speaker similarity minus their mean similarity to
    each other; a speaker with a single item has no within-speaker similarity and leaves it to the other.
    """
    speakers = sorted(set(labels.tolist()))
    within = {row["speaker"]: row["within"] for row in _per_speaker(similarity, labels)}
    pairs = []
    for index, first in enumerate(speakers):
        for second in speakers[index + 1:]:
            between = float(similarity[np.ix_(labels == first, labels == second)].mean())
            known = [value for value in (within[first], within[second]) if value is not None]
            margin = float(np.mean(known)) - between if known else None
            pairs.append({"speakers": [first, second], "between": between, "within": [within[first], within[second]],
                          "margin": margin})
    return sorted(pairs, key=lambda pair: math.inf if pair["margin"] is None else pair["margin"])


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(labels.tolist()))
    centroids = np.stack([embeddings[labels == name].mean(axis=0) for name in names])
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids / np.where(norms > 0, norms, 1.0), names


def _mean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else None
