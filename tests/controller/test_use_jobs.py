"""unitvox commands as Kubernetes Jobs: `k8s render|submit --command ...` and `--resynthesize`.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/controller/test_use_jobs.py
"""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from k8s_fake import FakeKubernetes, fail_job, succeed_job, terminated

from unitvox import exitcodes
from unitvox.cli import build_parser, main
from unitvox.config import ConfigError, load
from unitvox.controller.cluster import KubeCluster
from unitvox.controller.render import Target, render_command
from unitvox.controller.submit import Controller, SubmitFailed
from unitvox.controller.use_jobs import parse_command, resynthesize_command
from unitvox.store import open_store

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
RUN = "s3://bucket/runs/exp1"
IMAGE = "registry.example/unitvox:0.1.0"
ENCODE = "encode s3://bucket/raw/ --out s3://bucket/units/raw.jsonl --deduplicate"


def target(config="jobs/base.yaml", *overrides) -> Target:
    return Target(load(config, ["cluster.poll_seconds=0.01", *overrides]), RUN, IMAGE)


def the_job(objects):
    config_map, job = objects
    assert config_map["kind"] == "ConfigMap" and job["kind"] == "Job"
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    return job


def container(job):
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def test_a_command_renders_as_a_stage_pod_running_unitvox_with_the_runs_model():
    chosen = target()
    job = the_job(render_command(chosen, parse_command(ENCODE, RUN)))
    box = container(job)
    assert box["image"] == IMAGE and box["command"] == ["/usr/bin/tini", "--", "unitvox"]
    assert box["args"] == ["encode", "--model", RUN, "s3://bucket/raw/", "--out", "s3://bucket/units/raw.jsonl",
                           "--deduplicate", "--device", "cuda"], "the run's model, on the pod's GPU"
    assert {"secretRef": {"name": "unitvox-s3"}} in box["envFrom"]
    assert {"configMapRef": {"name": "unitvox-settings", "optional": True}} in box["envFrom"]
    samples = chosen.config.cluster.resources.samples  # no cluster.resources.use: the samples pod's resources
    assert box["resources"]["limits"] == {"cpu": samples.cpu, "memory": samples.memory, "nvidia.com/gpu": "1"}
    assert job["spec"]["activeDeadlineSeconds"] == samples.deadline_seconds
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "unitvox-job" and pod["automountServiceAccountToken"] is False
    assert pod["volumes"][0]["configMap"]["name"] == chosen.config_map_name
    assert job["spec"]["backoffLimit"] == chosen.config.cluster.backoff_limit
    assert job["spec"]["ttlSecondsAfterFinished"] == chosen.config.cluster.ttl_seconds_after_finished
    assert exitcodes.CONFIG in job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"], \
        "bad input (exit 2) is not retried"
    labels = job["metadata"]["labels"]
    assert labels["unitvox.dev/stage"] == "use" and labels["unitvox.dev/phase"] == "encode"
    assert "suspend" not in job["spec"] and "kueue.x-k8s.io/queue-name" not in labels


def test_the_use_resources_queue_and_priority_apply_when_set():
    chosen = target("jobs/base.yaml", "cluster.resources.use={cpu: '2', memory: 6Gi, gpus: 0}",
                    "cluster.queue=team-gpu", "cluster.priority_class=research-high")
    command = parse_command("vocode --model s3://bucket/model --units s3://bucket/u.jsonl --out s3://bucket/wavs/", RUN)
    job = the_job(render_command(chosen, command))
    box = container(job)
    assert box["resources"]["limits"] == {"cpu": "2", "memory": "6Gi"}
    assert "--device" not in box["args"], "a CPU pod keeps the command's own default"
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpu"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "research-high"
    assert "priorityClassName" not in job["spec"]["template"]["spec"]


def test_resynthesize_shortcut_on_the_cpu_demo_cluster():
    command = resynthesize_command(RUN, inputs=["s3://bucket/mine/", "s3://bucket/more.flac"],
                                   out="s3://bucket/out/", speaker="s3://bucket/ref.wav")
    job = the_job(render_command(target("jobs/demo.yaml"), command))
    box = container(job)
    assert box["args"] == ["resynthesize", "--model", RUN, "s3://bucket/mine/", "s3://bucket/more.flac",
                           "--out", "s3://bucket/out/", "--speaker", "s3://bucket/ref.wav"]
    assert "nvidia.com/gpu" not in box["resources"]["limits"]  # the demo's samples pod: CPU only
    build_parser().parse_args(box["args"])  # the pod's argv is a valid unitvox command line


