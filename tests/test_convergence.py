"""The convergence rule: a slope over the checkpoints with its t-interval against a tolerance band."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.evaluation.checkpoints import convergence
from benchmark.evaluation.convergence import (CONVERGED, FALLING, RISING, STATUS_CODES, TOO_FEW, UNCLEAR,
                                              convergence_verdict)
from benchmark.tracking import keys

SAMPLES = [1000 * 2 ** i for i in range(6)]   # one checkpoint per doubling


def test_a_spike_and_return_is_not_converged():
    verdict = convergence_verdict(SAMPLES[:4], [0.30, 0.60, 0.31, 0.30])
    assert verdict.status != CONVERGED and not verdict.converged
    assert verdict.status == UNCLEAR and verdict.points == 4


def test_a_steady_rise_of_four_percent_per_doubling_is_not_converged():
    utilization = [0.5 * 1.04 ** i for i in range(6)]
    verdict = convergence_verdict(SAMPLES, utilization)
    assert not verdict.converged
    assert verdict.slope == pytest.approx(0.04, abs=0.005)
    assert verdict.status == RISING and verdict.ci_low > verdict.tolerance   # the whole CI: "still rising"


def test_a_flat_curve_with_small_noise_is_converged():
    rng = np.random.default_rng(0)
    utilization = 0.42 + rng.normal(0, 0.002, size=6)
    verdict = convergence_verdict(SAMPLES, utilization)
    assert verdict.status == CONVERGED and verdict.converged
    assert -verdict.tolerance <= verdict.ci_low < verdict.slope < verdict.ci_high <= verdict.tolerance


def test_a_falling_curve_is_falling_and_a_fast_rise_rising():
    assert convergence_verdict(SAMPLES, [0.8, 0.6, 0.45, 0.33, 0.25, 0.19]).status == FALLING
    assert convergence_verdict(SAMPLES[:4], [0.1, 0.2, 0.3, 0.4]).status == RISING


def test_fewer_than_three_checkpoints_are_never_converged():
    for n in range(3):
        verdict = convergence_verdict(SAMPLES[:n], [0.5] * n)
        assert verdict.status == TOO_FEW and not verdict.converged and math.isnan(verdict.slope)


def test_the_slope_and_interval_are_ols_on_the_relative_level_against_log2_samples():
    utilization = [0.2, 0.26, 0.27, 0.31, 0.3]
    verdict = convergence_verdict(SAMPLES[:5], utilization)
    y = np.array(utilization) / np.mean(utilization)
    fit = stats.linregress(np.log2(SAMPLES[:5]), y)
    half = stats.t.ppf(0.975, 3) * fit.stderr
    assert (verdict.slope, verdict.ci_low, verdict.ci_high) == pytest.approx((fit.slope, fit.slope - half,
                                                                              fit.slope + half))
    # order does not matter, and `window` keeps only the last checkpoints
    assert convergence_verdict(SAMPLES[:5][::-1], utilization[::-1]).slope == pytest.approx(verdict.slope)
    assert convergence_verdict(SAMPLES[:5], utilization, window=3).points == 3


def test_near_zero_utilization_uses_the_absolute_tolerance():
    # 0.010 -> 0.0112 over 4 doublings: +2.7 % of the level per doubling but only 0.0003 of K per doubling
    utilization = [0.010, 0.0105, 0.0107, 0.0110, 0.0112]
    verdict = convergence_verdict(SAMPLES[:5], utilization)
    assert verdict.slope > 0.02 and verdict.converged
    assert verdict.tolerance == pytest.approx(0.001 / np.mean(utilization))
    assert convergence_verdict(SAMPLES[:3], [0.0, 0.0, 0.0]).converged


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        convergence_verdict([1, 2, 4], [0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        convergence_verdict([0, 2, 4], [0.1, 0.2, 0.3])


def test_checkpoint_convergence_logs_the_slope_the_status_and_converged():
    flat = convergence([(10, 0.5), (20, 0.5), (40, 0.501), (80, 0.5)])
    assert flat[keys.EVAL_CONVERGED] == 1.0 and flat[keys.EVAL_CONVERGENCE_STATUS] == STATUS_CODES[CONVERGED]
    assert {keys.EVAL_UTILIZATION_CHANGE, keys.EVAL_UTILIZATION_SLOPE, keys.EVAL_UTILIZATION_SLOPE_CI_LOW,
            keys.EVAL_UTILIZATION_SLOPE_CI_HIGH, keys.EVAL_CONVERGENCE_POINTS} <= set(flat)
    spike = convergence([(10, 0.30), (20, 0.60), (40, 0.31), (80, 0.30)])
    assert spike[keys.EVAL_CONVERGED] == 0.0 and abs(spike[keys.EVAL_UTILIZATION_CHANGE]) < 0.05   # old rule: yes
    two = convergence([(10, 0.5), (20, 0.5)])
    assert two[keys.EVAL_CONVERGED] == 0.0 and two[keys.EVAL_CONVERGENCE_STATUS] == STATUS_CODES[TOO_FEW]
    assert keys.EVAL_UTILIZATION_SLOPE not in two and convergence([]) == {}
