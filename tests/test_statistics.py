"""The statistics behind the verdicts (issue 12): Holm, CIs consistent with their test, the trend verdict's
minimum effect, ties in the "add seeds" hint, and the pooling rules on real MLflow stores."""
from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats

from analysis import statistics as st
from analysis.pipeline import analysed_runs
from analysis.pooling import check_poolable, drop_repeats
from analysis.runs import select_runs
from analysis.trends import (ADD_SEEDS, CAPPED, COLLAPSES, MIN_DROP_ABSOLUTE, NO_MEANINGFUL_TREND, NOT_CONVERGED,
                             minimum_effect, size_trends)
from benchmark.cli import main

from .test_analysis_synthetic import log_sweep

FOUR_SIZES = [256, 1024, 4096, 16384]


def trend_frame(values: dict[int, list[float]], quantizer: str = "q", converged=1.0) -> pd.DataFrame:
    """One run per (size, seed): values[size][seed]."""
    rows = [{"quantizer": quantizer, "codebook_size": k, "codebook_size_requested": k, "latent_dim": 8, "seed": s,
             "utilization": v, "converged": converged} for k, seeds in values.items() for s, v in enumerate(seeds)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- primitives
def test_holm_equals_the_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert st.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    adjusted = st.holm([0.2, math.nan, 0.01])   # no test: stays NaN, not counted in the family
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]].tolist() == pytest.approx([0.2, 0.02])
    assert st.holm([0.5, 0.9]).tolist() == [1.0, 1.0] and st.holm([]).size == 0   # 2 × 0.5, capped at 1


def test_paired_ci_excludes_zero_exactly_when_the_paired_t_test_rejects_at_n_3():
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(300):
        a, b = rng.normal(size=3), rng.normal(size=3) + rng.choice([0.0, 1.0, 3.0])
        result = st.paired_test(a - b)
        assert result.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
        excludes = result.ci_low > 0 or result.ci_high < 0
        assert excludes == (result.p < st.ALPHA)
        outcomes.add(excludes)
    assert outcomes == {True, False}   # both cases were exercised
    one = st.paired_test([0.3])
    assert "insufficient seeds" in one.note and np.isnan(one.p) and np.isnan(one.ci_low)
    constant = st.paired_test([0.2, 0.2, 0.2])
    assert np.isnan(constant.p) and (constant.ci_low, constant.ci_high) == pytest.approx((0.2, 0.2))


def test_smallest_attainable_spearman_p_accounts_for_ties():
    assert st.smallest_exact_spearman_p([1, 1, 1, 1]) == pytest.approx(2 / 24)
    assert st.smallest_exact_spearman_p([3, 3]) == pytest.approx(2 * 6 * 6 / 720)   # 0.1: never significant
    assert st.smallest_exact_spearman_p([2, 2, 2, 2]) == pytest.approx(2 * 16 / 40320)
    # the exact test itself reaches that floor for a perfect fall
    x = np.repeat(np.log2(FOUR_SIZES[:2]), 3)
    assert st.spearman(x, [0.9, 0.91, 0.92, 0.1, 0.11, 0.12])[1] == pytest.approx(0.1)
    assert (st.seeds_needed(4), st.seeds_needed(3), st.seeds_needed(2)) == (2, 2, 4)


def test_spearman_ci_is_fisher_z_with_the_bonett_wright_error():
    low, high = st.spearman_ci(0.5, 20)
    half = stats.norm.ppf(0.975) * math.sqrt((1 + 0.125) / 17)
    assert (low, high) == pytest.approx((math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half)))
    assert all(math.isnan(v) for v in st.spearman_ci(0.5, 3))


# ---------------------------------------------------------------- the trend verdict
def test_a_small_drop_is_no_meaningful_trend_and_a_large_one_collapses():
    small = trend_frame({256: [0.978, 0.975, 0.981], 1024: [0.962, 0.960, 0.966], 4096: [0.948, 0.944, 0.951]},
                        "simvq")
    large = trend_frame({256: [0.90, 0.91, 0.89], 1024: [0.55, 0.52, 0.57], 4096: [0.20, 0.23, 0.19]}, "vq")
    trends = size_trends(pd.concat([small, large])).set_index("quantizer")
    assert (trends["metric"] == "utilization").all()
    assert trends.loc["simvq", "p_holm"] < st.ALPHA                    # significant, yet:
    assert trends.loc["simvq", "verdict"] == NO_MEANINGFUL_TREND       # 0.978 -> 0.948: the CI is inside ±0.2
    assert trends.loc["simvq", "drop_ci_high"] < MIN_DROP_ABSOLUTE
    assert trends.loc["vq", "verdict"] == COLLAPSES and trends.loc["vq", "drop"] == pytest.approx(0.7, abs=0.01)
    assert trends["p_holm"].tolist() == pytest.approx(st.holm(trends["p"]).tolist())
    assert minimum_effect(0.9) == MIN_DROP_ABSOLUTE and minimum_effect(0.15) == pytest.approx(0.075)


