#!/usr/bin/env bash
# Issue 11's runs through the one training loop (`pde-zoo train`, recipes `pdenet` / `convresnet`:
# Adam, 1-epoch linear warm-up to 3e-3 then cosine to 0, random shifts of up to 2 px, batch 128,
# the last 5k training images held out for validation), two at a time, each resumable.
#
#   scripts/train_pdenet.sh accuracy [--out OUT] [pde-zoo train options, e.g. --set epochs=4]
#   scripts/train_pdenet.sh depth    [...]
#
# accuracy: the matched pair (<= 0.25M parameters each)
#   pdenet-16 --option channels=32      208,490 parameters
#   convresnet-16 --option channels=14  206,020 parameters
# depth: stable against free coefficients at the default width (12), depth 50 and 200
#   pdenet-50 stable=false / true     69,730 parameters
#   pdenet-200 stable=false / true   241,930 parameters
#   pdenet-200 stable=true time_step=0.25: the same, Δt = 50/200: depth 50's integration time
# The committed depth runs (reports/stability-pdenet-depth/) are the recipe cut to 4 epochs:
#   scripts/train_pdenet.sh depth --out runs/depth --set epochs=4
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

group="${1:-}"
shift || true
OUT=runs/pdenet
if [ "${1:-}" = --out ]; then OUT="$2"; shift 2; fi
case "$group" in
  accuracy) runs=("pdenet 16 channels=32" "convresnet 16 channels=14") ;;
  depth) runs=("pdenet 50 stable=false" "pdenet 50 stable=true" "pdenet 200 stable=false" "pdenet 200 stable=true"
               "pdenet 200 stable=true time_step=0.25") ;;
  *) echo "usage: scripts/train_pdenet.sh accuracy|depth [--out OUT] [pde-zoo train options]" >&2; exit 2 ;;
esac
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
pde-zoo data
mkdir -p "$OUT"
for spec in "${runs[@]}"; do
  read -r name depth options <<< "$spec"
  args=() tag=""
  for option in $options; do args+=(--option "$option"); tag+="__${option/=/-}"; done
  pde-zoo train "$name" --depth "$depth" --threads 1 --out "$OUT/$name-$depth$tag" "${args[@]}" "$@" > "$OUT/$name-$depth$tag.log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
done
wait
