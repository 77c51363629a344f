"""Diagnostics: training health (live and on a saved run), and the figures it is judged on.

`health` judges training-log rows (pure numpy), `figures` computes the per-step figures from live
models (torch), `training` diagnoses a saved run from its log and a checkpoint.
"""
