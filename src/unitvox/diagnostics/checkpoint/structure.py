"""The generator architecture a state dict expects, read from its keys and weight shapes.

Weights hold channel counts, kernel sizes, how many blocks and convolutions there are, groups, LoRA
ranks and the speaker FiLM width. They do not hold strides (`upsample_rates`), dilation values or
LoRA's alpha: those come from a unitvox checkpoint's saved description, or are left as the config has them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import torch
import yaml

from unitvox.config import GeneratorConfig, TrainConfig
from unitvox.diagnostics.checkpoint.keys import WEIGHT_NORM

FAMILIES = ("pre_conv", "upsamples", "resblocks", "post_conv")
# The generators' top-level modules (UnitGenerator's, then VocosGenerator's own), so prefixes can be
# recognised before a model is built.
GENERATOR_PARTS = ("embedding", *FAMILIES, "films", "input_norm", "output_norm", "head")
# What the weights of a `vocos` generator determine, beside embedding_dim, lora and speaker_embedding_dim.
VOCOS_SHAPES = ("backbone_dim", "backbone_intermediate_dim", "backbone_layers", "frames_per_unit")
INFER = "infer"  # speaker settings follow the FiLM width the weights have


def conv_weight(state: Mapping[str, torch.Tensor], module: str) -> torch.Tensor | None:
    """A convolution's weight (its weight-norm direction), through a LoRA wrapper if there is one."""
    for name in (module, f"{module}.base"):
        for leaf in (f"{WEIGHT_NORM}.original1", "weight"):
            if f"{name}.{leaf}" in state:
                return state[f"{name}.{leaf}"]
    return None


def _indexes(state: Mapping[str, Any], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state if (match := pattern.match(key))})


