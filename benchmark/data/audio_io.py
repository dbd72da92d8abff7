"""Reading audio files into the fixed int16 clips every audio source returns.

One path for every audio source (``speech``, ``audio-folder``), so they decode, resample and cut alike:

    read_audio (wav/flac via ``soundfile``, any channel count -> mono mean, float32 in [-1, 1])
    -> resample (scipy's polyphase ``resample_poly``; torchaudio has no wheel for this torch, 2.14.1)
    -> cut_clips (non-overlapping fixed-length clips; the tail shorter than a clip is dropped)
    -> drop near-silent clips (RMS below ``MIN_CLIP_RMS``)
    -> to_pcm16 (int16 (N, 1, clip_samples), the Dataset's audio layout)

Why drop near-silent clips: pauses between sentences and leading/trailing silence carry nothing to
reconstruct, and a clip of zeros would be encoded as a handful of identical tokens, inflating the
"easy" part of every metric (and PESQ cannot score a clip without an utterance). The threshold,
``MIN_CLIP_RMS = 0.01`` (-40 dBFS), keeps quiet speech (espeak-ng speaks at about -20 dBFS RMS,
LibriTTS utterances at -25 to -30 dBFS) and drops clips that are silence or room noise.

Why int16: the datasets are stored and cached as 16-bit PCM (what wav files hold), half the size of
float32; :func:`pcm16_to_float` gives the models' float input back.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

#: Clips whose RMS (full scale = 1.0) is below this are dropped: -40 dBFS, silence or room noise.
MIN_CLIP_RMS = 0.01
#: The file suffixes the audio sources read (what libsndfile decodes on every platform).
AUDIO_SUFFIXES = (".wav", ".flac")
PCM16_SCALE = 32767.0


class AudioDecodeError(ValueError):
    """A file that ``soundfile`` cannot decode (not audio, truncated, or an unsupported codec)."""


def read_audio(source) -> tuple[np.ndarray, int]:
    """``(mono float32 samples (T,), sample_rate)`` of a wav/flac path or binary file object.

    Multi-channel audio is mixed to mono by averaging the channels (what a mono codec hears)."""
    import soundfile

    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        raise AudioDecodeError(f"cannot decode audio {describe(source)}: {error}") from error
    return samples.mean(axis=1).astype(np.float32), int(rate)


def describe(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``samples`` at ``to_rate``: polyphase filtering by the reduced ratio (e.g. 22,050 -> 16,000 Hz is
    up 320, down 441), scipy's default Kaiser window; a no-op when the rates are equal."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    divisor = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(samples, to_rate // divisor, from_rate // divisor).astype(np.float32)


def load_mono(source, sample_rate: int) -> np.ndarray:
    """A file's samples, mixed to mono and resampled to ``sample_rate``: float32 (T,)."""
    samples, rate = read_audio(source)
    return resample(samples, rate, sample_rate)


def cut_clips(samples: np.ndarray, clip_samples: int, *, min_rms: float = MIN_CLIP_RMS) -> np.ndarray:
    """Non-overlapping ``clip_samples``-long clips of ``samples`` from its start, the near-silent ones
    (RMS < ``min_rms``) dropped: float32 (n, clip_samples), n possibly 0."""
    if clip_samples < 1:
        raise ValueError(f"clip_samples must be >= 1, got {clip_samples}")
    count = len(samples) // clip_samples
    clips = np.asarray(samples[: count * clip_samples], dtype=np.float32).reshape(count, clip_samples)
    rms = np.sqrt(np.mean(np.square(clips, dtype=np.float64), axis=1)) if count else np.zeros(0)
    return clips[rms >= min_rms]


def to_pcm16(clips: np.ndarray) -> torch.Tensor:
    """float clips (N, T) in [-1, 1] -> int16 tensor (N, 1, T); out-of-range samples are clipped."""
    clips = np.asarray(clips, dtype=np.float32).reshape(len(clips), -1)
    pcm = np.round(np.clip(clips, -1.0, 1.0) * PCM16_SCALE).astype(np.int16)
    return torch.from_numpy(pcm).unsqueeze(1)


def pcm16_to_float(pcm: torch.Tensor) -> torch.Tensor:
    """int16 PCM -> float32 in [-1, 1], same shape: the codec's input range."""
    return pcm.to(torch.float32) / PCM16_SCALE


def write_wav(path, samples, sample_rate: int) -> Path:
    """Write float samples (T,) or (1, T) in [-1, 1] as a 16-bit PCM mono wav file; returns the path."""
    import soundfile

    samples = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples,
                         dtype=np.float32).reshape(-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(samples, -1.0, 1.0), int(sample_rate), subtype="PCM_16")
    return path


def list_audio_files(root) -> list[Path]:
    """Every wav/flac file under ``root`` (recursively, any case of suffix), sorted by path."""
    root = Path(root)
    return sorted(path for path in root.rglob("*")
                  if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
