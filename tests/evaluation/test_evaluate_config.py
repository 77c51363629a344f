"""The evaluate config: gates checked against the metric registry, listeners against their registries,
and their packages against this machine (unitvox.preflight), each refusal naming its key."""

import pytest

from unitvox import preflight
from unitvox.config import ConfigError, load


def _refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load("jobs/demo.yaml", list(overrides))
    return str(refused.value)


def test_the_shipped_configs_gate_on_registered_metrics():
    demo = load("jobs/demo.yaml")
    assert {"cer_max", "dnsmos_overall_min", "length_ratio_min"} <= set(demo.evaluate.gates)
    assert demo.evaluate.asr.engine == "auto" and demo.evaluate.pitch_tracker == "pyin"
    assert load("jobs/base.yaml").evaluate.gates["mcd_mfcc_frames_max"] is None


def test_a_bad_gate_is_refused_naming_the_key_and_the_known_metrics():
    message = _refusal("evaluate.gates.werr_max=0.5")
    assert message.startswith("evaluate.gates.werr_max:")
    assert "wer" in message and "dnsmos_overall" in message and "mcd_dtw" in message
    assert "evaluate.gates.wer_min" in _refusal("evaluate.gates.wer_min=0.6", "evaluate.gates.wer_max=0.5")
    assert "renamed to mcd_mfcc_frames_max" in _refusal("evaluate.gates.mcd_max=8")


def test_listeners_are_checked_against_their_registries():
    assert "evaluate.asr.engine: unknown ASR engine 'whisper'" in _refusal("evaluate.asr.engine=whisper")
    assert "evaluate.asr.model" in _refusal("evaluate.asr.engine=transformers")
    assert "evaluate.asr.language" in _refusal("evaluate.asr.engine=pocketsphinx", "evaluate.asr.language=fr")
    assert "evaluate.pitch_tracker" in _refusal("evaluate.pitch_tracker=crepe")
    assert load("jobs/demo.yaml", ["evaluate.asr.language=fr"]).evaluate.asr.language == "fr"  # auto: ASR off


def test_validate_refuses_a_config_whose_listener_package_is_missing(monkeypatch):
    config = load("jobs/demo.yaml")
    monkeypatch.setattr(preflight, "is_missing", lambda module: module in ("pocketsphinx", "speechmos"))
    with pytest.raises(preflight.PreflightError) as refused:
        preflight.check_installed(config, ["evaluate"])
    message = str(refused.value)
    assert "evaluate.asr.engine: pocketsphinx needs the package 'pocketsphinx'" in message
    assert "evaluate.dnsmos" in message and "pip install speechmos" in message
    preflight.check_installed(load("jobs/demo.yaml", ["evaluate.asr.engine=none", "evaluate.dnsmos=false"]),
                              ["evaluate"])
