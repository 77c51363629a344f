"""Live training health, beside the vocoder it watches.

`signals` judges windows of training-log rows (pure numpy), `monitor` turns them into a verdict the
loop acts on and writes under train/health/, `norms` measures gradients and parameters of live models
(torch) and clips gradients. `unitvox diagnose training` applies the same judgement after the fact.
"""
