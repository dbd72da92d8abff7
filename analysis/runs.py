"""MLflow -> pandas: pick the runs of a sweep or an experiment and flatten them into DataFrames.

Analysis reads only MLflow, through the names in :mod:`benchmark.tracking.keys`. One row per trial run in
:func:`runs_frame`; curves (step metrics) in long form in :func:`load_histories`.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from benchmark.tracking import keys

KIND_TRIAL = "trial"
KIND_SWEEP = "sweep"
PARENT_RUN_TAG = "mlflow.parentRunId"   # MLflow's own tag on child runs
FINISHED = "FINISHED"

# Final metrics as DataFrame columns: the MLflow key without its prefix ("eval/rfid" -> "rfid",
# "cost/wall_time_s" -> "wall_time_s"), except where two keys share a suffix.
_COLUMN_OVERRIDES = {keys.EVAL_SAMPLES_SEEN: "eval_samples_seen"}   # cost/samples_seen keeps "samples_seen"
_EXTRA_FINAL = [keys.EVAL_CONVERGENCE_STATUS, keys.EVAL_UTILIZATION_SLOPE, keys.EVAL_UTILIZATION_SLOPE_CI_LOW,
                keys.EVAL_UTILIZATION_SLOPE_CI_HIGH,   # the slope rule's verdict, where logged
                keys.EVAL_CODES_BORN, keys.EVAL_CODES_DIED,   # turnover over the last checkpoint interval
                *keys.FINAL_OPTIONAL]                         # audio quality, the budget mode's stop
FINAL_COLUMNS: dict[str, str] = {key: _COLUMN_OVERRIDES.get(key, key.split("/", 1)[1])
                                 for key in [*keys.FINAL, *[k for k in _EXTRA_FINAL if k not in keys.FINAL]]}
assert len(set(FINAL_COLUMNS.values())) == len(FINAL_COLUMNS), "final metric names must stay distinct"

# Config fields read as integers (params are strings in MLflow) and the tag that backs each up.
_INT_FIELDS = {
    "codebook_size": keys.TAG_CODEBOOK_SIZE,
    "latent_dim": keys.TAG_LATENT_DIM,
    "seed": keys.TAG_SEED,
    "steps": None,
    "batch_size": None,
    "fid_samples": None,
    "eval_samples": None,
    "width": None,
    "image_size": None,
    "sample_rate": None,
    "clip_samples": None,
    "num_res_blocks": None,
    "num_downsamples": None,
    "warmup_steps": None,
    "dead_code_window": None,
    "probe_every": None,
    "eval_checkpoints": None,
}
_FLOAT_PARAMS = ["lr", "weight_decay", "checkpoint_ratio"]
# Params kept as logged (strings), and tags: the budget and identity columns pooling checks.
_TEXT_PARAMS = ["optimizer", keys.PARAM_MODALITY, "backbone", keys.PARAM_BACKBONE_RESOLVED, keys.PARAM_EVAL_INDICES_DIGEST, keys.PARAM_FID_INDICES_DIGEST,
                keys.PARAM_FID_WEIGHTS_DIGEST]
_TEXT_TAGS = {"trial_key": keys.TAG_TRIAL_KEY, "sweep": keys.TAG_SWEEP, "parent_run_id": PARENT_RUN_TAG}
QUANTIZER_OPTION_PREFIX = "quantizer_options."


@dataclass
class RunSelection:
    """The trial runs to analyse and where they came from."""

    description: str                    # e.g. "sweep quick (parent run 0af3…) in experiment vqbench-quick"
    runs: list[Run]                     # trial runs of every status
    parent_run_id: str | None = None    # the sweep's parent run, where artifacts are logged
    experiment_ids: list[str] = field(default_factory=list)


def _experiment_listing(client: MlflowClient) -> str:
    experiments = client.search_experiments()
    if not experiments:
        return "the tracking store has no experiments"
    names = ", ".join(repr(e.name) for e in experiments)
    return f"experiments in the tracking store: {names}"


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str,
            order_by: list[str] | None = None, max_results: int | None = None) -> list[Run]:
    """Every matching run (page by page), through ``client`` so its tracking URI is the one searched."""
    found: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, order_by=order_by, page_token=token,
                                  max_results=min(max_results or 1000, 1000))
        found += list(page)
        token = page.token
        if not token or (max_results and len(found) >= max_results):
            return found[:max_results] if max_results else found


def _children_of(client: MlflowClient, parent: Run) -> list[Run]:
    children = _search(client, [parent.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'")
    return [run for run in children if run.data.tags.get(keys.TAG_KIND, KIND_TRIAL) != KIND_SWEEP]


def _describe_sweep(client: MlflowClient, parent: Run) -> str:
    experiment = client.get_experiment(parent.info.experiment_id)
    name = parent.data.tags.get(keys.TAG_SWEEP) or parent.info.run_name or "?"
    return f"sweep {name!r} (parent run {parent.info.run_id}) in experiment {experiment.name!r}"


def select_runs(client: MlflowClient, experiment: str | None = None, sweep: str | None = None) -> RunSelection:
    """The trial runs of ``sweep`` (a parent run id), of ``experiment`` (a name), or by default of the
    most recent sweep parent run in the store. Raises ValueError naming what exists when nothing matches."""
    if experiment and sweep:
        raise ValueError("give either --experiment or --sweep, not both")
    if sweep:
        try:
            parent = client.get_run(sweep)
        except Exception as error:  # MlflowException for an unknown id; its text says why
            raise ValueError(f"--sweep {sweep!r}: no such run in the tracking store ({error})") from None
        return RunSelection(_describe_sweep(client, parent), _children_of(client, parent), parent.info.run_id,
                            [parent.info.experiment_id])
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ValueError(f"--experiment {experiment!r} does not exist; {_experiment_listing(client)}")
        runs = [run for run in _search(client, [found.experiment_id], "")
                if run.data.tags.get(keys.TAG_KIND) != KIND_SWEEP]
        parents = {run.data.tags.get(PARENT_RUN_TAG) for run in runs}
        # Artifacts go to the sweep's parent only when every trial belongs to that one sweep.
        parent_id = parents.pop() if len(parents) == 1 else None
        return RunSelection(f"experiment {experiment!r}", runs, parent_id, [found.experiment_id])
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    latest = _search(client, experiment_ids, f"tags.`{keys.TAG_KIND}` = '{KIND_SWEEP}'",
                     order_by=["attributes.start_time DESC"], max_results=1) if experiment_ids else []
    if not latest:
        raise ValueError("no sweep parent run (tag vqbench.kind = 'sweep') in the tracking store; "
                         f"pass --experiment NAME or --sweep RUN_ID. {_experiment_listing(client)}")
    parent = latest[0]
    return RunSelection(_describe_sweep(client, parent), _children_of(client, parent), parent.info.run_id,
                        [parent.info.experiment_id])


def _as_float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "None") else math.nan
    except ValueError:
        return math.nan


def _converged(metrics: dict, tags: dict) -> float:
    """1.0 / 0.0 from eval/converged, else from the tag ("yes"/"no"); NaN when neither was logged."""
    if keys.EVAL_CONVERGED in metrics:
        return float(metrics[keys.EVAL_CONVERGED])
    return {"yes": 1.0, "no": 0.0}.get(str(tags.get(keys.TAG_CONVERGED, "")).lower(), math.nan)


def _as_int(value: str | None) -> int | None:
    if value is None or value in ("", "None"):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: run_id, status, quantizer, codebook_size (the real size), codebook_size_requested,
    latent_dim, seed, dataset, budget fields, quantizer options (one string), trial_key, sweep,
    parent_run_id, converged (1/0/NaN) and each final metric under its short name (NaN when missing).
    Config values come from params, falling back to the trial tags. ``metric_keys`` holds the set of
    metric keys the run has, so curves are fetched only where they exist."""
    rows = []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        row: dict[str, object] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "quantizer": params.get("quantizer") or tags.get(keys.TAG_QUANTIZER),
            "dataset": params.get("dataset") or tags.get(keys.TAG_DATASET),
        }
        for name, tag in _INT_FIELDS.items():
            row[name] = _as_int(params.get(name) or (tags.get(tag) if tag else None))
        requested = _as_int(params.get(keys.PARAM_CODEBOOK_SIZE_REQUESTED))
        row["codebook_size_requested"] = requested if requested is not None else row["codebook_size"]
        row.update({name: _as_float(params.get(name)) for name in _FLOAT_PARAMS})
        row.update({name: params.get(name) for name in _TEXT_PARAMS})
        row.update({name: tags.get(tag) for name, tag in _TEXT_TAGS.items()})
        row["quantizer_options"] = ", ".join(f"{k[len(QUANTIZER_OPTION_PREFIX):]}={v}" for k, v in sorted(params.items())
                                             if k.startswith(QUANTIZER_OPTION_PREFIX))
        for key, column in FINAL_COLUMNS.items():
            row[column] = run.data.metrics.get(key, math.nan)
        row["converged"] = _converged(run.data.metrics, tags)
        row["metric_keys"] = frozenset(run.data.metrics)
        rows.append(row)
    columns = ["run_id", "run_name", "status", "start_time", "quantizer", "dataset", *_INT_FIELDS,
               "codebook_size_requested", *_FLOAT_PARAMS, *_TEXT_PARAMS, *_TEXT_TAGS, "quantizer_options",
               *FINAL_COLUMNS.values(), "metric_keys"]
    frame = pd.DataFrame(rows, columns=columns)
    for name in [*_INT_FIELDS, "codebook_size_requested"]:
        frame[name] = frame[name].astype("Int64")
    return frame


