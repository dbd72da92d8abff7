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
