"""MLflow -> pandas for the decisive experiment: its design (logged before the first trial) and one row per
finished trial of its stages, found by the sweep tag ``<name>-lr``, ``<name>-lr-paper``, ``<name>-seeds-N``.

Reads only MLflow, like the rest of :mod:`analysis`.
"""
from __future__ import annotations

import math
import tomllib

import pandas as pd
from mlflow import MlflowClient

from benchmark.tracking import keys

from .runs import FINISHED, _search, load_histories

#: The run that holds the design file (tag ``vqbench.kind = design``), and its artifact.
KIND_DESIGN = "design"
DESIGN_ARTIFACT = "design.toml"
TAG_DESIGN_DIGEST = "design_digest"


def stage_name(name: str, stage: str) -> str:
    """The sweep name of one stage of the decisive experiment ``name`` ("lr", "lr-paper", "seeds-8")."""
    return f"{name}-{stage}"


def experiment_ids(client: MlflowClient, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"experiment {experiment!r} does not exist in the tracking store")
    return [found.experiment_id]


def load_design(client: MlflowClient, experiment: str, name: str) -> tuple[dict, str, int]:
    """The design as logged for ``name``: (parsed TOML, digest, the design run's start time in ms)."""
    runs = _search(client, experiment_ids(client, experiment),
                   f"tags.`{keys.TAG_KIND}` = '{KIND_DESIGN}' and tags.`{keys.TAG_SWEEP}` = '{name}'")
    if not runs:
        raise ValueError(f"no design run for decisive experiment {name!r} in {experiment!r}; "
                         "run `vqbench sweep --preset decide` first")
    run = sorted(runs, key=lambda r: r.info.start_time)[0]
    path = client.download_artifacts(run.info.run_id, DESIGN_ARTIFACT)
    with open(path, "rb") as handle:
        design = tomllib.load(handle)
    return design, run.data.tags.get(TAG_DESIGN_DIGEST, ""), int(run.info.start_time)


def _float(values: dict, key: str) -> float:
    value = values.get(key)
    return float(value) if value is not None else math.nan


def trial_frame(client: MlflowClient, experiment: str, name: str) -> pd.DataFrame:
    """One row per FINISHED trial of every stage of ``name``: identity, learning rate, optimizer, whether it
    evaluated on the validation split, its end-point metrics, where it stopped and whether it was censored."""
    rows = []
    for run in _search(client, experiment_ids(client, experiment), f"attributes.status = '{FINISHED}'"):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        sweep = tags.get(keys.TAG_SWEEP, "")
        if tags.get(keys.TAG_KIND) != "trial" or not sweep.startswith(f"{name}-"):
            continue
        rows.append({
            "run_id": run.info.run_id, "stage": sweep.removeprefix(f"{name}-"),
            "quantizer": tags.get(keys.TAG_QUANTIZER), "codebook_size": int(tags.get(keys.TAG_CODEBOOK_SIZE, 0)),
            "seed": int(tags.get(keys.TAG_SEED, -1)), "lr": float(params.get("lr", "nan")),
            "optimizer": params.get("optimizer", ""),
            "validation": float(params.get("validation_fraction", "0") or 0) > 0,
            "utilization": _float(metrics, keys.EVAL_UTILIZATION),
            "ceiling": _float(metrics, keys.EVAL_UTILIZATION_CEILING),
            "mse": _float(metrics, keys.EVAL_MSE), "psnr": _float(metrics, keys.EVAL_PSNR),
            "stopped_samples": _float(metrics, keys.BUDGET_STOPPED_SAMPLES),
            "censored": int(_float(metrics, keys.BUDGET_CENSORED) == 1.0),
            "converged": int(_float(metrics, keys.EVAL_CONVERGED) == 1.0),
            "codes_used": _float(metrics, keys.EVAL_UTILIZATION) * int(tags.get(keys.TAG_CODEBOOK_SIZE, 0)),
        })
    columns = ["run_id", "stage", "quantizer", "codebook_size", "seed", "lr", "optimizer", "validation",
               "utilization", "ceiling", "mse", "psnr", "stopped_samples", "censored", "converged", "codes_used"]
    return pd.DataFrame(rows, columns=columns)


def confirmatory_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The confirmatory trials (test-set evaluation, the seed stages); one row per (arm, size, seed)."""
    chosen = frame[~frame.validation & frame.stage.str.startswith("seeds-")]
    return chosen.sort_values("run_id").drop_duplicates(["quantizer", "codebook_size", "seed"], keep="first")


def utilization_curves(client: MlflowClient, frame: pd.DataFrame) -> pd.DataFrame:
    """Budget-matched curves: utilization against samples seen at every checkpoint of the given trials."""
    history = load_histories(client, list(frame.run_id), [keys.EVAL_UTILIZATION, keys.EVAL_SAMPLES_SEEN])
    if history.empty:
        return pd.DataFrame(columns=["run_id", "step", "utilization", "samples", "quantizer", "codebook_size"])
    wide = history.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide = wide.rename(columns={keys.EVAL_UTILIZATION: "utilization", keys.EVAL_SAMPLES_SEEN: "samples"})
    wide = wide.dropna(subset=["utilization", "samples"])
    return wide.merge(frame[["run_id", "quantizer", "codebook_size", "seed"]], on="run_id")
