"""A tiny audio sweep end to end: real local Ray Tune, the real trainer with the codec backbone, a real
SQLite MLflow store; the runs carry the audio params, quality metrics and clip artifacts, and the
analysis refuses to pool them with image runs."""
from __future__ import annotations

import pytest

from benchmark.tracking import keys
from sweeps.grid import SweepGrid, base_config
from sweeps.launch import SweepSettings, start_sweep



def write_libritts(root, layout: dict[str, list[str]], seconds: float) -> None:
    """LibriTTS's layout: ``root/<split>/<speaker>/<chapter>/<speaker>_<chapter>_...wav``, tones with noise."""
    import numpy as np
    import soundfile

    for split, speakers in layout.items():
        for number, speaker in enumerate(speakers):
            folder = root / split / speaker / "100"
            folder.mkdir(parents=True)
            t = np.arange(int(seconds * 24_000)) / 24_000
            noise = np.random.default_rng(number).standard_normal(len(t))
            wave = 0.3 * np.sin(2 * np.pi * (150.0 + 40 * number) * t) + 0.02 * noise
            soundfile.write(str(folder / f"{speaker}_100_000001_000000.wav"), wave.astype(np.float32), 24_000)


def test_tiny_audio_sweep_lands_in_mlflow_with_audio_params_and_artifacts(local_ray, tracking_uri, tmp_path,
                                                                           monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "LibriTTS"
    write_libritts(root, {"train-clean-100": ["19", "26", "32"], "test-clean": ["61", "121"]}, seconds=4.0)
    budget = {"dataset": "audio-folder", "data_dir": str(root), "width": 8, "num_res_blocks": 0,
              "clip_samples": 6400, "steps": 6, "batch_size": 4, "warmup_steps": 0, "eval_checkpoints": 2,
              "fid_samples": 0, "log_every": 3, "probe_every": 3, "dead_code_window": 2}
    grid = SweepGrid(["vq", "simvq"], [16], [4], [0], base=base_config(budget))
    outcome = start_sweep(grid, name="audio-tiny", experiment="audio-test",
                          settings=SweepSettings(storage_path=str(tmp_path / "runs"), tracking_uri=tracking_uri,
                                                 log_system_metrics=False, verbose=0, max_failures=0))
    assert outcome.counts == {"FINISHED": 2}
    client = MlflowClient(tracking_uri)
    for trial in outcome.outcomes:
        run = client.get_run(trial.run_id)
        params, metrics = run.data.params, run.data.metrics
        assert params[keys.PARAM_MODALITY] == "audio" and params[keys.PARAM_BACKBONE_RESOLVED] == "codec1d"
        assert params["sample_rate"] == "16000" and params["clip_samples"] == "6400"
        assert params[keys.PARAM_TOKENS_PER_SAMPLE] == "20"   # 6,400 samples / hop 320
        for key in (keys.EVAL_MEL_DISTANCE, keys.EVAL_SI_SNR, keys.EVAL_STOI, keys.EVAL_UTILIZATION):
            assert key in metrics
        files = {f.path for f in client.list_artifacts(run.info.run_id, "reconstructions")}
        assert "reconstructions/clip0_original.wav" in files and "reconstructions/spectrograms.png" in files


def test_pooling_refuses_mixed_modalities():
    import pandas as pd

    from analysis.pooling import check_poolable

    frame = pd.DataFrame({keys.PARAM_MODALITY: ["image", "audio"], "quantizer": ["vq", "vq"]})
    with pytest.raises(ValueError, match="different modalities"):
        check_poolable(frame)
