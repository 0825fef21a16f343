#!/usr/bin/env bash
# The main job on a fresh machine: set up, get MNIST, train pde2 at depth 5 for 2 epochs,
# evaluate on the 10k test set, export a SavedModel, reload the export and print its accuracy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
RUN="${1:-runs/quickstart-pde2-5}"
pde-zoo data
pde-zoo train pde2 --depth 5 --epochs 2 --out "$RUN" --overwrite --progress
echo "== reloading the exported SavedModel $RUN/saved_model"
pde-zoo eval "$RUN/saved_model"
