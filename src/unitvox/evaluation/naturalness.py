"""Naturalness: DNSMOS (Reddy et al., ICASSP 2022), a no-reference MOS predictor, through `speechmos`.

    scorer = Dnsmos()
    scores = scorer.score(wave, 16000)   # scores.overall, scores.signal, scores.background, scores.p808

DNSMOS P.835 predicts three mean opinion scores on the ITU-T P.835 scale of 1 (bad) to 5 (excellent),
higher is better: SIG, the speech signal itself (distortion, buzz, muffling); BAK, the background
(noise, hiss); OVRL, the overall impression. P808 is the older single-score P.808 model. It needs no
reference, so it also scores audio no original exists for; clean read speech scores around 3.0 to 3.4
overall. The ONNX models ship inside the `speechmos` wheel and run on the CPU with `onnxruntime`: no
network. The model sees 9.01 s windows hopping by 1 s; shorter audio is repeated to fill exactly one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soxr

DNSMOS_RATE = 16000
WINDOW_SAMPLES = 144160  # the model's fixed input, int(9.01 s * 16 kHz)


@dataclass(frozen=True)
class DnsmosScores:
    """DNSMOS P.835 overall, signal and background, and P.808; each on the 1-5 MOS scale, higher is better."""

    overall: float
    signal: float
    background: float
    p808: float


class Dnsmos:
    """The DNSMOS P.835 and P.808 models of the `speechmos` wheel, loaded once and reused.

    Args:
        threads: onnxruntime intra-op threads (0: its default, every core).
    """

    def __init__(self, threads: int = 1):
        import onnxruntime
        from speechmos import dnsmos

        folder = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)), "dnsmos_models")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # speechmos's own DNSMOS class does the windowing and the polynomial calibration; only the
        # sessions are built here, so that the thread count is ours and not every core of the machine.
        self.model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
        self.model.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
        self.model.onnx_sess = onnxruntime.InferenceSession(
            self.model.primary_model_path, options, providers=["CPUExecutionProvider"])
        self.model.p808_onnx_sess = onnxruntime.InferenceSession(
            os.path.join(folder, "model_v8.onnx"), options, providers=["CPUExecutionProvider"])

    def score(self, wave: np.ndarray, sample_rate: int) -> DnsmosScores:
        """DNSMOS of `wave` (T,) float32; resampled to 16 kHz and clipped to [-1, 1] first.

        Raises:
            ValueError: empty audio.
        """
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            raise ValueError("DNSMOS of empty audio")
        if sample_rate != DNSMOS_RATE:
            wave = soxr.resample(wave, sample_rate, DNSMOS_RATE).astype(np.float32)
        if len(wave) < WINDOW_SAMPLES:
            # speechmos would double short audio until it is longer than a window, which can make up to
            # three windows of the same repeated speech; one window costs a third and says the same.
            wave = np.resize(wave, WINDOW_SAMPLES)
        scores = self.model(np.clip(wave, -1.0, 1.0), DNSMOS_RATE, False)
        return DnsmosScores(overall=float(scores["ovrl_mos"]), signal=float(scores["sig_mos"]),
                            background=float(scores["bak_mos"]), p808=float(scores["p808_mos"]))
