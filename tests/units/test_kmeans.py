"""The K-Means codebook is a function of its sample and config, whatever the machine's thread count."""

import os

import numpy as np
from threadpoolctl import threadpool_limits

from unitvox.config import load
from unitvox.units.kmeans import fit


def test_the_codebook_does_not_depend_on_the_threads_it_is_fitted_with():
    # Clustered frames, as features are: BLAS and OpenMP reductions are where thread counts show.
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 40)) * 3
    frames = (centres[rng.integers(0, 30, 8000)] + rng.standard_normal((8000, 40))).astype(np.float32)
    config = load("jobs/demo.yaml", ["tokenize.kmeans.k=30"]).tokenize.kmeans
    fitted = []
    for threads in (1, max(2, os.cpu_count() or 1)):
        with threadpool_limits(limits=threads):
            fitted.append(fit(frames, config, {"extractor": "test"}))
    assert np.array_equal(fitted[0].centroids, fitted[1].centroids)
    assert fitted[0].hash == fitted[1].hash
