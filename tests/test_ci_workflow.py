"""The evaluate workflow in .github/workflows: it submits the evaluate stage and waits, fails with the
submit's exit code, publishes its reports whatever happened, and uses only pinned actions.

The step scripts run here under bash with a stand-in `unitvox`, so their exit-code handling is tested,
not only their text. Run: .venv/bin/python -m pytest tests/test_ci_workflow.py
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "evaluate.yml"
PINNED = re.compile(r"v\d+\.\d+\.\d+|[0-9a-f]{40}")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_running(steps: list[dict], text: str) -> tuple[int, dict]:
    matches = [(index, step) for index, step in enumerate(steps) if text in step.get("run", "")]
    assert len(matches) == 1, f"expected one step running {text!r}, found {len(matches)}"
    return matches[0]


def step_using(steps: list[dict], action: str) -> tuple[int, dict]:
    matches = [(index, step) for index, step in enumerate(steps) if step.get("uses", "").startswith(action + "@")]
    assert len(matches) == 1, f"expected one step using {action}, found {len(matches)}"
    return matches[0]


def uploads(steps: list[dict], first_path: str) -> tuple[int, dict]:
    """The one upload-artifact step whose first path is `first_path`."""
    matches = [(index, step) for index, step in enumerate(steps)
               if step.get("uses", "").startswith("actions/upload-artifact@")
               and step["with"]["path"].split()[0] == first_path]
    assert len(matches) == 1, f"expected one upload of {first_path}, found {len(matches)}"
    return matches[0]


def submit_words(steps: list[dict]) -> list[str]:
    """The `unitvox k8s submit` command line of the submit step, as the shell splits it."""
    _, step = step_running(steps, "unitvox k8s submit")
    script = step["run"].replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "unitvox k8s submit" in line)
    words = shlex.split(line.split("||")[0])
    return words[words.index("unitvox"):]


def run_step(step: dict, tmp_path: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs a step's script the way a GitHub-hosted runner does (bash -e -o pipefail), in tmp_path."""
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **environment}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def test_dispatch_inputs(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"workflow_dispatch"}
    inputs = triggers["workflow_dispatch"]["inputs"]
    for name in ("checkpoint", "run", "image"):
        assert inputs[name]["required"] is True, name
    assert inputs["config"]["default"] == "jobs/base.yaml"
    assert (REPO / inputs["config"]["default"]).is_file()


def test_submit_evaluates_and_waits_for_the_results(steps):
    words = submit_words(steps)
    assert words[:3] == ["unitvox", "k8s", "submit"]
    pairs = dict(zip(words, words[1:]))
    assert pairs["--stage"] == "evaluate"
    assert "--wait" in words
    assert pairs["--results-dir"] == "results"
    assert pairs["--config"] == "$CONFIG" and pairs["--run"] == "$RUN" and pairs["--image"] == "$IMAGE"
    assert pairs["--set"] == "evaluate.checkpoint=$CHECKPOINT"


def test_inputs_reach_scripts_only_through_the_environment(workflow, steps):
    (job,) = workflow["jobs"].values()
    assert job["env"]["CHECKPOINT"] == "${{ inputs.checkpoint }}"
    for step in steps:
        assert "${{" not in step.get("run", ""), f"{step.get('name')}: an expression spliced into a script"


def test_installs_unitvox_on_python_311(steps):
    _, setup = step_using(steps, "actions/setup-python")
    assert str(setup["with"]["python-version"]) == "3.11"
    install_index, _ = step_running(steps, "pip install .")
    assert step_using(steps, "actions/checkout")[0] < install_index


