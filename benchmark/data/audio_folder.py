"""The ``audio-folder`` source: any folder of wav/flac files, LibriTTS's layout included.

LibriTTS (the SimVQ paper's audio corpus) is laid out ``<root>/<split>/<speaker>/<chapter>/*.wav``
with split folders such as ``train-clean-100`` and ``test-clean``. Point ``--data-dir`` at the root (or
at any folder of audio files) and this source decodes every file with ``soundfile``, mixes to mono,
resamples to the requested rate and cuts non-overlapping clips, dropping near-silent ones
(:mod:`benchmark.data.audio_io`).

Split, disjoint by speaker (the paper evaluates on unseen speakers):

* When the folder holds both ``train-*`` and ``test-*`` split folders (LibriTTS/LibriSpeech names),
  those decide; ``dev-*`` files (the validation split) and files outside split folders are not used.
* Otherwise the speaker is the folder after a split folder, or else the first folder level under the
  root (files directly in the root are each their own speaker), and a speaker is a test speaker when the first byte of sha256(name) is below
  ``TEST_FRACTION`` × 256: stable across machines and runs, independent of which other speakers exist.
  If that leaves a split empty (few speakers), the speaker with the smallest hash is moved across.

``test_groups`` is each test clip's speaker index (speakers sorted by name). Why the caps: LibriTTS's
train-clean-100 alone is 54 hours, 194,000 one-second clips (6 GB as int16); files are read in an order
shuffled by a hash of their path, so the first ``MAX_TRAIN_CLIPS`` / ``MAX_TEST_CLIPS`` clips
sample all speakers, and reading stops there. The cache key is the file listing's fingerprint (paths,
sizes, modification times) with the rate and clip length, so replacing a file rebuilds the dataset.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from benchmark.data.audio_io import AudioDecodeError, cut_clips, list_audio_files, load_mono, to_pcm16
from benchmark.data.cache import cached_dataset, files_fingerprint
from benchmark.data.dataset import Dataset, content_digest
from benchmark.data.sources import register_source

TEST_FRACTION = 0.2
MAX_TRAIN_CLIPS = 20_000   # 640 MB of int16 at 16 kHz, 1 s clips
MAX_TEST_CLIPS = 10_000
BUILD_VERSION = 1          # bump when the construction changes, so old caches are not reused
TRAIN_SPLIT_PREFIX, TEST_SPLIT_PREFIX, DEV_SPLIT_PREFIX = "train-", "test-", "dev-"


def load_audio_folder(data_dir, *, sample_rate: int = 16_000, clip_samples: int = 16_000,
                      cache_dir) -> Dataset:
    """The folder's clips, built once per file listing and cached; ValueError for an empty folder or a
    file that cannot be decoded."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"audio-folder: {root} is not a directory")
    files = list_audio_files(root)
    if not files:
        raise ValueError(f"audio-folder: no .wav or .flac files under {root}")
    load_mono(files[0], sample_rate)  # fail fast, before hashing a large listing, on undecodable audio
    key = (f"audio-folder-v{BUILD_VERSION}-{files_fingerprint(files)}-sr{sample_rate}-clip{clip_samples}"
           f"-max{MAX_TRAIN_CLIPS}.{MAX_TEST_CLIPS}")
    return cached_dataset(cache_dir, key, lambda: build_audio_folder(
        root, files, sample_rate=sample_rate, clip_samples=clip_samples))


