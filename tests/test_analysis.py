"""Analysis from a real MLflow SQLite store: runs logged here with known values (tests/test_analysis_synthetic.py),
read back, pooled, tabulated, tested and plotted, and the `vqbench figures` command end to end."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from scipy import stats  # noqa: E402

from analysis import figures as figs  # noqa: E402
from analysis import statistics as st  # noqa: E402
from analysis.comparisons import attribution, compare_to_reference, control_contrasts  # noqa: E402
from analysis.mechanism import BETWEEN, POOLED, WITHIN_CELLS, WITHIN_K, best_probe, probe_associations  # noqa: E402
from analysis.pipeline import ARTIFACT_DIR, analysed_runs  # noqa: E402
from analysis.plotting import CEILING_LABEL  # noqa: E402
from analysis.runs import select_runs  # noqa: E402
from analysis.trends import COLLAPSES, NO_MEANINGFUL_TREND, NO_TREND, NOT_CONVERGED, size_trends  # noqa: E402
from benchmark.tracking import keys  # noqa: E402
from benchmark.cli import main  # noqa: E402

from .test_analysis_synthetic import (BATCH_SIZE, CHECKPOINTS, FSQ_REAL_SIZE, SEEDS, SIZES, STEPS, TOKENS,  # noqa: E402
                                      UNCONVERGED, ceiling, codebook_rank, final_relative, final_utilization,
                                      late_mean, log_sweep, probe_value, real_size, relative_at)

EXPECTED_FIGURES = ["fig1_utilization_vs_codebook_size", "fig4_psnr_ssim_vs_codebook_size", "fig5_collapse_dynamics",
                    "fig6_codebook_effective_rank", "fig7_phase_diagram", "fig8_probes_vs_utilization"]
SKIPPED_FIGURES = ["fig2_rfid_vs_codebook_size", "fig3_utilization_vs_latent_dim"]
CODEBOOK = ["vq", "simvq", "vq-simvq-init", "simvq-frozen-w"]


@pytest.fixture(scope="module")
def template_stores(tmp_path_factory) -> tuple[Path, Path, str]:
    """Stores built once per module (creating an MLflow database costs seconds), copied into each test's
    own store: (empty database, database with the synthetic sweep, the sweep's parent run id)."""
    folder = tmp_path_factory.mktemp("template")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    client.search_experiments()   # creates the tables
    shutil.copy(folder / "mlflow.db", folder / "empty.db")
    parent_id = log_sweep(client, artifact_location=str(folder / "artifacts"))
    return folder / "empty.db", folder / "mlflow.db", parent_id


@pytest.fixture
def empty_store(template_stores, tracking_uri, monkeypatch, tmp_path) -> str:
    """This test's tracking store with no runs; cwd is tmp_path (new experiments keep artifacts there)."""
    shutil.copy(template_stores[0], tracking_uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(tmp_path)
    return tracking_uri


@pytest.fixture
def sweep_store(template_stores, tracking_uri, monkeypatch, tmp_path) -> str:
    """The synthetic sweep in this test's tracking store; returns the parent run id."""
    shutil.copy(template_stores[1], tracking_uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(tmp_path)
    return template_stores[2]


@pytest.fixture(scope="module")
def analysed(template_stores):
    """(all runs, pooled runs with probe columns, histories, checkpoints) of the synthetic sweep, read once."""
    client = MlflowClient(tracking_uri=f"sqlite:///{template_stores[1]}")
    all_runs, _, frame, histories, checkpoints, _ = analysed_runs(client, select_runs(client, sweep=template_stores[2]))
    return all_runs, frame, histories, checkpoints


def _row(frame: pd.DataFrame, **match) -> pd.Series:
    mask = np.logical_and.reduce([frame[k] == v for k, v in match.items()])
    found = frame[mask]
    assert len(found) == 1, match
    return found.iloc[0]


def t_interval(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


# ---------------------------------------------------------------- reading MLflow
def test_runs_frame_holds_what_was_logged(sweep_store, analysed):
    all_runs, frame, _, _ = analysed
    assert len(all_runs) == 5 * len(SIZES) * len(SEEDS) + 1
    assert all_runs["status"].value_counts().to_dict() == {"FINISHED": 45, "FAILED": 1}
    assert len(frame) == 45 and (frame["replicate"] == 0).all()
    for row in frame.itertuples():
        q, k, s = row.quantizer, row.codebook_size_requested, row.seed
        assert row.utilization == pytest.approx(final_utilization(q, k, s))
        assert row.utilization_relative == pytest.approx(final_relative(q, k, s))
        assert row.utilization_ceiling == pytest.approx(ceiling(real_size(q, k)))
        assert row.tokens == TOKENS and row.eval_samples_seen == CHECKPOINTS[-1] * BATCH_SIZE
        assert row.converged == (0.0 if (q, k) in UNCONVERGED else 1.0)
        assert row.codebook_size == real_size(q, k)
        assert np.isnan(row.rfid)   # not logged: missing, not zero
        assert (row.sweep, row.optimizer, row.eval_indices_digest) == ("synthetic", "adamw", "abc123")
    # the default selection is the most recent sweep; --experiment finds the same runs and parent
    assert select_runs(MlflowClient()).parent_run_id == sweep_store
    by_experiment = select_runs(MlflowClient(), experiment="vqbench-test")
    assert len(by_experiment.runs) == len(all_runs) and by_experiment.parent_run_id == sweep_store


def test_histories_checkpoints_and_probe_summaries_are_the_logged_values(analysed):
    _, frame, histories, checkpoints = analysed
    run = _row(frame, quantizer="vq", codebook_size_requested=1024, seed=1)
    curve = histories[(histories["run_id"] == run.run_id) & (histories["key"] == keys.PROBE_CODEBOOK_RANK)]
    assert curve["step"].tolist() == STEPS
    assert curve["value"].tolist() == pytest.approx([codebook_rank("vq", 1024, 1, s) for s in STEPS])
    # FSQ logged no probes, so none were fetched
    fsq_runs = set(frame.loc[frame["quantizer"] == "fsq", "run_id"])
    assert not histories[histories["run_id"].isin(fsq_runs) & histories["key"].str.startswith("probe/")
                         & (histories["key"] != keys.PROBE_CODEBOOK_RANK)].shape[0]
    assert frame.loc[frame["quantizer"] == "fsq", "unused_code_distance"].isna().all()
    assert run.unused_code_distance == pytest.approx(late_mean(keys.PROBE_UNUSED_CODE_DISTANCE, "vq", 1024, 1))
    assert "codes_with_gradient" not in frame
    # checkpoints: one row per evaluation, samples seen logged beside it
    points = checkpoints[checkpoints["run_id"] == run.run_id].sort_values("step")
    assert points["step"].tolist() == CHECKPOINTS
    assert points["samples_seen"].tolist() == [s * BATCH_SIZE for s in CHECKPOINTS]
    assert points["utilization_relative"].tolist() == pytest.approx([relative_at("vq", 1024, 1, s) for s in CHECKPOINTS])


# ---------------------------------------------------------------- statistics against scipy
def test_size_trends_equal_spearman_and_the_verdicts_follow_the_rules(analysed):
    _, frame, _, _ = analysed
    trends = size_trends(frame).set_index("quantizer")
    assert (trends["metric"] == "utilization_relative").all()
    for quantizer in ["vq", "simvq"]:
        x = [np.log2(k) for k in SIZES for _ in SEEDS]
        y = [final_relative(quantizer, k, s) for k in SIZES for s in SEEDS]
        assert trends.loc[quantizer, "rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert trends.loc[quantizer, "p"] == pytest.approx(exact_spearman_p(x, y))  # n = 9: exact
        drops = [final_relative(quantizer, SIZES[0], s) - final_relative(quantizer, SIZES[-1], s) for s in SEEDS]
        assert trends.loc[quantizer, "drop"] == pytest.approx(np.mean(drops))
        if np.ptp(drops) > 0:
            interval = (trends.loc[quantizer, "drop_ci_low"], trends.loc[quantizer, "drop_ci_high"])
            assert interval == pytest.approx(t_interval(drops))
    assert trends["p_holm"].tolist() == pytest.approx(st.holm(trends["p"]).tolist(), nan_ok=True)
    assert trends.loc["vq", "verdict"] == COLLAPSES and trends.loc["simvq-frozen-w", "verdict"] == COLLAPSES
    assert trends.loc["simvq", "verdict"] == NO_MEANINGFUL_TREND        # 0.97 -> 0.94: significant, tiny
    assert trends.loc["simvq", "p_holm"] < st.ALPHA
    assert trends.loc["vq-simvq-init", "verdict"] == NOT_CONVERGED      # falls, but K = 4096 still rising
    assert "3 of 3 trials at the largest K not converged" in trends.loc["vq-simvq-init", "note"]
    assert trends.loc["fsq", "verdict"] == NO_TREND and np.isnan(trends.loc["fsq", "p"])
    assert "capped by tokens at K = 4096" in trends.loc["vq", "note"]   # 16,384 tokens < 10 · 4096


def exact_spearman_p(x, y) -> float:
    """Two-sided exact p by brute force: Spearman of every permutation of x against y."""
    import itertools

    observed = stats.spearmanr(x, y).statistic
    ry = stats.rankdata(y)
    perms = np.array(list(itertools.permutations(stats.rankdata(x))))
    centred = perms - perms.mean(1, keepdims=True)
    rho = (centred * (ry - ry.mean())).sum(1) / np.sqrt((centred ** 2).sum(1) * ((ry - ry.mean()) ** 2).sum())
    tolerance = 1e-12
    return min(1.0, 2 * min((rho <= observed + tolerance).mean(), (rho >= observed - tolerance).mean()))


def test_simvq_comparisons_equal_scipy_on_the_logged_numbers(analysed):
    _, frame, _, _ = analysed
    comparisons = compare_to_reference(frame, "utilization_relative")
    assert set(comparisons["contrast"]) == {"simvq − vq", "simvq − fsq"}   # controls have their own family
    assert len(comparisons) == 2 * len(SIZES)
    row = _row(comparisons, contrast="simvq − vq", codebook_size_requested=4096)
    simvq = np.array([final_relative("simvq", 4096, s) for s in SEEDS])
    vq = np.array([final_relative("vq", 4096, s) for s in SEEDS])
    expected = stats.ttest_rel(simvq, vq)
    assert (row["n"], row["latent_dim"], row["paired_on"]) == (3, 8, "seed")
    assert (row["t"], row["p"]) == pytest.approx((expected.statistic, expected.pvalue))
    assert row["difference"] == pytest.approx((simvq - vq).mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(simvq - vq))
    assert comparisons["p_holm"].tolist() == pytest.approx(st.holm(comparisons["p"]).tolist())
    assert row["verdict"] == "simvq higher"


def test_control_contrasts_say_what_explains_simvqs_advantage(analysed):
    _, frame, _, _ = analysed
    controls = control_contrasts(frame, "utilization_relative")
    assert set(controls["contrast"]) == {"total", "init scale", "reparameterization at equal scale", "learning W"}
    # simvq − vq is tested in one family only: the control table's "total" repeats the comparison family's test
    comparisons = compare_to_reference(frame, "utilization_relative")
    total = _row(controls, contrast="total", codebook_size_requested=4096)
    tested = _row(comparisons, contrast="simvq − vq", codebook_size_requested=4096)
    assert total["family"] == "comparison" and total["p_holm"] == pytest.approx(tested["p_holm"])
    in_family = controls[controls["family"] == "controls"]
    assert len(in_family) == 9 and in_family["p_holm"].tolist() == pytest.approx(st.holm(in_family["p"]).tolist())
    # beside each Holm verdict a Bonferroni-adjusted interval (alpha / m, m = 9), wider than the per-test one
    row = _row(controls, contrast="learning W", codebook_size_requested=4096)
    diffs = [final_relative("simvq", 4096, s) - final_relative("simvq-frozen-w", 4096, s) for s in SEEDS]
    half = stats.t.ppf(1 - 0.05 / 18, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert (row["ci_adj_low"], row["ci_adj_high"]) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    for row in controls.itertuples():
        a = [final_relative(row.a, row.codebook_size_requested, s) for s in SEEDS]
        b = [final_relative(row.b, row.codebook_size_requested, s) for s in SEEDS]
        assert row.difference == pytest.approx(np.mean(np.subtract(a, b)))
        assert row.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert _row(controls, contrast="init scale", codebook_size_requested=4096)["unconverged"] == 3
    sentences = attribution(controls, frame, "utilization_relative")
    assert len(sentences) == len(SIZES)
    assert sentences[-1].startswith("K = 4096, latent dim 8: SimVQ uses more of its codebook than VQ")
    assert "init scale Δ = +0.29" in sentences[-1] and sentences[-1].count("share of the total") == 3
    # init scale: a significant part (Holm p < 0.05) that is *not* most of the advantage: it contributes
    init = [final_relative("vq-simvq-init", 4096, s) - final_relative("vq", 4096, s) for s in SEEDS]
    whole = [final_relative("simvq", 4096, s) - final_relative("vq", 4096, s) for s in SEEDS]
    share, low, high = st.fieller_ratio(init, whole)
    assert 0 < low < high < 0.5 and f"share of the total {share:.2g}" in sentences[-1]
    assert "learned linear layer" in sentences[-1] and "at this budget" in sentences[-1]   # vq-simvq-init rising


def test_probe_associations_equal_spearman_and_never_use_codes_with_gradient(analysed):
    _, frame, _, _ = analysed
    table = probe_associations(frame, "utilization_relative")
    assert set(table["probe"]) == {"unused_code_distance", "distribution_gap", "dead_code_revival"}
    runs = [(q, k, s) for q in CODEBOOK for k in SIZES for s in SEEDS]
    x = [late_mean(keys.PROBE_DEAD_CODE_REVIVAL, q, k, s) for q, k, s in runs]
    y = [final_relative(q, k, s) for q, k, s in runs]
    between = _row(table, probe="dead_code_revival", quantizer=POOLED, design=BETWEEN)   # labelled, no verdict
    assert between["n"] == 36 and np.isnan(between["p_holm"]) and between["verdict"].startswith("between methods")
    assert (between["rho"], between["p"]) == pytest.approx(tuple(stats.spearmanr(x, y)))
    within = _row(table, probe="dead_code_revival", quantizer=POOLED, design=WITHIN_CELLS)
    assert (within["n"], within["cells"]) == (36, 12) and within["min_p"] < 0.001
    family = table[table["design"] != BETWEEN]
    assert family["p_holm"].tolist() == pytest.approx(st.holm(family["p"]).tolist(), nan_ok=True)
    vq = _row(table, probe="unused_code_distance", quantizer="vq")   # 3 K cells of 3 seeds: exact, min p 2/216
    assert vq["design"] == WITHIN_K and vq["min_p"] == pytest.approx(2 / 216)
    assert _row(table, probe="unused_code_distance", quantizer=POOLED,
                design=WITHIN_CELLS)["verdict"].startswith("as the theory predicts")
    assert best_probe(table).startswith("`unused_code_distance` predicts utilization best")
    assert probe_value(keys.PROBE_CODES_WITH_GRADIENT, "simvq", 256, 0, 0) == 1.0   # logged, but never read


def test_one_seed_gives_insufficient_seeds_not_a_p_value():
    frame = pd.DataFrame({"quantizer": ["vq", "simvq"], "codebook_size_requested": [1024, 1024],
                          "codebook_size": [1024, 1024], "latent_dim": [8, 8], "seed": [0, 0],
                          "utilization": [0.4, 0.9]})
    row = compare_to_reference(frame, "utilization").iloc[0]
    assert row["n"] == 1 and row["verdict"] == "insufficient seeds (n = 1)" and np.isnan(row["p"])
    assert np.isnan(row["p_holm"])


def test_latent_dims_are_rows_not_extra_seeds_and_own_dims_pair_by_seed():
    rows = [("simvq", d, s, 0.9 + 0.01 * s + 0.001 * d) for d in (8, 32) for s in range(3)]
    rows += [("vq", d, s, 0.5 + 0.02 * s) for d in (8, 32) for s in range(3)]
    rows += [("lfq", 10, s, 0.5 + 0.02 * s) for s in range(3)]
    frame = pd.DataFrame(rows, columns=["quantizer", "latent_dim", "seed", "utilization"]).assign(
        codebook_size_requested=1024, codebook_size=1024)
    table = compare_to_reference(frame, "utilization")
    vq = table[table["contrast"] == "simvq − vq"]
    assert vq["latent_dim"].tolist() == [8, 32] and (vq["n"] == 3).all()   # n = seeds, per latent dim
    lfq = _row(table, contrast="simvq − lfq")
    assert lfq["n"] == 3 and lfq["paired_on"].startswith("seed (own latent dims 8/32 vs 10")
    assert lfq["difference"] == pytest.approx(0.4 - 0.01 + 0.02)


# ---------------------------------------------------------------- figures
def _lines(result: figs.FigureResult) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray, str]]:
    """(axes index, label) -> (x, y, colour) of every plotted line."""
    found = {}
    for i, ax in enumerate(result.figure.axes):
        for line in ax.lines:
            found[(i, line.get_label())] = (line.get_xdata(), line.get_ydata(), line.get_color())
    return found


def test_figures_hold_the_plotted_data(analysed):
    _, frame, histories, checkpoints = analysed
    results = {r.name: r for r in figs.make_figures(frame, histories, checkpoints, "utilization_relative")}
    try:
        assert {n for n, r in results.items() if r.figure is not None} == set(EXPECTED_FIGURES)
        assert "rfid" in results["fig2_rfid_vs_codebook_size"].skipped
        assert "latent dim" in results["fig3_utilization_vs_latent_dim"].skipped

        fig1 = _lines(results["fig1_utilization_vs_codebook_size"])
        for quantizer in ["vq", "fsq", "simvq"]:
            x, y, colour = fig1[(0, quantizer)]
            assert list(x) == [real_size(quantizer, k) for k in SIZES]   # plotted at the real size
            assert list(y) == pytest.approx([np.mean([final_utilization(quantizer, k, s) for s in SEEDS]) for k in SIZES])
            assert colour == figs.QUANTIZER_COLORS[quantizer]
        x, y, _ = fig1[(0, CEILING_LABEL)]   # the uniform ceiling, dashed, at every real K
        assert list(x) == sorted({real_size(q, k) for q in ["fsq", "vq"] for k in SIZES})
        assert list(y) == pytest.approx([ceiling(k) for k in x])
        x, _, _ = fig1[(0, "_unconverged vq-simvq-init")]   # hollow where a seed had not converged
        assert list(x) == [4096]
        assert results["fig1_utilization_vs_codebook_size"].figure.axes[0].get_xscale() == "log"

        fig5 = _lines(results["fig5_collapse_dynamics"])   # panels: train utilization, unused distance, gap
        x, y, _ = fig5[(1, "vq")]
        assert list(x) == STEPS
        assert list(y) == pytest.approx([np.mean([probe_value(keys.PROBE_UNUSED_CODE_DISTANCE, "vq", 4096, s, t)
                                                  for s in SEEDS]) for t in STEPS])
        assert (1, "fsq") not in fig5 and (0, "fsq") in fig5

        fig6 = _lines(results["fig6_codebook_effective_rank"])   # one panel per requested K
        assert len(results["fig6_codebook_effective_rank"].figure.axes) == len(SIZES)
        assert list(fig6[(2, "simvq")][1]) == pytest.approx(
            [np.mean([codebook_rank("simvq", 4096, s, t) for s in SEEDS]) for t in STEPS])

        phase = results["fig7_phase_diagram"].data   # one cell per (quantizer, K, samples seen)
        assert len(phase) == 5 * len(SIZES) * len(CHECKPOINTS) and (phase["metric"] == "utilization_relative").all()
        cell = _row(phase, quantizer="vq-simvq-init", codebook_size_requested=4096, samples_seen=20 * BATCH_SIZE)
        assert cell["value"] == pytest.approx(np.mean([relative_at("vq-simvq-init", 4096, s, 20) for s in SEEDS]))

        probes = results["fig8_probes_vs_utilization"]   # one panel per probe, one point per codebook trial
        assert len(probes.figure.axes) == 3 and len(probes.data.dropna(subset=["unused_code_distance"])) == 36
        points = {c.get_label(): c.get_offsets() for c in probes.figure.axes[0].collections}
        expected = sorted((late_mean(keys.PROBE_UNUSED_CODE_DISTANCE, "vq", k, s), final_relative("vq", k, s))
                          for k in SIZES for s in SEEDS)
        assert np.asarray(sorted(map(tuple, points["vq"]))) == pytest.approx(np.asarray(expected))
        assert len(points["_unconverged vq-simvq-init"]) == 3
    finally:
        figs.close(list(results.values()))


def _synthetic_frame(latent_dims, with_fid=False) -> pd.DataFrame:
    rows = []
    for quantizer in ["vq", "simvq"]:
        for size in [256, 4096]:
            for dim in latent_dims:
                for seed in SEEDS:
                    utilization = final_utilization(quantizer, size, seed, dim)
                    rows.append({"run_id": f"{quantizer}-{size}-{dim}-{seed}", "quantizer": quantizer,
                                 "codebook_size": size, "codebook_size_requested": size, "latent_dim": dim,
                                 "seed": seed, "utilization": utilization,
                                 "rfid": 40 - 10 * utilization if with_fid else np.nan, "rkid": np.nan,
                                 "rfid_samples": 64.0 if with_fid else np.nan, "psnr": np.nan, "ssim": np.nan})
    return pd.DataFrame(rows)


def test_utilization_vs_latent_dim_and_latent_panels():
    frame = _synthetic_frame([4, 16])
    palette = figs.quantizer_palette(frame["quantizer"].unique())
    fig3 = figs.utilization_vs_latent_dim(frame, palette)
    fig1 = figs.utilization_vs_size(frame, palette)
    try:
        lines = _lines(fig3)   # one panel per requested K, x = latent dims
        x, y, _ = lines[(1, "vq")]
        assert list(x) == [4, 16]
        assert list(y) == pytest.approx([np.mean([final_utilization("vq", 4096, s, d) for s in SEEDS]) for d in [4, 16]])
        # with a swept latent dim, utilization vs K gets one panel per latent dim
        assert [ax.get_title() for ax in fig1.figure.axes] == ["latent dim 4", "latent dim 16"]
    finally:
        figs.close([fig3, fig1])


def test_fid_figure_says_when_rfid_is_on_too_few_images():
    frame = _synthetic_frame([8], with_fid=True)
    result = figs.fid_vs_size(frame, figs.quantizer_palette(["vq", "simvq"]), min_images=2048)
    try:
        assert result.figure is not None and len(result.figure.axes) == 1   # rKID has no data: no empty panel
        assert "64 images < 2048" in result.title
        _, y, _ = _lines(result)[(0, "simvq")]
        assert list(y) == pytest.approx([np.mean([40 - 10 * final_utilization("simvq", k, s) for s in SEEDS])
                                         for k in [256, 4096]])
    finally:
        figs.close([result])


def test_figures_without_curves_are_skipped_not_drawn_empty():
    results = figs.make_figures(_synthetic_frame([8]), pd.DataFrame(columns=["run_id", "key", "step", "value"]))
    skipped = {r.name: r.skipped for r in results if r.figure is None}
    figs.close(results)
    assert set(skipped) == set(figs.FIGURE_NAMES) - {"fig1_utilization_vs_codebook_size"}
    assert "curves" in skipped["fig5_collapse_dynamics"] and "psnr" in skipped["fig4_psnr_ssim_vs_codebook_size"]
    assert "checkpoints" in skipped["fig7_phase_diagram"] and "dead_code_revival" in skipped["fig8_probes_vs_utilization"]


def test_confidence_bands_stay_inside_a_fractions_range():
    frame = pd.DataFrame({"quantizer": "vq", "codebook_size": [256, 256, 1024, 1024],
                          "codebook_size_requested": [256, 256, 1024, 1024], "latent_dim": 8, "seed": [0, 1, 0, 1],
                          "utilization": [0.05, 0.95, 0.02, 0.9]})
    result = figs.utilization_vs_size(frame, figs.quantizer_palette(["vq"]))
    try:
        assert result.data["ci_low"].min() < 0 and result.data["ci_high"].max() > 1   # t with 1 df is wide
        band = result.figure.axes[0].collections[0].get_paths()[0].vertices[:, 1]
        assert band.min() >= 0 and band.max() <= 1
    finally:
        figs.close([result])


def test_palette_is_fixed_per_quantizer():
    assert figs.quantizer_palette(["simvq", "vq"]) == {"vq": figs.QUANTIZER_COLORS["vq"],
                                                       "simvq": figs.QUANTIZER_COLORS["simvq"]}
    extra = figs.quantizer_palette(["zz", "aa", "vq"])
    assert extra["vq"] == figs.QUANTIZER_COLORS["vq"] and len(set(extra.values())) == 3
    assert extra == figs.quantizer_palette(["aa", "vq", "zz"])


# ---------------------------------------------------------------- the command
def test_vqbench_figures_writes_files_and_logs_them_on_the_parent(sweep_store, tracking_uri, tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "fig2_rfid_vs_codebook_size.png").write_bytes(b"from an older sweep")   # must not survive
    # --tracking-uri wins over MLFLOW_TRACKING_URI, and a relative sqlite URI is made absolute (as for sweep)
    shutil.copy(tracking_uri.removeprefix("sqlite:///"), tmp_path / "store.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert main(["figures", "--out", str(out), "--tracking-uri", "sqlite:///store.db"]) == 0   # the latest sweep
    assert not (tmp_path / "elsewhere.db").exists()
    printed = capsys.readouterr().out
    for name in EXPECTED_FIGURES:
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    for name in SKIPPED_FIGURES:
        assert not (out / f"{name}.png").exists() and f"skipped {name}" in printed

    table = pd.read_csv(out / "results.csv")
    assert len(table) == 5 * len(SIZES) and (table["n_seeds"] == 3).all()
    for row in table.itertuples():
        expected = np.mean([final_utilization(row.quantizer, row.codebook_size_requested, s) for s in SEEDS])
        assert row.utilization_mean == pytest.approx(expected)
    assert table.loc[table["quantizer"] == "fsq", "codebook_size"].tolist() == [FSQ_REAL_SIZE[k] for k in SIZES]

    report = (out / "report.md").read_text()
    assert f"Tracking store: `sqlite:///{tmp_path / 'store.db'}`" in report
    assert "45 FINISHED runs used" in report and "1 FAILED" in report
    for phrase in ["Holm-adjusted", "**trend** (4 tests", "**comparison** (6 tests", "**controls** (9 tests",
                   "min(0.2, 0.5 ×", "the slope rule", "±max(0.02, 0.001 / mean utilization)",
                   "were **not computed**", "capped", "paired by seed only", "Bonferroni-adjusted",
                   "collapses with size", "no meaningful trend", "not converged at this budget",
                   "explains most of it", "`unused_code_distance` predicts utilization best", "still rising",
                   "between methods", "Dead-code revival against a null", "Where unused codes sit",
                   "Does a probe predict later utilization", "share of the total",
                   "`probe/codes_with_gradient` is never evidence", "fig7_phase_diagram.png"]:
        assert phrase in report, phrase
    assert "gradient coverage" not in report.lower()

    logged = {Path(a.path).name for a in MlflowClient(f"sqlite:///{tmp_path / 'store.db'}").list_artifacts(
        sweep_store, ARTIFACT_DIR)}
    assert {f"{n}.png" for n in EXPECTED_FIGURES} <= logged
    assert {"report.md", "results.csv", "results.md", "runs.csv"} <= logged


def test_empty_experiment_is_a_clear_message_and_writes_nothing(empty_store, tmp_path, capsys):
    MlflowClient().create_experiment("empty")
    out = tmp_path / "figures"
    assert main(["figures", "--experiment", "empty", "--out", str(out)]) == 2
    assert "experiment 'empty' has no trial runs" in capsys.readouterr().err
    assert not out.exists()
    # no sweep anywhere: the default selection says so and lists the experiments
    assert main(["figures", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "no sweep parent run" in error and "'empty'" in error
    assert main(["figures", "--experiment", "nope", "--out", str(out)]) == 2
    assert "'nope' does not exist" in capsys.readouterr().err
    assert main(["figures", "--sweep", "0123456789abcdef", "--out", str(out)]) == 2
    assert "no such run" in capsys.readouterr().err
    assert not out.exists()


def test_only_failed_runs_is_a_clear_message(empty_store, tmp_path, capsys):
    parent = log_sweep(MlflowClient(), quantizers=(), failed=2)
    assert main(["figures", "--sweep", parent, "--out", str(tmp_path / "figures")]) == 2
    assert "no usable FINISHED trial runs (2 FAILED)" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


def test_lagged_predictions_and_distance_contrasts_on_the_logged_runs(analysed):
    from analysis.distances import AS_PREDICTED, CONTRARY, distance_contrasts, distance_summary
    from analysis.lagged import lagged_predictions

    _, frame, histories, checkpoints = analysed
    lagged = lagged_predictions(histories, checkpoints, frame, "utilization_relative")
    assert set(lagged["test"]) == {"probe at t → Δ utilization to the next checkpoint",
                                   "gap at the first checkpoint → final utilization"}
    assert lagged["p_holm"].tolist() == pytest.approx(st.holm(lagged["p"]).tolist(), nan_ok=True)
    assert (lagged["min_p"].dropna() > 0).all()
    distances = distance_contrasts(frame)   # 3 − 2·relative: VQ (lower utilization) sits farther
    assert len(distances) == len(SIZES) and distances["family"].eq("geometry").all()
    assert distances.loc[distances["codebook_size_requested"] == 4096, "verdict"].iloc[0].startswith(AS_PREDICTED)
    # the contrary case: VQ's unused codes closer to the data in every seed
    flipped = frame.assign(unused_code_distance=np.where(frame["quantizer"] == "vq",
                                                         0.5 + 0.01 * frame["seed"] ** 2, 2.0))
    table = distance_contrasts(flipped)
    assert table["verdict"].str.startswith(CONTRARY).all()
    assert distance_summary(table).startswith("Contrary evidence: VQ's unused codes sit closer")
