"""How well are speakers separated? Speaker embeddings of validation audio, real and resynthesised.

Run: unitvox diagnose embeddings --config jobs/base.yaml --run ./runs/exp1

`unitvox diagnose embeddings` calls `diagnose_embeddings`; so can a notebook, with any embedder:

    from unitvox.config import load
    from unitvox.diagnostics.embeddings.embeddings_diagnosis import diagnose_embeddings
    from unitvox.store import open_store
    print(diagnose_embeddings(load("jobs/base.yaml"), open_store("./runs/exp1")).verdict)
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from unitvox.config import Config
from unitvox.config.diagnose import EMBEDDERS, EmbeddingsDiagnosisConfig
from unitvox.diagnostics.embeddings.embedding_plots import CAPTIONS, SIMILARITY_PNG, projection_pngs, similarity_png
from unitvox.diagnostics.embeddings.embedding_sources import (
    Selection, Skipped, build_embedder, embed_generated, embed_real, select_items,
)
from unitvox.diagnostics.diagnosis import OK, PROBLEM, WARNING, Diagnosis, figure_link
from unitvox.diagnostics.embeddings.speaker_separation import EmbeddedSet, Separation, separation, voice_kept
from unitvox.evaluation.speaker import SpeakerEmbedder
from unitvox.report import markdown_table
from unitvox.store import Store

KIND = "embeddings"
GOOD, NARROW, POOR = "good", "narrow", "poor"  # how far apart same- and different-speaker pairs are
PAIRS_SHOWN = 3  # least separated speaker pairs named in the findings
PAIRS_LISTED = 10  # ... and listed in the report
HELP = "how well speaker embeddings of real and generated validation audio separate speakers"
EXAMPLES = """examples:
  unitvox diagnose embeddings --config jobs/base.yaml --run RUN                       # are speakers separated?
  unitvox diagnose embeddings --config jobs/base.yaml --run RUN --embedder checkpoint # the vocoder's own encoder
  unitvox diagnose embeddings --config jobs/demo.yaml --run RUN --max-items 0 --set diagnose.embeddings.generated=false

Writes RUN/diagnose/embeddings/report.json, report.md, similarity.png, pca.png and tsne.png."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", choices=EMBEDDERS, default=None,
                        help="overrides diagnose.embeddings.embedder")
    parser.add_argument("--max-items", type=int, default=None, metavar="N",
                        help="overrides diagnose.embeddings.max_items (0: all)")


def from_arguments(config: Config, store: Store, args: argparse.Namespace) -> Diagnosis:
    changes = {name: value for name, value in (("embedder", args.embedder), ("max_items", args.max_items))
               if value is not None}
    if changes:
        settings = dataclasses.replace(config.diagnose.embeddings, **changes)
        settings.check("diagnose.embeddings")
        config = dataclasses.replace(config, diagnose=dataclasses.replace(config.diagnose, embeddings=settings))
    return diagnose_embeddings(config, store)


def diagnose_embeddings(config: Config, store: Store, *, embedder: SpeakerEmbedder | None = None) -> Diagnosis:
    """Embed validation audio (and its resynthesis) and judge how well the embeddings separate speakers.

    Args:
        config: the run's config; `diagnose.embeddings` sets the embedder, item count and threshold.
        store: the run's root.
        embedder: any `SpeakerEmbedder` to use instead of the one `diagnose.embeddings.embedder` names.

    Returns:
        A `problem` when same- and different-speaker similarity of real audio are less than
        `diagnose.embeddings.min_separation` apart (and their AUC is below `min_auc`) or the silhouette
        is not positive; a `warning` when too few speakers or items were embedded to judge, when the
        gap is small but the AUC high, or when the vocoder's output loses the separation the real
        audio has; else `ok`.

    Raises:
        ConfigError: `embedder: checkpoint` on a run without a trained speaker encoder.
    """
    settings = config.diagnose.embeddings
    embedder = embedder or build_embedder(config, store)
    selection = select_items(config, store)
    real, real_skipped = embed_real(selection.items, store, embedder, config.prepare.sample_rate)
    generated, generated_skipped, generated_note = (
        embed_generated(config, store, real, selection.items, embedder) if len(real)
        else (None, Skipped(), "no real audio embedded: nothing to resynthesise"))
    real_found = separation(real) if len(real) else None
    generated_found = separation(generated) if generated is not None and len(generated) else None
    voice = voice_kept(real, generated) if generated_found is not None else None
    status, verdict, findings = judge(real_found, generated_found, voice, settings)
    findings += _notes(selection, real_skipped, generated_skipped, generated_note)

    figures, map_notes, projections = _plots(real, generated, real_found, generated_found, voice, config)
    findings += map_notes
    details = {
        "embedder": embedder.name, "items": selection.to_dict(),
        "thresholds": {"min_separation": settings.min_separation, "min_auc": settings.min_auc},
        "skipped": {"real": real_skipped.to_dict(), "generated": generated_skipped.to_dict()},
        "generated_audio": generated_note,
        "real": real_found.summary if real_found else None,
        "generated": generated_found.summary if generated_found else None,
        "voice": _without_values(voice), "projections": projections,
    }
    sections = _sections(selection, embedder.name, real_found, generated_found, voice, sorted(figures))
    return Diagnosis(KIND, status, verdict, findings, details, sections, figures)