def test_names_follow_the_command_line():
    chosen = target()
    first = render_command(chosen, parse_command(ENCODE, RUN))[1]["metadata"]["name"]
    again = render_command(chosen, parse_command(f"unitvox {ENCODE}", RUN))[1]["metadata"]["name"]
    other = render_command(chosen, parse_command(ENCODE + " --checkpoint latest", RUN))[1]["metadata"]["name"]
    assert first == again != other and first.startswith("uvx-use-encode-") and len(first) <= 52


def test_an_export_uses_the_run_and_takes_no_device():
    command = parse_command(["export", "--out", "s3://bucket/models/exp1"], RUN)
    assert command.container_args(gpus=1) == ("export", "--run", RUN, "--out", "s3://bucket/models/exp1")


def test_an_unknown_command_is_refused_listing_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"--command 'train'.*export, encode, vocode, resynthesize"):
        parse_command("train --config jobs/base.yaml --run s3://bucket/r", RUN)
    with pytest.raises(ConfigError, match=r"--command: empty.*export, encode, vocode, resynthesize"):
        parse_command("  ", RUN)


@pytest.mark.parametrize("command, named", [
    ("encode in.wav --out s3://b/u.jsonl", "INPUT 'in.wav'"),
    ("encode s3://b/in/ --out units.jsonl", "--out 'units.jsonl'"),
    ("encode s3://b/in/ --out file:///tmp/units.jsonl", "--out 'file:///tmp/units.jsonl'"),
    ("encode --model model/ s3://b/in/ --out s3://b/u.jsonl", "--model 'model/'"),
    ("encode s3://b/in/ --out s3://b/u.jsonl --checkpoint ./best.pt", "--checkpoint './best.pt'"),
    ("vocode --units s3://b/u.jsonl --units lm.txt --out s3://b/w/", "--units 'lm.txt'"),
    ("resynthesize s3://b/in/ --out s3://b/w/ --speaker ref.wav", "--speaker 'ref.wav'"),
    ("export --run ./runs/exp1 --out s3://b/model", "--run './runs/exp1'"),
])
def test_a_local_path_is_refused_naming_the_argument(command, named):
    with pytest.raises(ConfigError, match="a pod cannot see") as refused:
        parse_command(command, RUN)
    assert named in str(refused.value) and str(refused.value).startswith(f"--command {command.split()[0]}:")


def test_arguments_the_command_would_refuse_are_refused_before_any_job():
    with pytest.raises(ConfigError, match=r"--command vocode: the following arguments are required: --units"):
        parse_command("vocode --out s3://b/w/", RUN)
    with pytest.raises(ConfigError, match=r"--command encode: unrecognized arguments: --speed"):
        parse_command("encode s3://b/in/ --out s3://b/u.jsonl --speed 2", RUN)
    with pytest.raises(ConfigError, match=r"^--resynthesize: --input 'mine/'"):
        resynthesize_command(RUN, inputs=["mine/"], out="s3://b/w/")
    with pytest.raises(ConfigError, match=r"--resynthesize: give the recordings with --input"):
        resynthesize_command(RUN, inputs=[], out="s3://b/w/")
    with pytest.raises(ConfigError, match=r"--resynthesize: give --out"):
        resynthesize_command(RUN, inputs=["s3://b/in/"], out=None)


