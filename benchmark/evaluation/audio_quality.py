"""Reconstruction quality of audio, with the metrics (and, where one exists, the library) the field uses.

The SimVQ paper's audio table (after WavTokenizer and Vocos) reports UTMOS, PESQ, STOI and V/UV F1.
Every function takes float waveforms in [-1, 1], either one clip ``(T,)`` or a batch ``(B, 1, T)`` /
``(B, T)``, and a sample rate; batched functions return the mean over clips.

* ``mel_distance``: mean absolute difference of log mel magnitudes (HiFi-GAN's and Vocos's mel loss):
  n_fft 1024, hop 256, Hann window 1024, 80 HTK mel bands from 0 Hz to Nyquist, magnitude (not power),
  natural log of max(mel, 1e-5). 0 for identical signals. Built from ``torch.stft`` and a mel matrix
  computed here (torchaudio has no wheel for this torch; librosa would pull in numba).
* ``stoi``: short-time objective intelligibility (Taal et al. 2011), ``pystoi`` (resamples to 10 kHz
  internally); 1 for identical signals, near 0 for unrelated ones.
* ``pesq``: wideband PESQ (ITU-T P.862.2), the ``pesq`` package, mode ``wb`` at 16 kHz (other rates are
  resampled to 16 kHz first); -0.5 to 4.64. Clips where PESQ finds no utterance (silence) raise
  ``NoUtterancesError``: they are skipped and counted (``pesq_skipped``), never scored.
* ``si_snr``: scale-invariant signal-to-noise ratio in dB (Le Roux et al., "SDR - half-baked or well
  done?", ICASSP 2019): both signals made zero-mean, target = <est, ref> ref / ||ref||^2,
  10 log10(||target||^2 / ||est - target||^2). Not in the paper's table; a phase-sensitive check that
  the perceptual metrics do not give.
* ``vuv_f1``: F1 of the reconstruction's voiced/unvoiced decisions against the original's (voiced =
  positive class), frames of 10 ms, voicing from WORLD's DIO pitch tracker (``pyworld.dio``, 50-800 Hz:
  fast, ~10 ms a clip; Harvest is more accurate but 20x slower). Vocos computes V/UV F1 with CREPE's
  periodicity (torchcrepe); the numbers are comparable within vqbench, not to the paper's.

UTMOS (a learned MOS predictor) is not computed: its weights cannot be downloaded here.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

MEL_N_FFT, MEL_HOP, MEL_BANDS, MEL_LOG_FLOOR = 1024, 256, 80, 1e-5
PESQ_RATE = 16_000
VUV_FRAME_MS, VUV_F0_FLOOR, VUV_F0_CEIL = 10.0, 50.0, 800.0


def as_batch(waveforms) -> np.ndarray:
    """``(T,)``, ``(B, T)`` or ``(B, 1, T)`` tensor/array -> float64 numpy ``(B, T)``."""
    if isinstance(waveforms, torch.Tensor):
        waveforms = waveforms.detach().cpu().numpy()
    array = np.asarray(waveforms, dtype=np.float64)
    if array.ndim == 3:
        if array.shape[1] != 1:
            raise ValueError(f"expected mono waveforms (B, 1, T), got shape {array.shape}")
        array = array[:, 0]
    return array[None] if array.ndim == 1 else array


def paired(originals, reconstructions) -> tuple[np.ndarray, np.ndarray]:
    ref, est = as_batch(originals), as_batch(reconstructions)
    if ref.shape != est.shape:
        raise ValueError(f"originals {ref.shape} and reconstructions {est.shape} differ in shape")
    return ref, est


@lru_cache(maxsize=8)
def mel_matrix(sample_rate: int, n_fft: int = MEL_N_FFT, bands: int = MEL_BANDS) -> torch.Tensor:
    """HTK-scale triangular mel filterbank ``(bands, n_fft // 2 + 1)``, 0 Hz to Nyquist, unnormalized."""
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), bands + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling))).float()