def usable(frame: pd.DataFrame) -> pd.Series:
    """FINISHED runs that name their quantizer, codebook size and seed: the runs statistics use."""
    return ((frame["status"] == FINISHED) & frame["quantizer"].notna() & frame["codebook_size"].notna()
            & frame["seed"].notna())


def load_histories(client: MlflowClient, run_ids: list[str], metric_keys: list[str],
                   max_workers: int = 4, available: dict[str, frozenset] | None = None) -> pd.DataFrame:
    """Long-form curves: columns run_id, key, step, value (one row per logged point).

    MLflow 3's public client has no batch history call (the bulk endpoints are UI-only REST routes that
    subsample), so this asks ``get_metric_history`` per run and key, a few at a time. ``available``
    (run id -> the metric keys the run holds, ``runs_frame``'s ``metric_keys``) skips the calls for curves
    a run never logged: FSQ/LFQ have no probes, and a run without rFID no rFID."""
    pairs = [(run_id, key) for run_id in run_ids for key in metric_keys
             if available is None or key in available.get(run_id, frozenset({key}))]

    def fetch(pair: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        run_id, key = pair
        return [(run_id, key, m.step, m.value) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        rows = [row for chunk in pool.map(fetch, pairs) for row in chunk]
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    # A curve logged twice at one step (a resumed trial) keeps its last value.
    return frame.drop_duplicates(["run_id", "key", "step"], keep="last").reset_index(drop=True)
