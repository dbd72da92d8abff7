"""The identical-budget trainer without MLflow: data order, warm-up, learning, reproducibility, validation.

Tiny sizes throughout (16 px photo patches, width 16, batch 16): each training run takes seconds.
"""
from __future__ import annotations

import pytest
import torch

from benchmark.tracking import keys
from benchmark.training.config import TrainConfig
from benchmark.training.trainer import train
from benchmark.training.setup import batch_order, learning_rate

TINY = dict(codebook_size=64, latent_dim=8, image_size=16, width=16, batch_size=16, eval_samples=64,
            fid_samples=0, log_every=5, probe_every=10, warmup_steps=5, dead_code_window=10)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_batch_order_is_the_same_for_a_seed_and_a_permutation_per_epoch():
    first, again = take(batch_order(12, 4, seed=7), 6), take(batch_order(12, 4, seed=7), 6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = take(batch_order(12, 4, seed=8), 6)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    for epoch in (first[:3], first[3:]):  # 12 samples / batch 4: every epoch sees each sample once
        assert sorted(torch.cat(epoch).tolist()) == list(range(12))


def test_batches_span_epochs_when_the_batch_does_not_divide_the_data():
    batches = take(batch_order(5, 3, seed=0), 5)  # 15 indices = exactly 3 epochs of 5
    counts = torch.bincount(torch.cat(batches), minlength=5)
    assert counts.tolist() == [3] * 5


def test_learning_rate_warms_up_linearly_then_stays_constant():
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(s, config) for s in (1, 2, 4, 100)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3])
    assert learning_rate(1, TrainConfig(lr=1e-3, warmup_steps=0)) == 1e-3


def test_loss_falls_over_30_steps_and_the_logged_curves_are_complete():
    logged: dict[int, dict[str, float]] = {}
    config = TrainConfig(quantizer="vq", steps=30, lr=2e-3, **TINY)
    result = train(config, progress=False, on_log=lambda step, metrics: logged.__setitem__(step, metrics))
    assert result.run_id is None
    assert sorted(logged) == [5, 10, 15, 20, 25, 30]
    assert logged[30][keys.TRAIN_LOSS] < 0.85 * logged[5][keys.TRAIN_LOSS]
    # the reconstruction term is noisy batch to batch at this size: compare the first and last 10 steps
    early = (logged[5][keys.TRAIN_RECON_LOSS] + logged[10][keys.TRAIN_RECON_LOSS]) / 2
    late = (logged[25][keys.TRAIN_RECON_LOSS] + logged[30][keys.TRAIN_RECON_LOSS]) / 2
    assert late < 0.9 * early
    # vq: every curve applies (the unused-code distance only while some code is unused in a batch)
    for key in set(keys.CURVES) - {keys.PROBE_UNUSED_CODE_DISTANCE} | {"train/codebook", "train/commitment"}:
        assert key in logged[30], key
    assert 0 < logged[30][keys.PROBE_CODES_WITH_GRADIENT] < 1  # VQ: only the selected codes get a gradient
    fid_keys = {keys.EVAL_RFID, keys.EVAL_RKID, keys.EVAL_RKID_STD, keys.EVAL_RFID_SAMPLES}
    for key in set(keys.FINAL) - fid_keys:  # fid_samples=0
        assert key in result.metrics, key
    assert not fid_keys & set(result.metrics)
    assert result.metrics[keys.COST_SAMPLES_SEEN] == 30 * 16
    assert 0 < result.metrics[keys.EVAL_UTILIZATION] <= 1


def test_a_seed_reproduces_the_trial_exactly_on_cpu():
    config = TrainConfig(quantizer="simvq", steps=6, **TINY)
    first, second = train(config, progress=False), train(config, progress=False)
    timings = lambda metrics: {k: v for k, v in metrics.items() if not k.startswith("cost/")}  # noqa: E731
    assert timings(first.metrics) == timings(second.metrics)
    assert first.metrics[keys.COST_SAMPLES_SEEN] == second.metrics[keys.COST_SAMPLES_SEEN]
    assert first.metrics[keys.PROBE_CODES_WITH_GRADIENT] == 1.0  # SimVQ: W moves every code, by construction


