#!/usr/bin/env bash
# Reproduce the thesis sweep: every registry model at its sweep depths (pde1/pde2/resnet at
# 5, 15, 27, 50 and mlp at 0) with the thesis recipe, one process per model, resumable:
# finished models are skipped, interrupted ones resume from their last finished epoch.
#
#   scripts/train_all.sh [--models "pde1 pde2"] [--depths "5 27"] [--epochs 50] [--seed 0]
#                        [--lr 1e-3|tuned] [--out saved_models] [--jobs 2] [--threads 1]
#                        [--train-limit N] [--test-limit N]
#
# --jobs models train at once, each on --threads TensorFlow threads (default: 2 jobs x 1
# thread, measured fastest on the 2-core machines; see README "Performance").
#
# Writes OUT/<name>-<depth>/ (model.keras, saved_model/, card.json, history.csv, train.log)
# and OUT/results.csv. Runs in order of depth, so an interrupted sweep has its shallow rows.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"

MODELS="" DEPTHS="" EPOCHS=50 SEED=0 LR=1e-3 OUT=saved_models JOBS=2 THREADS=1 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --depths) DEPTHS="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --train-limit|--test-limit) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "train_all.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done

train_one() {  # name depth
  local name="$1" depth="$2" run="$1-$2" lr="$LR" source=fixed
  if [ "$LR" = tuned ]; then
    lr=$(pde-zoo tuned-lr "$name" --depth "$depth") source=tuned
  fi
  mkdir -p "$OUT/$run"
  echo "== $(date -u +%H:%M:%S) start $run (lr $lr, $EPOCHS epochs, seed $SEED) -> $OUT/$run/train.log"
  if pde-zoo train "$name" --depth "$depth" --epochs "$EPOCHS" --seed "$SEED" --lr "$lr" --lr-source "$source" \
      --threads "$THREADS" --out "$OUT/$run" "${EXTRA[@]}" >> "$OUT/$run/train.log" 2>&1; then
    echo "== $(date -u +%H:%M:%S) done  $(tail -n 1 "$OUT/$run/train.log")"
  else
    echo "== $(date -u +%H:%M:%S) FAILED $run: see $OUT/$run/train.log"
  fi
}

pde-zoo data
start=$(date +%s)
runs=$(pde-zoo list --sweep | tr ' ' '\n' | sort -t- -k2,2n -s)
for run in $runs; do
  name="${run%-*}" depth="${run##*-}"
  if [ -n "$MODELS" ] && [[ " $MODELS " != *" $name "* ]]; then continue; fi
  if [ -n "$DEPTHS" ] && [ "$name" != mlp ] && [[ " $DEPTHS " != *" $depth "* ]]; then continue; fi
  train_one "$name" "$depth" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
done
wait
pde-zoo results --models-dir "$OUT"
echo "== sweep finished in $(( $(date +%s) - start )) s wall"
