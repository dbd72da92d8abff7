"""Analysis from a real MLflow SQLite store: runs logged here with known values (tests/test_analysis_synthetic.py),
read back, tabulated, tested and plotted, and the `vqbench figures` command end to end."""
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
from analysis.pipeline import ARTIFACT_DIR, HISTORY_KEYS  # noqa: E402
from analysis.runs import load_histories, runs_frame, select_runs, usable  # noqa: E402
from benchmark import keys  # noqa: E402
from benchmark.cli import main  # noqa: E402

from .test_analysis_synthetic import (FSQ_REAL_SIZE, SEEDS, SIZES, STEPS, codebook_rank, final_utilization,  # noqa: E402
                            gradient_coverage, log_sweep)

EXPECTED_FIGURES = ["fig1_utilization_vs_codebook_size", "fig4_psnr_ssim_vs_codebook_size",
                    "fig5_collapse_dynamics", "fig6_codebook_effective_rank"]
SKIPPED_FIGURES = ["fig2_rfid_vs_codebook_size", "fig3_utilization_vs_latent_dim"]


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


def finished_frame(parent_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    client = MlflowClient()
    frame = runs_frame(select_runs(client, sweep=parent_id).runs)
    frame = frame[usable(frame)].copy()
    histories = load_histories(client, frame["run_id"].tolist(), HISTORY_KEYS)
    coverage = histories[histories["key"] == keys.PROBE_GRADIENT_COVERAGE].groupby("run_id")["value"].mean()
    frame["gradient_coverage_mean"] = frame["run_id"].map(coverage)
    return frame, histories


# ---------------------------------------------------------------- reading MLflow
def test_runs_frame_holds_what_was_logged(sweep_store):
    selection = select_runs(MlflowClient(), sweep=sweep_store)
    assert selection.parent_run_id == sweep_store
    frame = runs_frame(selection.runs)
    assert len(frame) == 3 * len(SIZES) * len(SEEDS) + 1
    assert frame["status"].value_counts().to_dict() == {"FINISHED": 27, "FAILED": 1}
    for row in frame[frame["status"] == "FINISHED"].itertuples():
        assert row.utilization == pytest.approx(final_utilization(row.quantizer, row.codebook_size_requested, row.seed))
        expected_real = FSQ_REAL_SIZE[row.codebook_size_requested] if row.quantizer == "fsq" else row.codebook_size_requested
        assert row.codebook_size == expected_real
        assert np.isnan(row.rfid)   # not logged: missing, not zero
    # the default selection is the most recent sweep; --experiment finds the same runs and parent
    assert select_runs(MlflowClient()).parent_run_id == sweep_store
    by_experiment = select_runs(MlflowClient(), experiment="vqbench-test")
    assert len(by_experiment.runs) == len(frame) and by_experiment.parent_run_id == sweep_store


def test_histories_are_the_logged_curves(sweep_store):
    frame, histories = finished_frame(sweep_store)
    run = frame[(frame["quantizer"] == "vq") & (frame["codebook_size_requested"] == 1024) & (frame["seed"] == 1)].iloc[0]
    rank = histories[(histories["run_id"] == run.run_id) & (histories["key"] == keys.PROBE_CODEBOOK_RANK)]
    assert rank["step"].tolist() == STEPS
    assert rank["value"].tolist() == pytest.approx([codebook_rank("vq", 1024, 1, s) for s in STEPS])
    # FSQ logs no gradient coverage: its mean stays missing
    assert frame.loc[frame["quantizer"] == "fsq", "gradient_coverage_mean"].isna().all()
    expected = np.mean([gradient_coverage("vq", 1024, 1, s) for s in STEPS])
    assert run.gradient_coverage_mean == pytest.approx(expected)


# ---------------------------------------------------------------- statistics against scipy
def test_size_trends_equal_spearman_on_the_logged_numbers(sweep_store):
    frame, _ = finished_frame(sweep_store)
    trends = st.size_trends(frame).set_index("quantizer")
    for quantizer in ["vq", "simvq"]:
        x = [np.log2(k) for k in SIZES for _ in SEEDS]
        y = [final_utilization(quantizer, k, s) for k in SIZES for s in SEEDS]
        expected = stats.spearmanr(x, y)
        assert trends.loc[quantizer, "rho"] == pytest.approx(expected.statistic)
        assert trends.loc[quantizer, "p"] == pytest.approx(exact_spearman_p(x, y))  # n = 9: exact
        assert trends.loc[quantizer, "n"] == 9
    assert trends.loc["vq", "verdict"] == "collapses with size"
    assert trends.loc["vq", "mean_at_largest"] == pytest.approx(np.mean([final_utilization("vq", 4096, s) for s in SEEDS]))
    # FSQ uses every code at every size: no test, and it must not be called a collapse
    assert np.isnan(trends.loc["fsq", "p"]) and "no trend" in trends.loc["fsq", "verdict"]


def exact_spearman_p(x, y) -> float:
    """Two-sided exact p by brute force: Spearman of every permutation of x against y."""
    import itertools

    observed = stats.spearmanr(x, y).statistic
    ry = stats.rankdata(y)
    perms = np.array(list(itertools.permutations(stats.rankdata(x))))
    rho = np.array([np.corrcoef(row, ry)[0, 1] for row in perms]) if len(x) < 7 else (
        ((perms - perms.mean(1, keepdims=True)) * (ry - ry.mean())).sum(1)
        / np.sqrt(((perms - perms.mean(1, keepdims=True)) ** 2).sum(1) * ((ry - ry.mean()) ** 2).sum()))
    tolerance = 1e-12
    return min(1.0, 2 * min((rho <= observed + tolerance).mean(), (rho >= observed - tolerance).mean()))


def test_four_sizes_with_a_perfect_fall_are_not_called_significant():
    """SciPy's asymptotic p is 0 here; the exact p of rho = -1 from 4 points is 2/4! = 0.083."""
    frame = pd.DataFrame({"quantizer": "vq", "codebook_size": [256, 1024, 4096, 16384],
                          "utilization": [0.15, 0.04, 0.01, 0.003], "seed": 0})
    row = st.size_trends(frame).iloc[0]
    assert row["rho"] == pytest.approx(-1.0) and row["p"] == pytest.approx(2 / 24)
    assert row["p"] == pytest.approx(exact_spearman_p(np.log2(frame["codebook_size"]), frame["utilization"]))
    assert row["verdict"].startswith("no significant trend") and "add seeds" in row["verdict"]


def test_simvq_comparisons_equal_scipy_on_the_logged_numbers(sweep_store):
    frame, _ = finished_frame(sweep_store)
    comparisons = st.compare_to_reference(frame, reference="simvq")
    assert set(comparisons["quantizer"]) == {"vq", "fsq"} and len(comparisons) == 2 * len(SIZES)
    row = comparisons[(comparisons["quantizer"] == "vq") & (comparisons["codebook_size_requested"] == 4096)].iloc[0]
    simvq = np.array([final_utilization("simvq", 4096, s) for s in SEEDS])
    vq = np.array([final_utilization("vq", 4096, s) for s in SEEDS])
    expected = stats.ttest_rel(simvq, vq)
    assert row["n"] == 3 and row["test"] == "paired t-test"
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p"] == pytest.approx(expected.pvalue)
    assert row["mean_difference"] == pytest.approx((simvq - vq).mean())
    boot = stats.bootstrap((simvq - vq,), np.mean, n_resamples=st.BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                           method="percentile", rng=np.random.default_rng(st.BOOTSTRAP_SEED))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((boot.confidence_interval.low, boot.confidence_interval.high))
    assert row["verdict"] == "simvq higher" and row["paired_on"] == "seed, latent dim"


def test_gradient_coverage_association_equals_spearman(sweep_store):
    frame, _ = finished_frame(sweep_store)
    result = st.coverage_predicts_utilization(frame)
    runs = [(q, k, s) for q in ["vq", "simvq"] for k in SIZES for s in SEEDS]
    coverage = [np.mean([gradient_coverage(q, k, s, step) for step in STEPS]) for q, k, s in runs]
    utilization = [final_utilization(q, k, s) for q, k, s in runs]
    expected = stats.spearmanr(coverage, utilization)
    assert result.n == 18
    assert (result.rho, result.p) == pytest.approx((expected.statistic, expected.pvalue))
    assert "supports" in result.verdict


def test_paired_test_is_chosen_by_the_number_of_pairs():
    rng = np.random.default_rng(1)
    assert st.paired_test([0.3]).test == "none"
    assert "insufficient seeds" in st.paired_test([0.3]).note and np.isnan(st.paired_test([0.3]).p)
    a, b = rng.random(4), rng.random(4)
    small = st.paired_test(a - b)
    assert small.test == "paired t-test" and small.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    a, b = rng.random(8), rng.random(8)
    large = st.paired_test(a - b)
    assert large.test == "Wilcoxon signed-rank" and large.p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    constant = st.paired_test([0.2, 0.2, 0.2])
    assert constant.test == "none" and (constant.ci_low, constant.ci_high) == pytest.approx((0.2, 0.2))


def test_one_seed_gives_insufficient_seeds_not_a_p_value():
    frame = pd.DataFrame({"quantizer": ["vq", "simvq"], "codebook_size_requested": [1024, 1024],
                          "codebook_size": [1024, 1024], "latent_dim": [8, 8], "seed": [0, 0],
                          "utilization": [0.4, 0.9]})
    row = st.compare_to_reference(frame).iloc[0]
    assert row["n"] == 1 and row["verdict"] == "insufficient seeds (n = 1)" and np.isnan(row["p"])


def test_quantizers_with_their_own_latent_dims_are_paired_by_seed():
    rows = [("simvq", 32, s, 0.9 + 0.01 * s) for s in range(3)] + [("lfq", 10, s, 0.5 + 0.02 * s) for s in range(3)]
    frame = pd.DataFrame(rows, columns=["quantizer", "latent_dim", "seed", "utilization"]).assign(
        codebook_size_requested=1024, codebook_size=1024)
    row = st.compare_to_reference(frame).iloc[0]
    assert row["n"] == 3 and row["paired_on"].startswith("seed (latent dims differ")
    assert row["mean_difference"] == pytest.approx(0.4 - 0.01)


# ---------------------------------------------------------------- figures
def _lines(result: figs.FigureResult) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray, str]]:
    """(axes index, quantizer) -> (x, y, colour) of every plotted line."""
    found = {}
    for i, ax in enumerate(result.figure.axes):
        for line in ax.lines:
            found[(i, line.get_label())] = (line.get_xdata(), line.get_ydata(), line.get_color())
    return found


