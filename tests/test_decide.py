"""The decisive experiment's machinery: the design file, its statistics, the seed loop's decision on a
synthetic MLflow store, the report, and the stopping rule inside a real (tiny) trial."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.decisive import confirmatory, next_seed_count, pick_learning_rates, shares, t_half_width
from sweeps.decide import learning_rate_grids, load_design, seeds_grid

DESIGN, DIGEST, BLOB = load_design()


def synthetic_frame(seeds: int, noise: float, rng_seed: int = 0) -> pd.DataFrame:
    """Confirmatory trials with known arm means: simvq 0.7, frozen 0.35, vq-init 0.05, dense 0.2, train-c 0.3."""
    means = {"simvq": 0.7, "simvq-frozen-w": 0.35, "vq-simvq-init": 0.05, "vq-dense-pull": 0.2,
             "simvq-train-c": 0.3}
    rng = np.random.default_rng(rng_seed)
    rows = []
    for size in DESIGN["codebook_sizes"]:
        for arm, mean in means.items():
            for seed in range(seeds):
                rows.append({"run_id": f"{arm}-{size}-{seed}", "stage": f"seeds-{seeds}", "quantizer": arm,
                             "codebook_size": size, "seed": seed, "lr": 1e-3, "optimizer": "adamw",
                             "validation": False, "utilization": mean + noise * rng.standard_normal(),
                             "mse": 0.01, "censored": 0, "converged": 1, "stopped_samples": 1000.0,
                             "codes_used": mean * size, "ceiling": 1.0, "psnr": 20.0})
    return pd.DataFrame(rows)


def test_design_file_is_complete_and_its_grids_build():
    assert {c["name"] for c in DESIGN["contrasts"]} == {"reparameterization at equal init", "learning W",
                                                        "dense gradients alone", "per-code updates (frozen minus per-code)"}
    grids = learning_rate_grids(DESIGN)
    assert grids["lr"].learning_rates == DESIGN["learning_rate"]["grid"]
    assert grids["lr"].base.validation_fraction == DESIGN["learning_rate"]["validation_fraction"]
    assert grids["lr-paper"].base.optimizer == "adam-paper"
    grid = seeds_grid(DESIGN, {arm: 3e-3 for arm in DESIGN["arms"]}, 8, 12)
    assert grid.seeds == [DESIGN["seed_offset"] + s for s in range(8, 12)]
    assert grid.base.stop_when_converged and grid.base.backbone == "patch-mlp"
    from sweeps.grid import expand_grid

    trials = expand_grid(grid).trials
    assert {t.config.lr for t in trials} == {3e-3}
    assert len(trials) == len(DESIGN["arms"]) * len(DESIGN["codebook_sizes"]) * 4


def test_contrasts_recover_known_differences_with_adjusted_intervals():
    rows = confirmatory(synthetic_frame(seeds=10, noise=0.02), DESIGN)
    by = {(r.name, r.codebook_size): r for r in rows}
    assert by[("reparameterization at equal init", 1024)].mean == pytest.approx(0.65, abs=0.03)
    assert by[("per-code updates (frozen minus per-code)", 4096)].mean == pytest.approx(0.30, abs=0.03)
    for row in rows:
        assert row.ci_low < row.mean < row.ci_high
        assert row.p_holm >= row.p   # Holm never lowers a p-value
    level = 1 - DESIGN["alpha"] / 8
    row = rows[0]
    assert row.half_width == pytest.approx(t_half_width(row.sd, row.n, level))


def test_seed_loop_stops_when_the_target_is_met_and_asks_for_more_otherwise():
    tight = confirmatory(synthetic_frame(seeds=8, noise=0.01), DESIGN)
    assert next_seed_count(tight, DESIGN, 8) is None
    loose = confirmatory(synthetic_frame(seeds=8, noise=0.15), DESIGN)
    wanted = next_seed_count(loose, DESIGN, 8)
    assert wanted is not None and 8 + DESIGN["seeds"]["add_at_least"] <= wanted <= DESIGN["seeds"]["max_seeds"]
    at_cap = next_seed_count(loose, DESIGN, DESIGN["seeds"]["max_seeds"])
    assert at_cap is None   # the cap ends the loop; the report then says the target was not reached


def test_shares_of_the_total_add_up():
    parts = {(s.part, s.codebook_size): s for s in shares(synthetic_frame(seeds=10, noise=0.02), DESIGN)}
    for size in DESIGN["codebook_sizes"]:
        total = parts[("learning W", size)].share + parts[("per-code updates (frozen minus per-code)", size)].share
        assert total == pytest.approx(1.0, abs=1e-9)
        assert parts[("learning W", size)].ci_low < parts[("learning W", size)].share < parts[("learning W", size)].ci_high


def test_learning_rate_pick_uses_validation_mse_not_utilization():
    frame = pd.DataFrame([
        {"quantizer": arm, "lr": lr, "optimizer": "adamw", "mse": mse, "utilization": util}
        for arm in DESIGN["arms"] for lr, mse, util in ((1e-4, 0.02, 0.9), (1e-3, 0.01, 0.1), (3e-3, 0.03, 0.5))
    ] + [{"quantizer": arm, "lr": 1e-4, "optimizer": "adam-paper", "mse": 0.001, "utilization": 0.2}
         for arm in DESIGN["arms"]])
    assert set(pick_learning_rates(frame, DESIGN).values()) == {1e-3}
    with pytest.raises(ValueError, match="no finished learning-rate trial"):
        pick_learning_rates(frame[frame.quantizer != "simvq"], DESIGN)


def test_seed_loop_and_report_on_a_synthetic_mlflow_store(tmp_path):
    """The loop's decision and the report read a real SQLite MLflow store."""
    from mlflow import MlflowClient

    from analysis.decisive_report import write_report
    from analysis.decisive_runs import confirmatory_frame, trial_frame
    from benchmark.tracking import keys
    from sweeps.decide import log_design

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    log_design(client, "decide-test", "t", DIGEST, BLOB)
    with pytest.raises(ValueError, match="A changed design is a new experiment"):
        log_design(client, "decide-test", "t", "0" * 16, BLOB)
    experiment = client.get_experiment_by_name("decide-test").experiment_id

    def log(row, stage, validation=0.0, optimizer="adamw"):
        run = client.create_run(experiment, tags={keys.TAG_KIND: "trial", keys.TAG_SWEEP: f"t-{stage}",
                                                  keys.TAG_QUANTIZER: row["quantizer"], keys.TAG_SEED: str(row["seed"]),
                                                  keys.TAG_CODEBOOK_SIZE: str(row["codebook_size"])})
        for name, value in (("lr", row["lr"]), ("optimizer", optimizer), ("validation_fraction", validation)):
            client.log_param(run.info.run_id, name, value)
        for key, value in ((keys.EVAL_UTILIZATION, row["utilization"]), (keys.EVAL_MSE, row["mse"]),
                           (keys.BUDGET_CENSORED, 0.0), (keys.EVAL_CONVERGED, 1.0),
                           (keys.BUDGET_STOPPED_SAMPLES, 1000.0), (keys.EVAL_SAMPLES_SEEN, 1000.0)):
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")

    for _, row in synthetic_frame(seeds=1, noise=0.0).iterrows():
        if row.codebook_size == DESIGN["learning_rate"]["codebook_size"]:
            log(row, "lr", validation=0.1)
    for _, row in synthetic_frame(seeds=8, noise=0.01).iterrows():
        log(row, "seeds-8")
    frame = trial_frame(client, "decide-test", "t")
    assert len(confirmatory_frame(frame)) == 80
    assert next_seed_count(confirmatory(confirmatory_frame(frame), DESIGN), DESIGN, 8) is None
    report = write_report(client, "decide-test", "t", tmp_path / "out").read_text()
    assert DIGEST in report and "Holm p" in report and "learning W" in report
    assert "every adjusted half-width is within the target" in report


