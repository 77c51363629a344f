"""A synthetic multi-speaker corpus for the demo, spoken by espeak-ng.

Run: unitvox demo-corpus --out runs/demo-corpus

Each speaker is an espeak-ng voice variant with its own pitch and speaking
rate. Files follow the LibriSpeech convention of one folder per speaker,
``<out>/<speaker_id>/<speaker_id>-<NNNN>.wav``, because the pipeline takes the
speaker id from the first path component. Utterance 0000 of every speaker is a
long reading (several sentences with pauses between them) so that the
pause-splitting stage has something to split.

Voices, sentences and noise follow from the seed. The audio itself also
depends on what espeak-ng synthesised earlier in the same process (it keeps a
pitch-flutter phase in a static variable that no API call resets), so a full
run in a fresh process is byte-reproducible but a partial rerun may differ from
it by a few samples per file.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

SENTENCES = (
    "The old lighthouse keeper climbed the stairs every evening.",
    "Please put the blue folder back on the top shelf.",
    "A strong wind blew the leaves across the empty car park.",
    "She counted seven boats drifting slowly past the harbour wall.",
    "Fresh bread was cooling on the kitchen table.",
    "Nobody expected the meeting to finish before lunch.",
    "The train to the coast leaves at a quarter past nine.",
    "He painted the garden fence a bright shade of green.",
    "Our neighbours keep bees and sell honey at the market.",
    "The library will be closed for repairs until next month.",
    "Turn left at the bakery and walk towards the river.",
    "A small grey cat watched the pigeons from the window.",
    "Heavy rain is expected in the north later this afternoon.",
    "The children built a tall tower out of wooden blocks.",
    "Could you remind me to water the plants tomorrow?",
    "The museum has a famous collection of ancient maps.",
    "Every winter the lake freezes over for a few weeks.",
    "The orchestra tuned their instruments before the concert began.",
    "I found an old photograph hidden inside the book.",
    "The bridge was built more than two hundred years ago.",
    "Farmers in the valley grow apples, pears and plums.",
    "He forgot his umbrella and walked home in the storm.",
    "The new bicycle lane runs all the way to the station.",
    "Warm soup is the best thing on a cold day.",
    "The scientist wrote her results in a small notebook.",
    "Two owls were calling to each other across the field.",
    "The shop on the corner sells newspapers and stamps.",
    "We watched the sun go down behind the hills.",
    "The engine made a strange noise and then stopped.",
    "Most of the village came out to see the parade.",
    "A gentle breeze carried the smell of the sea.",
    "The teacher asked everyone to read the first chapter aloud.",
    "Thick fog covered the road early this morning.",
    "The baker starts work long before the sun rises.",
    "My grandfather still writes letters with a fountain pen.",
    "The football match was cancelled because of the snow.",
    "Bright lanterns hung from every tree in the square.",
    "She learned to play the piano when she was six.",
    "The ferry crossed the bay in less than an hour.",
    "Quiet voices drifted up from the room below.",
)

# Variants named in espeak-ng-data/voices/!v; the klatt and novelty ones are
# left out because their noisy excitation has no clear pitch.
_MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "m7")
_FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029")

_SPEECH_PEAK_DBFS = -3.0
_NOISE_RMS_DBFS = -60.0
_PAUSE_SECONDS_RANGE = (0.7, 0.9)
_LONG_SECONDS_RANGE = (20.0, 28.0)
_LONG_SECONDS_MAX = 30.0

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # otherwise a bad data path calls exit()
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_PARAMETER_RANGE = 4
_POSITION_CHARACTER = 1
_CHARS_UTF8 = 1
# int callback(short *samples, int sample_count, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class SpeakerVoice:
    """How one synthetic speaker sounds.

    Attributes:
        speaker_id: Folder and file-name prefix, e.g. ``"spk03"``.
        voice_name: espeak-ng voice with a variant, e.g. ``"en-us+f2"``.
        rate_wpm: Speaking rate in words per minute.
        pitch: espeak-ng base pitch, 0 to 100 (50 is the voice's default).
        pitch_range: espeak-ng intonation range, 0 (monotone) to 100.
    """

    speaker_id: str
    voice_name: str
    rate_wpm: int
    pitch: int
    pitch_range: int


def _declare_signatures(library: ctypes.CDLL) -> None:
    """Gives ctypes the C argument types, so that size_t and pointers are passed at full width."""
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    if hasattr(library, "espeak_ng_SetRandSeed"):
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]


class _Espeak:
    """The process-wide espeak-ng library; every call holds the lock."""

    def __init__(self, library_path: str, data_path: str):
        try:
            self.library = ctypes.CDLL(library_path)
        except OSError as error:
            raise RuntimeError(f"cannot load the espeak-ng library {library_path}: {error}") from error
        _declare_signatures(self.library)
        self.sample_rate = self.library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        # espeak-ng reports a missing data folder with 0, not the documented -1.
        if self.sample_rate <= 0:
            raise RuntimeError(
                f"espeak-ng library {library_path} failed to initialise with data path {data_path}"
            )
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        # Kept on the instance: ctypes would free a temporary callback while C still calls it.
        self.callback = _SYNTH_CALLBACK(self._collect)
        self.library.espeak_SetSynthCallback(self.callback)

    def _collect(self, samples, sample_count: int, events) -> int:
        if sample_count > 0 and samples:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(sample_count,)).copy())
        return 0  # 0 means carry on; 1 would abort the synthesis

    def _set_voice(self, voice: SpeakerVoice) -> None:
        if self.library.espeak_SetVoiceByName(voice.voice_name.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice.voice_name!r}")
        for parameter, value in (
            (_PARAMETER_RATE, voice.rate_wpm),
            (_PARAMETER_PITCH, voice.pitch),
            (_PARAMETER_RANGE, voice.pitch_range),
        ):
            if self.library.espeak_SetParameter(parameter, value, 0) != 0:
                raise RuntimeError(f"espeak-ng refused parameter {parameter} = {value}")

    def speak(self, text: str, voice: SpeakerVoice, random_seed: int) -> np.ndarray:
        """Synthesises one text.

        Args:
            text: What to say.
            voice: Which voice says it.
            random_seed: Seeds espeak-ng's breath noise, so breathy voices repeat.

        Returns:
            Samples as float32 in [-1, 1], shape ``(T,)``, at ``self.sample_rate``.
        """
        encoded = text.encode("utf-8")
        with self.lock:
            self._set_voice(voice)
            if hasattr(self.library, "espeak_ng_SetRandSeed"):  # older builds lack it
                self.library.espeak_ng_SetRandSeed(random_seed)
            self.chunks = []
            status = self.library.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POSITION_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self.library.espeak_Synchronize()
            chunks, self.chunks = self.chunks, []
        if status != 0 or not chunks:
            raise RuntimeError(f"espeak-ng failed (status {status}) to speak {text!r}")
        return np.concatenate(chunks).astype(np.float32) / 32768.0


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    """Loads and initialises espeak-ng on first use; later calls reuse it."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            try:
                import espeakng_loader
            except ImportError as error:
                raise RuntimeError("the demo corpus needs the espeakng-loader package") from error
            _ENGINE = _Espeak(espeakng_loader.get_library_path(), espeakng_loader.get_data_path())
        return _ENGINE


def speaker_voices(speakers: int, seed: int = 0) -> list[SpeakerVoice]:
    """Draws distinct voices, alternating male and female variants.

    Args:
        speakers: How many voices.
        seed: Picks accents, variants, pitch and rate.

    Returns:
        One voice per speaker, ids ``spk00``, ``spk01``, ...
    """
    rng = np.random.default_rng([seed, 0x5EED])
    male = [str(variant) for variant in rng.permutation(_MALE_VARIANTS)]
    female = [str(variant) for variant in rng.permutation(_FEMALE_VARIANTS)]
    voices = []
    for index in range(speakers):
        variants = male if index % 2 == 0 else female
        variant = variants[(index // 2) % len(variants)]
        accent = _ACCENTS[int(rng.integers(len(_ACCENTS)))]
        voices.append(SpeakerVoice(
            speaker_id=f"spk{index:02d}",
            voice_name=f"{accent}+{variant}",
            rate_wpm=int(rng.integers(140, 186)),
            pitch=int(rng.integers(35, 66)),
            pitch_range=int(rng.integers(35, 76)),
        ))
    return voices


def _long_reading(
    engine: _Espeak, voice: SpeakerVoice, sentences: list[str], rng: np.random.Generator
) -> np.ndarray:
    """Reads sentences with pauses between them until a drawn length is reached.

    A sentence that would push the reading past the longest allowed length is
    skipped in favour of a later, shorter one.
    """
    target_samples = rng.uniform(*_LONG_SECONDS_RANGE) * engine.sample_rate
    longest_samples = _LONG_SECONDS_MAX * engine.sample_rate
    pieces: list[np.ndarray] = []
    for sentence in sentences:
        total_samples = sum(len(piece) for piece in pieces)
        if total_samples >= target_samples:
            break
        pause = np.zeros(int(rng.uniform(*_PAUSE_SECONDS_RANGE) * engine.sample_rate), np.float32)
        speech = engine.speak(sentence, voice, int(rng.integers(2**31)))
        addition = [pause, speech] if pieces else [speech]
        if total_samples + sum(len(piece) for piece in addition) <= longest_samples:
            pieces += addition
    return np.concatenate(pieces)


def _add_noise_floor(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normalises the speech peak and adds faint white noise, so silence is not digital zero."""
    peak = float(np.max(np.abs(speech)))
    gain = 10 ** (_SPEECH_PEAK_DBFS / 20) / peak if peak > 0 else 1.0
    noise = rng.standard_normal(len(speech)).astype(np.float32) * 10 ** (_NOISE_RMS_DBFS / 20)
    return np.clip(speech * gain + noise, -1.0, 1.0)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM through a temporary file, so an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        soundfile.write(temporary, audio, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _speaker_sentences(speaker_index: int, seed: int, count: int) -> list[str]:
    """A speaker's own reading order, repeating the list if more sentences are needed."""
    order = np.random.default_rng([seed, speaker_index]).permutation(len(SENTENCES))
    return [SENTENCES[order[position % len(order)]] for position in range(count)]


def _synthesise_speaker(
    out_dir: Path, voice: SpeakerVoice, speaker_index: int, utterances: int, seed: int
) -> list[Path]:
    """Writes one speaker's missing files; utterance 0 is the long reading."""
    # Enough sentences for the long reading even at the fastest rate, after the short ones.
    long_sentence_count = 16
    sentences = _speaker_sentences(speaker_index, seed, utterances - 1 + long_sentence_count)
    paths = []
    for utterance in range(utterances):
        path = out_dir / voice.speaker_id / f"{voice.speaker_id}-{utterance:04d}.wav"
        paths.append(path)
        if path.exists():
            continue
        engine = _engine()  # only now, so a complete corpus needs no espeak-ng
        rng = np.random.default_rng([seed, speaker_index, utterance])
        if utterance == 0:
            speech = _long_reading(engine, voice, sentences[utterances - 1:], rng)
        else:
            speech = engine.speak(sentences[utterance - 1], voice, int(rng.integers(2**31)))
        _write_wav(path, _add_noise_floor(speech, rng), engine.sample_rate)
    return paths


def synthesise_corpus(
    out_dir: str | Path, *, speakers: int = 6, utterances_per_speaker: int = 8, seed: int = 0
) -> list[Path]:
    """Writes a small multi-speaker English corpus as 16-bit mono WAV files.

    Files already present are kept as they are, so a rerun only fills gaps.

    Args:
        out_dir: Folder to write ``<speaker_id>/<speaker_id>-<NNNN>.wav`` under.
        speakers: Number of distinct voices.
        utterances_per_speaker: Files per speaker; the first is a 20 to 30 s
            reading with pauses of about 0.8 s, the rest are single sentences.
        seed: Picks voices, sentences, pauses and noise.

    Returns:
        Every corpus file, written now or before, sorted.

    Raises:
        ValueError: If ``speakers`` or ``utterances_per_speaker`` is below 1.
        RuntimeError: If a file is missing and espeak-ng cannot be loaded or initialised.
    """
    if speakers < 1 or utterances_per_speaker < 1:
        raise ValueError(
            f"need at least one speaker and one utterance, got speakers={speakers}, "
            f"utterances_per_speaker={utterances_per_speaker}"
        )
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for speaker_index, voice in enumerate(speaker_voices(speakers, seed)):
        paths += _synthesise_speaker(out_dir, voice, speaker_index, utterances_per_speaker, seed)
    return sorted(paths)
