"""Vocoder tests run their small models on one thread.

These models are tiny, so extra intra-op threads buy nothing, and on a busy two-core runner their
spin-waiting makes the folder several times slower.
"""

from tiny_training import one_torch_thread  # noqa: F401 (an autouse fixture)
