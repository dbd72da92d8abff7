#!/usr/bin/env bash
# The main job (README): set up .venv, install vqbench, run the quick sweep, write the figures.
# Runs land in ./mlflow.db (browse with `.venv/bin/vqbench ui`); figures in ./vqbench_figures/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/vqbench sweep --preset quick "$@"
.venv/bin/vqbench figures --out vqbench_figures
echo
echo "Done. Figures and report: vqbench_figures/   Browse runs: .venv/bin/vqbench ui"