def test_one_seed_at_four_sizes_asks_for_seeds_with_the_floor_it_cannot_beat():
    row = size_trends(trend_frame({k: [v] for k, v in zip(FOUR_SIZES, [0.15, 0.04, 0.01, 0.003])})).iloc[0]
    assert row["rho"] == pytest.approx(-1.0) and row["p"] == pytest.approx(2 / 24)
    assert row["verdict"] == ADD_SEEDS
    assert "smallest attainable exact p is 0.0833" in row["note"] and "2 seeds per size" in row["note"]
    # two sizes x three seeds: ties make p >= 0.1 whatever the values (the old hint said 2/6! = 0.003)
    row = size_trends(trend_frame({256: [0.9, 0.91, 0.92], 4096: [0.1, 0.11, 0.12]})).iloc[0]
    assert row["p"] == pytest.approx(0.1) and row["verdict"] == ADD_SEEDS and "0.1 ≥ 0.05" in row["note"]


def test_unconverged_largest_size_and_an_uncorrected_token_cap_replace_collapse():
    values = {256: [0.90, 0.91, 0.89], 1024: [0.55, 0.52, 0.57], 4096: [0.20, 0.23, 0.19]}
    stuck = trend_frame(values)
    stuck.loc[stuck["codebook_size"] == 4096, "converged"] = [1.0, 0.0, 1.0]
    row = size_trends(stuck).iloc[0]
    assert row["verdict"] == NOT_CONVERGED and "1 of 3 trials at the largest K not converged" in row["note"]
    capped = trend_frame(values).assign(tokens=16384.0)   # < 10 · 4096, and no ceiling logged
    assert size_trends(capped).iloc[0]["verdict"] == CAPPED


# ---------------------------------------------------------------- pooling, on real stores
@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()   # creates the tables
    return folder / "mlflow.db"