def _plots(real: EmbeddedSet, generated: EmbeddedSet | None, real_found: Separation | None,
           generated_found: Separation | None, voice: dict[str, Any] | None,
           config: Config) -> tuple[dict[str, bytes], list[str], dict[str, Any]]:
    """(figures, notes on maps not drawn, projection details); nothing to draw without real embeddings."""
    if real_found is None:
        return {}, [], {}
    panels = {"real": real_found, **({"generated": generated_found} if generated_found else {})}
    histogram = similarity_png(panels, voice["own_item_values"] if voice else None)
    figures = {SIMILARITY_PNG: histogram} if histogram else {}
    maps, notes, projections = projection_pngs(real, generated, config.diagnose.embeddings.perplexity,
                                               config.train.seed)
    return {**figures, **maps}, notes, projections


def judge(real: Separation | None, generated: Separation | None, voice: dict[str, Any] | None,
          settings: EmbeddingsDiagnosisConfig) -> tuple[str, str, list[str]]:
    """(status, verdict, findings) from the real and generated separations."""
    if real is None or real.summary["speakers"] < 2 or real.separation is None:
        reason = _cannot_judge(real)
        return WARNING, f"cannot judge speaker separation: {reason}", [f"real audio: {reason}"]
    findings = [f"real audio: {_describe(real)}", *_closest_pairs(real)]
    if generated is not None:
        findings.append(f"generated audio: {_describe(generated)}")
    if voice is not None and voice["own_minus_other"] is not None:
        findings.append(f"voice kept: generated items have similarity {voice['own_item']:.2f} to their own real item "
                        f"and {voice['other_speakers']:.2f} to other speakers' real items; "
                        f"{voice['nearest_speaker_accuracy']:.0%} are closest to their own speaker")
    quality = _quality(real, settings)
    if quality == POOR:
        return PROBLEM, f"speakers are not separated: {_similarities(real)}", findings
    if quality == NARROW:
        findings.insert(1, f"same- and different-speaker similarity are less than {settings.min_separation:g} apart, "
                           f"but ordered (AUC {real.summary['auc']:.2f}): this embedder compresses similarities; "
                           "judge it by AUC and silhouette, or use a speaker model such as resemblyzer")
    lost = generated is not None and (generated.separation is None or _quality(generated, settings) == POOR)
    lost_voice = voice is not None and (voice["own_minus_other"] or 0.0) <= 0.0
    if lost or lost_voice:
        loses = (f"is not: generated {_similarities(generated)}" if lost and generated.separation is not None
                 else "is not: too few generated pairs" if lost
                 else "does not keep each item's voice (no closer to its own real item than to other speakers')")
        return WARNING, f"real speakers are separated, but the vocoder's output {loses}", findings
    if quality == NARROW:
        return WARNING, f"speakers are ordered but close: {_similarities(real)}", findings
    return OK, f"speakers are separated: {_similarities(real)}", findings


def _quality(found: Separation, settings: EmbeddingsDiagnosisConfig) -> str:
    """`poor`: a gap below `min_separation` with a low AUC, or a silhouette not above 0; `narrow`: a small
    gap with a high AUC; else `good`."""
    summary = found.summary
    if summary["silhouette"] is not None and summary["silhouette"] <= 0.0:
        return POOR
    if found.separation >= settings.min_separation:
        return GOOD
    return NARROW if summary["auc"] is not None and summary["auc"] >= settings.min_auc else POOR


def _cannot_judge(real: Separation | None) -> str:
    if real is None:
        return "no audio could be embedded"
    items, speakers = real.summary["items"], real.summary["speakers"]
    if speakers < 2:
        return f"the {items} embedded items come from {speakers} speaker; at least two speakers are needed"
    return f"none of the {speakers} speakers has two embedded items, so there is no same-speaker pair"


def _similarities(found: Separation) -> str:
    summary = found.summary
    silhouette = "-" if summary["silhouette"] is None else f"{summary['silhouette']:.2f}"
    return (f"same-speaker similarity {summary['same_speaker']['mean']:.2f} vs different "
            f"{summary['different_speaker']['mean']:.2f} (separation {summary['separation']:.2f}, "
            f"silhouette {silhouette})")


