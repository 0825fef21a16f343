#!/usr/bin/env bash
# Reproduce the thesis sweep: every registry model at its sweep depths (pde1/pde2/resnet at
# 5, 15, 27, 50 and mlp at 0) with the thesis recipe, one process per model, resumable:
# finished models are skipped, interrupted ones resume from their last finished epoch.
#
#   scripts/train_all.sh [--models "pde1 pde2"] [--depths "5 27"] [--epochs 50] [--seed 0]
#                        [--lr 1e-3|tuned] [--tag TAG] [--out saved_models] [--jobs 2] [--threads 1]
#                        [--train-limit N] [--test-limit N] [--shard K/N] [--dry-run]
#
# --jobs models train at once, each on --threads TensorFlow threads (default: 2 jobs x 1
# thread, measured fastest on the 2-core machines; see docs/performance.md).
#
# Every run is `pde-zoo train NAME --depth D --recipe thesis` (the one training loop); --lr tuned
# reads the learning rate KerasTuner found (`pde-zoo tuned-lr`). Writes OUT/<name>-<depth>[.TAG]/
# (model.keras, saved_model/, card.json, history.csv, train.log) and OUT/results.csv; a TAG names
# a variant preset (scripts/tune_all.sh: --tag tuned-lr -> saved_models/pde2-50.tuned-lr).
# Runs in order of depth, so an interrupted sweep has its shallow rows.
#
# Several machines: any number of runners may share OUT (a shared filesystem). Each job is
# claimed atomically by the process that trains it (`pde-zoo train --claim`, OUT/RUN/.claim;
# pde_zoo/sweep.py), so no two runners train the same model; a claim whose owner died is
# taken over and the job resumes from its last finished epoch (at once on the same host; after
# PDE_ZOO_CLAIM_TIMEOUT s without heartbeat, default 600, from another host). A runner comes
# back to jobs it found claimed every PDE_ZOO_RETRY_S s (default 60) and ends when every job
# of its shard is done, by itself or by others. --shard K/N (0 <= K < N) makes
# this runner look only at jobs K, K+N, K+2N, ... of the depth-ordered list; without --shard
# it is read from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (an array --array=0-(N-1)) or
# from JOB_COMPLETION_INDEX with PDE_ZOO_NUM_SHARDS (a Kubernetes Indexed Job); with none of
# these it looks at every job. Each runner ends with `pde-zoo results`, which merges every
# card found in OUT: the last runner to finish writes the whole table. --dry-run prints this
# runner's jobs and exits. Slurm / Kubernetes: deploy/slurm_sweep.sbatch, deploy/k8s_sweep_job.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MODELS="" DEPTHS="" EPOCHS=50 SEED=0 LR=1e-3 TAG="" OUT=saved_models JOBS=2 THREADS=1 EXTRA=() SHARD="" DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --depths) DEPTHS="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --train-limit|--test-limit) EXTRA+=("$1" "$2"); shift 2 ;;
    --shard) SHARD="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "train_all.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done

train_one() {  # name depth
  local name="$1" depth="$2" run="$1-$2${TAG:+.$TAG}" lr="$LR"
  if [ "$LR" = tuned ]; then
    lr=$(pde-zoo tuned-lr "$name" --depth "$depth")
  fi
  mkdir -p "$OUT/$run"
  echo "== $(date -u +%H:%M:%S) start $run (lr $lr, $EPOCHS epochs, seed $SEED) -> $OUT/$run/train.log"
  local log status=0
  log=$(pde-zoo train "$name" --depth "$depth" --recipe thesis --epochs "$EPOCHS" --seed "$SEED" --lr "$lr" \
      --threads "$THREADS" --out "$OUT/$run" --claim "${EXTRA[@]}" 2>&1 | tee -a "$OUT/$run/train.log"; exit "${PIPESTATUS[0]}") || status=$?
  if [ "$status" = 3 ]; then
    echo "== $(date -u +%H:%M:%S) skip  $run: $(grep -m1 '^skipped: ' <<< "$log" | cut -c10-)"
    touch "$SKIPPED/$1-$2"
  elif [ "$status" != 0 ]; then
    echo "== $(date -u +%H:%M:%S) FAILED $run: see $OUT/$run/train.log"
  elif grep -q "is already trained" <<< "$log"; then
    echo "== $(date -u +%H:%M:%S) already done $run"
  else
    echo "== $(date -u +%H:%M:%S) done  $run $(grep '^{' <<< "$log" | tail -n 1)"
  fi
}

if [ -z "$SHARD" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  SHARD="$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))/${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not}"
elif [ -z "$SHARD" ] && [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
  SHARD="$JOB_COMPLETION_INDEX/${PDE_ZOO_NUM_SHARDS:?JOB_COMPLETION_INDEX is set: set PDE_ZOO_NUM_SHARDS to the number of completions}"
fi
SHARD_K=0 SHARD_N=1
if [ -n "$SHARD" ]; then
  if ! [[ "$SHARD" =~ ^([0-9]+)/([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -ge "${BASH_REMATCH[2]}" ]; then
    echo "train_all.sh: --shard must be K/N with 0 <= K < N. Received: $SHARD" >&2; exit 2
  fi
  SHARD_K="${BASH_REMATCH[1]}" SHARD_N="${BASH_REMATCH[2]}"
fi
if [ "$DRY_RUN" = 1 ] && command -v pde-zoo > /dev/null; then
  cd "$ROOT"  # a dry run only lists: no install, no build
else
  source "$ROOT/scripts/setup_env.sh"
  cd "$ROOT"
fi

selected=()
for run in $(pde-zoo list --sweep | tr ' ' '\n' | sort -t- -k2,2n -s); do
  name="${run%-*}" depth="${run##*-}"
  if [ -n "$MODELS" ] && [[ " $MODELS " != *" $name "* ]]; then continue; fi
  if [ -n "$DEPTHS" ] && [ "$name" != mlp ] && [[ " $DEPTHS " != *" $depth "* ]]; then continue; fi
  selected+=("$run")
done
runs=()
for i in "${!selected[@]}"; do
  if [ $((i % SHARD_N)) = "$SHARD_K" ]; then runs+=("${selected[$i]}"); fi
done
echo "== shard $SHARD_K/$SHARD_N on $(hostname) (pid $$): ${#runs[@]} of ${#selected[@]} jobs: ${runs[*]:-none}"
if [ "$DRY_RUN" = 1 ]; then exit 0; fi

pde-zoo data
start=$(date +%s)
SKIPPED="$(mktemp -d)"
trap 'rm -rf "$SKIPPED"' EXIT
while [ "${#runs[@]}" -gt 0 ]; do
  for run in "${runs[@]}"; do
    name="${run%-*}" depth="${run##*-}"
    train_one "$name" "$depth" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  done
  wait
  # Jobs another live process held: look again until they are done (or their owner died).
  runs=()
  for run in $(ls "$SKIPPED"); do runs+=("$run"); rm -f "$SKIPPED/$run"; done
  if [ "${#runs[@]}" -gt 0 ]; then
    echo "== $(date -u +%H:%M:%S) waiting for jobs claimed elsewhere: ${runs[*]} (next look in ${PDE_ZOO_RETRY_S:-60} s)"
    sleep "${PDE_ZOO_RETRY_S:-60}"
  fi
done
pde-zoo results --models-dir "$OUT"
echo "== sweep finished in $(( $(date +%s) - start )) s wall"