def log_mel(waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(B, T)`` float -> ``(B, bands, frames)`` natural-log mel magnitudes (settings in the docstring)."""
    spectrum = torch.stft(waveforms, MEL_N_FFT, hop_length=MEL_HOP, window=torch.hann_window(MEL_N_FFT),
                          center=True, return_complex=True).abs()
    return torch.log(torch.clamp(mel_matrix(sample_rate) @ spectrum, min=MEL_LOG_FLOOR))


def mel_distance(originals, reconstructions, sample_rate: int) -> float:
    """Mean |log mel(original) - log mel(reconstruction)| over bands, frames and clips."""
    ref, est = paired(originals, reconstructions)
    ref_mel = log_mel(torch.from_numpy(ref).float(), sample_rate)
    est_mel = log_mel(torch.from_numpy(est).float(), sample_rate)
    return float((ref_mel - est_mel).abs().mean())


def si_snr(originals, reconstructions, eps: float = 1e-8) -> float:
    """Mean scale-invariant SNR in dB (Le Roux et al. 2019) over clips."""
    ref, est = paired(originals, reconstructions)
    ref = ref - ref.mean(axis=1, keepdims=True)
    est = est - est.mean(axis=1, keepdims=True)
    scale = (est * ref).sum(axis=1, keepdims=True) / ((ref ** 2).sum(axis=1, keepdims=True) + eps)
    target = scale * ref
    noise = est - target
    ratio = ((target ** 2).sum(axis=1) + eps) / ((noise ** 2).sum(axis=1) + eps)
    return float(np.mean(10.0 * np.log10(ratio)))


def stoi(originals, reconstructions, sample_rate: int) -> float:
    """Mean STOI (pystoi, not extended) over clips."""
    from pystoi import stoi as pystoi_stoi

    ref, est = paired(originals, reconstructions)
    return float(np.mean([pystoi_stoi(r, e, sample_rate, extended=False) for r, e in zip(ref, est)]))


def pesq_scores(originals, reconstructions, sample_rate: int) -> tuple[list[float], int]:
    """``(wideband PESQ of every clip with an utterance, number of clips skipped)``: silent clips and clips
    shorter than the 1/4 s PESQ needs are skipped and counted."""
    from pesq import NoUtterancesError, pesq

    from benchmark.data.audio_io import resample

    ref, est = paired(originals, reconstructions)
    scores, skipped = [], 0
    for r, e in zip(ref, est):
        if not np.any(r) or not np.any(e) or len(r) < sample_rate // 4:  # silence, or too short for PESQ
            skipped += 1
            continue
        if sample_rate != PESQ_RATE:
            r, e = resample(r, sample_rate, PESQ_RATE), resample(e, sample_rate, PESQ_RATE)
        try:
            scores.append(float(pesq(PESQ_RATE, np.asarray(r, np.float64), np.asarray(e, np.float64), "wb")))
        except NoUtterancesError:
            skipped += 1
    return scores, skipped


def pesq_wb(originals, reconstructions, sample_rate: int) -> float:
    """Mean wideband PESQ over clips with an utterance; NaN when every clip was silent."""
    scores, _ = pesq_scores(originals, reconstructions, sample_rate)
    return float(np.mean(scores)) if scores else math.nan


@lru_cache(maxsize=1)
def _pyworld():
    """WORLD's compiled extension. pyworld 0.3.5's ``__init__`` imports ``pkg_resources`` only to read
    its own version, and setuptools >= 81 no longer ships that module; the extension itself needs
    nothing, so when the package import fails it is loaded from the installed file directly."""
    try:
        return importlib.import_module("pyworld")
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            raise
    spec = importlib.util.find_spec("pyworld")
    folder = Path(next(iter(spec.submodule_search_locations)))
    library = next(folder.glob("pyworld*.so"), None) or next(folder.glob("pyworld*.pyd"))
    extension_spec = importlib.util.spec_from_file_location("pyworld.pyworld", library)
    module = importlib.util.module_from_spec(extension_spec)
    extension_spec.loader.exec_module(module)
    return module


def voiced_frames(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Boolean voicing per 10 ms frame: DIO's F0 estimate is nonzero."""
    f0, _ = _pyworld().dio(np.ascontiguousarray(samples, dtype=np.float64), sample_rate,
                           f0_floor=VUV_F0_FLOOR, f0_ceil=VUV_F0_CEIL, frame_period=VUV_FRAME_MS)
    return f0 > 0


def vuv_f1(originals, reconstructions, sample_rate: int) -> float:
    """F1 of the reconstructions' voiced frames against the originals' (pooled over all clips' frames);
    1.0 when neither has a voiced frame."""
    ref, est = paired(originals, reconstructions)
    true_pos = false_pos = false_neg = 0
    for r, e in zip(ref, est):
        ref_voiced, est_voiced = voiced_frames(r, sample_rate), voiced_frames(e, sample_rate)
        true_pos += int(np.sum(ref_voiced & est_voiced))
        false_pos += int(np.sum(~ref_voiced & est_voiced))
        false_neg += int(np.sum(ref_voiced & ~est_voiced))
    if true_pos + false_pos + false_neg == 0:
        return 1.0
    return 2.0 * true_pos / (2.0 * true_pos + false_pos + false_neg)


def audio_metrics(originals, reconstructions, sample_rate: int) -> dict[str, float]:
    """Every metric above over a batch: means over clips (PESQ over the clips it could score).

    Reconstructions are clamped to [-1, 1] first (the decoder's output is unbounded; a file could not
    hold more). Keys: mel_distance, stoi, pesq, pesq_skipped (a count), si_snr, vuv_f1."""
    ref, est = paired(originals, reconstructions)
    est = np.clip(est, -1.0, 1.0)
    pesq_values, skipped = pesq_scores(ref, est, sample_rate)
    return {
        "mel_distance": mel_distance(ref, est, sample_rate),
        "stoi": stoi(ref, est, sample_rate),
        "pesq": float(np.mean(pesq_values)) if pesq_values else math.nan,
        "pesq_skipped": float(skipped),
        "si_snr": si_snr(ref, est),
        "vuv_f1": vuv_f1(ref, est, sample_rate),
    }
