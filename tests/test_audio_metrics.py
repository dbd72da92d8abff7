"""Audio metrics on known cases: a signal against itself scores the maximum, against noise the minimum."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.evaluation import audio_quality
from benchmark.evaluation.audio_artifacts import write_audio_artifacts

RATE = 16_000


def speech_like(clips: int = 2, seconds: float = 2.0) -> torch.Tensor:
    """A voiced, speech-like signal (B, 1, T): a 120-180 Hz harmonic series with a syllable-rate
    amplitude envelope and pauses, so PESQ detects utterances and DIO finds voicing."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = []
    for clip in range(clips):
        f0 = 120.0 + 60.0 * clip + 10.0 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 20))
        envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None)  # 4 syllables/s with gaps
        out.append(0.1 * voice * envelope)
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


@pytest.fixture(scope="module")
def signal() -> torch.Tensor:
    return speech_like()


def test_identical_signals_score_the_maximum(signal):
    metrics = audio_quality.audio_metrics(signal, signal.clone(), RATE)
    assert metrics["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["stoi"] == pytest.approx(1.0, abs=1e-4)
    assert 4.5 <= metrics["pesq"] <= 4.65  # wideband PESQ's ceiling is 4.64
    assert metrics["pesq_skipped"] == 0
    assert metrics["si_snr"] > 60
    assert metrics["vuv_f1"] == pytest.approx(1.0)


def test_white_noise_scores_low(signal):
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(signal.shape)).float() * 0.1
    metrics = audio_quality.audio_metrics(signal, noise, RATE)
    assert metrics["mel_distance"] > 1.0
    assert metrics["stoi"] < 0.5
    assert metrics["pesq"] < 1.5
    assert metrics["si_snr"] < 0
    assert metrics["vuv_f1"] < 0.5


def test_si_snr_is_scale_invariant_and_matches_the_formula(signal):
    assert audio_quality.si_snr(signal, 0.5 * signal) > 60
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal(signal.shape)).float()
    noise = noise - noise.mean(-1, keepdim=True)
    ref = signal - signal.mean(-1, keepdim=True)
    # noise scaled to 1/10 of the signal's power (nearly orthogonal to it): about 10 dB
    noise = noise * ref.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True) / math.sqrt(10)
    assert audio_quality.si_snr(signal, signal + noise) == pytest.approx(10.0, abs=0.5)


def test_silent_clips_are_skipped_by_pesq_and_counted(signal):
    originals = torch.cat([signal[:1], torch.zeros_like(signal[:1])])
    scores, skipped = audio_quality.pesq_scores(originals, originals.clone(), RATE)
    assert len(scores) == 1 and skipped == 1


def test_mel_matrix_covers_the_spectrum():
    matrix = audio_quality.mel_matrix(RATE)
    assert matrix.shape == (audio_quality.MEL_BANDS, audio_quality.MEL_N_FFT // 2 + 1)
    assert (matrix.sum(dim=1) > 0).all() and matrix.max() <= 1.0


def test_artifacts_write_wav_pairs_and_a_spectrogram(tmp_path, signal):
    import soundfile

    paths = write_audio_artifacts(signal, signal * 0.5, RATE, tmp_path / "artifacts", count=2)
    assert [p.name for p in paths] == ["clip0_original.wav", "clip0_reconstruction.wav",
                                       "clip1_original.wav", "clip1_reconstruction.wav",
                                       "spectrograms.png"]
    info = soundfile.info(str(paths[0]))
    assert info.samplerate == RATE and info.subtype == "PCM_16" and info.frames == signal.shape[-1]
    assert paths[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