@pytest.fixture
def client(empty_db, tracking_uri, monkeypatch, tmp_path) -> MlflowClient:
    shutil.copy(empty_db, tracking_uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(tmp_path)
    return MlflowClient(tracking_uri=tracking_uri)


def _one_seed_sweep(client: MlflowClient, name: str, steps: int = 40) -> str:
    return log_sweep(client, experiment="repeats", quantizers=("vq",), sizes=FOUR_SIZES, seeds=[0], failed=0,
                     steps=steps, name=name, artifact_location=str(Path.cwd() / "artifacts"))


def test_identical_sweeps_are_one_seed_unless_repeats_are_allowed(client):
    _one_seed_sweep(client, "first")
    _one_seed_sweep(client, "second")
    selection = select_runs(client, experiment="repeats")
    _, _, frame, _, _, pooling = analysed_runs(client, selection)
    assert len(frame) == 4 and pooling.repeats == 4 and set(frame["sweep"]) == {"second"}   # the latest kept
    assert "same seed" in pooling.sentence()
    row = size_trends(frame).iloc[0]
    assert row["p"] == pytest.approx(2 / 24) and row["verdict"] == ADD_SEEDS   # not 0.0008
    _, _, frame, _, _, pooling = analysed_runs(client, selection, allow_repeats=True)
    assert len(frame) == 8 and sorted(frame["replicate"]) == [0] * 4 + [1] * 4
    assert size_trends(frame).iloc[0]["p"] == pytest.approx(2 * 2 ** 4 / math.factorial(8))   # 0.0008, stated
    assert "extra sample" in pooling.sentence()


def test_sweeps_with_different_budgets_are_refused_by_name(client, capsys):
    _one_seed_sweep(client, "short", steps=40)
    _one_seed_sweep(client, "long", steps=80)
    refusal = r"different steps: '40' in 4 runs \(sweep short\); '80' in 4 runs \(sweep long\)"
    with pytest.raises(ValueError, match=refusal):
        analysed_runs(client, select_runs(client, experiment="repeats"))
    assert main(["figures", "--experiment", "repeats", "--out", "figures"]) == 2
    assert "cannot pool runs with different steps" in capsys.readouterr().err
    assert not Path("figures").exists()


def test_pooling_checks_fid_samples_and_quantizer_options_without_a_store():
    base = pd.DataFrame({"quantizer": "vq", "codebook_size_requested": [256, 1024], "latent_dim": 8, "seed": 0,
                         "fid_samples": [0, 2048], "quantizer_options": "", "run_id": ["a", "b"],
                         "start_time": [1, 2]})
    with pytest.raises(ValueError, match="different fid_samples"):
        check_poolable(base)
    options = base.assign(fid_samples=0, quantizer_options=["beta=0.25", "beta=1.0"])
    with pytest.raises(ValueError, match="'vq' runs with different quantizer options"):
        check_poolable(options)
    kept, pooling = drop_repeats(base.assign(codebook_size_requested=256))
    assert kept["run_id"].tolist() == ["b"] and pooling.repeats == 1


# ---------------------------------------------------------------- issue: verdicts that survive a second review
def test_the_add_seeds_hint_accounts_for_the_family_size():
    # 6 quantizers x 2 sizes x 4 seeds: the floor 2/C(8,4) = 0.029 is below 0.05 but not below 0.05/6
    frames = [trend_frame({256: [0.9 - 0.01 * s for s in range(4)], 4096: [0.5 - 0.01 * s for s in range(4)]},
                          quantizer=f"q{i}") for i in range(6)]
    trends = size_trends(pd.concat(frames))
    assert trends["p"].tolist() == pytest.approx([2 / 70] * 6) and (trends["verdict"] == ADD_SEEDS).all()
    assert "0.0286 ≥ 0.05/6 (Holm over 6 tests); 5 seeds per size can go below" in trends.iloc[0]["note"]
    assert st.seeds_needed(2, alpha=0.05 / 6) == 5 and st.seeds_needed(2) == 4


def test_every_trend_verdict_resting_on_an_unconverged_trial_says_at_this_budget():
    small = trend_frame({256: [0.978, 0.975, 0.981], 1024: [0.962, 0.960, 0.966], 4096: [0.948, 0.944, 0.951]})
    small.loc[small["codebook_size"] == 256, "converged"] = [1.0, 0.0, 1.0]   # not at the largest K
    row = size_trends(small).iloc[0]
    assert row["verdict"] == NO_MEANINGFUL_TREND + " at this budget" and "1 of 9 trials not converged" in row["note"]


def test_adjusted_interval_is_bonferroni_and_fieller_bounds_a_ratio_of_paired_means():
    d = [0.1, 0.3, 0.2, 0.25]
    low, high = st.adjusted_interval(d, 6)
    half = stats.t.ppf(1 - 0.05 / 12, 3) * np.std(d, ddof=1) / 2
    assert (low, high) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert st.adjusted_interval(d, 1) == pytest.approx(st.mean_ci(d)[1:3])
    part, total = [0.2, 0.31, 0.26, 0.24], [0.4, 0.6, 0.5, 0.5]
    ratio, low, high = st.fieller_ratio(part, total)
    assert ratio == pytest.approx(np.mean(part) / np.mean(total)) and low < ratio < high
    assert st.fieller_ratio([0.1, 0.2, 0.1], [0.5, -0.4, 0.1])[1:] == (-math.inf, math.inf)   # total ~ 0


def test_within_cell_association_removes_a_between_method_confound():
    from analysis.cells import within_cell_association

    # two methods: B has more of the probe AND more utilization, but inside each method the probe is noise
    rng = np.random.default_rng(1)
    probe = np.r_[rng.normal(0, 1, 6), rng.normal(10, 1, 6)]
    utilization = np.r_[rng.normal(0.2, 0.01, 6), rng.normal(0.8, 0.01, 6)]
    cells = ["A/256"] * 3 + ["A/1024"] * 3 + ["B/256"] * 3 + ["B/1024"] * 3
    assert st.spearman(probe, utilization)[0] > 0.7                        # pooled: a strong "mechanism"
    test = within_cell_association(probe, utilization, cells)
    assert test.p > 0.2 and test.cells == 4 and test.min_p == pytest.approx(2 / 6 ** 4)
    # exact p equals brute force on one cell of 4 (4! arrangements)
    one = within_cell_association([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4], ["c"] * 4)
    brute = [stats.spearmanr([1, 2, 3, 4], perm).statistic for perm in itertools.permutations([0.1, 0.3, 0.2, 0.4])]
    assert one.rho == pytest.approx(0.8) and one.p == pytest.approx(np.mean(np.abs(brute) >= 0.8 - 1e-12))


def test_runs_logged_before_the_slope_rule_are_rejudged_from_their_history():
    from analysis.checkpoints import apply_convergence

    frame = pd.DataFrame({"run_id": ["spike", "flat"], "converged": [1.0, 1.0]})   # the old two-point rule
    checkpoints = pd.DataFrame({"run_id": ["spike"] * 4 + ["flat"] * 4, "step": [5, 10, 20, 40] * 2,
                                "samples_seen": [320, 640, 1280, 2560] * 2,
                                "utilization": [0.30, 0.60, 0.31, 0.30, 0.5, 0.5, 0.501, 0.5]})
    judged = apply_convergence(frame, checkpoints).set_index("run_id")
    assert judged.loc["spike", "converged"] == 0.0 and judged.loc["spike", "convergence_status"] == "unclear"
    assert judged.loc["flat", "converged"] == 1.0 and (judged["convergence_source"] == "recomputed").all()
    logged = frame.assign(convergence_status=[1.0, 0.0])   # a logged status wins
    assert apply_convergence(logged, checkpoints).set_index("run_id").loc["spike", "convergence_status"] == "rising"


def test_revival_under_a_growth_only_process_is_not_reported_as_supporting_the_theory():
    import torch

    from analysis.revival_null import revival_rows, revival_summary
    from benchmark.evaluation.revival import DeadCodeRevival, code_turnover
    from benchmark.tracking import keys

    rows = []
    for quantizer, u, g in [("vq", 0.2, 0.8), ("simvq", 0.6, 0.5)]:   # no codebook mechanism in either
        for size in (256, 1024):
            for seed in range(3):
                generator = torch.Generator().manual_seed(seed)
                revival, used, window = DeadCodeRevival(size, window=4), None, 4
                counts = previous = None
                values, kept = [], []
                for block in range(12):   # each window of 4 steps draws from one used set
                    if used is None:
                        used = torch.randperm(size, generator=generator)[: int(u * size)]
                    else:
                        keep = used[torch.randperm(len(used), generator=generator)[: int(g * len(used))]]
                        pool = torch.ones(size, dtype=torch.bool)
                        pool[keep] = False
                        free = pool.nonzero().squeeze(1)
                        used = torch.cat([keep, free[torch.randperm(len(free), generator=generator)[: len(used) - len(keep)]]])
                    for step in range(block * window + 1, (block + 1) * window + 1):
                        revival.update(used, step)
                    previous, counts = counts, torch.bincount(used, minlength=size)
                    if block >= 2:
                        values.append(revival.value((block + 1) * window))
                        died = code_turnover(previous, counts)[keys.EVAL_CODES_DIED]
                        kept.append(1 - died / u)
                rows.append({"quantizer": quantizer, "codebook_size_requested": size, "seed": seed,
                             "dead_code_revival": np.mean(values), "utilization": u, "kept_observed": np.mean(kept),
                             "converged": 1.0})
    table = revival_rows(pd.DataFrame(rows))
    summary = revival_summary(table)
    assert "supports the theory" not in summary.replace("does not support the theory", "")
    assert not table["verdict"].str.startswith("below").any()
    assert (table["excess"].abs() < 0.02).all()


def test_pooling_refuses_different_probe_settings():
    base = pd.DataFrame({"quantizer": "vq", "codebook_size_requested": [256, 1024], "latent_dim": 8, "seed": 0,
                         "dead_code_window": [100, 20], "quantizer_options": "", "run_id": ["a", "b"],
                         "start_time": [1, 2]})
    with pytest.raises(ValueError, match="different dead_code_window"):
        check_poolable(base)
    with pytest.raises(ValueError, match="different probe_every"):
        check_poolable(base.assign(dead_code_window=100, probe_every=[25, 50]))


def test_the_trend_table_counts_used_codes_and_their_log_log_slope_beside_the_fraction():
    """A fraction that halves while K grows 16x is a count that grows 8x (slope 3/4); a fixed number of used
    codes reads slope 0; a fraction kept at every size reads slope 1."""
    growing = trend_frame({64: [0.5, 0.5], 1024: [0.25, 0.25]}, "grows")
    fixed = trend_frame({64: [0.5, 0.5], 1024: [0.03125, 0.03125]}, "fixed")
    kept = trend_frame({64: [0.5, 0.51], 1024: [0.5, 0.49]}, "kept")
    trends = size_trends(pd.concat([growing, fixed, kept])).set_index("quantizer")
    assert trends.loc["grows", ["codes_at_smallest", "codes_at_largest"]].tolist() == [32.0, 256.0]
    assert trends.loc["grows", "codes_slope"] == pytest.approx(0.75)
    assert trends.loc["fixed", "codes_slope"] == pytest.approx(0.0, abs=1e-12)
    assert trends.loc["kept", "codes_slope"] == pytest.approx(1.0, abs=0.01)
