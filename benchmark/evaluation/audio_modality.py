"""The audio modality: int16 PCM clips in [-1, 1]; trained on waveform L1 + log-mel L1; judged by log-mel
distance, SI-SNR, STOI, wideband PESQ and V/UV F1; a few clips and their spectrograms in MLflow.

Why this reconstruction loss (and not the images' MSE): trained on waveform error alone, the 1-D codec
collapsed to near-silence within a few hundred CPU steps (SI-SNR -56 dB, STOI 0.48, measured); the
log-mel term is what the audio codecs the SimVQ paper builds on train with (EnCodec, DAC, WavTokenizer add
adversarial losses this CPU benchmark leaves out). Every quantizer gets the same loss, so it does not
favour one.

STOI, PESQ and V/UV F1 cost 10-30 ms per clip on one core, so they are computed on at most
:data:`QUALITY_CLIPS` clips spread evenly over the (voice-stratified, sorted) evaluation sample; log-mel
distance, SI-SNR and MSE on all of it. The count is logged (``eval/quality_clips``).
"""
from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.evaluation.modality import Modality, register_modality
from benchmark.tracking import keys

#: Clips STOI, PESQ and V/UV F1 are computed on (evenly spread over the evaluation sample).
QUALITY_CLIPS = 128
#: Clips written as wav files (original and reconstruction) beside their spectrograms.
EXAMPLE_CLIPS = 4
MEL_LOSS_WEIGHT = 1.0


def to_float_audio(pcm: Tensor, device: torch.device) -> Tensor:
    """int16 ``(N, 1, T)`` -> float in [-1, 1) on ``device``."""
    return pcm.to(device=device, non_blocking=True).float().div_(32768.0)


def audio_reconstruction_loss(reconstruction: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """Waveform L1 + log-mel L1 (the mel settings of ``audio_quality.log_mel``)."""
    from benchmark.evaluation.audio_quality import log_mel

    mel = F.l1_loss(log_mel(reconstruction.squeeze(1), sample_rate), log_mel(target.squeeze(1), sample_rate))
    return F.l1_loss(reconstruction, target) + MEL_LOSS_WEIGHT * mel


def audio_quality(originals: Tensor, reconstructions: Tensor, dataset) -> dict[str, float]:
    from benchmark.evaluation.audio_quality import audio_metrics, mel_distance, si_snr

    rate = dataset.sample_rate
    spread = torch.linspace(0, len(originals) - 1, min(QUALITY_CLIPS, len(originals))).round().long()
    costly = audio_metrics(originals[spread], reconstructions[spread], rate)
    return {keys.EVAL_MSE: float(F.mse_loss(reconstructions, originals)),
            keys.EVAL_MEL_DISTANCE: mel_distance(originals, reconstructions, rate),
            keys.EVAL_SI_SNR: si_snr(originals, reconstructions),
            keys.EVAL_STOI: costly["stoi"], keys.EVAL_PESQ: costly["pesq"],
            keys.EVAL_PESQ_SKIPPED: costly["pesq_skipped"], keys.EVAL_VUV_F1: costly["vuv_f1"],
            keys.EVAL_QUALITY_CLIPS: float(len(spread))}


def log_audio_examples(run, originals: Tensor, reconstructions: Tensor, dataset, run_name: str) -> None:
    from benchmark.evaluation.audio_artifacts import write_audio_artifacts

    with tempfile.TemporaryDirectory() as folder:
        write_audio_artifacts(originals, reconstructions, dataset.sample_rate, folder, count=EXAMPLE_CLIPS)
        run.log_artifacts(folder, "reconstructions")


AUDIO = register_modality(Modality(name="audio", default_backbone="codec1d", to_float=to_float_audio,
                                   value_range=(-1.0, 1.0), quality=audio_quality,
                                   log_examples=log_audio_examples, sample_noun="clip",
                                   reconstruction_loss=lambda reconstruction, target, dataset:
                                   audio_reconstruction_loss(reconstruction, target, dataset.sample_rate)))