def infer_structure(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the weights say about the generator, plus `unknown`: what they cannot say.

    A `vocos` generator's weights (an iSTFT `head`) say so with `type: vocos`; HiFi-GAN's name no type.
    """
    if conv_weight(state, "head.out") is not None:
        return _infer_vocos(state)
    found: dict[str, Any] = {"unknown": ["upsample_rates (strides are not stored in weights)",
                                         "resblock_dilations values (only how many per block)"]}
    embedding = state.get("embedding.weight")
    if embedding is not None and embedding.dim() == 2:
        found["num_units"], found["embedding_dim"] = embedding.shape[0] - 1, embedding.shape[1]
    pre = conv_weight(state, "pre_conv")
    if pre is not None:
        found["upsample_initial_channels"] = pre.shape[0]
    stages = _indexes(state, "upsamples.")
    upsamples = [conv_weight(state, f"upsamples.{stage}") for stage in stages]
    if stages and all(weight is not None for weight in upsamples):
        found["stages"] = len(stages)
        found["stage_channels"] = [weight.shape[1] for weight in upsamples]
        found["upsample_kernel_sizes"] = [weight.shape[-1] for weight in upsamples]
    fusions = [_fusion(state, f"resblocks.{stage}") for stage in _indexes(state, "resblocks.")]
    if fusions:
        found["blocks_per_fusion"] = [len(fusion) for fusion in fusions]
        first = fusions[0]
        found["resblock"] = _same([block["type"] for fusion in fusions for block in fusion])
        found["resblock_kernel_sizes"] = [block["kernel_size"] for block in first]
        found["dilations_per_block"] = [block.get("dilations") for block in first]
        found["groups"] = _same([block.get("groups") for fusion in fusions for block in fusion if block.get("groups")])
        layout = [_shape_free(block) for block in first]
        found["uniform_stages"] = all([_shape_free(block) for block in fusion] == layout for fusion in fusions)
    found["lora"] = _lora(state)
    if found["lora"]:
        found["unknown"].append("lora.alpha (the adapters' scale is not stored in weights)")
    film = state.get("films.0.projection.weight")
    found["speaker_embedding_dim"] = film.shape[1] if film is not None else 0
    return found


def _infer_vocos(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the weights of a `vocos` generator say: widths, depth, STFT frames per unit (the upsampler's
    kernel is twice its rate), FFT size (the head predicts n_fft + 2 channels), LoRA and FiLM."""
    found: dict[str, Any] = {"type": "vocos", "unknown": ["hop_samples (the STFT hop is hop_samples / frames_per_unit)"]}
    embedding = state.get("embedding.weight")
    if embedding is not None and embedding.dim() == 2:
        found["num_units"], found["embedding_dim"] = embedding.shape[0] - 1, embedding.shape[1]
    pre = conv_weight(state, "pre_conv")
    if pre is not None:
        found["backbone_dim"] = pre.shape[0]
    blocks = _indexes(state, "resblocks.")
    found["backbone_layers"] = len(blocks)
    bottleneck = conv_weight(state, f"resblocks.{blocks[0]}.pwconv1") if blocks else None
    if bottleneck is not None:
        found["backbone_intermediate_dim"] = bottleneck.shape[0]
    upsample = conv_weight(state, "upsamples.0")
    found["frames_per_unit"] = upsample.shape[-1] // 2 if upsample is not None else 1
    found["n_fft"] = conv_weight(state, "head.out").shape[0] - 2
    found["lora"] = _lora(state)
    if found["lora"]:
        found["unknown"].append("lora.alpha (the adapters' scale is not stored in weights)")
    film = state.get("films.0.projection.weight")
    found["speaker_embedding_dim"] = film.shape[1] if film is not None else 0
    return found


def _same(values: list[Any]) -> Any:
    """The one value all agree on, else the list of distinct ones (None when empty)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else (distinct or None)


def _shape_free(block: dict[str, Any]) -> tuple:
    return block["type"], block["kernel_size"], block.get("dilations")


def _fusion(state: Mapping[str, torch.Tensor], prefix: str) -> list[dict[str, Any]]:
    return [_block(state, f"{prefix}.blocks.{index}") for index in _indexes(state, f"{prefix}.blocks.")]


def _block(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """One residual block: `hifigan` (conv1s/conv2s, one pair per dilation) or `grouped` (conv1/conv2)."""
    dilated = _indexes(state, f"{prefix}.conv1s.")
    if dilated:
        weight = conv_weight(state, f"{prefix}.conv1s.{dilated[0]}")
        return {"type": "hifigan", "kernel_size": weight.shape[-1] if weight is not None else None,
                "dilations": len(dilated)}
    weight = conv_weight(state, f"{prefix}.conv1")
    if weight is not None:
        groups = weight.shape[0] // weight.shape[1] if weight.shape[1] else None
        return {"type": "grouped", "kernel_size": weight.shape[-1], "groups": groups}
    names = sorted({key[len(prefix) + 1:].split(".", 1)[0] for key in state if key.startswith(f"{prefix}.")})
    return {"type": None, "kernel_size": None, "modules": names}


def _lora(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Rank and targets of LoRA adapters (`P.base`, `P.down`, `P.up`), None without any."""
    wrapped = sorted({key[: -len(".down.weight")] for key in state if key.endswith(".down.weight")})
    if not wrapped:
        return None
    # A transposed conv's `up` is (rank, C_out, K); a conv's is (C_out, rank, 1); a linear layer's (C_out, rank).
    ranks = [state[f"{name}.up.weight"].shape[0 if name.startswith("upsamples.") else 1] for name in wrapped
             if f"{name}.up.weight" in state]
    convs = {key.rsplit(f".{WEIGHT_NORM}.original1", 1)[0].removesuffix(".base")
             for key in state if key.endswith(f"{WEIGHT_NORM}.original1")}
    # Layers without weight norm (vocos's): every matrix or kernel that is not an adapter's own.
    convs |= {key[: -len(".weight")].removesuffix(".base") for key, tensor in state.items()
              if key.endswith(".weight") and tensor.dim() >= 2 and not key.endswith((".down.weight", ".up.weight"))}
    targets = []
    for family in FAMILIES:
        members = {conv for conv in convs if conv.split(".", 1)[0] == family}
        hits = {name for name in wrapped if name.split(".", 1)[0] == family}
        if members and hits == members:
            targets.append(family)
        else:
            targets += sorted({_last_name(name) for name in hits} - set(targets))
    return {"rank": _same(ranks), "targets": targets, "wrapped": len(wrapped)}


def _last_name(module: str) -> str:
    return next(part for part in reversed(module.split(".")) if not part.isdigit())


def structure_differences(structure: Mapping[str, Any], generator: GeneratorConfig, num_units: int) -> list[str]:
    """Sentences naming where the checkpoint's structure and the config's generator differ."""
    found = []

    def differ(name: str, words: str, ours: Any) -> None:
        if name in structure and structure[name] != ours:
            found.append(f"{words}: the checkpoint has {structure[name]}, the config {ours}")

    if structure.get("num_units", num_units) != num_units:
        found.append(f"the checkpoint embeds {structure['num_units']} units, the model {num_units}: it needs units "
                     "from the codebook it was trained on")
    kind = structure.get("type", "hifigan")
    if kind != generator.type:
        return [*found, f"generator type: the checkpoint has a {kind} generator, the config {generator.type} "
                        "(train.generator.type)"]
    if kind == "vocos":
        return found + _vocos_differences(structure, generator)
    differ("embedding_dim", "embedding_dim", generator.embedding_dim)
    differ("upsample_initial_channels", "upsample_initial_channels", generator.upsample_initial_channels)
    differ("stages", "upsampling stages", len(generator.upsample_rates))
    if structure.get("stages") == len(generator.upsample_rates):
        differ("upsample_kernel_sizes", "upsample_kernel_sizes", generator.upsample_kernel_sizes)
    blocks = structure.get("blocks_per_fusion")
    if blocks and set(blocks) != {len(generator.resblock_kernel_sizes)}:
        count = blocks[0] if len(set(blocks)) == 1 else blocks
        found.append(f"the checkpoint has {count} blocks per fusion layer (kernel sizes "
                     f"{structure['resblock_kernel_sizes']}), the config {len(generator.resblock_kernel_sizes)} "
                     f"({generator.resblock_kernel_sizes})")
    elif blocks:
        differ("resblock_kernel_sizes", "resblock_kernel_sizes", generator.resblock_kernel_sizes)
    differ("resblock", "residual block type", generator.resblock)
    if structure.get("resblock") == "hifigan" == generator.resblock and len(structure["dilations_per_block"]) == len(
            generator.resblock_dilations):
        ours = [len(dilations) for dilations in generator.resblock_dilations]
        if structure["dilations_per_block"] != ours:
            found.append(f"dilations per block: the checkpoint has {structure['dilations_per_block']}, the config "
                         f"{ours} (their values are not stored in the weights)")
    if structure.get("resblock") == "grouped" == generator.resblock:
        differ("groups", "groups", generator.groups)
    lora = structure.get("lora") or {}
    if lora.get("rank", 0) != generator.lora.rank:
        found.append(f"LoRA rank: the checkpoint has {lora.get('rank', 0)}"
                     + (f" (on {', '.join(lora['targets'])})" if lora else "") + f", the config {generator.lora.rank}")
    differ("speaker_embedding_dim", "speaker FiLM width (speaker_embedding_dim)", generator.speaker_embedding_dim)
    return found


def _vocos_differences(structure: Mapping[str, Any], generator: GeneratorConfig) -> list[str]:
    found = []
    for name in ("embedding_dim", *VOCOS_SHAPES, "speaker_embedding_dim"):
        if name in structure and structure[name] != getattr(generator, name):
            found.append(f"{name}: the checkpoint has {structure[name]}, the config {getattr(generator, name)}")
    n_fft = generator.n_fft or 4 * (generator.hop_samples // generator.frames_per_unit)
    if structure.get("n_fft", n_fft) != n_fft:
        found.append(f"n_fft: the checkpoint has {structure['n_fft']}, the config {n_fft}")
    lora = structure.get("lora") or {}
    if lora.get("rank", 0) != generator.lora.rank:
        found.append(f"LoRA rank: the checkpoint has {lora.get('rank', 0)}, the config {generator.lora.rank}")
    return found


def guess_dilations(counts: list[int | None], current: list[list[int]]) -> list[list[int]]:
    """Dilation lists of the given lengths: the config's where they fit, else HiFi-GAN's 1, 3, 5, ..."""
    guessed = []
    for index, count in enumerate(counts):
        if index < len(current) and (count is None or len(current[index]) == count):
            guessed.append(list(current[index]))
        elif count is None:
            guessed.append(list(current[-1]))
        else:
            same = [dilations for dilations in current if len(dilations) == count]
            guessed.append(list(same[0]) if same else [2 * step + 1 for step in range(count)])
    return guessed


def generator_target(structure: Mapping[str, Any], current: GeneratorConfig) -> tuple[dict[str, Any], list[str]]:
    """The config's generator with every field the weights determine set to what they say; and what could not be."""
    target = _plain(current)
    notes = []
    target["type"] = structure.get("type", "hifigan")
    if target["type"] == "vocos":
        _vocos_target(structure, current, target)
        _lora_target(structure, current, target, notes)
        return target, notes
    for name in ("embedding_dim", "upsample_initial_channels", "speaker_embedding_dim"):
        if name in structure:
            target[name] = int(structure[name])
    if "upsample_kernel_sizes" in structure:
        if structure["stages"] == len(current.upsample_rates):
            target["upsample_kernel_sizes"] = list(structure["upsample_kernel_sizes"])
        else:
            notes.append(f"the checkpoint has {structure['stages']} upsampling stages, the config "
                         f"{len(current.upsample_rates)}: set train.generator.upsample_rates to "
                         f"{structure['stages']} rates whose product is hop_samples (strides are not in the weights)")
    if "blocks_per_fusion" in structure:
        _fusion_target(structure, current, target, notes)
    _lora_target(structure, current, target, notes)
    return target, notes


def _vocos_target(structure: Mapping[str, Any], current: GeneratorConfig, target: dict[str, Any]) -> None:
    for name in ("embedding_dim", *VOCOS_SHAPES, "speaker_embedding_dim"):
        if name in structure:
            target[name] = int(structure[name])
    if "n_fft" in structure:  # 0 when it is the default of four STFT hops
        stft_hop = current.hop_samples // max(1, target["frames_per_unit"])
        target["n_fft"] = 0 if structure["n_fft"] == 4 * stft_hop else int(structure["n_fft"])


def _lora_target(structure: Mapping[str, Any], current: GeneratorConfig, target: dict[str, Any],
                 notes: list[str]) -> None:
    lora = structure.get("lora")
    target["lora"]["rank"] = 0
    if lora:
        if isinstance(lora["rank"], int):
            same = set(lora["targets"]) == set(current.lora.targets)
            target["lora"].update(rank=lora["rank"], targets=list(current.lora.targets) if same else lora["targets"])
        else:
            notes.append(f"LoRA adapters of several ranks {lora['rank']}: one rank per model is all the config holds")


def _fusion_target(structure: Mapping[str, Any], current: GeneratorConfig, target: dict[str, Any],
                   notes: list[str]) -> None:
    if not structure.get("uniform_stages") or isinstance(structure.get("resblock"), list):
        notes.append("the fusion layers differ between stages; the config builds the same one at every stage")
        return
    if structure.get("resblock") is None:
        notes.append("unknown residual block modules; no config builds them")
        return
    target["resblock"] = structure["resblock"]
    target["resblock_kernel_sizes"] = list(structure["resblock_kernel_sizes"])
    target["resblock_dilations"] = guess_dilations(structure["dilations_per_block"], current.resblock_dilations)
    if structure["resblock"] == "grouped" and isinstance(structure.get("groups"), int):
        target["groups"] = structure["groups"]


def _plain(generator: GeneratorConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(generator)))


def yaml_value(value: Any) -> str:
    """A value as `--set` parses it back: YAML flow (`[3,7,11]`, `true`, `grouped`)."""
    if isinstance(value, str):
        return value if yaml.safe_load(value) == value else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def config_overrides(train: TrainConfig, target: Mapping[str, Any],
                     target_speaker: Mapping[str, Any] | None | str = INFER) -> list[str]:
    """`train.generator.<key>=<value>` (and `train.speaker.*`) lines that turn the config's generator into `target`.

    A changed `size` lists every generator field, since `--set` keys next to a preset win over it.
    `target_speaker` is a saved description's speaker section (None: conditioning off), or INFER to
    follow the FiLM width alone.
    """
    now = _plain(train.generator)
    names = [name for name in target if name != "lora"]
    if target.get("size") == now.get("size"):
        names = [name for name in names if target[name] != now.get(name)]
    else:
        names = ["size", *[name for name in names if name != "size"]]
    lines = [f"train.generator.{name}={yaml_value(target[name])}" for name in names]
    lora = target.get("lora", {})
    lines += [f"train.generator.lora.{name}={yaml_value(value)}" for name, value in lora.items()
              if value != now["lora"].get(name) and (lora.get("rank") or name == "rank")]
    speaker = dataclasses.asdict(train.speaker)
    if target_speaker == INFER:
        dim = target["speaker_embedding_dim"]
        wanted = {"enabled": True, "embedding_dim": dim} if dim else {"enabled": False}
    else:
        wanted = dict(target_speaker) if target_speaker is not None else {"enabled": False}
    lines += [f"train.speaker.{name}={yaml_value(value)}" for name, value in wanted.items()
              if name in speaker and value != speaker[name]]
    return lines
