"""evaluate/report.html: self-contained, offline, and clean in a real headless browser."""

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile

from system_tools import needs
from unitvox.evaluation.html_report import UtteranceView, marked_words, mel_comparison_png, render_report
from unitvox.evaluation.scoring import REFERENCE_ASR_OF_ORIGINAL, REFERENCE_TRANSCRIPT

RATE = 16000


class _Sources(HTMLParser):
    """Every src of <audio> and <img>, and every href, of a page."""

    def __init__(self):
        super().__init__()
        self.audio, self.images, self.links = [], [], []

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        if tag == "audio":
            self.audio.append(attributes.get("src"))
        elif tag == "img":
            self.images.append(attributes.get("src"))
        if "href" in attributes:
            self.links.append(attributes["href"])


def _sources(text: str) -> _Sources:
    parser = _Sources()
    parser.feed(text)
    return parser


def test_marked_words_mark_substitutions_misses_and_extras():
    said, heard = marked_words("the cat sat on the mat", "the bat sat on mat")
    assert said == 'the <span class="sub">cat</span> sat on <del class="miss">the</del> mat'
    assert heard == 'the <span class="sub" title="said: cat">bat</span> sat on mat'
    assert marked_words("one two", "one two three")[1] == 'one two <ins class="extra">three</ins>'
    assert marked_words("a <b>", "a <b>") == ("a b", "a b")  # normalised, and never raw markup


@pytest.fixture
def report(tmp_path):
    """A report.html over two utterances with its audio files beside it."""
    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    views = []
    for index, source in enumerate((REFERENCE_ASR_OF_ORIGINAL, REFERENCE_TRANSCRIPT)):
        original = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
        resynthesis = (0.05 * rng.standard_normal(RATE)).astype(np.float32)
        paths = []
        for side, wave in (("original", original), ("resynthesis", resynthesis)):
            path = f"audio/utt{index}.{side}.wav"
            soundfile.write(tmp_path / path, wave, RATE)
            paths.append(path)
        texts = {"reference": "the cat sat on the mat", "reference_source": source,
                 "heard_original": "the cat sat on the mat", "heard_resynthesis": "the bat sat on mat today"}
        views.append(UtteranceView(f"utt{index}", "s1", *paths, mel_comparison_png(original, resynthesis, RATE),
                                   texts, {"wer": 0.0, "stoi": 1.0}, {"wer": 0.5, "stoi": 0.4}))
    text = render_report(
        title="Vocoder evaluation <test>", verdict="FAIL (1 of 2 gates failed)",
        gates=[("wer_max", False, "wer_mean = 0.5 is above the maximum 0.3"), ("stoi_min", True, "ok")],
        summary={"wer_mean": 0.5, "stoi_mean": 0.4, "count": 2}, original_summary={"wer_mean": 0.0, "stoi_mean": 1.0},
        utterances=views, notes=["ASR: pocketsphinx (chosen for language 'en')"])
    page = tmp_path / "report.html"
    page.write_text(text)
    return page


def test_the_page_is_self_contained(report):
    text = report.read_text()
    sources = _sources(text)
    assert len(sources.audio) == 4
    assert all((report.parent / src).is_file() for src in sources.audio)
    assert len(sources.images) == 2 and all(src.startswith("data:image/png;base64,") for src in sources.images)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from the network
    assert "<script" not in text
    assert "Vocoder evaluation &lt;test&gt;" in text
    assert "original (ceiling)" in text and "lower is better" in text
    assert "the ASR transcript of the original" in text and "the corpus transcript" in text


@needs("chromium")
def test_the_page_loads_in_headless_chromium_without_console_errors(report, tmp_path):
    import headless_chromium

    loaded = headless_chromium.load(report)
    assert not loaded.console, loaded.console
    rendered = _sources(loaded.dom)
    assert len(rendered.audio) == 4
    assert all((report.parent / src).is_file() for src in rendered.audio)
    shot = headless_chromium.screenshot(report, tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@needs("chromium")
def test_the_browser_check_sees_console_errors(tmp_path):
    import headless_chromium

    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<script>console.error("planted failure")</script></body></html>')
    assert any("planted failure" in line for line in headless_chromium.load(page).console)
