"""MLflow runs in, figures + tables + report out (and logged back on the sweep's parent run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark.tracking import keys

REPORT_NAME = "report.md"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
RUNS_CSV = "runs.csv"
ARTIFACT_DIR = "vqbench_figures"   # folder of the parent run's artifacts that holds these files
# Curves the figures and statistics need (the others stay in MLflow); fetched only for runs that logged them.
HISTORY_KEYS = [keys.TRAIN_UTILIZATION, keys.PROBE_UNUSED_CODE_DISTANCE, keys.PROBE_DISTRIBUTION_GAP,
                keys.PROBE_DEAD_CODE_REVIVAL, keys.PROBE_CODEBOOK_RANK, keys.EVAL_UTILIZATION,
                keys.EVAL_UTILIZATION_RELATIVE, keys.EVAL_SAMPLES_SEEN, keys.EVAL_CODES_BORN, keys.EVAL_CODES_DIED,
                keys.PROBE_DISTRIBUTION_GAP_WEIGHTED, keys.PROBE_DEAD_CODE_DISTANCE]


@dataclass
class Outputs:
    files: list[Path]                           # everything written, in order
    figures_written: list[str]                  # figure names
    figures_skipped: dict[str, str]             # name -> reason
    parent_run_id: str | None                   # where the files were logged as artifacts (None: nowhere)
    messages: list[str] = field(default_factory=list)   # what was printed


def analysed_runs(client, selection, allow_repeats: bool = False):
    """(all runs, usable mask, the pooled runs with probe columns, histories, checkpoints, pooling): every
    frame the analysis reads. ValueError when nothing is usable or the runs cannot be pooled."""
    from .checkpoints import apply_convergence, checkpoint_frame
    from .mechanism import probe_summaries
    from .pooling import check_poolable, drop_repeats
    from .runs import load_histories, runs_frame, usable

    all_runs = runs_frame(selection.runs)
    if all_runs.empty:
        raise ValueError(f"{selection.description} has no trial runs: nothing to analyse")
    used = usable(all_runs)
    if not used.any():
        counts = ", ".join(f"{n} {s}" for s, n in all_runs["status"].value_counts().items())
        raise ValueError(f"{selection.description} has no usable FINISHED trial runs ({counts}): nothing to analyse")
    check_poolable(all_runs[used])
    frame, pooling = drop_repeats(all_runs[used].copy(), allow_repeats)
    histories = load_histories(client, frame["run_id"].tolist(), HISTORY_KEYS,
                               available=dict(zip(frame["run_id"], frame["metric_keys"])))
    frame = frame.merge(probe_summaries(histories), on="run_id", how="left")
    frame = apply_convergence(frame, checkpoint_frame(histories, frame))   # the slope rule, every run
    return all_runs, used, frame, histories, checkpoint_frame(histories, frame), pooling


def regenerate(out_dir: str | Path, experiment: str | None = None, sweep: str | None = None,
               log_artifacts: bool = True, echo=print, tracking_uri: str | None = None,
               allow_repeats: bool = False) -> Outputs:
    """Read the selected runs from the tracking store (``tracking_uri`` resolved as ``vqbench sweep`` does:
    the argument, else ``MLFLOW_TRACKING_URI``, else ./mlflow.db) and write figures, results tables and the
    report to ``out_dir``. ValueError when there is nothing to analyse or the runs cannot be pooled (then no
    file is written)."""
    from mlflow import MlflowClient

    from benchmark.evaluation.fid import MIN_UNBIASED_IMAGES
    from benchmark.tracking.runs import resolve_tracking_uri

    from . import figures as figs
    from .checkpoints import movement
    from .comparisons import compare_to_reference, control_contrasts
    from .distances import distance_contrasts
    from .lagged import lagged_predictions
    from .mechanism import probe_associations
    from .revival_null import revival_against_null
    from .report import Findings, build_report
    from .runs import select_runs
    from .audio_report import audio_section
    from .tables import results_markdown, results_table
    from .trends import size_trends, utilization_metric

    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        echo(text)

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    selection = select_runs(client, experiment=experiment, sweep=sweep)
    all_runs, used, frame, histories, checkpoints, pooling = analysed_runs(client, selection, allow_repeats)
    say(f"analysing {selection.description}: {len(frame)} FINISHED runs used of {len(all_runs)}")
    if pooling.repeats:
        say(f"  {pooling.sentence()}")

    metric = utilization_metric(frame)
    comparisons = compare_to_reference(frame, metric)
    findings = Findings(metric, size_trends(frame, metric), comparisons,
                        control_contrasts(frame, metric, comparisons), probe_associations(frame, metric),
                        movement(frame, checkpoints, metric), pooling,
                        lagged=lagged_predictions(histories, checkpoints, frame, metric),
                        revival=revival_against_null(frame, histories, checkpoints),
                        distances=distance_contrasts(frame), frame=frame)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    results = figs.make_figures(frame, histories, checkpoints, metric, MIN_UNBIASED_IMAGES)
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
    all_runs.drop(columns=["start_time", "metric_keys"]).to_csv(out / RUNS_CSV, index=False)
    report = build_report(selection.description, uri, all_runs, used, frame, findings, results, table)
    report += audio_section(frame)
    (out / REPORT_NAME).write_text(report)
    files += [out / RESULTS_CSV, out / RESULTS_MD, out / RUNS_CSV, out / REPORT_NAME]
    say(f"wrote {out / RESULTS_CSV}, {out / RESULTS_MD}, {out / RUNS_CSV}, {out / REPORT_NAME}")
    for row in findings.trends.itertuples():
        say(f"  {row.quantizer}: {metric} vs log2 K: rho={row.rho:.3f} p(Holm)={row.p_holm:.3g} "
            f"drop={row.drop:.3g} -> {row.verdict}")

    parent = selection.parent_run_id if log_artifacts else None
    if parent:
        for path in files:
            client.log_artifact(parent, str(path), artifact_path=ARTIFACT_DIR)
        say(f"logged {len(files)} files as artifacts under {ARTIFACT_DIR}/ on sweep run {parent}")
    return Outputs(files, written, skipped, parent, messages)
