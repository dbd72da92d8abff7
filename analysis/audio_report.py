"""The audio modality's part of the report: reconstruction quality by quantizer and codebook size (log-mel
distance, SI-SNR, STOI, wideband PESQ, V/UV F1), beside utilization. Image runs get PSNR/SSIM in the main
tables instead; the two are never pooled (analysis.pooling refuses mixed modalities)."""
from __future__ import annotations

import pandas as pd

from benchmark.tracking import keys

from .tables import markdown_table

#: Report column -> (runs_frame column, digits).
QUALITY_COLUMNS = {"utilization": ("utilization", 3), "log-mel distance ↓": ("mel_distance", 3),
                   "SI-SNR (dB) ↑": ("si_snr", 1), "STOI ↑": ("stoi", 3), "PESQ (wb) ↑": ("pesq", 2),
                   "V/UV F1 ↑": ("vuv_f1", 3)}


def is_audio(frame: pd.DataFrame) -> bool:
    return keys.PARAM_MODALITY in frame and (frame[keys.PARAM_MODALITY] == "audio").any()


def audio_quality_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (quantizer, K), with the seed count."""
    present = {label: column for label, (column, _) in QUALITY_COLUMNS.items() if column in frame}
    grouped = frame.groupby(["quantizer", "codebook_size"], sort=True)
    table = grouped[list(present.values())].mean().rename(columns={v: k for k, v in present.items()})
    table.insert(0, "seeds", grouped.size())
    return table.reset_index()


def audio_section(frame: pd.DataFrame) -> str:
    if not is_audio(frame):
        return ""
    table = audio_quality_table(frame)
    clips = frame["quality_clips"].dropna().unique() if "quality_clips" in frame else []
    note = (f"STOI, PESQ and V/UV F1 on {int(clips[0])} test clips spread over the evaluation sample; log-mel "
            "distance and SI-SNR on all of it." if len(clips) == 1 else "")
    return "\n".join(["", "## Audio reconstruction quality (mean over seeds)", "", markdown_table(table, digits=3),
                      "", note, "",
                      "Quality at these CPU budgets is far from a trained codec's (the paper reports PESQ ~3 "
                      "after hundreds of GPU-hours): read it to compare quantizers under one budget, not as what "
                      "the methods reach.", ""])
