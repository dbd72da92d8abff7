"""MLflow runs in, figures + tables + report out (and logged back on the sweep's parent run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark import keys

REPORT_NAME = "report.md"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
RUNS_CSV = "runs.csv"
ARTIFACT_DIR = "vqbench_figures"   # folder of the parent run's artifacts that holds these files
# Curves the figures and the mechanism statistic need (the others stay in MLflow).
HISTORY_KEYS = [keys.TRAIN_UTILIZATION, keys.PROBE_GRADIENT_COVERAGE, keys.PROBE_CODEBOOK_RANK]


@dataclass
class Outputs:
    files: list[Path]                           # everything written, in order
    figures_written: list[str]                  # figure names
    figures_skipped: dict[str, str]             # name -> reason
    parent_run_id: str | None                   # where the files were logged as artifacts (None: nowhere)
    messages: list[str] = field(default_factory=list)   # what was printed


def regenerate(out_dir: str | Path, experiment: str | None = None, sweep: str | None = None,
               log_artifacts: bool = True, echo=print) -> Outputs:
    """Read the selected runs from the tracking store (``MLFLOW_TRACKING_URI`` or MLflow's default) and
    write figures, results tables and the report to ``out_dir``. ValueError when there is nothing to analyse
    (then no file is written)."""
    import mlflow
    from mlflow import MlflowClient

    from . import figures as figs
    from .report import build_report
    from .runs import load_histories, runs_frame, select_runs, usable
    from .statistics import compare_to_reference, coverage_predicts_utilization, size_trends
    from .tables import results_markdown, results_table

    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        echo(text)

    client = MlflowClient()
    tracking_uri = mlflow.get_tracking_uri()
    selection = select_runs(client, experiment=experiment, sweep=sweep)
    all_runs = runs_frame(selection.runs)
    if all_runs.empty:
        raise ValueError(f"{selection.description} has no trial runs: nothing to analyse")
    used = usable(all_runs)
    if not used.any():
        counts = ", ".join(f"{n} {s}" for s, n in all_runs["status"].value_counts().items())
        raise ValueError(f"{selection.description} has no usable FINISHED trial runs ({counts}): nothing to analyse")
    say(f"analysing {selection.description}: {int(used.sum())} FINISHED runs used of {len(all_runs)}")

    frame = all_runs[used].copy()
    histories = load_histories(client, frame["run_id"].tolist(), HISTORY_KEYS)
    coverage = histories[histories["key"] == keys.PROBE_GRADIENT_COVERAGE].groupby("run_id")["value"].mean()
    frame["gradient_coverage_mean"] = frame["run_id"].map(coverage)
    all_runs["gradient_coverage_mean"] = all_runs["run_id"].map(coverage)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    results = figs.make_figures(frame, histories)
    written, skipped = [], {}
    try:
        for result in results:
            if result.figure is None:
                skipped[result.name] = result.skipped
                say(f"skipped {result.name}: {result.skipped}")
                for stale in (out / f"{result.name}.png", out / f"{result.name}.pdf"):
                    if stale.exists():  # an older run's figure would claim results this data doesn't have
                        stale.unlink()
                        say(f"  removed stale {stale}")
                continue
            files += result.save(out)
            written.append(result.name)
            say(f"wrote {out / result.name}.png/.pdf")
    finally:
        figs.close(results)

    table = results_table(frame)
    table.to_csv(out / RESULTS_CSV, index=False)
    (out / RESULTS_MD).write_text(results_markdown(table) + "\n")
    all_runs.drop(columns=["start_time"]).to_csv(out / RUNS_CSV, index=False)
    trends = size_trends(frame)
    comparisons = compare_to_reference(frame)
    association = coverage_predicts_utilization(frame)
    report = build_report(selection.description, tracking_uri, all_runs, used, trends, comparisons,
                          association, results, table)
    (out / REPORT_NAME).write_text(report)
    files += [out / RESULTS_CSV, out / RESULTS_MD, out / RUNS_CSV, out / REPORT_NAME]
    say(f"wrote {out / RESULTS_CSV}, {out / RESULTS_MD}, {out / RUNS_CSV}, {out / REPORT_NAME}")
    for row in trends.itertuples():
        say(f"  {row.quantizer}: utilization vs log2 K: rho={row.rho:.3f} p={row.p:.3g} -> {row.verdict}")

    parent = selection.parent_run_id if log_artifacts else None
    if parent:
        for path in files:
            client.log_artifact(parent, str(path), artifact_path=ARTIFACT_DIR)
        say(f"logged {len(files)} files as artifacts under {ARTIFACT_DIR}/ on sweep run {parent}")
    return Outputs(files, written, skipped, parent, messages)
