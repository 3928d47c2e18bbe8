#!/usr/bin/env bash
# Train on several GPU nodes under SLURM: one process per node owning all its GPUs, joined by
# `jax.distributed.initialize()` (main.py --distributed), which reads SLURM's environment.
#
#   bash launch/slurm_gpu.sh ACTION [--nodes=2] [--gpus-per-node=8] [--cpus-per-task=32] \
#       [--time=24:00:00] [--partition=P] [--account=A] [--name=mio-train] \
#       [--config=configs/stage1.py:mio-7b] [--workdir=DIR] [--repo-dir=DIR] [--python=PY] \
#       [--dry-run] [-- EXTRA mio_jax.main FLAGS, e.g. --config.total_steps=100]
#
# ACTION: submit | logs | cancel
#   submit  sbatch a job whose single step is `srun` of mio_jax.main on every node
#   logs    stream the job's output file (newest job with this --name)
#   cancel  scancel the job(s) with this --name
# The venv needs the CUDA build of jax: `.venv/bin/pip install 'jax[cuda12]==0.10.2'`.
# --workdir must be on storage every node sees (a shared filesystem or gs://). Nothing is copied:
# every node runs the checkout at --repo-dir (default: this one), which must be shared too.
# --dry-run prints the exact commands instead of running them.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p;}' "$0"; exit "${1:-0}"; }  # the header above

ACTION="${1:-}"; [ -n "$ACTION" ] || usage 2; shift
case "$ACTION" in submit|logs|cancel) ;; -h|--help) usage 0 ;;
  *) echo "error: unknown action '$ACTION'" >&2; usage 2 ;; esac

REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
NODES=2 GPUS=8 CPUS=32 TIME="24:00:00" PARTITION="" ACCOUNT="" NAME="mio-train"
CONFIG="configs/stage1.py:mio-7b" WORKDIR="" PYTHON="" DRY_RUN=0 EXTRA=()
while [ $# -gt 0 ]; do
  arg="$1"; shift
  case "$arg" in
    --) EXTRA=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    -h|--help) usage 0 ;;
    --*=*) key="${arg%%=*}"; val="${arg#*=}" ;;
    --*) key="$arg"; [ $# -gt 0 ] || { echo "error: $key needs a value" >&2; exit 2; }; val="$1"; shift ;;
    *) echo "error: unexpected argument '$arg' (mio_jax.main flags go after --)" >&2; exit 2 ;;
  esac
  case "$key" in
    --nodes) NODES="$val" ;; --gpus-per-node) GPUS="$val" ;; --cpus-per-task) CPUS="$val" ;;
    --time) TIME="$val" ;; --partition) PARTITION="$val" ;; --account) ACCOUNT="$val" ;;
    --name) NAME="$val" ;; --config) CONFIG="$val" ;; --workdir) WORKDIR="$val" ;;
    --repo-dir) REPO_DIR="$val" ;; --python) PYTHON="$val" ;;
    *) echo "error: unknown flag $key" >&2; exit 2 ;;
  esac
done

for v in NODES GPUS CPUS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$(echo "$v" | tr 'A-Z' 'a-z') must be a positive integer, got '${!v}'"
done
[ -n "$PYTHON" ] || PYTHON="$REPO_DIR/.venv/bin/python"
LOG_DIR="$REPO_DIR/logs"


do_submit() {
  [ -n "$WORKDIR" ] || die "--workdir is required (shared filesystem or gs://)"
  local extra="" a
  for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do extra+=" $(show "$a")"; done
  local train="cd $(show "$REPO_DIR") && $(show "$PYTHON") -m mio_jax.main"
  train+=" $(show "--config=$CONFIG") $(show "--workdir=$WORKDIR") --distributed$extra"
  local opts=(--job-name="$NAME" --nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS"
              --cpus-per-task="$CPUS" --time="$TIME" --output="$LOG_DIR/%x-%j.out")
  [ -n "$PARTITION" ] && opts+=(--partition="$PARTITION")
  [ -n "$ACCOUNT" ] && opts+=(--account="$ACCOUNT")
  run mkdir -p "$LOG_DIR"
  # --kill-on-bad-exit: one failed process ends the step instead of hanging the others.
  run sbatch "${opts[@]}" --wrap="srun --kill-on-bad-exit=1 bash -c $(show "$train")"
}

do_logs() {
  local find=(squeue --noheader --name="$NAME" --format=%i --sort=-i)
  if [ "$DRY_RUN" = 1 ]; then show "${find[@]}"; show tail -n +1 -F "$LOG_DIR/$NAME-JOBID.out"; return; fi
  local id; id="$("${find[@]}" | head -n 1)"
  [ -n "$id" ] || die "no queued or running job named $NAME"
  tail -n +1 -F "$LOG_DIR/$NAME-$id.out"
}

case "$ACTION" in
  submit) do_submit ;;
  logs) do_logs ;;
  cancel) run scancel --name="$NAME" ;;
esac
