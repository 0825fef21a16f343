#!/usr/bin/env bash
# Create (once) the virtual environment .venv and install pde_zoo with its pinned dependencies.
# Sourced by quickstart.sh, test.sh and train_all.sh; idempotent (a satisfied install is quick).
# PDE_ZOO_EXTRAS="[test]" (set by test.sh) also installs the test extras (pytest, jax).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${PDE_ZOO_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
EXTRAS="${PDE_ZOO_EXTRAS:-}"
stamp="$VENV/.pde_zoo-installed${EXTRAS//[^a-z]/-}"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
  echo "== installing pde_zoo and its dependencies (tensorflow, keras, keras-tuner, tensorflow-datasets, matplotlib)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT$EXTRAS"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
