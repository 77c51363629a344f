"""K-Means codebooks: fitted with scikit-learn, stored as `.npy` plus a JSON fingerprint (nothing pickled)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitvox.config import ConfigError, KMeansConfig
from unitvox.layout import CENTROIDS_FILE as CENTROIDS, CODEBOOK, FINGERPRINT_FILE as FINGERPRINT
from unitvox.store import Store


class CodebookMismatch(ConfigError):
    """Units or features made with another codebook or feature setup than the one at hand."""


@dataclass
class Codebook:
    """Centroids (k, dim) float32 and what made them."""

    centroids: np.ndarray
    fingerprint: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def hash(self) -> str:
        return self.fingerprint["hash"]

    def assign(self, features: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Nearest centroid of each frame: features (N, dim) -> units (N,) int."""
        if features.shape[1] != self.centroids.shape[1]:
            raise CodebookMismatch(f"features have {features.shape[1]} dims, the codebook {self.centroids.shape[1]}")
        squared = (self.centroids.astype(np.float64) ** 2).sum(1)
        units = np.empty(len(features), dtype=np.int64)
        for start in range(0, len(features), batch):
            block = features[start : start + batch].astype(np.float64)
            units[start : start + batch] = np.argmin(squared[None] - 2 * block @ self.centroids.T, axis=1)
        return units

    def save(self, store: Store, prefix: str) -> None:
        buffer = io.BytesIO()
        np.save(buffer, self.centroids, allow_pickle=False)
        store.write_bytes(f"{prefix}/{CENTROIDS}", buffer.getvalue())
        store.write_json(f"{prefix}/{FINGERPRINT}", self.fingerprint)

    @classmethod
    def load(cls, store: Store, prefix: str) -> Codebook:
        fingerprint = read_fingerprint(store, prefix)
        centroids = np.load(io.BytesIO(store.read_bytes(f"{prefix}/{CENTROIDS}")), allow_pickle=False)
        if centroids_hash(centroids) != fingerprint.get("hash"):
            raise CodebookMismatch(
                f"{store.url(prefix)}: {CENTROIDS} does not match the hash in {FINGERPRINT}; the codebook was changed"
            )
        return cls(centroids, fingerprint)


def read_fingerprint(store: Store, prefix: str = CODEBOOK) -> dict[str, Any]:
    """The codebook's fingerprint (k, hash, extractor, model, layer, sample_rate, hop_seconds ...), without its centroids."""
    return store.read_json(f"{prefix}/{FINGERPRINT}")


def unit_count(fingerprint: dict[str, Any]) -> int:
    """How many units a codebook has: its k (a vocoder's embedding table adds one padding unit)."""
    return int(fingerprint["k"])


def centroids_hash(centroids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(centroids, dtype=np.float32).tobytes()).hexdigest()


def fit(frames: np.ndarray, config: KMeansConfig, features: dict[str, Any]) -> Codebook:
    """MiniBatchKMeans over a sample of frames (N, dim); the same for a given sample and seed on any machine."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if len(frames) < config.k:
        raise ValueError(
            f"tokenize.kmeans.k: {config.k} clusters need at least as many frames, but the sample has {len(frames)}; "
            "lower k or add audio"
        )
    model = MiniBatchKMeans(
        n_clusters=config.k, batch_size=config.batch_size, max_iter=config.max_iter, n_init=config.n_init,
        random_state=config.seed, compute_labels=False,
    )
    # One thread: BLAS and OpenMP reductions split by thread count round differently, and the codebook
    # must be a function of the sample and the config alone, not of the CPUs of the machine that fitted it.
    with threadpool_limits(limits=1):
        model.fit(frames.astype(np.float32, copy=False))
    centroids = model.cluster_centers_.astype(np.float32)
    fingerprint = {
        **features, "k": config.k, "seed": config.seed, "sample_frames": int(len(frames)),
        "inertia_per_frame": float(model.inertia_ / max(1, len(frames))) if hasattr(model, "inertia_") else None,
        "hash": centroids_hash(centroids),
    }
    return Codebook(centroids, fingerprint)


def check_compatible(codebook: dict[str, Any], features: dict[str, Any]) -> None:
    """Refuse a codebook fitted on other features, listing what differs."""
    differences = [
        f"{name}: codebook {codebook.get(name)!r}, features {value!r}"
        for name, value in features.items() if codebook.get(name) != value
    ]
    if differences:
        raise CodebookMismatch("codebook and features differ: " + "; ".join(differences))
