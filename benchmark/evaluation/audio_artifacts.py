"""Listenable evidence of an audio trial: a few original/reconstruction wav pairs and one spectrogram PNG.

Why: a codebook-usage number says nothing about what the tokens sound like. Wav files let a reader hear
a collapsed codec (buzzing, lost consonants); the spectrogram comparison shows the same at a glance in
the MLflow UI (original above, reconstruction below, one column per clip, log-mel in dB on a shared
colour scale). Files are 16-bit PCM mono (what LibriTTS ships); reconstructions are clamped to [-1, 1].
The figure uses matplotlib's object API with the Agg canvas: no pyplot global state, safe in Ray workers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.data.audio_io import write_wav
from benchmark.evaluation.audio_quality import as_batch, log_mel

DEFAULT_CLIPS = 4
SPECTROGRAM_FILE = "spectrograms.png"


def write_audio_artifacts(originals, reconstructions, sample_rate: int, folder, *,
                          count: int = DEFAULT_CLIPS, prefix: str = "clip") -> list[Path]:
    """Write the first ``count`` clips as ``{prefix}{i}_original.wav`` / ``{prefix}{i}_reconstruction.wav``
    and ``spectrograms.png`` into ``folder`` (created); returns every path written, wav files first."""
    ref = as_batch(originals)[:count]
    est = np.clip(as_batch(reconstructions)[: len(ref)], -1.0, 1.0)
    if len(ref) == 0:
        raise ValueError("write_audio_artifacts needs at least one clip")
    if ref.shape != est.shape:
        raise ValueError(f"originals {ref.shape} and reconstructions {est.shape} differ in shape")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (original, reconstruction) in enumerate(zip(ref, est)):
        paths.append(write_wav(folder / f"{prefix}{index}_original.wav", original, sample_rate))
        paths.append(write_wav(folder / f"{prefix}{index}_reconstruction.wav", reconstruction, sample_rate))
    paths.append(spectrogram_figure(ref, est, sample_rate, folder / SPECTROGRAM_FILE))
    return paths


def spectrogram_figure(originals: np.ndarray, reconstructions: np.ndarray, sample_rate: int,
                       path: Path) -> Path:
    """Log-mel spectrograms (dB), originals on the top row and reconstructions below, saved as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # natural-log mel magnitudes -> dB (20 log10 |.|)
    mels = [log_mel(torch.from_numpy(np.asarray(batch, np.float32)), sample_rate).numpy() * 20 / np.log(10)
            for batch in (originals, reconstructions)]
    top = max(float(mel.max()) for mel in mels)
    columns = len(originals)
    figure = Figure(figsize=(3.2 * columns, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, columns, squeeze=False, sharex=True, sharey=True)
    seconds = originals.shape[1] / sample_rate
    image = None
    for row, (label, mel) in enumerate(zip(("original", "reconstruction"), mels)):
        for column in range(columns):
            axis = axes[row][column]
            image = axis.imshow(mel[column], origin="lower", aspect="auto", cmap="magma",
                                vmin=top - 80.0, vmax=top, extent=(0.0, seconds, 0, mel.shape[1]))
            axis.set_title(f"clip {column}: {label}", fontsize=9)
            if column == 0:
                axis.set_ylabel("mel band")
            if row == 1:
                axis.set_xlabel("seconds")
    figure.colorbar(image, ax=axes, label="dB", shrink=0.8)
    path = Path(path)
    figure.savefig(path)
    return path