def test_figures_hold_the_plotted_data(sweep_store):
    frame, histories = finished_frame(sweep_store)
    results = {r.name: r for r in figs.make_figures(frame, histories)}
    try:
        assert {n for n, r in results.items() if r.figure is not None} == set(EXPECTED_FIGURES)
        assert "rfid" in results["fig2_rfid_vs_codebook_size"].skipped
        assert "latent dim" in results["fig3_utilization_vs_latent_dim"].skipped

        fig1 = _lines(results["fig1_utilization_vs_codebook_size"])
        for quantizer in ["vq", "fsq", "simvq"]:
            x, y, colour = fig1[(0, quantizer)]
            real = [FSQ_REAL_SIZE[k] if quantizer == "fsq" else k for k in SIZES]   # plotted at the real size
            assert list(x) == real
            assert list(y) == pytest.approx([np.mean([final_utilization(quantizer, k, s) for s in SEEDS]) for k in SIZES])
            assert colour == figs.QUANTIZER_COLORS[quantizer]
        assert results["fig1_utilization_vs_codebook_size"].figure.axes[0].get_xscale() == "log"

        fig4 = _lines(results["fig4_psnr_ssim_vs_codebook_size"])
        psnr = [np.mean([20 + 2 * final_utilization("vq", k, s) + s for s in SEEDS]) for k in SIZES]
        assert list(fig4[(0, "vq")][1]) == pytest.approx(psnr)

        fig5 = _lines(results["fig5_collapse_dynamics"])   # panels: train utilization, gradient coverage at K=4096
        x, y, colour = fig5[(1, "vq")]
        assert list(x) == STEPS and colour == figs.QUANTIZER_COLORS["vq"]
        assert list(y) == pytest.approx([np.mean([gradient_coverage("vq", 4096, s, t) for s in SEEDS]) for t in STEPS])
        assert (1, "fsq") not in fig5 and (0, "fsq") in fig5

        fig6 = _lines(results["fig6_codebook_effective_rank"])   # one panel per requested K
        assert len(results["fig6_codebook_effective_rank"].figure.axes) == len(SIZES)
        assert list(fig6[(2, "simvq")][1]) == pytest.approx(
            [np.mean([codebook_rank("simvq", 4096, s, t) for s in SEEDS]) for t in STEPS])
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
                                 "psnr": np.nan, "ssim": np.nan})
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


