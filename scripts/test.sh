#!/usr/bin/env bash
# Set up (venv, package, MNIST) and run the default test suite (slow tests excluded), one pytest-xdist
# worker per core, each test file on one worker (`--dist loadscope`: a file's module fixtures, e.g. a
# browser or a trained model, are set up once).
# Arguments go to pytest: `-m slow` runs only the slow tests, `-m "slow or not slow"` everything (what
# .ci/run does), `-n 0` runs in one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PDE_ZOO_EXTRAS="[test]" source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
bash scripts/install_browser.sh  # Debian's chromium for the browser tests of `pde-zoo explore` (skipped when present)
pde-zoo data
python -m pytest -n auto --dist loadscope "$@"
