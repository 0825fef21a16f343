#!/usr/bin/env bash
# Learning-rate search (KerasTuner Hyperband) for pde1, pde2 and resnet at depth 50, then the
# full thesis-recipe training of each with its tuned learning rate, for the fixed-vs-tuned table.
# Resumable: a tuner project resumes (no --overwrite), finished trainings are skipped.
#   scripts/tune_all.sh [--depth 50] [--models "pde1 pde2 resnet"] [--workers N]
# --workers N: each search is KerasTuner's distributed mode on this machine, a chief and N
# workers (scripts/launch_tuner.sh); 0 (default) is one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
DEPTH=50 MODELS="pde1 pde2 resnet" WORKERS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --depth) DEPTH="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    *) echo "tune_all.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
pde-zoo data
for name in $MODELS; do
  if [ -f "saved_models/tuning/$name-$DEPTH.json" ]; then echo "== $name-$DEPTH already tuned"; continue; fi
  echo "== $(date -u +%H:%M:%S) tuning $name-$DEPTH"
  if [ "$WORKERS" -gt 0 ]; then
    bash scripts/launch_tuner.sh --workers "$WORKERS" --port "${PDE_ZOO_TUNER_PORT:-8000}" -- "$name" --depth "$DEPTH" --threads 1
  else
    pde-zoo tune "$name" --depth "$DEPTH" --threads 1
  fi
done
bash scripts/train_all.sh --lr tuned --models "$MODELS" --depths "$DEPTH" --tag tuned-lr --out saved_models --jobs 1
