"""sweeps.calibration: a sweep's wall time from a short calibration on a tiny grid (a few seconds)."""
from __future__ import annotations

import dataclasses

import pytest

from sweeps.calibration import (
    Estimate,
    calibration_order,
    cost_key,
    estimate_line,
    estimate_sweep,
)
from sweeps.estimate import schedule
from sweeps.grid import SweepGrid, base_config, expand_grid

TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "steps": 12,
               "batch_size": 8, "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4,
               "probe_every": 4, "dead_code_window": 8, "eval_checkpoints": 3}


def tiny_trials(**budget):
    grid = SweepGrid(["vq", "simvq"], [16, 32], [4], [0, 1], base=base_config({**TINY_BUDGET, **budget}))
    return expand_grid(grid).trials


def test_estimate_counts_distinct_configurations_and_slots():
    trials = tiny_trials()
    assert len(trials) == 8                      # 2 quantizers x 2 sizes x 2 seeds
    estimate = estimate_sweep(trials, cpus=2, budget_s=60)
    assert isinstance(estimate, Estimate)
    assert estimate.measured == 4 and estimate.approximated == 0   # seeds share a configuration
    assert estimate.slots == 2 and len(estimate.trial_s) == 8
    assert all(s > 0 for s in estimate.step_s.values())
    # each trial: steps x s/step + evaluations + the fixed overhead; wall = Ray start + 2 slots
    step = estimate.step_s[cost_key(trials[0].config)]
    assert estimate.trial_s[0] > 12 * step
    assert estimate.wall_s >= sum(estimate.trial_s) / 2
    assert estimate.wall_s <= sum(estimate.trial_s) + 60
    line = estimate.line()
    assert line.startswith("estimated wall time ~") and "min on this machine" in line and "s/step" in line
    assert not estimate.upper_bound


def test_one_slot_is_sequential_and_cpus_per_trial_divides():
    trials = tiny_trials()[:2]
    estimate = estimate_sweep(trials, cpus=4, cpus_per_trial=4, budget_s=60)
    assert estimate.slots == 1
    assert estimate.wall_s == pytest.approx(sum(estimate.trial_s) + (9.0 + 8.0) * estimate.busy_factor)


def test_stop_when_converged_is_an_upper_bound():
    trials = tiny_trials(stop_when_converged=True)[:1]
    estimate = estimate_sweep(trials, cpus=2, budget_s=60)
    assert estimate.upper_bound and "at most" in estimate.line()


def test_past_the_budget_configurations_are_derived():
    trials = tiny_trials()
    estimate = estimate_sweep(trials, cpus=2, budget_s=0.0)   # only the first configuration is timed
    assert estimate.measured == 1 and estimate.approximated == 3
    assert len(set(estimate.step_s.values())) >= 1 and "derived, not timed" in estimate.line()


def test_calibration_order_covers_sizes_then_quantizers():
    configs = [t.config for t in tiny_trials()]
    distinct = list({cost_key(c): c for c in configs}.values())
    order = calibration_order(distinct)
    assert len(order) == len(distinct)
    assert {order[0].codebook_size, order[1].codebook_size} == {16, 32}
    assert {c.quantizer for c in order[:3]} == {"vq", "simvq"}


def test_schedule_deals_to_the_first_free_slot():
    assert schedule([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert schedule([1.0, 1.0, 1.0], 1) == 3.0


def test_refuses_nonsense():
    with pytest.raises(ValueError):
        estimate_sweep([], cpus=2)
    with pytest.raises(ValueError):
        estimate_sweep(tiny_trials()[:1], cpus=0)


def test_estimate_line_never_fails_a_dry_run():
    assert estimate_line([], cpus=2).startswith("no wall-time estimate (ValueError")
    bad = [dataclasses.replace(t, config=dataclasses.replace(t.config, dataset="no-such-source"))
           for t in tiny_trials()[:1]]
    assert estimate_line(bad, cpus=2).startswith("no wall-time estimate")
