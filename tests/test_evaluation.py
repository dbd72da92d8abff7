"""What an evaluation measures: a stratified sample of the whole test set, utilization against the
uniform ceiling of its token count, checkpoint steps, and the convergence flag (issues 11 and 12)."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.tracking import keys
from benchmark.data.sources import load_dataset
from benchmark.evaluation.checkpoints import (checkpoint_steps, convergence, evaluation_plan, perplexity_ceiling, usage_metrics)
from benchmark.evaluation.usage import utilization_ceiling


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return load_dataset("photos", cache_dir=tmp_path_factory.mktemp("cache"))


def test_evaluation_indices_cover_every_source_photo(photos):
    for count in (24, 64, 300):
        plan = evaluation_plan(photos, count, fid_samples=count // 2)
        assert len(plan.indices) == count and len(plan.fid_indices) == count // 2
        every_photo = set(photos.test_groups.tolist())
        assert set(photos.test_groups[plan.indices].tolist()) == every_photo
        assert set(photos.test_groups[plan.fid_indices].tolist()) == every_photo
        assert len(set(photos.test_groups[plan.grid_indices].tolist())) >= 6  # the grid spans photos too
    # the same indices for every trial, and the whole test set by default
    assert evaluation_plan(photos, 64, 0).digest == evaluation_plan(photos, 64, 0).digest
    assert len(evaluation_plan(photos, None, 0).indices) == len(photos.test)


def test_uniform_assignment_at_k_2_14_reads_its_ceiling():
    codebook_size, tokens = 2 ** 14, 60_672          # the quick preset's photos test set
    draws = torch.randint(codebook_size, (tokens,), generator=torch.Generator().manual_seed(5))
    metrics = usage_metrics(torch.bincount(draws, minlength=codebook_size))
    ceiling = 1 - (1 - 1 / codebook_size) ** tokens   # about 0.976: capped, below 10·K tokens
    assert metrics[keys.EVAL_UTILIZATION_CEILING] == pytest.approx(ceiling, rel=1e-12)
    assert metrics[keys.EVAL_UTILIZATION] == pytest.approx(ceiling, abs=0.005)
    assert metrics[keys.EVAL_UTILIZATION_RELATIVE] == pytest.approx(1.0, abs=0.005)
    assert metrics[keys.EVAL_PERPLEXITY_RELATIVE] == pytest.approx(1.0, abs=0.01)
    assert metrics[keys.EVAL_TOKENS] == tokens


def test_a_collapsed_assignment_reads_far_below_its_ceiling():
    counts = torch.zeros(2 ** 12, dtype=torch.long)
    counts[:40] = 1000                                # 40 codes take all 40,000 tokens
    metrics = usage_metrics(counts)
    assert metrics[keys.EVAL_UTILIZATION_CEILING] > 0.99
    assert metrics[keys.EVAL_UTILIZATION_RELATIVE] == pytest.approx(40 / 4096 / metrics[keys.EVAL_UTILIZATION_CEILING])


def test_ceilings_at_the_extremes():
    assert utilization_ceiling(1024, 10 * 1024) == pytest.approx(1 - math.exp(-10), rel=1e-3)
    assert utilization_ceiling(2 ** 18, 117_760) == pytest.approx(0.362, abs=0.01)  # few tokens per code
    assert utilization_ceiling(8, 0) == 0.0
    assert perplexity_ceiling(4096, 10) == pytest.approx(10, abs=0.1)          # N << K: about N
    assert perplexity_ceiling(64, 100_000) == pytest.approx(64, rel=0.01)     # N >> K: about K


def test_checkpoints_and_convergence():
    assert checkpoint_steps(200, 4) == [25, 50, 100, 200]
    assert checkpoint_steps(30, 3) == [8, 15, 30]
    assert checkpoint_steps(10, 1) == [10]
    climbing = convergence([(25, 0.1), (50, 0.2), (100, 0.3), (200, 0.45)])
    assert climbing[keys.EVAL_CONVERGED] == 0.0 and climbing[keys.EVAL_UTILIZATION_CHANGE] == pytest.approx(1 / 3)
    two_points = convergence([(100, 0.50), (200, 0.51)])   # the slope rule needs >= 3 checkpoints
    assert two_points[keys.EVAL_CONVERGED] == 0.0
    level = convergence([(25, 0.500), (50, 0.501), (100, 0.499), (200, 0.500)])
    assert level[keys.EVAL_CONVERGED] == 1.0
    falling = convergence([(25, 0.9), (50, 0.7), (100, 0.5), (200, 0.3)])
    assert falling[keys.EVAL_CONVERGED] == 0.0 and falling[keys.EVAL_UTILIZATION_CHANGE] < 0
    windowed = convergence([(25, 0.1), (50, 0.5), (100, 0.500), (200, 0.501), (400, 0.500)], window=3)
    assert windowed[keys.EVAL_CONVERGED] == 1.0 and windowed[keys.EVAL_CONVERGENCE_POINTS] == 3
    assert keys.EVAL_CONVERGED not in convergence([(200, 0.4)]) or convergence([(200, 0.4)])[keys.EVAL_CONVERGED] == 0
