"""What a Kubernetes rendering is for: a run's config, its run root in object storage and the image.

Every renderer (render.py, kubeflow.py) takes one; it lives apart from them so they can share it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from unitvox.ablations.suite import Suite
from unitvox.config import Config, to_yaml
from unitvox.config.metrics import ALL_INTERFACES, LOOPBACK
from unitvox.controller import manifests as m
from unitvox.prometheus import run_label


@dataclass(frozen=True)
class Target:
    """What a rendering is for: a config, a run root in object storage and an image.

    `wait_for_inputs_seconds` lets a pod wait for its stage's inputs: `kubectl apply` of a whole
    pipeline starts every Job at once, while the controller creates each only when its inputs exist.
    """

    config: Config
    run_uri: str
    image: str
    suite: Suite | None = None
    force: bool = False
    wait_for_inputs_seconds: int = 0

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError("no image to run: pass --image REGISTRY/unitvox:TAG or set cluster.image")
        if not self.run_uri.startswith("s3://"):
            raise ValueError(f"--run {self.run_uri!r}: on Kubernetes the run root must be an s3:// URI, "
                             "because pods on different nodes share no local folder")

    @property
    def run(self) -> str:
        return run_label(self.run_uri)

    @cached_property  # every rendered object names the config map, whose name hashes this text
    def config_text(self) -> str:
        config = self.config
        if config.metrics.address == LOOPBACK:  # a laptop's default; Prometheus scrapes pods from outside
            config = replace(config, metrics=replace(config.metrics, address=ALL_INTERFACES))
        return to_yaml(config, "# The resolved config of this run, rendered by unitvox k8s\n")

    @property
    def config_map_name(self) -> str:
        return m.object_name("uvx-config", self.run, unique=self.config_text + (self.suite.text if self.suite else ""))
