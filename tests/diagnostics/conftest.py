"""Tiny training runs for the diagnosis tests: the shipped demo config shrunk, on one thread.

These models are tiny, so extra intra-op threads buy nothing and slow a shared runner down.
"""

from tiny_training import make_trainer, one_torch_thread  # noqa: F401 (fixtures)
