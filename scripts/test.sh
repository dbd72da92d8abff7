#!/usr/bin/env bash
# The test command (README and .ci/run): set up .venv, install vqbench[test], run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,bench  # bench: the reference implementation the speed tests compare against
# The browser test (tests/test_ui_browser.py) needs Debian's chromium; install it where we can.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
        || echo "scripts/test.sh: could not install chromium; the browser test will be skipped"
fi
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$status" = 5 ]; then echo "scripts/test.sh: pytest collected no tests"; exit 1; fi
exit "$status"