def test_probes_apply_where_they_mean_something():
    ema = train(TrainConfig(quantizer="ema", steps=10, **TINY), progress=False)
    assert keys.PROBE_CODES_WITH_GRADIENT not in ema.metrics  # EMA takes no codebook gradient
    assert keys.PROBE_DISTRIBUTION_GAP in ema.metrics and keys.PROBE_CODEBOOK_RANK in ema.metrics
    fsq = train(TrainConfig(quantizer="fsq", steps=5, **{**TINY, "codebook_size": 60}), progress=False)
    # a fixed grid: no codebook gradient, no searched codebook, a rank fixed by construction
    for key in (keys.PROBE_CODES_WITH_GRADIENT, keys.PROBE_DISTRIBUTION_GAP, keys.PROBE_CODEBOOK_RANK):
        assert key not in fsq.metrics, key
    assert keys.PROBE_LATENT_RANK in fsq.metrics


def test_cost_is_split_by_stage_and_samples_per_s_counts_training_steps_only():
    result = train(TrainConfig(quantizer="vq", steps=8, **TINY), progress=False)
    stages = [keys.COST_SETUP_TIME, keys.COST_TRAIN_TIME, keys.COST_PROBE_TIME, keys.COST_EVAL_TIME]
    assert all(result.metrics[key] > 0 for key in stages)
    assert sum(result.metrics[key] for key in stages) <= result.metrics[keys.COST_WALL_TIME]
    assert result.metrics[keys.COST_SAMPLES_PER_S] == pytest.approx(
        8 * 16 / result.metrics[keys.COST_TRAIN_TIME])


def test_checkpoint_evaluations_give_utilization_against_samples_seen():
    logged: dict[int, dict[str, float]] = {}
    config = TrainConfig(quantizer="vq", steps=40, eval_checkpoints=4, **TINY)
    result = train(config, progress=False, on_log=lambda step, metrics: logged.__setitem__(step, dict(metrics)))
    # checkpoints at 5, 10, 20, 40: the log step right after each sees its samples_seen
    assert [logged[step][keys.EVAL_SAMPLES_SEEN] for step in (5, 10, 20, 40)] == [80, 160, 320, 640]
    assert keys.EVAL_PSNR in result.metrics and keys.EVAL_CONVERGED in result.metrics
    assert abs(result.metrics[keys.EVAL_UTILIZATION_CHANGE]) <= 1


def test_paper_optimizer_is_adam_with_the_papers_betas():
    from benchmark.training.setup import build_optimizer

    optimizer = build_optimizer(TrainConfig(optimizer="adam-paper", lr=1e-4), [torch.nn.Parameter(torch.zeros(2))])
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["betas"] == (0.5, 0.9)


@pytest.mark.parametrize("change,field", [
    ({"quantizer": "nope"}, "quantizer"),
    ({"codebook_size": 1}, "codebook_size"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"image_size": 20, "num_downsamples": 3}, "image_size"),
    ({"fid_samples": 1}, "fid_samples"),
    ({"log_every": 0}, "log_every"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"eval_checkpoints": 0}, "eval_checkpoints"),
    ({"eval_samples": 0}, "eval_samples"),
    ({"threads": 0}, "threads"),
    ({"device": "gpu"}, "gpu"),
])
def test_bad_config_is_rejected_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        train(TrainConfig(**{**TINY, **change}), progress=False)


def test_quantizer_options_are_checked_before_loading_data(tmp_path):
    # A folder dataset that does not exist: had the data been loaded first, that error would surface.
    config = TrainConfig(quantizer="vq", quantizer_options={"betta": 0.5}, dataset="folder",
                         data_dir=str(tmp_path / "missing"), **{k: v for k, v in TINY.items()})
    with pytest.raises(ValueError, match="betta"):
        train(config, progress=False)
