#!/usr/bin/env bash
# Set up (venv, package, MNIST) and run the default test suite (slow tests excluded; `-m slow` runs them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PDE_ZOO_EXTRAS="[test]" source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
pde-zoo data
python -m pytest "$@"
