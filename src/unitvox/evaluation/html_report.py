"""evaluate/report.html: the evaluation to look at and listen to, one self-contained offline page.

The page holds the verdict and gates, the summary table (the original's row beside the resynthesis,
each metric with its direction and what published systems report), and per utterance the two audio
players, their mel spectrograms side by side (PNG inlined as base64) and the two transcripts with the
word errors marked. Audio files sit beside the page (relative links), so it works from a folder,
a CI artifact or a bucket download alike; nothing is fetched from the network and there is no script.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitvox.evaluation.asr import word_alignment
from unitvox.evaluation.registry import EVALUATION_METRICS, MetricSpec
from unitvox.evaluation.scoring import REFERENCE_ASR_OF_ORIGINAL

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #11772d; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.utterance { border-top: 1px solid #ddd; margin-top: 1.5em; padding-top: .5em; }
.players { display: flex; gap: 2em; flex-wrap: wrap; } .players figure { margin: 0; }
img.mel { max-width: 100%; }
.words { font-family: ui-monospace, monospace; }
.sub { background: #ffe08a; } del.miss { background: #f7c5c5; }
ins.extra { background: #c5def7; text-decoration: none; }
.note { color: #555; font-style: italic; } .wide { overflow-x: auto; }
"""


@dataclass
class UtteranceView:
    """What the page shows of one utterance; audio paths are relative to the page."""

    utterance: str
    speaker: str
    original_audio: str
    resynthesis_audio: str
    spectrogram_png: bytes
    texts: Mapping[str, Any] = field(default_factory=dict)
    original: Mapping[str, Any] = field(default_factory=dict)
    resynthesis: Mapping[str, Any] = field(default_factory=dict)


def mel_comparison_png(original: np.ndarray, resynthesis: np.ndarray, sample_rate: int) -> bytes:
    """Log-mel spectrograms of the original and the resynthesis side by side, same scale, as PNG bytes."""
    import librosa

    from unitvox.report import new_figure, png_bytes

    spectra = [librosa.power_to_db(librosa.feature.melspectrogram(
        y=np.asarray(wave, dtype=np.float32), sr=sample_rate, n_fft=1024, hop_length=256, n_mels=80), ref=1.0)
        for wave in (original, resynthesis)]
    top = max(float(np.max(spectrum)) for spectrum in spectra)
    figure = new_figure(2, columns=2)
    figure.set_size_inches(9.0, 2.6)
    for index, (spectrum, title) in enumerate(zip(spectra, ("original", "resynthesis")), start=1):
        axes = figure.add_subplot(1, 2, index)
        axes.imshow(spectrum, origin="lower", aspect="auto", vmin=top - 80.0, vmax=top, cmap="magma",
                    extent=(0.0, spectrum.shape[1] * 256 / sample_rate, 0, 80))
        axes.set_title(title)
        axes.set_xlabel("seconds")
        axes.set_ylabel("mel band")
    return png_bytes(figure, dpi=64)


def marked_words(reference: str, heard: str) -> tuple[str, str]:
    """(reference HTML, heard HTML) with the alignment's errors marked: substitutions on both lines,
    deletions (missed words) on the reference, insertions (extra words) on the heard line."""
    said, got = [], []
    for op in word_alignment(reference, heard):
        if op.kind == "equal":
            said.append(html.escape(op.reference))
            got.append(html.escape(op.hypothesis))
        elif op.kind == "substitute":
            said.append(f'<span class="sub">{html.escape(op.reference)}</span>')
            said_word, heard_word = html.escape(op.reference), html.escape(op.hypothesis)
            got.append(f'<span class="sub" title="said: {said_word}">{heard_word}</span>')
        elif op.kind == "delete":
            said.append(f'<del class="miss">{html.escape(op.reference)}</del>')
        else:
            got.append(f'<ins class="extra">{html.escape(op.hypothesis)}</ins>')
    return " ".join(said), " ".join(got)


