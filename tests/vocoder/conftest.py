"""Vocoder tests run their small models on one thread.

These models are tiny, so extra intra-op threads buy nothing, and on a busy two-core runner their
spin-waiting makes the folder several times slower.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