def test_stopping_rule_stops_a_flat_trial_and_censors_a_moving_one(tmp_path, monkeypatch):
    """A real trial: at a learning rate too small to move anything, utilization is flat and the rule stops it at
    the first checkpoint where the window is full; a short budget whose curve still moves is censored, and a
    censored trial is never converged."""
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    from benchmark.tracking import keys
    from benchmark.training.config import TrainConfig
    from benchmark.training.trainer import train

    common = dict(quantizer="simvq", codebook_size=256, latent_dim=8, backbone="patch-mlp", width=16,
                  batch_size=8, steps=64, stop_when_converged=True, eval_checkpoints=5, convergence_window=3,
                  fid_samples=0, eval_samples=64, threads=1, log_every=8, probe_every=8, dead_code_window=4,
                  warmup_steps=0)
    flat = train(TrainConfig(lr=1e-12, **common), progress=False).metrics
    assert flat[keys.BUDGET_CENSORED] == 0.0 and flat[keys.EVAL_CONVERGED] == 1.0
    assert flat[keys.BUDGET_STOPPED_STEP] == 16.0   # checkpoints 4, 8, 16: the third fills the window
    moving = train(TrainConfig(lr=3e-2, **{**common, "steps": 32}), progress=False).metrics
    if moving[keys.BUDGET_CENSORED] == 1.0:
        assert moving[keys.EVAL_CONVERGED] == 0.0
    assert not (moving[keys.BUDGET_CENSORED] == 1.0 and moving[keys.EVAL_CONVERGED] == 1.0)
    assert math.isfinite(moving[keys.EVAL_UTILIZATION])


def test_a_pick_at_the_edge_of_the_grid_is_named_in_the_report():
    """An arm picked at the grid's largest (or smallest) rate is named; picks inside the grid are not."""
    from analysis.decisive_report import edge_pick_note

    design = {"arms": ["a", "b", "c"], "learning_rate": {"grid": [1e-4, 3e-4, 1e-3, 3e-3]}}
    note = edge_pick_note(design, {"a": 3e-3, "b": 3e-4, "c": 1e-4})
    assert "a (0.003)" in note and "c (0.0001)" in note and "b (" not in note
    assert edge_pick_note(design, {"a": 3e-4, "b": 1e-3}) == "Every pick lies inside the grid."


def test_the_dry_run_estimates_each_stage_and_creates_nothing(tmp_path, monkeypatch, capsys):
    """``vqbench sweep --preset decide --dry-run`` prints the design and a calibrated estimate per stage (the
    trial counts come from the design) and creates no store and no sweep state."""
    from benchmark.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sweep", "--preset", "decide", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "design 7372d2c83ef967ce" in out
    assert "learning-rate pick" in out and "(25 trials)" in out and "pilot" in out and "(60 trials)" in out
    assert "each further seed" in out and "(10 trials)" in out and "at the cap of 16 seeds" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []
