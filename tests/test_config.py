"""Config loading: includes, overrides, typed validation that names the dotted key."""

import pytest

from unitvox.config import Config, ConfigError, apply_overrides, load, to_yaml
from unitvox.store import LocalStore

JOBS = "jobs"


def test_shipped_configs_are_valid():
    for name in ("base.yaml", "demo.yaml"):
        config = load(f"{JOBS}/{name}")
        assert isinstance(config, Config)
    demo = load(f"{JOBS}/demo.yaml")
    assert demo.tokenize.features.extractor == "logmel"  # the overlay wins over the base's ssl
    assert demo.prepare.split.silence_db == -40.0  # the base still applies


def test_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("tokenize:\n  kmeans:\n    k: 64\n    seed: 3\n")
    (tmp_path / "sub" / "overlay.yaml").write_text("include: ../base.yaml\ntokenize:\n  kmeans:\n    k: 32\n")
    config = load(str(tmp_path / "sub" / "overlay.yaml"))
    assert config.tokenize.kmeans.k == 32
    assert config.tokenize.kmeans.seed == 3


def test_include_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load(str(tmp_path / "a.yaml"))


def test_overrides_parse_yaml_values(tmp_path):
    config = load(f"{JOBS}/demo.yaml", ["tokenize.kmeans.k=12", "bpe.deduplicate=false",
                                        "prepare.extensions=[wav, flac]", "prepare.split.silence_db=-35"])
    assert config.tokenize.kmeans.k == 12
    assert config.bpe.deduplicate is False
    assert config.prepare.extensions == ["wav", "flac"]
    assert config.prepare.split.silence_db == -35.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("tokenize.kmeans.kk=3", r"tokenize\.kmeans\.kk: unknown key"),
        ("tokenize.kmeans.k=many", r"tokenize\.kmeans\.k: expected int, got str"),
        ("tokenize.kmeans.k=true", r"tokenize\.kmeans\.k: expected int, got bool"),
        ("prepare.extensions=wav", r"prepare\.extensions: expected a list"),
        ("prepare.split.silence_db=10", r"prepare\.split\.silence_db: must be below 0"),
        ("tokenize.features.extractor=wavlm_magic", r"tokenize\.features\.extractor: unknown extractor"),
        ("tokenize.features.batch_seconds=-1", r"tokenize\.features\.batch_seconds: must not be negative .*got -1"),
        ("prepare.speaker_pattern=[a-z", r"prepare\.speaker_pattern: not a regular expression"),
        ("prepare.speaker_pattern=(\\w+)/", r"prepare\.speaker_pattern: needs a named group"),
        ("pipeline.stages=[prepare, train_everything]", r"pipeline\.stages\[1\]: unknown stage"),
        ("nonsense=1", r"nonsense: unknown key"),
        ("tokenize.kmeans=3", r"tokenize\.kmeans: expected a mapping"),
        ("cluster.resources.train.memory=lots", r"cluster\.resources\.train\.memory: not a Kubernetes quantity"),
        ("cluster.resources.train.node_selector={pool: 1}", r"cluster\.resources\.train\.node_selector\.pool: expected str"),
        ("cluster.resources.train.node_selector=[a]", r"cluster\.resources\.train\.node_selector: expected a mapping"),
        ("cluster.training.launcher=slurm", r"cluster\.training\.launcher: choose one of"),
        ("cluster.termination_grace_seconds=5", r"cluster\.termination_grace_seconds: must be at least 30"),
        ("train.units=runs", r"train\.units: unknown 'runs'; choose one of"),
        ("train.duration_predictor.kernel_size=4", r"train\.duration_predictor\.kernel_size: must be odd"),
        ("train.duration_predictor.lr=0", r"train\.duration_predictor\.lr: must be in \(0, 1\), got 0"),
        ("train.lambdas.duration=-1", r"train\.lambdas\.duration: must not be negative"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(f"{JOBS}/demo.yaml", [override])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["tokenize.kmeans.k"])
    with pytest.raises(ConfigError, match="config file not found: jobs/nope.yaml"):
        load("jobs/nope.yaml")


def test_stage_hash_ignores_execution_keys_only():
    base = load(f"{JOBS}/demo.yaml")
    more_shards = load(f"{JOBS}/demo.yaml", ["tokenize.shards=7", "tokenize.features.device=cpu"])
    other_k = load(f"{JOBS}/demo.yaml", ["tokenize.kmeans.k=7"])
    assert base.stage_hash("tokenize") == more_shards.stage_hash("tokenize")
    assert base.stage_hash("tokenize") != other_k.stage_hash("tokenize")
    assert base.stage_hash("prepare") == other_k.stage_hash("prepare")


def test_resolved_config_round_trips(tmp_path):
    config = load(f"{JOBS}/demo.yaml", ["tokenize.kmeans.k=9"])
    LocalStore(str(tmp_path)).write_text("config.yaml", to_yaml(config))
    assert load(str(tmp_path / "config.yaml")) == config


def test_a_section_given_in_part_keeps_its_own_defaults():
    config = load(f"{JOBS}/demo.yaml", ["cluster.resources.evaluate.memory=9Gi"])
    assert config.cluster.resources.evaluate.memory == "9Gi"
    assert config.cluster.resources.evaluate.cpu == "1", "the demo's other evaluate keys stay"
    bare = load(f"{JOBS}/demo.yaml", ["cluster.resources.diagnose={memory: 3Gi}"])
    from unitvox.config.cluster import StageResources

    assert bare.cluster.resources.diagnose.memory == "3Gi"
    assert bare.cluster.resources.diagnose.shm == "256Mi"
    assert StageResources().train.gpus == 1 and load(f"{JOBS}/demo.yaml", ["cluster.resources.train.memory=5Gi"]) \
        .cluster.resources.train.gpus == 0, "a partial section starts from the stage's own default, then the file's"
