#!/usr/bin/env bash
# Data-parallel training of one model over several processes / hosts: Keras 3's own
# keras.distribution (DataParallel) on the JAX backend, `pde-zoo train ... --strategy multihost`.
#
#   scripts/launch_multihost.sh --nproc 2 [--port 12355] -- NAME --depth D --out DIR [train options]
#       N processes on this machine (coordinator 127.0.0.1:PORT); output prefixed [0], [1], ...
#   srun scripts/launch_multihost.sh -- NAME --depth D --out DIR [train options]
#       one process per Slurm task (SLURM_PROCID / SLURM_NTASKS; coordinator: the first host of
#       the job on --port), or one per Kubernetes Indexed Job pod (JOB_COMPLETION_INDEX, with
#       KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_JOB_ADDRESSES set in the pod).
#
# Keras's variables win when set: KERAS_DISTRIBUTION_JOB_ADDRESSES (coordinator HOST:PORT),
# KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID. --out must be on a
# filesystem every host sees (process 0 writes it; all restore from its backup/).
# If any process dies the others exit too (status != 0); run the same command again and the
# run resumes from its last finished epoch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PDE_ZOO_VENV:-$ROOT/.venv}"
if [ -x "$VENV/bin/pde-zoo" ]; then export PATH="$VENV/bin:$PATH"; fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" KERAS_BACKEND=jax

NPROC="" PORT=12355
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc) NPROC="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "launch_multihost.sh: unknown argument $1 (options first, then -- and the pde-zoo train arguments)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "launch_multihost.sh: give the pde-zoo train arguments after --" >&2; exit 2; }

if [ -z "$NPROC" ]; then  # one process of a cluster job
  if [ -z "${KERAS_DISTRIBUTION_JOB_ADDRESSES:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    export KERAS_DISTRIBUTION_JOB_ADDRESSES="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):$PORT"
  fi
  exec pde-zoo train --strategy multihost "$@"
fi

export KERAS_DISTRIBUTION_JOB_ADDRESSES="127.0.0.1:$PORT" KERAS_DISTRIBUTION_NUM_PROCESSES="$NPROC"
pids=()
for ((k = 0; k < NPROC; k++)); do
  KERAS_DISTRIBUTION_PROCESS_ID=$k pde-zoo train --strategy multihost "$@" > >(sed -u "s/^/[$k] /") 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