def test_fid_figure_is_drawn_when_rfid_exists_and_rkid_row_is_left_out():
    frame = _synthetic_frame([8], with_fid=True)
    result = figs.fid_vs_size(frame, figs.quantizer_palette(["vq", "simvq"]))
    try:
        assert result.figure is not None and len(result.figure.axes) == 1   # rKID has no data: no empty panel
        _, y, _ = _lines(result)[(0, "simvq")]
        assert list(y) == pytest.approx([np.mean([40 - 10 * final_utilization("simvq", k, s) for s in SEEDS])
                                         for k in [256, 4096]])
    finally:
        figs.close([result])


def test_figures_without_curves_are_skipped_not_drawn_empty():
    results = figs.make_figures(_synthetic_frame([8]), pd.DataFrame(columns=["run_id", "key", "step", "value"]))
    skipped = {r.name: r.skipped for r in results if r.figure is None}
    figs.close(results)
    assert set(skipped) == {"fig2_rfid_vs_codebook_size", "fig3_utilization_vs_latent_dim",
                            "fig4_psnr_ssim_vs_codebook_size", "fig5_collapse_dynamics", "fig6_codebook_effective_rank"}
    assert "curves" in skipped["fig5_collapse_dynamics"] and "psnr" in skipped["fig4_psnr_ssim_vs_codebook_size"]


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
def test_vqbench_figures_writes_files_and_logs_them_on_the_parent(sweep_store, tmp_path, capsys):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "fig2_rfid_vs_codebook_size.png").write_bytes(b"from an older sweep")   # must not survive
    assert main(["figures", "--out", str(out)]) == 0   # default selection: the latest sweep
    printed = capsys.readouterr().out
    for name in EXPECTED_FIGURES:
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    for name in SKIPPED_FIGURES:
        assert not (out / f"{name}.png").exists() and f"skipped {name}" in printed

    table = pd.read_csv(out / "results.csv")
    assert len(table) == 3 * len(SIZES) and (table["n_seeds"] == 3).all()
    for row in table.itertuples():
        expected = np.mean([final_utilization(row.quantizer, row.codebook_size_requested, s) for s in SEEDS])
        assert row.utilization_mean == pytest.approx(expected)
    assert table.loc[table["quantizer"] == "fsq", "codebook_size"].tolist() == [FSQ_REAL_SIZE[k] for k in SIZES]

    report = (out / "report.md").read_text()
    assert "27 FINISHED runs used" in report and "1 FAILED" in report
    assert "collapses with size" in report and "paired t-test" in report and "n = 18 trials" in report
    assert "fig1_utilization_vs_codebook_size.png" in report and "skipped" in report

    logged = {Path(a.path).name for a in MlflowClient().list_artifacts(sweep_store, ARTIFACT_DIR)}
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
