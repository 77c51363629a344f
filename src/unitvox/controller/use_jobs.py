"""A unitvox command (export, encode, vocode, resynthesize) as the argv of a Kubernetes Job's pod.

Run: unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image IMG \\
         --command "encode s3://bucket/raw/ --out s3://bucket/units/raw.jsonl --deduplicate"
     unitvox k8s submit --config jobs/base.yaml --run s3://bucket/runs/exp1 --image IMG \\
         --resynthesize --input s3://bucket/mine/ --out s3://bucket/resynthesized/ [--speaker s3://bucket/ref.wav]

The command is parsed with its own `unitvox` subparser, so a Job is refused
here for what the command would refuse in the pod; every file it reads or writes must be an s3://
URI, since a pod sees none of this machine's folders. Without `--model` (or export's `--run`) a
command uses the run's own model: the run root the Job belongs to.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from unitvox.config import ConfigError

REACHABLE = "s3://"
CHECKPOINT_NAMES = ("best", "latest")
# The arguments that name a file or folder, by argparse dest; --checkpoint may also be a name above.
PATH_ARGUMENTS = {"run": "--run", "model": "--model", "inputs": "INPUT", "out": "--out", "speaker": "--speaker",
                  "checkpoint": "--checkpoint"}
UNITS_ARGUMENT = "--units"  # vocode's inputs are given by flag, not by position


@dataclass(frozen=True)
class UseCommand:
    """A checked unitvox command for a pod: `argv` starts with the command's name."""

    name: str
    argv: tuple[str, ...]
    chooses_device: bool  # the command takes --device (export does not)
    device_given: bool

    def container_args(self, gpus: int) -> tuple[str, ...]:
        """The pod's args; on a GPU pod a command that was given no --device runs on cuda."""
        if self.chooses_device and not self.device_given and gpus > 0:
            return (*self.argv, "--device", "cuda")
        return self.argv


def allowed_commands() -> tuple[str, ...]:
    from unitvox.use.commands import HELP

    return tuple(HELP)


def parse_command(command: str | Sequence[str], run_uri: str, *, label: str = "--command",
                  names: dict[str, str] | None = None) -> UseCommand:
    """Check a command line (a string, split as a shell would, or a list) for a pod of run `run_uri`.

    Raises:
        ConfigError: an unknown command, arguments its parser refuses, or a local path, each named.
    """
    tokens = shlex.split(command) if isinstance(command, str) else list(command)
    if tokens[:1] == ["unitvox"]:
        tokens = tokens[1:]
    allowed = allowed_commands()
    if not tokens:
        raise ConfigError(f"{label}: empty; give a unitvox command, one of {', '.join(allowed)}")
    name, rest = tokens[0], tokens[1:]
    if name not in allowed:
        raise ConfigError(f"{label} {name!r}: not a command a Job can run here; choose one of {', '.join(allowed)} "
                          "(stages run with --stage, diagnoses with --diagnose)")
    rest = _with_model(name, rest, run_uri)
    parsed = _parser(name, label).parse_args(rest)
    _check_reachable(name, parsed, label, {**PATH_ARGUMENTS, **(names or {})})
    return UseCommand(name, (name, *rest), chooses_device=hasattr(parsed, "device"),
                      device_given=_given(rest, "--device"))


def resynthesize_command(run_uri: str, *, inputs: Sequence[str], out: str | None, model: str | None = None,
                         speaker: str | None = None) -> UseCommand:
    """`--resynthesize --input ... --out ...`: resynthesize with the run's model (or `model`)."""
    if not inputs:
        raise ConfigError("--resynthesize: give the recordings with --input s3://bucket/prefix/ (repeatable)")
    if not out:
        raise ConfigError("--resynthesize: give --out s3://bucket/prefix/ for the wavs")
    argv = ["resynthesize", "--model", model or run_uri, *inputs, "--out", out]
    argv += ["--speaker", speaker] if speaker else []
    return parse_command(argv, run_uri, label="--resynthesize", names={"inputs": "--input"})


class _Refusing(argparse.ArgumentParser):
    """The command's parser, raising ConfigError instead of printing usage and exiting."""

    def __init__(self, *args, label: str, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, add_help=False, **kwargs)
        self.label = label

    def error(self, message: str):
        where = self.label if self.label == f"--{self.prog}" else f"{self.label} {self.prog}"
        raise ConfigError(f"{where}: {message}")


def _parser(name: str, label: str) -> argparse.ArgumentParser:
    """The command's own arguments, as cli.py gives them to `unitvox <name>`, refusing instead of exiting."""
    from unitvox.use.commands import add_arguments

    parser = _Refusing(prog=name, label=label)
    add_arguments(name, parser)
    return parser


def _given(tokens: Sequence[str], flag: str, *aliases: str) -> bool:
    return any(token == option or token.startswith(f"{option}=") for token in tokens for option in (flag, *aliases))


def _with_model(name: str, tokens: list[str], run_uri: str) -> list[str]:
    """The run root as the model (export: as the run) when the command names none."""
    if name == "export":
        return tokens if _given(tokens, "--run", "--run-root") else ["--run", run_uri, *tokens]
    return tokens if _given(tokens, "--model") else ["--model", run_uri, *tokens]


def _check_reachable(name: str, parsed: argparse.Namespace, label: str, names: dict[str, str]) -> None:
    where = label if label == f"--{name}" else f"{label} {name}"
    for dest, argument in names.items():
        values = getattr(parsed, dest, None)
        if values is None:
            continue
        if dest == "inputs" and name == "vocode":
            argument = UNITS_ARGUMENT
        for value in values if isinstance(values, list) else [values]:
            if dest == "checkpoint" and value in CHECKPOINT_NAMES:
                continue
            if not str(value).startswith(REACHABLE):
                remedy = ("write it under an s3:// prefix (a pod's own files go when it ends)" if dest == "out" else
                          "upload it to object storage and give its s3:// URI")
                raise ConfigError(f"{where}: {argument} {value!r} is not an {REACHABLE} URI, and a pod cannot see "
                                  f"this machine's files: {remedy}")
