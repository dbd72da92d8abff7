"""Screenshots of the MLflow UI for the README, from a real sweep in an MLflow store.

    .venv/bin/python scripts/screenshots.py --store sqlite:////abs/path/mlflow.db --out docs/images

Starts `vqbench ui` on a free loopback port, opens the latest sweep's experiment in headless Chromium
(Debian's chromium + chromium-driver), expands the sweep and saves the runs page, then one trial's
metric charts.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmark.tracking import keys
from benchmark.tracking.ui import free_port, wait_until_serving
from benchmark.tracking.ui_browser import MODEL_TRAINING, headless_chromium, runs_page_names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="MLflow tracking URI holding a sweep")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--trial", default=None, help="run name of the trial to chart (default: largest-K simvq)")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    client = MlflowClient(args.store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    sweeps = client.search_runs(experiments, f"tags.`{keys.TAG_KIND}` = 'sweep'", order_by=["start_time DESC"])
    if not sweeps:
        raise SystemExit(f"no sweep in {args.store}")
    sweep = sweeps[0]
    trials = client.search_runs([sweep.info.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
    if args.trial:
        trial = next(t for t in trials if t.info.run_name == args.trial)
    else:
        simvq = [t for t in trials if t.data.tags.get(keys.TAG_QUANTIZER) == "simvq"]
        trial = max(simvq or trials, key=lambda t: int(t.data.tags.get(keys.TAG_CODEBOOK_SIZE, 0)))

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "ui", "--port", str(port),
                               "--backend-store-uri", args.store], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        wait_until_serving(url, server)
        with headless_chromium(width=1500, height=1000) as driver:
            last = sorted(t.info.run_name for t in trials)[-1]
            runs_page_names(driver, url, sweep.info.experiment_id, expect=last)
            time.sleep(2)  # let the expanded rows settle before the picture
            driver.save_screenshot(str(out / "mlflow_runs.png"))
            driver.get(f"{url}/#/experiments/{sweep.info.experiment_id}/runs/{trial.info.run_id}/model-metrics"
                       f"?{MODEL_TRAINING}")
            for _ in range(120):
                if len(driver.find_elements(By.CSS_SELECTOR, "canvas, svg.main-svg")) >= 2:
                    break
                time.sleep(0.5)
            # show the collapse curves: utilization and the probes, not the single-point final metrics
            search = driver.find_elements(By.CSS_SELECTOR, "input[placeholder*='Search metric charts']")
            if search:
                search[0].send_keys("utilization|coverage|rank")
            time.sleep(4)
            driver.save_screenshot(str(out / "mlflow_run_charts.png"))
        print(f"wrote {out / 'mlflow_runs.png'} and {out / 'mlflow_run_charts.png'} ({trial.info.run_name})")
    finally:
        server.terminate()
        server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
