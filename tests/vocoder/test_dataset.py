"""Training windows decode only their own samples, and equal the same window of the whole segment."""

import numpy as np
import soundfile

from unitvox.store import LocalStore
from unitvox.vocoder.dataset import AudioReader, Item, UnitAudioDataset

HOP = 320


def _dataset(tmp_path, lengths, *, crop=True, reference_samples=0):
    rng = np.random.default_rng(0)
    items = []
    for index, seconds in enumerate(lengths):
        wave = (0.3 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        key = f"prepare/audio/s/{index}.flac"
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(tmp_path / key, wave, 16000, subtype="PCM_16")
        frames = len(wave) // HOP + 2  # units may outrun the audio by a frame or two
        items.append(Item(f"seg{index}", "s", key, tuple(int(u) for u in rng.integers(0, 50, frames))))
    reader = AudioReader(LocalStore(str(tmp_path)))
    dataset = UnitAudioDataset(items, reader, frames=25, hop=HOP, pad_unit=50, speakers={"s": 0}, crop=crop,
                               reference_samples=reference_samples)
    return dataset, reader


def _full(reader, item):
    return reader.read(item.audio_key)


def test_a_cropped_window_is_the_same_window_of_the_whole_segment(tmp_path):
    dataset, reader = _dataset(tmp_path, [3.0, 1.7, 0.4])
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, item in enumerate(dataset.items):
            example = dataset[index]
            wave, units = _full(reader, item), np.asarray(item.units)
            valid = int(example["valid"])
            window = example["audio"].numpy()[:valid]
            # Where the window sits: the units it carries are the segment's units from that frame on.
            starts = [s for s in range(len(wave) // HOP) if np.array_equal(units[s : s + valid // HOP],
                                                                           example["units"].numpy()[: valid // HOP])]
            assert any(np.array_equal(wave[s * HOP : s * HOP + valid], window) for s in starts)
            assert valid == min(25, len(wave) // HOP) * HOP
            assert (example["units"].numpy()[valid // HOP :] == 50).all()


def test_a_reference_clip_is_a_stretch_of_another_segment(tmp_path):
    dataset, reader = _dataset(tmp_path, [3.0, 2.5], reference_samples=16000)
    clip = dataset[0]["reference"].numpy()
    other = _full(reader, dataset.items[1])
    assert len(clip) == 16000
    assert any(np.array_equal(other[s : s + 16000], clip) for s in range(len(other) - 16000 + 1))
    assert reader.length(dataset.items[1].audio_key) == len(other)
