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
stamp="$VENV/.pde_zoo-installed"  # records the extras installed
needs_install() {
  [ -f "$stamp" ] || return 0
  [ "$ROOT/setup.cfg" -nt "$stamp" ] && return 0
  [ -z "$EXTRAS" ] && return 1  # any install serves plain use
  grep -qxF "extras=$EXTRAS" "$stamp" && return 1
  return 0
}
if needs_install; then
  echo "== installing pde_zoo and its dependencies (tensorflow, keras, keras-tuner, tensorflow-datasets, matplotlib)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT$EXTRAS"
  echo "extras=$EXTRAS" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
# The C++ stencil op (pde_zoo/layers/stencil_op.cc), built once into the cache; without a
# compiler pde_zoo warns and runs on standard TF ops (same numbers, slower), so never fatal.
"$VENV/bin/python" -m pde_zoo.layers._native >/dev/null 2>&1 || echo "== note: C++ stencil op not built (no compiler?); using standard TF ops"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
