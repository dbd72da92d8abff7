"""Audio data: file decoding/resampling/clipping (audio_io), the audio-folder source on a LibriTTS-like
tree, and the espeak-ng speech source (skipped, with the reason, where espeak-ng is not installed)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile
import torch

from benchmark.data import audio_io
from benchmark.data.audio_folder import load_audio_folder, split_files
from benchmark.data.sources import load_dataset


def tone(seconds: float, rate: int, *, frequency: float = 220.0, seed: int = 0) -> np.ndarray:
    """A sine with a little noise at about -12 dBFS RMS: loud enough to pass the silence threshold."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * frequency * t) + 0.02 * noise).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_read_mixes_to_mono_resamples_and_cuts(tmp_path, suffix):
    left = tone(2.0, 22_050)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / f"clip{suffix}"
    soundfile.write(str(path), stereo, 22_050, subtype="PCM_16")
    samples, rate = audio_io.read_audio(path)
    assert rate == 22_050 and samples.shape == (len(left),) and samples.dtype == np.float32
    assert np.abs(samples - left).max() < 1e-3  # 16-bit round trip
    mono = audio_io.load_mono(path, 16_000)
    assert mono.shape == (32_000,)
    # the resampled tone keeps its level (RMS of a 0.3 sine is 0.212)
    assert abs(float(np.sqrt(np.mean(mono[1000:-1000] ** 2))) - 0.213) < 0.01
    clips = audio_io.cut_clips(np.concatenate([mono, np.zeros(16_000, np.float32)]), 16_000)
    assert clips.shape == (2, 16_000)  # the silent third second is dropped
    pcm = audio_io.to_pcm16(clips)
    assert pcm.dtype == torch.int16 and pcm.shape == (2, 1, 16_000)
    assert torch.allclose(audio_io.pcm16_to_float(pcm)[:, 0], torch.from_numpy(clips), atol=1e-4)


def test_undecodable_file_is_a_value_error(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="cannot decode"):
        audio_io.read_audio(path)


def write_libritts(root, layout: dict[str, list[str]], *, seconds: float = 2.5) -> None:
    """``{split: [speaker, ...]}`` -> ``root/split/speaker/100/speaker_100_000001_000000.wav`` (or .flac)."""
    for split, speakers in layout.items():
        for number, speaker in enumerate(speakers):
            folder = root / split / speaker / "100"
            folder.mkdir(parents=True)
            suffix = ".flac" if number % 2 else ".wav"
            soundfile.write(str(folder / f"{speaker}_100_000001_000000{suffix}"),
                            tone(seconds, 24_000, frequency=150.0 + 40 * number, seed=number), 24_000)


def test_audio_folder_uses_libritts_splits_and_caches(tmp_path):
    root = tmp_path / "LibriTTS"
    write_libritts(root, {"train-clean-100": ["19", "26", "27"], "test-clean": ["61", "121"],
                          "dev-clean": ["84"]})
    cache = tmp_path / "cache"
    dataset = load_dataset("audio-folder", data_dir=str(root), sample_rate=16_000, clip_samples=8_000,
                           cache_dir=str(cache))
    assert dataset.modality == "audio" and dataset.sample_rate == 16_000
    # 2.5 s per file = 5 half-second clips; dev-clean is not used
    assert dataset.train.shape == (15, 1, 8_000) and dataset.test.shape == (10, 1, 8_000)
    assert dataset.train.dtype == torch.int16
    assert sorted(dataset.test_groups.unique().tolist()) == [0, 1]
    again = load_audio_folder(root, sample_rate=16_000, clip_samples=8_000, cache_dir=cache)
    assert again.digest == dataset.digest and len(list(cache.glob("audio-folder-*.pt"))) == 1


def test_audio_folder_without_split_folders_splits_by_speaker(tmp_path):
    root = tmp_path / "speakers"
    write_libritts(root, {".": [f"speaker{i}" for i in range(8)]}, seconds=1.0)
    train, test = split_files(root.resolve(), audio_io.list_audio_files(root.resolve()))
    assert train and test and not set(train) & set(test)
    assert set(train) | set(test) == {f"speaker{i}" for i in range(8)}


def test_audio_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .wav or .flac files"):
        load_audio_folder(empty, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("audio-folder", cache_dir=str(tmp_path / "cache"))
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "x.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(ValueError, match="cannot decode"):
        load_audio_folder(broken, cache_dir=tmp_path / "cache")


def test_speech_without_espeak_names_the_install_command(monkeypatch, tmp_path):
    from benchmark.data import speech

    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(speech.SpeechSynthesisError, match="apt-get install espeak-ng"):
        speech.load_speech(cache_dir=tmp_path, sentences_per_voice=1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_speech_builds_a_tiny_corpus_split_by_voice(tmp_path):
    from benchmark.data.speech import TEST_VOICES, VOICES, load_speech

    dataset = load_speech(cache_dir=tmp_path, sentences_per_voice=1, clip_samples=8_000)
    assert dataset.name == "speech" and dataset.modality == "audio" and dataset.sample_rate == 16_000
    assert dataset.train.dtype == torch.int16 and dataset.train.shape[1:] == (1, 8_000)
    assert dataset.test.shape[1:] == (1, 8_000) and len(dataset.train) > len(dataset.test) > 0
    assert set(dataset.test_groups.tolist()) == set(TEST_VOICES)
    assert len(VOICES) - len(TEST_VOICES) >= 3 * len(TEST_VOICES) / 2
    assert load_speech(cache_dir=tmp_path, sentences_per_voice=1, clip_samples=8_000).digest \
        == dataset.digest
