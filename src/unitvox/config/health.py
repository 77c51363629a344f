"""The training-health monitor's schedule and thresholds (`train.health`).

Check: unitvox validate --config jobs/base.yaml --set train.health.every_steps=200
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from unitvox.config.common import require

DIVERGENCE_LOSSES = ("loss/mel", "loss/gen_total", "loss/disc")


@dataclass
class HealthConfig:
    """When the monitor looks at training, and what it calls a warning or critical.

    The monitor judges the last `window` rows of the training log (`train.log_every` steps apart),
    so its figures are averages and trends, not single noisy steps. A signal with two thresholds
    is a warning past the plain one and critical past its `_critical` twin. The defaults below
    (listed with a comment each in jobs/base.yaml) suit HiFi-GAN-style training at its usual rates.

    Attributes:
        enabled: run the monitor inside training (a saved run can be diagnosed either way).
        every_steps: training steps between checks; each check writes a JSON report.
        window: training-log rows a check averages over and fits trends to.
        min_rows: rows an average or trend needs before its signal is judged at all.
        stop_on_critical: end training when a check is critical (the stage exits 4; the last good
            checkpoint stays, the failing state is saved beside it).
        exploding_gradient_norm: a pre-clipping gradient norm of any network above this is a warning.
        exploding_gradient_norm_critical: above this it is critical.
        vanishing_gradient_norm: a network whose median gradient norm is below this gets a warning.
        dominance_score_gap: least-squares discriminators aim at 1 on real and 0 on generated audio;
            a mean gap D(real) - D(generated) at or above this (its loss near zero, the generator's
            adversarial loss near its ceiling) is discriminator dominance (a warning).
        collapse_score_gap: a mean gap at or below this (the discriminator no longer tells real
            from generated, or has it backwards) is discriminator collapse (a warning) ...
        collapse_min_peak_gap: ... once its mean gap had reached this; before, it is still learning.
        mode_collapse_ratio: generated audio's log-mel variance, or the spread between outputs for
            different inputs, as a fraction of real audio's; below this is a warning ...
        mode_collapse_ratio_critical: ... below this it is critical ...
        mode_collapse_min_peak: ... once that figure had reached this (an untrained generator's
            near-silent output is alike for every input without having collapsed).
        divergence_loss: the training-log loss whose rise means divergence.
        divergence_ratio: the recent mean of `divergence_loss` over its lowest windowed mean so
            far; at or above this is a warning.
        divergence_ratio_critical: at or above this it is critical.
        balance_max_share: a weighted generator loss term taking more than this fraction of the
            weighted total is a loss-balance warning (judged while two or more terms are on).
        balance_min_share: a term with a positive weight taking less than this fraction is one too.
        speaker_similarity_min: mean cosine similarity of generated audio's speaker embedding to
            its reference's, when speaker conditioning is on; below this is a warning.
        progress_checks: validation checks a saved run's progress is judged over (`diagnose training`).
        still_improving_fall: a relative fall of the validation mel error over those checks at or
            above this means the run was still improving when it stopped (a warning: train longer).
    """

    enabled: bool = True
    every_steps: int = 500
    window: int = 20
    min_rows: int = 5
    stop_on_critical: bool = True
    exploding_gradient_norm: float = 1.0e5
    exploding_gradient_norm_critical: float = 1.0e7
    vanishing_gradient_norm: float = 1.0e-6
    dominance_score_gap: float = 0.8
    collapse_score_gap: float = 0.02
    collapse_min_peak_gap: float = 0.2
    mode_collapse_ratio: float = 0.05
    mode_collapse_ratio_critical: float = 0.01
    mode_collapse_min_peak: float = 0.1
    divergence_loss: str = "loss/mel"
    divergence_ratio: float = 1.5
    divergence_ratio_critical: float = 3.0
    balance_max_share: float = 0.999
    balance_min_share: float = 0.0005
    speaker_similarity_min: float = 0.3
    progress_checks: int = 3
    still_improving_fall: float = 0.02

    def check(self, key: str) -> None:
        require(self.every_steps >= 1, f"{key}.every_steps", "must be at least 1")
        require(self.window >= 2, f"{key}.window", "must be at least 2 rows (a trend needs two points)")
        require(1 <= self.min_rows <= self.window, f"{key}.min_rows", f"must be in [1, window={self.window}]")
        positive = [f.name for f in fields(self) if f.type in (float, "float")]
        for name in positive:
            require(getattr(self, name) > 0, f"{key}.{name}", f"must be positive, got {getattr(self, name)}")
        require(self.exploding_gradient_norm <= self.exploding_gradient_norm_critical,
                f"{key}.exploding_gradient_norm", "must not exceed exploding_gradient_norm_critical")
        require(self.mode_collapse_ratio_critical <= self.mode_collapse_ratio, f"{key}.mode_collapse_ratio_critical",
                "must not exceed mode_collapse_ratio")
        require(1 < self.divergence_ratio <= self.divergence_ratio_critical, f"{key}.divergence_ratio",
                "must be above 1 and not exceed divergence_ratio_critical")
        require(self.collapse_score_gap < self.collapse_min_peak_gap <= self.dominance_score_gap,
                f"{key}.collapse_min_peak_gap", "must be above collapse_score_gap and not above dominance_score_gap")
        require(self.mode_collapse_ratio < self.mode_collapse_min_peak, f"{key}.mode_collapse_min_peak",
                "must be above mode_collapse_ratio")
        require(self.balance_min_share < self.balance_max_share <= 1, f"{key}.balance_max_share",
                "must be above balance_min_share and at most 1")
        require(self.progress_checks >= 2, f"{key}.progress_checks", "must be at least 2 (a fall needs two checks)")
        require(self.still_improving_fall < 1, f"{key}.still_improving_fall", "a relative fall is below 1")
        require(self.speaker_similarity_min <= 1, f"{key}.speaker_similarity_min", "a cosine similarity is at most 1")
        require(self.divergence_loss in DIVERGENCE_LOSSES, f"{key}.divergence_loss",
                f"choose one of {DIVERGENCE_LOSSES}, got {self.divergence_loss!r}")
