"""Embeddings diagnosis: how well speaker embeddings of real and generated audio separate speakers."""
