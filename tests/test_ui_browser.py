"""The MLflow UI, in a real headless browser, shows a sweep the way a researcher reads it (issue 8).

A real tiny sweep (local Ray, the real trainer) writes to a SQLite store; the real `vqbench ui` command
serves it on loopback; headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
opens the experiment's runs page, expands the sweep's parent run and must list every child run by its
readable name. Skipped, with the reason, where the browser is not installed (scripts/test.sh installs it
where it can).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark.tracking import keys
from benchmark.tracking.ui import free_port, wait_until_serving
from benchmark.tracking.ui_browser import find_browser, headless_chromium, runs_page_names
from sweeps.grid import SweepGrid, base_config, expand_grid
from sweeps.launch import SweepSettings, start_sweep

pytestmark = pytest.mark.skipif(
    find_browser() is None or not __import__("importlib").util.find_spec("selenium"),
    reason="headless browser test needs Debian's chromium and chromium-driver and the selenium package "
           "(scripts/test.sh installs them where it can: apt-get install chromium chromium-driver)",
)

TINY_BUDGET = {"image_size": 16, "width": 8, "num_res_blocks": 0, "num_downsamples": 2, "steps": 8,
               "batch_size": 8, "warmup_steps": 2, "eval_samples": 32, "fid_samples": 0, "log_every": 4,
               "probe_every": 4, "dead_code_window": 8}


@pytest.fixture
def tiny_sweep(local_ray, tracking_uri, tmp_path):
    grid = SweepGrid(["vq", "simvq"], [16, 32], [4], [0], base=base_config(TINY_BUDGET))
    outcome = start_sweep(grid, name="browser-sweep", experiment="ui-test", settings=SweepSettings(
        storage_path=str(tmp_path / "runs"), tracking_uri=tracking_uri, log_system_metrics=False, verbose=0))
    assert outcome.counts == {"FINISHED": 4}
    return outcome, [trial.run_name for trial in expand_grid(grid).trials]


@pytest.fixture
def ui_server(tracking_uri, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "ui", "--port", str(port), "--backend-store-uri", tracking_uri],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # an unread pipe would fill and block the server
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_runs_page_lists_the_child_runs_by_readable_name(tiny_sweep, ui_server, tracking_uri):
    from mlflow.tracking import MlflowClient

    outcome, run_names = tiny_sweep
    assert sorted(run_names) == ["simvq K=16 d=4 seed=0", "simvq K=32 d=4 seed=0", "vq K=16 d=4 seed=0",
                                 "vq K=32 d=4 seed=0"]
    experiment = MlflowClient(tracking_uri).get_experiment_by_name("ui-test")
    with headless_chromium() as driver:
        collapsed = runs_page_names(driver, ui_server, experiment.experiment_id, expand=False)
        assert collapsed == ["browser-sweep"], "child runs sit under the sweep's parent run"
        names = runs_page_names(driver, ui_server, experiment.experiment_id, expect=run_names[-1])
    assert names[0] == "browser-sweep"
    assert sorted(names[1:]) == sorted(run_names)
    # and the parent run is the one the sweep created, tagged so the UI's search box can find it
    parent = MlflowClient(tracking_uri).get_run(outcome.parent_run_id)
    assert parent.info.run_name == "browser-sweep" and parent.data.tags[keys.TAG_KIND] == "sweep"
