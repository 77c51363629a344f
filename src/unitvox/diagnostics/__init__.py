"""After-the-fact diagnoses of a run, one sub-package per kind: data, checkpoint, embeddings, training.

Each kind holds its diagnosis and its report; `diagnosis` is what they share (the verdict and how it
is written), `commands` is `unitvox diagnose`. Live training health is `unitvox.health`.
"""
