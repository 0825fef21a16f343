#!/usr/bin/env bash
# Issue 11's runs, as run specs of scripts/train_recipe.py (its RECIPES["pdenet"] /
# ["convresnet"]: Adam, 1-epoch linear warm-up to 3e-3 then cosine to 0, random shifts of up to
# 2 px, batch 128, the last 5k training images held out for validation). Any backend:
# KERAS_BACKEND=jax on a GPU machine without TensorFlow, then `python scripts/import_runs.py`
# where TF is.
#
#   scripts/train_pdenet.sh accuracy [--out OUT] [--budget S] [--jobs N] [--max-epochs N] [--data FILE]
#   scripts/train_pdenet.sh depth    [...]
#
# accuracy: the matched pair (<= 0.25M parameters each)
#   pdenet-16:channels=32      208,490 parameters
#   convresnet-16:channels=14  206,020 parameters
# depth: stable against free coefficients at the default width (12), depth 50 and 200
#   pdenet-50:stable=false / :stable=true     69,730 parameters
#   pdenet-200:stable=false / :stable=true   241,930 parameters
#   pdenet-200:stable=true,time_step=0.25    the same, Δt = 50/200: depth 50's integration time
# A step of pdenet-200 costs about 4x one of pdenet-50 and its compile is the longest: give the
# depth group the largest --budget, or run the two depths apart. The committed depth runs
# (reports/stability-pdenet-depth/) are, on the 2-core CPU, the same recipe cut to 4 epochs:
#   scripts/train_pdenet.sh depth --out runs/depth --budget 20000 --max-epochs 4 --jobs 1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

group="${1:-}"
shift || true
case "$group" in
  accuracy) runs=("pdenet-16:channels=32" "convresnet-16:channels=14") ;;
  depth) runs=("pdenet-50:stable=false" "pdenet-50:stable=true" "pdenet-200:stable=false" "pdenet-200:stable=true"
               "pdenet-200:stable=true,time_step=0.25") ;;
  *) echo "usage: scripts/train_pdenet.sh accuracy|depth [scripts/train_recipe.py options]" >&2; exit 2 ;;
esac
exec python scripts/train_recipe.py "$@" "${runs[@]}"