def render_report(*, title: str, verdict: str, gates: Sequence[tuple[str, bool, str]],
                  summary: Mapping[str, float], original_summary: Mapping[str, float],
                  utterances: Sequence[UtteranceView], notes: Sequence[str] = ()) -> str:
    """The whole page as text.

    Args:
        title: the heading.
        verdict: one line, e.g. "PASS (3 of 3 gates passed)".
        gates: (key, passed, message) per gate.
        summary: the resynthesis's `<metric>_mean` (and other) figures.
        original_summary: the same figures of the originals' own rows.
        utterances: one view per utterance, in order.
        notes: lines under the summary (which ASR, what the reference transcripts are, ...).
    """
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request, so no 404 in the console
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="{"pass" if verdict.startswith("PASS") else "fail"}">{html.escape(verdict)}</p>',
        _gates_table(gates), "<h2>Summary</h2>", _summary_table(summary, original_summary),
        *(f'<p class="note">{html.escape(note)}</p>' for note in notes),
        f"<h2>Utterances ({len(utterances)})</h2>",
        '<p class="note">Word errors: <span class="sub">substituted</span>, <del class="miss">missed</del> '
        '(in the reference), <ins class="extra">extra</ins> (heard but not said).</p>',
        *(_utterance_section(view) for view in utterances),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _gates_table(gates: Sequence[tuple[str, bool, str]]) -> str:
    if not gates:
        return "<p>No gates configured.</p>"
    rows = "".join(
        f'<tr><td>{html.escape(key)}</td><td class="{"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}'
        f"</td><td>{html.escape(message)}</td></tr>" for key, passed, message in gates)
    return f"<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>detail</th></tr>{rows}</table>"


def _summary_table(summary: Mapping[str, float], original_summary: Mapping[str, float]) -> str:
    rows = []
    for spec in EVALUATION_METRICS.values():
        resynthesis = summary.get(f"{spec.name}_mean")
        if resynthesis is None:
            continue
        original = original_summary.get(f"{spec.name}_mean")
        rows.append(
            f"<tr><td title=\"{html.escape(spec.help)}\">{html.escape(spec.title)}</td>"
            f"<td>{html.escape(spec.unit)}</td>"
            f"<td>{spec.direction}</td><td class=\"number\">{_number(original)}</td>"
            f"<td class=\"number\">{_number(resynthesis)}</td><td>{html.escape(spec.published)}</td></tr>")
    return ("<table><tr><th>metric</th><th>unit</th><th>direction</th><th>original (ceiling)</th>"
            f"<th>resynthesis</th><th>published systems</th></tr>{''.join(rows)}</table>")


def _utterance_section(view: UtteranceView) -> str:
    image = base64.b64encode(view.spectrogram_png).decode("ascii")
    name = html.escape(view.utterance)
    return "\n".join([
        f'<section class="utterance" id="{name}"><h3>{name} <small>(speaker {html.escape(view.speaker)})</small></h3>',
        '<div class="players">',
        f'<figure><figcaption>original</figcaption><audio controls preload="none" '
        f'src="{html.escape(view.original_audio)}"></audio></figure>',
        f'<figure><figcaption>resynthesis</figcaption><audio controls preload="none" '
        f'src="{html.escape(view.resynthesis_audio)}"></audio></figure>',
        "</div>",
        f'<img class="mel" alt="mel spectrograms of {name}: original and resynthesis" '
        f'src="data:image/png;base64,{image}">',
        _transcripts(view.texts),
        _utterance_figures(view.original, view.resynthesis),
        "</section>",
    ])


def _transcripts(texts: Mapping[str, Any]) -> str:
    if "reference" not in texts:
        return f'<p class="note">{html.escape(str(texts.get("asr_note", "no ASR")))}</p>'
    reference = texts["reference"]
    source = ("the ASR transcript of the original (no reference transcript)"
              if texts.get("reference_source") == REFERENCE_ASR_OF_ORIGINAL else "the corpus transcript")
    said, heard = marked_words(reference, texts.get("heard_resynthesis", ""))
    lines = [f"<p>Reference, {source}:<br><span class=\"words\">{said}</span></p>",
             f"<p>Heard in the resynthesis:<br><span class=\"words\">{heard}</span></p>"]
    if texts.get("reference_source") != REFERENCE_ASR_OF_ORIGINAL:
        _, heard_original = marked_words(reference, texts.get("heard_original", ""))
        lines.append(f"<p>Heard in the original:<br><span class=\"words\">{heard_original}</span></p>")
    return "\n".join(lines)


def _utterance_figures(original: Mapping[str, Any], resynthesis: Mapping[str, Any]) -> str:
    specs: list[MetricSpec] = [spec for spec in EVALUATION_METRICS.values() if spec.name in resynthesis]
    if not specs:
        return ""
    header = "".join(f"<th>{html.escape(spec.title)}</th>" for spec in specs)
    cells = {side: "".join(f'<td class="number">{_number(row.get(spec.name))}</td>' for spec in specs)
             for side, row in (("original", original), ("resynthesis", resynthesis))}
    return (f"<div class=\"wide\"><table><tr><th></th>{header}</tr><tr><td>original</td>{cells['original']}</tr>"
            f"<tr><td>resynthesis</td>{cells['resynthesis']}</tr></table></div>")


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.3f}"
