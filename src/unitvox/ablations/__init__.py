"""Ablation studies: named variants of a base config, trained side by side and compared."""
