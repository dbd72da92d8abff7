"""Collapse-theory probes (benchmark.evaluation.probes) on hand-built cases whose answers are known."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import scipy.linalg
import torch

import quantizers
from benchmark.tracking import keys
from quantizers.base import Quantizer
from benchmark.evaluation.codebook import effective_rank
from benchmark.evaluation.probes import (DeadCodeRevival, codebook_rank_is_fixed, codes_with_gradient, collapse_probes, centred_effective_rank, distribution_gap, searches_codebook, unused_code_distance)
from benchmark.evaluation.geometry import gaussian_w2_squared


# ----------------------------------------------------------------------------- dead-code revival
def test_revival_is_zero_when_dead_codes_never_come_back():
    # a VQ whose codes >= 10 are never selected (they get no gradient, so they never move into the data)
    revival = DeadCodeRevival(codebook_size=20, window=10)
    values = {}
    for step in range(1, 61):
        revival.update(torch.arange(10).repeat(3), step)
        values[step] = revival.value(step)
    assert all(values[step] is None for step in range(1, 20))  # no full dead window observed before 2W
    assert all(values[step] == 0.0 for step in range(20, 61))


def test_revival_counts_a_dead_code_that_is_used_again():
    revival = DeadCodeRevival(codebook_size=20, window=10)
    for step in range(1, 31):
        used = list(range(10)) + ([15] if step >= 25 else [])  # code 15 dead through step 24, then used
        revival.update(torch.tensor(used), step)
    # reference r = 20: codes 10..19 unused in (10, 20]; of those, 15 is used in (20, 30]
    assert revival.value(30) == pytest.approx(1 / 10)
    assert revival.value(39) == pytest.approx(1 / 10)  # same reference until t reaches 40


def test_revival_matches_a_brute_force_definition_on_a_random_stream():
    rng = random.Random(0)
    codebook_size, window = 50, 7
    revival = DeadCodeRevival(codebook_size, window)
    history: list[tuple[int, set[int]]] = []
    step = 3  # the stream need not start at 1
    for _ in range(200):
        step += rng.choice([0, 1, 1, 1, 2, 5, 13])  # repeats (gradient accumulation) and gaps
        hot = rng.randrange(codebook_size)
        codes = {min(codebook_size - 1, int(rng.expovariate(0.15))) for _ in range(6)} | {hot}
        revival.update(torch.tensor(sorted(codes)), step)
        history.append((step, codes))
        first = history[0][0]
        reference = (step // window - 1) * window
        if reference - window < first - 1:
            expected = None
        else:
            alive = set().union(*[c for s, c in history if reference - window < s <= reference])
            dead = set(range(codebook_size)) - alive
            later = set().union(*[c for s, c in history if s > reference])
            expected = len(dead & later) / len(dead) if dead else None
        got = revival.value(step)
        assert got == (pytest.approx(expected) if expected is not None else None), f"step {step}"
    assert len(revival._dead_at) <= 2  # O(K) memory: at most two frozen dead sets


def test_revival_refuses_decreasing_steps_and_bad_indices():
    revival = DeadCodeRevival(codebook_size=4, window=2)
    assert revival.value(5) is None  # nothing seen yet
    revival.update(torch.tensor([0, 1]), 5)
    with pytest.raises(ValueError, match="must not decrease"):
        revival.update(torch.tensor([0]), 4)
    with pytest.raises(ValueError, match=r"\[0, codebook_size=4\)"):
        revival.update(torch.tensor([4]), 6)
    with pytest.raises(ValueError, match="latest update"):
        revival.value(4)


# ----------------------------------------------------------------------------- unused-code distance
def _clusters(seed: int = 0, clusters: int = 8, per_cluster: int = 50, dim: int = 4, noise: float = 0.1):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator) * 3
    labels = torch.arange(clusters).repeat_interleave(per_cluster)
    latents = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return centres, latents, labels, generator


def test_unused_distance_is_of_order_one_among_the_data_and_large_for_stranded_codes():
    centres, latents, labels, generator = _clusters()
    # unused codes among the data: fresh draws from the latents' own distribution
    among = centres[torch.arange(8).repeat(4)] + 0.1 * torch.randn(32, 4, generator=generator)
    near = unused_code_distance(torch.cat([centres, among]), latents, labels)
    stranded = centres.new_full((32, 4), 100.0) + torch.randn(32, 4, generator=generator)
    far = unused_code_distance(torch.cat([centres, stranded]), latents, labels)
    assert 0.3 < near < 3.0
    assert far > 100.0


def test_unused_distance_matches_brute_force_and_is_nan_when_every_code_is_used():
    centres, latents, labels, generator = _clusters(seed=1)
    extra = torch.randn(20, 4, generator=generator) * 5
    codebook = torch.cat([centres, extra])
    distances = torch.cdist(extra.double(), latents.double()).amin(dim=1)
    error = (latents.double() - centres[labels].double()).norm(dim=1).mean()
    expected = float(torch.quantile(distances, 0.5) / error)
    assert unused_code_distance(codebook, latents, labels) == pytest.approx(expected, rel=1e-5)
    assert math.isnan(unused_code_distance(centres, latents, labels))


def test_unused_distance_samples_at_most_max_codes():
    centres, latents, labels, generator = _clusters(seed=2)
    codebook = torch.cat([centres, torch.randn(2000, 4, generator=generator) * 5])
    full = unused_code_distance(codebook, latents, labels, max_codes=4000)
    sampled = unused_code_distance(codebook, latents, labels, max_codes=512)
    assert sampled == unused_code_distance(codebook, latents, labels, max_codes=512)  # seeded: reproducible
    assert sampled == pytest.approx(full, rel=0.1)


# ----------------------------------------------------------------------------- distribution gap
def test_distribution_gap_is_zero_for_identical_clouds_and_grows_with_a_mean_shift():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2000, 8, generator=generator) @ torch.randn(8, 8, generator=generator)
    assert distribution_gap(latents, latents) < 1e-9
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    gaps = [distribution_gap(latents + shift, latents) for shift in shifts]
    assert all(a < b for a, b in zip(gaps, gaps[1:]))
    # same covariance: W2² is exactly the squared mean shift
    assert gaussian_w2_squared(latents + 1.0, latents) == pytest.approx(8.0, rel=1e-9)


def test_gaussian_w2_matches_the_scipy_formula_and_the_gap_is_scale_free():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(3000, 6, generator=generator, dtype=torch.float64) @ torch.randn(6, 6, generator=generator,
                                                                                      dtype=torch.float64)
    b = torch.randn(1000, 6, generator=generator, dtype=torch.float64) * 0.3 + 1.0
    mean_a, mean_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a = torch.cov(a.t(), correction=0).numpy()
    cov_b = torch.cov(b.t(), correction=0).numpy()
    root_b = scipy.linalg.sqrtm(cov_b).real
    expected = ((mean_a - mean_b) ** 2).sum() + (cov_a + cov_b).trace() \
        - 2 * scipy.linalg.sqrtm(root_b @ cov_a @ root_b).real.trace()
    assert gaussian_w2_squared(a, b) == pytest.approx(expected, rel=1e-8)
    assert distribution_gap(3 * a, 3 * b) == pytest.approx(distribution_gap(a, b), rel=1e-9)
    # a codebook collapsed onto the latent mean is at gap 1 by definition
    assert distribution_gap(b.mean(0, keepdim=True).repeat(10, 1), b) == pytest.approx(1.0, rel=1e-9)


# ----------------------------------------------------------------------------- centred effective rank
def test_centred_rank_ignores_a_common_offset():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=generator, dtype=torch.float64)
    assert centred_effective_rank(x + 100.0) == pytest.approx(centred_effective_rank(x), rel=1e-9)
    assert effective_rank(x + 100.0) < 2.0 < centred_effective_rank(x + 100.0)  # uncentred: the offset wins


def test_centred_rank_counts_the_directions_of_a_flat_cloud():
    # points spread equally along 2 orthogonal directions (a ±1 square), all shifted by the same vector
    square = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    embedded = torch.cat([square, torch.zeros(4, 6, dtype=torch.float64)], dim=1) + 5.0
    assert centred_effective_rank(embedded) == pytest.approx(2.0, rel=1e-12)
    assert centred_effective_rank(torch.ones(5, 3)) == 0.0  # all rows equal: nothing spreads


# ----------------------------------------------------------------------------- which probes apply
def test_which_probes_apply_follows_what_each_quantizer_is():
    for name in ["vq", "ema", "simvq", "vq-simvq-init", "simvq-train-c", "simvq-no-bias"]:
        quantizer = quantizers.build(name, dim=4, codebook_size=16)
        assert searches_codebook(quantizer) and not codebook_rank_is_fixed(quantizer), name
    frozen = quantizers.build("simvq-frozen-w", dim=4, codebook_size=16)
    assert searches_codebook(frozen) and codebook_rank_is_fixed(frozen)
    for name, size in [("fsq", 1000), ("lfq", 16)]:
        grid = quantizers.build(name, dim=4, codebook_size=size)
        assert grid.codebook() is not None  # they do have a grid codebook, but select by rounding
        assert not searches_codebook(grid) and codebook_rank_is_fixed(grid), name


class _DotProductCodes(Quantizer):
    """A learned codebook selected by the largest dot product (like IBQ): not a nearest-code search."""

    learns_codebook_by_gradient = True
    searches_codebook = False

    def __init__(self, dim: int, codebook_size: int):
        super().__init__(dim, codebook_size)
        self.embedding = torch.nn.Parameter(torch.randn(codebook_size, dim))

    def codebook(self) -> torch.Tensor:
        return self.embedding


def test_a_learned_codebook_selected_otherwise_gets_its_rank_but_not_the_search_probes():
    quantizer = _DotProductCodes(dim=4, codebook_size=32)
    z = torch.randn(2, 8, 4)
    indices = (z @ quantizer.embedding.detach().t()).argmax(-1)
    assert set(collapse_probes(quantizer, z, indices)) == {keys.PROBE_LATENT_RANK, keys.PROBE_CODEBOOK_RANK}


@pytest.mark.parametrize("name, size, expected", [
    ("vq", 64, {keys.PROBE_LATENT_RANK, keys.PROBE_UNUSED_CODE_DISTANCE, keys.PROBE_DISTRIBUTION_GAP,
                keys.PROBE_DISTRIBUTION_GAP_WEIGHTED, keys.PROBE_CODEBOOK_RANK}),
    ("simvq", 64, {keys.PROBE_LATENT_RANK, keys.PROBE_UNUSED_CODE_DISTANCE, keys.PROBE_DISTRIBUTION_GAP,
                   keys.PROBE_DISTRIBUTION_GAP_WEIGHTED, keys.PROBE_CODEBOOK_RANK}),
    ("simvq-frozen-w", 64, {keys.PROBE_LATENT_RANK, keys.PROBE_UNUSED_CODE_DISTANCE,
                            keys.PROBE_DISTRIBUTION_GAP, keys.PROBE_DISTRIBUTION_GAP_WEIGHTED}),
    ("fsq", 1000, {keys.PROBE_LATENT_RANK}),
    ("lfq", 64, {keys.PROBE_LATENT_RANK}),
])
def test_collapse_probes_return_the_probes_that_apply(name, size, expected):
    torch.manual_seed(0)
    quantizer = quantizers.build(name, dim=6, codebook_size=size)
    z = torch.randn(2, 16, 6)
    out = quantizer(z)
    probes = collapse_probes(quantizer, z, out.indices)
    assert set(probes) == expected
    assert all(math.isfinite(value) for value in probes.values())
    assert torch.is_grad_enabled()  # the no_grad decorator restores the caller's mode


def test_collapse_probes_omit_the_unused_distance_when_every_code_is_used():
    quantizer = quantizers.build("vq", dim=2, codebook_size=4, init="normal")
    z = quantizer.codebook().detach().repeat(3, 1).unsqueeze(0)  # every code selected
    out = quantizer(z)
    assert keys.PROBE_UNUSED_CODE_DISTANCE not in collapse_probes(quantizer, z, out.indices)


def test_codes_with_gradient_is_the_selected_fraction_for_vq_and_one_for_simvq_by_construction():
    torch.manual_seed(0)
    for name, expected in [("vq", None), ("simvq", 1.0)]:
        quantizer = quantizers.build(name, dim=4, codebook_size=256, **({"init": "normal"} if name == "vq" else {}))
        z = torch.randn(1, 8, 4, requires_grad=True)
        out = quantizer(z)
        out.loss.backward()
        selected = out.indices.unique().numel() / 256
        assert codes_with_gradient(quantizer) == pytest.approx(selected if expected is None else expected)


# ----------------------------------------------------------------------------- usage-weighted gap, dead codes
def test_weighted_gap_ignores_dead_codes_and_is_zero_when_used_codes_are_the_latents():
    from benchmark.evaluation.geometry import weighted_distribution_gap

    torch.manual_seed(0)
    latents = torch.randn(400, 3)
    dead = torch.randn(600, 3) * 50 + 100          # far away, never selected
    codebook = torch.cat([latents, dead])
    indices = torch.arange(400)                      # each latent is its own code
    assert weighted_distribution_gap(codebook, latents, indices) < 1e-9
    assert distribution_gap(codebook, latents) > 100   # the unweighted gap is dominated by the dead codes
    # weights are usage: one code used 3 times counts 3 times (same as repeating its row)
    twice = torch.tensor([0, 0, 0, 1])
    brute = distribution_gap(codebook[twice], latents[:4])
    assert weighted_distribution_gap(codebook, latents[:4], twice) == pytest.approx(brute, rel=1e-9)


def test_dead_code_distance_uses_the_dead_mask_minus_the_codes_this_batch_used():
    torch.manual_seed(0)
    centres = torch.randn(4, 2) * 5
    labels = torch.arange(400) % 4
    latents = centres[labels] + 0.1 * torch.randn(400, 2)
    stranded, among = torch.full((3, 2), 40.0), centres[:3] + 0.05
    codebook = torch.cat([centres, among, stranded])
    dead = torch.zeros(10, dtype=torch.bool)
    dead[7:] = True                                   # only the stranded codes are dead over the window
    dead[0] = True                                    # used in this batch: not counted
    far = unused_code_distance(codebook, latents, labels, unused=dead)
    assert far > 50 and unused_code_distance(codebook, latents, labels) < far   # batch-unused mixes both
    revival = DeadCodeRevival(10, window=3)
    revival.update(torch.tensor([0, 1]), 1)
    revival.update(torch.tensor([2]), 4)
    assert revival.dead_codes(4).tolist() == [True, True, False] + [True] * 7   # 0, 1 last used at 1 <= 4 - 3


def test_code_turnover_counts_births_and_deaths_as_fractions_of_k():
    from benchmark.evaluation.revival import code_turnover

    before = torch.tensor([3, 0, 1, 0, 0, 2, 0, 0])
    now = torch.tensor([1, 2, 0, 0, 4, 1, 0, 0])
    turnover = code_turnover(before, now)
    assert turnover == {keys.EVAL_CODES_BORN: 2 / 8, keys.EVAL_CODES_DIED: 1 / 8}
    assert 3 / 8 + turnover[keys.EVAL_CODES_BORN] - turnover[keys.EVAL_CODES_DIED] == 4 / 8
    assert code_turnover(None, now) == {}


def test_growth_only_revival_equals_a_simulated_random_refill_process():
    from benchmark.evaluation.revival import growth_only_revival, null_keep_rate

    assert growth_only_revival(0.3, 1.0) == 0.0 and growth_only_revival(0.3, 0.0) == pytest.approx(0.3)
    generator = torch.Generator().manual_seed(0)
    size, u, g = 4000, 0.3, 0.6
    used = torch.randperm(size, generator=generator)[: int(u * size)]
    revived, kept_seen = [], []
    for _ in range(20):
        keep = used[torch.randperm(len(used), generator=generator)[: int(g * len(used))]]
        pool = torch.ones(size, dtype=torch.bool)
        pool[keep] = False
        candidates = pool.nonzero().squeeze(1)
        refill = candidates[torch.randperm(len(candidates), generator=generator)[: len(used) - len(keep)]]
        new = torch.cat([keep, refill])
        was, now = torch.zeros(size, dtype=torch.bool), torch.zeros(size, dtype=torch.bool)
        was[used], now[new] = True, True
        revived.append(float((now & ~was).sum() / (~was).sum()))
        kept_seen.append(float((now & was).sum() / was.sum()))
        used = new
    assert np.mean(revived) == pytest.approx(growth_only_revival(u, g), abs=0.005)
    # the observed keep rate includes re-drawn dropped codes; null_keep_rate recovers the process's g
    assert null_keep_rate(np.mean(kept_seen), u) == pytest.approx(g, abs=0.01)


def test_collapse_probes_log_the_dead_code_distance_when_given_the_dead_mask():
    torch.manual_seed(0)
    quantizer = quantizers.build("vq", dim=6, codebook_size=64, init="normal")
    z = torch.randn(2, 16, 6)
    out = quantizer(z)
    dead = torch.ones(64, dtype=torch.bool)
    probes = collapse_probes(quantizer, z, out.indices, dead=dead)
    expected = unused_code_distance(quantizer.codebook().detach(), z, out.indices, unused=dead)
    assert probes[keys.PROBE_DEAD_CODE_DISTANCE] == pytest.approx(expected)
    assert keys.PROBE_DEAD_CODE_DISTANCE not in collapse_probes(quantizer, z, out.indices)