def split_files(root: Path, files: list[Path]) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """``(train, test)``: {speaker: files} each, by LibriTTS split folders when both a ``train-*`` and a
    ``test-*`` folder hold audio, else by a hash of the speaker name."""
    located = [(path, *speaker_of(path.relative_to(root).parts)) for path in files]
    sides = {side for _, side, _ in located}
    if {TRAIN_SPLIT_PREFIX, TEST_SPLIT_PREFIX} <= sides:
        train: dict[str, list[Path]] = {}
        test: dict[str, list[Path]] = {}
        for path, side, speaker in located:
            if side in (TRAIN_SPLIT_PREFIX, TEST_SPLIT_PREFIX):  # dev-* and loose files are not used
                (train if side == TRAIN_SPLIT_PREFIX else test).setdefault(speaker, []).append(path)
        return train, test
    speakers: dict[str, list[Path]] = {}
    for path, _, speaker in located:
        speakers.setdefault(speaker, []).append(path)
    if len(speakers) < 2:
        raise ValueError(f"audio-folder: {root} needs at least two speakers (subfolders) or files to "
                         f"hold one out for testing; found {len(speakers)}")
    digests = {name: stable_hash(name) for name in speakers}
    threshold = int(TEST_FRACTION * 256)
    train, test = {}, {}
    for name, paths in speakers.items():
        (test if digests[name][0] < threshold else train)[name] = paths
    if not test or not train:  # move the speaker with the smallest hash across
        donor, receiver = (train, test) if not test else (test, train)
        moved = min(donor, key=lambda name: digests[name])
        receiver[moved] = donor.pop(moved)
    return train, test


def speaker_of(parts: tuple[str, ...]) -> tuple[str | None, str]:
    """``(split prefix or None, speaker)`` of a relative path: the folder after a split folder
    (``train-clean-100/19/198/x.wav`` -> ``("train-", "19")``), else the first level (a file in the
    root is its own speaker)."""
    prefixes = (TRAIN_SPLIT_PREFIX, TEST_SPLIT_PREFIX, DEV_SPLIT_PREFIX)
    for index, part in enumerate(parts[:-1]):
        if part.startswith(prefixes):
            side = next(prefix for prefix in prefixes if part.startswith(prefix))
            return side, parts[index + 1] if index + 2 < len(parts) else part
    return None, parts[0]


def stable_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def read_split(root: Path, speakers: dict[str, list[Path]], *, sample_rate: int, clip_samples: int,
               max_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """``(clips (N, clip_samples), speaker index (N,))`` from files in hash order, at most ``max_clips``."""
    names = sorted(speakers)
    files = [(path, index) for index, name in enumerate(names) for path in speakers[name]]
    files.sort(key=lambda item: stable_hash(str(item[0].relative_to(root))))
    clips, groups, total = [], [], 0
    for path, index in files:
        try:
            cut = cut_clips(load_mono(path, sample_rate), clip_samples)
        except AudioDecodeError as error:
            raise ValueError(f"audio-folder: {error}") from error
        cut = cut[: max_clips - total]
        clips.append(cut)
        groups.append(np.full(len(cut), index, dtype=np.int64))
        total += len(cut)
        if total >= max_clips:
            break
    return (np.concatenate(clips) if clips else np.zeros((0, clip_samples), np.float32),
            np.concatenate(groups) if groups else np.zeros(0, np.int64))


def build_audio_folder(root: Path, files: list[Path], *, sample_rate: int, clip_samples: int) -> Dataset:
    train_speakers, test_speakers = split_files(root, files)
    train, _ = read_split(root, train_speakers, sample_rate=sample_rate, clip_samples=clip_samples,
                          max_clips=MAX_TRAIN_CLIPS)
    test, groups = read_split(root, test_speakers, sample_rate=sample_rate, clip_samples=clip_samples,
                              max_clips=MAX_TEST_CLIPS)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"audio-folder: {root} gives {len(train)} train and {len(test)} test clips of "
                         f"{clip_samples} samples at {sample_rate} Hz (files too short or silent)")
    train_pcm, test_pcm = to_pcm16(train), to_pcm16(test)
    source = (f"{root}: {len(files)} audio files, {len(train_speakers)} train / {len(test_speakers)} test "
              f"speakers, resampled to {sample_rate} Hz, {clip_samples}-sample clips")
    return Dataset(name="audio-folder", source=source, train=train_pcm, test=test_pcm,
                   digest=content_digest(train_pcm, test_pcm), test_groups=torch.from_numpy(groups),
                   modality="audio", sample_rate=sample_rate)


@register_source("audio-folder", modality="audio", needs_data_dir=True,
                 description="a folder of wav/flac files (LibriTTS's <split>/<speaker>/<chapter> layout "
                             "included), split by speaker")
def _load(request, cache_dir):
    return load_audio_folder(request.data_dir, sample_rate=request.sample_rate,
                             clip_samples=request.clip_samples, cache_dir=cache_dir)
