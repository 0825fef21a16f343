#!/usr/bin/env bash
# Set up (venv, package, MNIST) and run the default test suite (slow tests excluded). Arguments go to
# pytest: `-m slow` runs only the slow tests, `-m "slow or not slow"` everything (what .ci/run does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PDE_ZOO_EXTRAS="[test]" source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
bash scripts/install_browser.sh  # Debian's chromium for the browser tests of `pde-zoo explore` (skipped when present)
pde-zoo data
python -m pytest "$@"