def render_cli(*extra, capsys) -> tuple[int, str, str]:
    code = main(["k8s", "render", "--config", "jobs/base.yaml", "--run", RUN, "--image", IMAGE, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_renders_a_command_job_even_with_a_queue(capsys):
    code, out, _ = render_cli("--set", "cluster.queue=team-gpu", "--resynthesize", "--input", "s3://bucket/mine/",
                              "--out", "s3://bucket/out/", capsys=capsys)
    assert code == 0
    config_map, job = yaml.safe_load_all(out)
    assert config_map["kind"] == "ConfigMap"
    assert job["metadata"]["labels"]["unitvox.dev/phase"] == "resynthesize", "the command, not the controller Job"
    assert job["spec"]["suspend"] is True


@pytest.mark.parametrize("extra, message", [
    (["--command", "encode s3://b/in/ --out s3://b/u.jsonl", "--stage", "train"], "--stage: not with --command"),
    (["--resynthesize", "--input", "s3://b/in/", "--out", "s3://b/o/", "--diagnose", "data"],
     "--diagnose: not with --resynthesize"),
    (["--command", "encode s3://b/in/ --out s3://b/u.jsonl", "--resynthesize"], "give one of them"),
    (["--out", "s3://b/o/"], "--out: only with --resynthesize"),
    (["--command", "prepare --config x"], "--command 'prepare'"),
    (["--resynthesize", "--input", "recordings/", "--out", "s3://b/o/"], "--input 'recordings/'"),
])
def test_cli_refuses_what_a_command_job_cannot_be(extra, message, capsys):
    code, out, err = render_cli(*extra, capsys=capsys)
    assert code == exitcodes.CONFIG and out == ""
    assert message in err


# ---------------------------------------------------------------------------------------------
# Submitting, against the fake API server


@pytest.fixture
def fake():
    with FakeKubernetes(namespace="unitvox") as server:
        yield server


def controller(fake, chosen) -> tuple[Controller, list[str]]:
    said: list[str] = []
    cluster = KubeCluster.connect("unitvox", host=fake.url)
    return Controller(cluster, chosen, open_store("/nonexistent-unused"), echo=said.append), said


def test_submit_runs_the_command_job_to_completion_and_again_when_asked_again(fake):
    argv_seen = []

    def kubelet(job):
        argv_seen.append(container(job)["args"])
        succeed_job(fake, job["metadata"]["name"])

    fake.on_job_created = kubelet
    chosen = target("jobs/demo.yaml")
    command = parse_command(ENCODE, RUN)
    run, said = controller(fake, chosen)
    outcome = run.submit_command(command)
    expected = render_command(chosen, command)[1]["metadata"]["name"]
    assert outcome.status == "done" and outcome.jobs == [expected]
    assert [job["metadata"]["name"] for job in fake.objects("jobs")] == [expected]
    assert len(fake.objects("configmaps")) == 1
    build_parser().parse_args(argv_seen[0])
    assert argv_seen[0][:3] == ["encode", "--model", RUN]

    run.submit_command(command)  # what it reads may have changed: the finished Job runs again
    assert len(argv_seen) == 2 and any("complete earlier; deleting it to run again" in line for line in said)


def test_a_failed_command_job_reports_the_pod_and_its_exit_code(fake):
    def kubelet(job):
        pod = fail_job(fake, job["metadata"]["name"], pod_status=terminated("Error", exitcodes.CONFIG))
        fake.set_log(pod["metadata"]["name"], ["unitvox: skipped s3://bucket/raw/empty.wav: empty: no samples"])

    fake.on_job_created = kubelet
    run, _ = controller(fake, target("jobs/demo.yaml"))
    with pytest.raises(SubmitFailed) as failed:
        run.submit_command(parse_command(ENCODE, RUN))
    assert failed.value.code == exitcodes.CONFIG
    assert "exit code 2 (bad config or input)" in str(failed.value) and "empty.wav" in str(failed.value)
    assert "unitvox k8s logs --run s3://bucket/runs/exp1 --stage use" in str(failed.value)


def submit_cli(fake, *extra) -> int:
    return main(["k8s", "submit", "--config", "jobs/demo.yaml", "--run", RUN, "--image", IMAGE, "--namespace",
                 "unitvox", "--api-server", fake.url, "--set", "cluster.poll_seconds=0.01", *extra])


def test_cli_submit_follows_the_job_and_detach_returns_at_once(fake, capsys):
    fake.on_job_created = lambda job: succeed_job(fake, job["metadata"]["name"])
    assert submit_cli(fake, "--resynthesize", "--input", "s3://bucket/mine/", "--out", "s3://bucket/out/") == 0
    assert "[use resynthesize] done" in capsys.readouterr().out

    fake.on_job_created = None
    assert submit_cli(fake, "--detach", "--command", ENCODE) == 0
    assert "unitvox k8s logs --run s3://bucket/runs/exp1 --stage use --phase encode --follow" in capsys.readouterr().out
    phases = sorted(job["metadata"]["labels"]["unitvox.dev/phase"] for job in fake.objects("jobs"))
    assert phases == ["encode", "resynthesize"]


def test_cli_submit_refuses_a_local_input_before_creating_anything(fake, capsys):
    assert submit_cli(fake, "--resynthesize", "--input", "/home/me/wavs", "--out", "s3://bucket/out/") == exitcodes.CONFIG
    assert "--input '/home/me/wavs'" in capsys.readouterr().err
    assert fake.requests == []


def test_a_bad_use_resource_is_refused_by_key():
    with pytest.raises(ConfigError, match=r"cluster\.resources\.use\.memory: not a Kubernetes quantity"):
        load("jobs/base.yaml", ["cluster.resources.use.memory=lots"])
    assert load("jobs/base.yaml").cluster.resources.use is None


@pytest.mark.parametrize("name", ["export", "encode", "vocode", "resynthesize"])
def test_a_command_job_is_checked_with_the_flags_the_cli_gives_that_command(name):
    """A flag added to `unitvox <name>` in cli.py alone would be refused here: keep the two the same."""
    import argparse

    from unitvox.controller.use_jobs import _parser

    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    cli_options = {o for a in commands.choices[name]._actions for o in a.option_strings} - {"-h", "--help"}
    job_options = {o for a in _parser(name, "--command")._actions for o in a.option_strings}
    assert job_options == cli_options
