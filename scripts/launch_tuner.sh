#!/usr/bin/env bash
# Distributed learning-rate search on this machine with KerasTuner's own chief/worker mode:
# a chief (the oracle, a gRPC server) and N workers, all running `pde-zoo tune` with the same
# arguments and sharing its --directory.
#
#   scripts/launch_tuner.sh [--workers 2] [--port 8000] [--ip 127.0.0.1] -- NAME --depth D [tune options]
#   scripts/launch_tuner.sh --chief-only  [--port P] -- ARGS   # just the oracle (workers elsewhere)
#   scripts/launch_tuner.sh --worker ID   [--port P] [--ip CHIEF] -- ARGS   # one worker, e.g. to restart
#                                                                         # a killed one under its old id
#
# Workers are named tuner0..tuner{N-1}. Output lines are prefixed [chief] / [tunerK]. Exits
# when the chief does (after the oracle has every trial's result); the chief writes
# tuning/NAME-D.json. On several machines run the same `pde-zoo tune` on each with
# KERASTUNER_TUNER_ID (chief / a unique worker id), KERASTUNER_ORACLE_IP (the chief's address)
# and KERASTUNER_ORACLE_PORT set (docs/distributed.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PDE_ZOO_VENV:-$ROOT/.venv}"
if [ -x "$VENV/bin/pde-zoo" ]; then export PATH="$VENV/bin:$PATH"; fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

WORKERS=2 PORT=8000 IP=127.0.0.1 MODE=all WORKER_ID=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --ip) IP="$2"; shift 2 ;;
    --chief-only) MODE=chief; shift ;;
    --worker) MODE=worker; WORKER_ID="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "launch_tuner.sh: unknown argument $1 (options first, then -- and the pde-zoo tune arguments)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "launch_tuner.sh: give the pde-zoo tune arguments after --" >&2; exit 2; }

start() {  # tuner-id, then pde-zoo tune arguments
  local id="$1"; shift
  KERASTUNER_TUNER_ID="$id" KERASTUNER_ORACLE_IP="$IP" KERASTUNER_ORACLE_PORT="$PORT" \
    pde-zoo tune "$@" > >(sed -u "s/^/[$id] /") 2>&1 &
}

case "$MODE" in
  worker) start "$WORKER_ID" "$@"; wait "$!"; exit ;;
  chief) start chief "$@"; wait "$!"; exit ;;
esac
start chief "$@"
chief=$!
workers=()
for ((k = 0; k < WORKERS; k++)); do start "tuner$k" "$@"; workers+=("$!"); done
status=0
wait "$chief" || status=$?
for pid in "${workers[@]}"; do wait "$pid" || true; done
exit "$status"