def _describe(found: Separation) -> str:
    summary = found.summary
    if summary["separation"] is None:
        return f"{summary['items']} items of {summary['speakers']} speakers, too few pairs to judge"
    same, different = summary["same_speaker"], summary["different_speaker"]
    scores = [f"separation {summary['separation']:.2f}"]
    scores += [f"{label} {summary[key]:.2f}" for key, label in
               (("auc", "AUC"), ("eer", "EER"), ("silhouette", "silhouette"), ("davies_bouldin", "Davies–Bouldin"))
               if summary[key] is not None]
    return (f"{summary['items']} items of {summary['speakers']} speakers; same-speaker similarity "
            f"{same['mean']:.2f} ± {same['std']:.2f} vs different {different['mean']:.2f} ± {different['std']:.2f} "
            f"({', '.join(scores)})")


def _closest_pairs(found: Separation) -> list[str]:
    pairs = [pair for pair in found.summary["pairs"] if pair["margin"] is not None][:PAIRS_SHOWN]
    if not pairs:
        return []
    named = [f"{pair['speakers'][0]} & {pair['speakers'][1]} (margin {pair['margin']:.2f}: between "
             f"{pair['between']:.2f}, within {' / '.join(_number(value) for value in pair['within'])})"
             for pair in pairs]
    return ["least separated speaker pairs: " + "; ".join(named)]


def _notes(selection: Selection, real: Skipped, generated: Skipped, generated_note: str) -> list[str]:
    notes = [selection.note] if selection.note else []
    for side, skipped in (("real", real), ("generated", generated)):
        if skipped.total():
            counts = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.counts.items()))
            first = next(iter(skipped.examples.values()))[0]
            notes.append(f"{skipped.total()} {side} items skipped ({counts}; first: {first})")
    if not generated_note.startswith("resynthesised"):
        notes.append(generated_note)
    return notes


def _sections(selection: Selection, embedder: str, real: Separation | None, generated: Separation | None,
              voice: dict[str, Any] | None, figures: list[str]) -> list[str]:
    """The Markdown report's sections after the findings, each a block of lines."""
    found = {name: value for name, value in (("real", real), ("generated", generated)) if value is not None}
    blocks = [_items_section(selection, embedder)]
    blocks += [_similarity_section(found)] if found else []
    blocks += [_voice_section(voice)] if voice is not None else []
    blocks += [_speakers_section(real)] if real is not None and real.summary["pairs"] else []
    blocks += [["## Plots", "", *(figure_link(name, CAPTIONS.get(name, name)) for name in figures)]] if figures else []
    return ["\n".join(block) for block in blocks]


def _items_section(selection: Selection, embedder: str) -> list[str]:
    items = selection.to_dict()
    return ["## Items", "", f"Embedder: `{embedder}`.", "", *markdown_table(
        ["source", "items", "validation", "topped up", "speakers"],
        [[items["source"], items["chosen"], items["validation"], items["topped_up"], items["speakers"]]])]


def _similarity_section(found: dict[str, Separation]) -> list[str]:
    statistics = ("count", "mean", "std", "q05", "q25", "q50", "q75", "q95")
    distributions = [[name, kind.replace("_", " "), *(value.summary[kind].get(key) for key in statistics)]
                     for name, value in found.items() for kind in ("same_speaker", "different_speaker")]
    scores = [[name, *(value.summary[key] for key in ("separation", "auc", "eer", "silhouette", "davies_bouldin"))]
              for name, value in found.items()]
    return ["## Similarity", "",
            *markdown_table(["audio", "pairs", "count", "mean", "std", "q05", "q25", "median", "q75", "q95"],
                            distributions), "",
            *markdown_table(["audio", "separation", "AUC", "EER", "silhouette (cosine)", "Davies–Bouldin"], scores)]


def _voice_section(voice: dict[str, Any]) -> list[str]:
    return ["## Does the vocoder keep the voice?", "", *markdown_table(
        ["generated items", "vs own real item", "vs same speaker", "vs other speakers", "nearest speaker right"],
        [[voice["items"], voice["own_item"], voice["same_speaker"], voice["other_speakers"],
          voice["nearest_speaker_accuracy"]]])]


def _speakers_section(real: Separation) -> list[str]:
    pairs = [[" & ".join(pair["speakers"]), pair["between"], " / ".join(_number(value) for value in pair["within"]),
              pair["margin"]] for pair in real.summary["pairs"][:PAIRS_LISTED]]
    speakers = [[row["speaker"], row["items"], row["within"], row["nearest"], row["nearest_similarity"]]
                for row in real.summary["per_speaker"]]
    return ["## Speakers (real audio)", "", f"The {len(pairs)} least separated pairs, closest first.", "",
            *markdown_table(["speakers", "between", "within", "margin"], pairs), "",
            *markdown_table(["speaker", "items", "within", "nearest", "similarity to nearest"], speakers)]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _without_values(voice: dict[str, Any] | None) -> dict[str, Any] | None:
    """The voice summary for the JSON; per-item values stay with the plot."""
    return None if voice is None else {key: value for key, value in voice.items() if key != "own_item_values"}
