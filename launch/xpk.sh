#!/usr/bin/env bash
# Train as a GKE workload with xpk (https://github.com/AI-Hypercomputer/xpk; `pip install xpk`).
#
#   bash launch/xpk.sh ACTION --project=P --zone=Z --cluster=C --accelerator-type=v5p-128 \
#       [--name=WORKLOAD] [--num-slices=N] [--spot | --reservation=R] \
#       [--base-docker-image=IMAGE | --docker-image=IMAGE] [--max-restarts=N] [--priority=P] \
#       [--config=configs/stage1.py:mio-7b] [--workdir=gs://BUCKET/DIR] \
#       [--dry-run] [-- EXTRA mio_jax.main FLAGS, e.g. --config.total_steps=100]
#
# ACTION: cluster-create | create | logs | list | delete | cluster-delete | up (= create, logs)
#   cluster-create  GKE cluster with N slices of the accelerator (--spot, --reservation or on-demand)
#   create          submit the workload: xpk layers the files git tracks at HEAD (--script-dir,
#                   staged under $TMPDIR) onto the base image; every host installs the TPU deps,
#                   then runs mio_jax.main --distributed
#   logs            stream the logs of the workload's first pod (kubectl)
# xpk sets the multislice (MEGASCALE_*) environment itself. --dry-run prints the exact commands.
# Credentials come from your gcloud login; none are stored here.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p;}' "$0"; exit "${1:-0}"; }  # the header above

ACTION="${1:-}"; [ -n "$ACTION" ] || usage 2; shift
case "$ACTION" in cluster-create|create|logs|list|delete|cluster-delete|up) ;; -h|--help) usage 0 ;;
  *) echo "error: unknown action '$ACTION'" >&2; usage 2 ;; esac

PROJECT="" ZONE="" CLUSTER="" NAME="mio-train" ACCEL="" NUM_SLICES=1 SPOT=0 RESERVATION=""
BASE_IMAGE="python:3.11-slim" IMAGE="" MAX_RESTARTS=10 PRIORITY="medium"
CONFIG="configs/stage1.py:mio-7b" WORKDIR="" DRY_RUN=0 EXTRA=()
while [ $# -gt 0 ]; do
  arg="$1"; shift
  case "$arg" in
    --) EXTRA=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    --spot) SPOT=1; continue ;;
    -h|--help) usage 0 ;;
    --*=*) key="${arg%%=*}"; val="${arg#*=}" ;;
    --*) key="$arg"; [ $# -gt 0 ] || { echo "error: $key needs a value" >&2; exit 2; }; val="$1"; shift ;;
    *) echo "error: unexpected argument '$arg' (mio_jax.main flags go after --)" >&2; exit 2 ;;
  esac
  case "$key" in
    --project) PROJECT="$val" ;; --zone) ZONE="$val" ;; --cluster) CLUSTER="$val" ;;
    --name) NAME="$val" ;; --accelerator-type) ACCEL="$val" ;; --num-slices) NUM_SLICES="$val" ;;
    --reservation) RESERVATION="$val" ;; --base-docker-image) BASE_IMAGE="$val" ;;
    --docker-image) IMAGE="$val" ;; --max-restarts) MAX_RESTARTS="$val" ;;
    --priority) PRIORITY="$val" ;; --config) CONFIG="$val" ;; --workdir) WORKDIR="$val" ;;
    *) echo "error: unknown flag $key" >&2; exit 2 ;;
  esac
done

[ -n "$PROJECT" ] || die "--project is required"
[ -n "$ZONE" ] || die "--zone is required"
[ -n "$CLUSTER" ] || die "--cluster is required"
check_name "$NAME"
[[ "$NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num-slices must be a positive integer, got '$NUM_SLICES'"
[ "$SPOT" = 1 ] && [ -n "$RESERVATION" ] && die "--spot and --reservation exclude each other"
ACCEL="${ACCEL/#v5e-/v5litepod-}"  # xpk, like gcloud, spells v5e as v5litepod
case "$ACTION" in cluster-create|create|up)
  [[ "$ACCEL" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--accelerator-type like v5p-128 or v5e-256 is required, got '$ACCEL'" ;;
esac
case "$ACTION" in create|up)
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path shared by all hosts, got '$WORKDIR'" ;;
esac


LOC=(--project="$PROJECT" --zone="$ZONE")

do_cluster_create() {
  local cap=(--on-demand)
  [ "$SPOT" = 1 ] && cap=(--spot)
  [ -n "$RESERVATION" ] && cap=(--reservation="$RESERVATION")
  run xpk cluster create --cluster="$CLUSTER" "${LOC[@]}" --tpu-type="$ACCEL" \
    --num-slices="$NUM_SLICES" "${cap[@]}"
}

train_command() {
  local extra="" a
  for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do extra+=" $(show "$a")"; done
  # One data-parallel `dcn` mesh axis per slice, unless the caller set the mesh explicitly.
  if [ "$NUM_SLICES" -gt 1 ] && [[ "$extra" != *--config.mesh.dcn=* ]]; then
    extra+=" --config.mesh.dcn=$NUM_SLICES"
  fi
  # With a prebuilt --docker-image the deps are already installed; else install them first.
  local deps="pip install -q -r requirements.txt -r requirements-tpu.txt && "
  [ -n "$IMAGE" ] && deps=""
  echo "${deps}python3 -m mio_jax.main $(show "--config=$CONFIG") $(show "--workdir=$WORKDIR")" \
       "--distributed$extra"
}

stage_script_dir() {  # stage_script_dir DIR: the tracked files, unpacked, for --script-dir
  local root
  root="$(cd "$(dirname "$0")/.." && pwd)"
  ship_archive "$root" "$1.tgz"
  run rm -rf "$1"
  run mkdir -p "$1"
  run tar -xzf "$1.tgz" -C "$1"
}

do_create() {
  local image=(--docker-image="$IMAGE")
  if [ -z "$IMAGE" ]; then
    local stage="${TMPDIR:-/tmp}/mio_jax-xpk-$NAME"
    stage_script_dir "$stage"
    image=(--base-docker-image="$BASE_IMAGE" --script-dir="$stage")
  fi
  run xpk workload create --cluster="$CLUSTER" "${LOC[@]}" --workload="$NAME" \
    --tpu-type="$ACCEL" --num-slices="$NUM_SLICES" "${image[@]}" \
    --max-restarts="$MAX_RESTARTS" --priority="$PRIORITY" --command="$(train_command)"
}

do_logs() {
  run gcloud container clusters get-credentials "$CLUSTER" --project="$PROJECT" \
    --location="${ZONE%-*}"
  # xpk runs a workload as a JobSet named after it; follow its first pod (slice 0, host 0).
  local pod0="jobset.sigs.k8s.io/jobset-name=$NAME,jobset.sigs.k8s.io/job-index=0"
  run kubectl logs -f --tail=-1 --selector="$pod0,batch.kubernetes.io/job-completion-index=0"
}

case "$ACTION" in
  cluster-create) do_cluster_create ;;
  create) do_create ;;
  logs) do_logs ;;
  list) run xpk workload list --cluster="$CLUSTER" "${LOC[@]}" ;;
  delete) run xpk workload delete --cluster="$CLUSTER" "${LOC[@]}" --workload="$NAME" ;;
  cluster-delete) run xpk cluster delete --cluster="$CLUSTER" "${LOC[@]}" ;;
  up) do_create; do_logs ;;
esac
