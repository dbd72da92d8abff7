"""The throughput profile's arithmetic and its bare loop (issue 15); the full profile is `vqbench profile`."""
from __future__ import annotations

import pytest

from benchmark.tracking import keys
from benchmark.training.config import TrainConfig
from sweeps.profile import STAGES, bare_trial_seconds, markdown, summarize


def trial(train: float, evaluation: float, wall: float) -> dict[str, float]:
    metrics = {key: 0.0 for _, key in STAGES}
    metrics.update({keys.COST_TRAIN_TIME: train, keys.COST_EVAL_TIME: evaluation, keys.COST_WALL_TIME: wall})
    return metrics


def test_the_split_accounts_for_every_core_second():
    sweep = {"wall_s": 100.0, "cpu_busy": 0.9, "per_trial": [trial(60, 10, 75), trial(50, 10, 65)], "configs": []}
    summary = summarize("quick", sweep, bare_wall=80.0, bare_seconds=[55.0, 45.0], cores=2)
    split = summary["split_core_s"]
    assert sum(split.values()) == pytest.approx(200.0)           # 100 s x 2 cores
    assert split["training steps"] == 110 and split["evaluation"] == 20
    assert split["other inside trials (loop bookkeeping)"] == pytest.approx(10)
    assert split["idle cores"] == pytest.approx(20)               # 10% of 200 core-s idle
    assert split["Ray start, worker start-up, scheduling"] == pytest.approx(40)
    assert summary["ratio_sweep_to_bare"] == pytest.approx(1.25)
    assert "ratio **1.25**" in markdown(summary, "vqbench profile")


def test_bare_loop_trains_a_trial_and_times_it():
    config = TrainConfig(quantizer="vq", codebook_size=16, latent_dim=4, image_size=16, width=8, batch_size=8,
                         steps=3, fid_samples=0, threads=1)
    assert bare_trial_seconds(config.__dict__ | {"quantizer_options": {}}) > 0