@needs_bash
def test_kubeconfig_comes_from_the_secret(steps, tmp_path):
    _, step = step_running(steps, "KUBECONFIG=")
    assert step["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG_DATA }}"
    config = "apiVersion: v1\nkind: Config\nclusters: []\n"
    for given in (config, base64.b64encode(config.encode()).decode()):
        github_env = tmp_path / "github_env"
        github_env.write_text("")
        result = run_step(step, tmp_path, {"KUBECONFIG_DATA": given, "RUNNER_TEMP": str(tmp_path),
                                           "GITHUB_ENV": str(github_env)})
        assert result.returncode == 0, result.stderr
        written = Path(github_env.read_text().strip().removeprefix("KUBECONFIG="))
        assert written.read_text().strip() == config.strip()
        assert written.stat().st_mode & 0o077 == 0, "the kubeconfig is readable by others"


@needs_bash
@pytest.mark.parametrize("exit_code", [0, 1, 2, 3])
def test_the_job_fails_with_the_submit_exit_code(steps, tmp_path, exit_code):
    _, step = step_running(steps, "unitvox k8s submit")
    assert not step.get("continue-on-error", False)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    fake = bin_folder / "unitvox"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {exit_code}\n')
    fake.chmod(0o755)
    output = tmp_path / "github_output"
    output.write_text("")
    environment = {"PATH": f"{bin_folder}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output),
                   "CONFIG": "jobs/base.yaml", "RUN": "s3://b/run", "IMAGE": "r/unitvox:1",
                   "CHECKPOINT": "s3://b/run/train/checkpoints/best.pt"}
    result = run_step(step, tmp_path, environment)
    assert result.returncode == exit_code
    assert f"exit-code={exit_code}" in output.read_text().splitlines()
    assert "evaluate.checkpoint=s3://b/run/train/checkpoints/best.pt" in (tmp_path / "argv").read_text()
    if exit_code == 3:
        assert "quality gate" in result.stdout


def test_reports_publish_even_when_the_submit_fails(steps):
    submit_index, _ = step_running(steps, "unitvox k8s submit")
    junit_index, junit = step_using(steps, "mikepenz/action-junit-report")
    assert junit["with"]["report_paths"] == "results/junit.xml"
    summary_index, _ = step_running(steps, "GITHUB_STEP_SUMMARY")
    (upload_index, upload), (report_index, _) = uploads(steps, "results/"), uploads(steps, "results/report.html")
    assert upload["with"]["path"].rstrip("/") == "results"
    for index in (junit_index, summary_index, upload_index, report_index):
        assert index > submit_index
        assert steps[index]["if"] == "always()", steps[index]["name"]


@needs_bash
def test_summary_is_appended_to_the_job_page(steps, tmp_path):
    _, step = step_running(steps, "GITHUB_STEP_SUMMARY")
    page = tmp_path / "step_summary"
    page.write_text("# earlier\n")
    assert run_step(step, tmp_path, {"GITHUB_STEP_SUMMARY": str(page), "EXIT_CODE": "1"}).returncode == 0
    assert "exit code 1" in page.read_text()  # no results yet: says why
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("| gate | value |\n|---|---|\n| snr | ok |\n")
    assert run_step(step, tmp_path, {"GITHUB_STEP_SUMMARY": str(page), "EXIT_CODE": "0"}).returncode == 0
    assert page.read_text().startswith("# earlier\n") and page.read_text().endswith("| snr | ok |\n")


def test_actions_are_pinned_to_versions(workflow):
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert len(uses) >= 4
    for action in uses:
        name, _, ref = action.partition("@")
        assert name and ref, f"{action}: no version"
        assert ref not in {"main", "master", "HEAD", "latest"}, action
        assert PINNED.fullmatch(ref), f"{action}: pin an exact release tag or commit"


def test_the_html_report_is_published_with_the_audio_it_links_to(steps):
    _, report = uploads(steps, "results/report.html")
    assert report["if"] == "always()" and report["with"]["name"].startswith("evaluation-report-")
    # upload-artifact roots several paths at their common folder, results/: audio/ stays beside the page.
    assert report["with"]["path"].split() == ["results/report.html", "results/audio/"]


def test_the_results_folder_is_the_evaluate_tree_so_the_report_links_work(tmp_path):
    """What `k8s submit --results-dir` copies: the reports, and report.html with every file it links to."""
    from unitvox.controller.submit import copy_results
    from unitvox.layout import EVALUATE_PARTS, EVALUATE_REPORT, evaluate_audio
    from unitvox.store import LocalStore

    run = LocalStore(str(tmp_path / "run"))
    links = []
    for segment in ("84-121123-0000", "84-121123-0001"):
        for kind in ("original.wav", "resynthesis.wav", "mel.png"):
            run.write_bytes(evaluate_audio(segment, kind), b"RIFF" + segment.encode())
        links += [f"audio/{segment}.{kind}" for kind in ("original.wav", "resynthesis.wav")]
    run.write_text(EVALUATE_REPORT, "".join(f'<audio src="{link}"></audio>' for link in links))
    run.write_text("evaluate/summary.md", "| gate |\n")
    run.write_json(f"{EVALUATE_PARTS}/0.json", {"row": {}})  # per-shard scores: not published
    copied = copy_results(run, str(tmp_path / "results"))
    results = tmp_path / "results"
    page = (results / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources == links and all((results / source).read_bytes().startswith(b"RIFF") for source in sources)
    assert (results / "audio/84-121123-0001.mel.png").exists() and (results / "summary.md").exists()
    assert not (results / "parts").exists() and not (results / "junit.xml").exists(), "only what the run has"
    assert len(copied) == 1 + 1 + 6


@needs_bash
def test_the_job_page_points_at_the_report_when_there_is_one(steps, tmp_path):
    _, step = step_running(steps, "GITHUB_STEP_SUMMARY")
    page = tmp_path / "step_summary"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("| gate |\n")
    environment = {"GITHUB_STEP_SUMMARY": str(page), "EXIT_CODE": "0", "GITHUB_RUN_ID": "42"}
    assert run_step(step, tmp_path, environment).returncode == 0
    assert "evaluation-report" not in page.read_text()
    (tmp_path / "results" / "report.html").write_text("<html></html>")
    assert run_step(step, tmp_path, environment).returncode == 0
    assert page.read_text().endswith("download the artifact evaluation-report-42 and open report.html.\n")
