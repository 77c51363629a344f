"""The one registry shape: every plug-in point registers with `registrar`, and a clash is refused.

Run: .venv/bin/python -m pytest tests/test_registry.py -q
"""

from __future__ import annotations

import pytest

from unitvox.registry import registrar


def test_a_registration_maps_the_config_name_to_the_implementation():
    table: dict = {}
    register = registrar(table)

    @register("plain")
    class Plain:
        pass

    assert table == {"plain": Plain}


def test_two_implementations_under_one_name_are_refused():
    table: dict = {}
    register = registrar(table)
    register("same")(type("First", (), {}))
    with pytest.raises(ValueError, match="'same' is registered twice"):
        register("same")(type("Second", (), {}))


def test_every_plug_in_point_uses_it():
    from unitvox.evaluation.speaker import SPEAKER_EMBEDDERS
    from unitvox.units.features import EXTRACTORS
    from unitvox.vocoder.blocks import RESIDUAL_BLOCKS
    from unitvox.vocoder.speaker_encoder import SPEAKER_ENCODERS

    assert {"mfcc", "logmel", "ssl"} <= set(EXTRACTORS)
    assert {"hifigan", "grouped"} <= set(RESIDUAL_BLOCKS)
    assert {"learned", "resemblyzer"} <= set(SPEAKER_ENCODERS)
    assert {"mfcc_stats", "resemblyzer"} <= set(SPEAKER_EMBEDDERS)
