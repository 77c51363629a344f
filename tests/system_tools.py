"""Skip marks for tests that need a system tool a fresh machine may lack, naming what to install."""

from __future__ import annotations

import shutil

import pytest

# tool -> how to install it (Debian package, or pip where it comes from PyPI)
INSTALL = {
    "prometheus": "apt-get install prometheus",
    "promtool": "apt-get install prometheus",
    "prometheus-pushgateway": "apt-get install prometheus-pushgateway",
    "kubectl": "apt-get install kubernetes-client (1.27 or newer, for its built-in kustomize)",
    "docker": "apt-get install docker.io debootstrap",
    "dockerd": "apt-get install docker.io debootstrap",
    "debootstrap": "apt-get install docker.io debootstrap",
    "chromium": "apt-get install chromium",
}


def needs(tool: str) -> pytest.MarkDecorator:
    """A skip mark for when `tool` is not on PATH; the reason names the install command."""
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed ({INSTALL[tool]})")
