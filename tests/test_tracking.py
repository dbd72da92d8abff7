"""What a trial leaves in MLflow (a real SQLite store), the failure path, `vqbench train` and `vqbench ui`.

A fresh SQLite store costs several seconds of schema migrations here, so the tracked runs share one
module-wide store; each test reads the part of the run it is about.
"""
from __future__ import annotations

import json
import socket

import pytest

from benchmark.tracking import keys
from benchmark.cli import main
from benchmark.training.config import TrainConfig
from benchmark.tracking.runs import RunTracking, resolve_tracking_uri
from benchmark.training.trainer import NonFiniteLossError, train

TINY = dict(codebook_size=64, latent_dim=8, image_size=16, width=16, batch_size=16, eval_samples=64,
            fid_samples=0, log_every=5, probe_every=5, warmup_steps=2, dead_code_window=10)
EXPERIMENT = "vqbench-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient(store)


@pytest.fixture(scope="module")
def trial(store, client):
    """One tracked tiny trial, nested under a parent run the way a sweep nests it."""
    from benchmark.tracking.runs import experiment_id

    parent = client.create_run(experiment_id(client, EXPERIMENT), run_name="sweep parent")
    config = TrainConfig(quantizer="vq", steps=20, seed=2, **TINY)
    tracking = RunTracking(tracking_uri=store, experiment=EXPERIMENT, parent_run_id=parent.info.run_id,
                           tags={keys.TAG_PRESET: "tiny", keys.TAG_SWEEP: "test-sweep"},
                           log_system_metrics=False)
    result = train(config, tracking=tracking, progress=False)
    return config, result, client.get_run(result.run_id), parent.info.run_id


def test_run_is_finished_named_nested_and_described(trial):
    config, result, run, parent_id = trial
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "vq K=64 d=8 seed=2"
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert "20 steps x batch 16 = 320 samples" in run.data.tags["mlflow.note.content"]


def test_run_holds_every_config_field_as_a_param(trial):
    config, result, run, _ = trial
    params = run.data.params
    for name, value in config.as_params().items():
        assert params[name] == str(value), name
    assert params[keys.PARAM_CODEBOOK_SIZE_REQUESTED] == "64"


def test_run_holds_the_filterable_tags_and_provenance(trial):
    config, result, run, _ = trial
    tags = run.data.tags
    assert tags[keys.TAG_QUANTIZER] == "vq"
    assert tags[keys.TAG_CODEBOOK_SIZE] == "64"
    assert tags[keys.TAG_LATENT_DIM] == "8"
    assert tags[keys.TAG_SEED] == "2"
    assert tags[keys.TAG_DATASET] == "photos"
    assert tags[keys.TAG_DEVICE] == "cpu"
    assert tags[keys.TAG_TRIAL_KEY] == config.trial_key()
    assert tags[keys.TAG_KIND] == "trial"
    assert tags[keys.TAG_PRESET] == "tiny" and tags[keys.TAG_SWEEP] == "test-sweep"
    assert tags["version.torch"] and tags["version.mlflow"] and tags["version.vqbench"]
    assert keys.TAG_GIT_COMMIT in tags  # the test suite runs inside the git checkout


def test_run_holds_curves_with_history_and_the_final_metrics(trial, client):
    config, result, run, _ = trial
    history = client.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)
    assert [m.step for m in history] == [5, 10, 15, 20]
    probes = client.get_metric_history(run.info.run_id, keys.PROBE_CODES_WITH_GRADIENT)
    assert [m.step for m in probes] == [1, 5, 10, 15, 20]
    checkpoints = client.get_metric_history(run.info.run_id, keys.EVAL_UTILIZATION)
    assert [m.step for m in checkpoints] == [3, 5, 10, 20]   # 20 steps / 8, / 4, / 2, all (rounded up)
    for key in set(keys.CURVES) - {keys.PROBE_UNUSED_CODE_DISTANCE} | {"train/codebook", "train/commitment"}:
        assert key in run.data.metrics, key
    for key in set(keys.FINAL) - {keys.EVAL_RFID, keys.EVAL_RKID, keys.EVAL_RKID_STD, keys.EVAL_RFID_SAMPLES}:
        assert run.data.metrics[key] == pytest.approx(result.metrics[key]), key


def test_run_records_the_dataset_with_split_sizes(trial):
    config, result, run, _ = trial
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "photos"
    assert len(dataset.digest) >= 8
    profile = json.loads(dataset.profile)
    assert profile["train_images"] > 0 and profile["test_images"] > 0
    assert profile["image_shape"] == [3, 16, 16]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_run_holds_the_config_and_the_images(trial, client):
    config, result, run, _ = trial
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "reconstructions.png", "code_usage.png"} <= names
    saved = json.loads(open(client.download_artifacts(run.info.run_id, "config.json")).read())
    assert saved["quantizer"] == "vq" and saved["steps"] == 20
    from PIL import Image

    grid = Image.open(client.download_artifacts(run.info.run_id, "reconstructions.png"))
    assert grid.width > 2 * grid.height  # 8 originals above 8 reconstructions


def test_non_finite_loss_fails_the_run_naming_the_step(store, client):
    config = TrainConfig(quantizer="vq", steps=10, lr=1e30, **TINY)  # diverges at the second step
    tracking = RunTracking(tracking_uri=store, experiment=EXPERIMENT, run_name="diverges",
                           log_system_metrics=False)
    with pytest.raises(NonFiniteLossError, match=r"step \d+") as raised:
        train(config, tracking=tracking, progress=False)
    assert raised.value.step >= 2
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string="attributes.run_name = 'diverges'")
    assert run.info.status == "FAILED"
    assert f"step {raised.value.step}" in run.data.tags["mlflow.note.content"]


def test_vqbench_train_command_logs_a_run_with_system_metrics(store, client, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    # MLflow's monitor publishes a sample only after a whole interval and drops it when the run ends
    # first: a warm 12-step run can end within 0.5 s, so sample far more often than the run lasts
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    code = main(["train", "--quantizer", "simvq", "--codebook-size", "32", "--latent-dim", "4",
                 "--image-size", "16", "--width", "8", "--steps", "12", "--batch-size", "8",
                 "--eval-samples", "32", "--fid-samples", "0", "--log-every", "4", "--option", "beta=0.5",
                 "--experiment", EXPERIMENT, "--tracking-uri", store, "--run-name", "from the cli",
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert keys.EVAL_UTILIZATION in out and "vqbench ui" in out
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string="attributes.run_name = 'from the cli'")
    assert run.data.params["quantizer_options.beta"] == "0.5"
    assert any(key.startswith("system/") for key in run.data.metrics)


def test_vqbench_train_reports_bad_input_cleanly(capsys):
    assert main(["train", "--option", "beta"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_tracking_uri_defaults_to_an_absolute_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"  # four slashes: absolute
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs.db")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'runs.db'}"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_vqbench_ui_refuses_a_port_that_is_taken(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "already in use" in err
