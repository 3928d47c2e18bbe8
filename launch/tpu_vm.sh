#!/usr/bin/env bash
# Train on Cloud TPU VMs (one slice, or several slices over DCN) with plain gcloud.
#
#   bash launch/tpu_vm.sh ACTION --project=P --zone=Z --name=N --accelerator-type=v5p-128 \
#       [--num-slices=N] [--spot] [--queued] [--reserved] [--runtime-version=V] \
#       [--config=configs/stage1.py:mio-7b] [--workdir=gs://BUCKET/DIR] [--repo=URL [--ref=REF]] \
#       [--dry-run] [-- EXTRA mio_jax.main FLAGS, e.g. --config.total_steps=100]
#
# ACTION: create | install | run | logs | delete | up (= create, install, run, logs)
#   create   a TPU VM (or a queued resource with --queued / --reserved / --num-slices > 1)
#   install  copy the files git tracks at HEAD (or clone --repo) to every worker, then
#            launch/setup.sh + libtpu
#   run      start mio_jax.main on every worker of every slice, detached, logging to ~/mio_jax/train.log
#   logs     stream worker 0's log (slice 0)
#   delete   delete the VM / queued resource and its nodes
# --dry-run prints the exact commands instead of running them. Credentials come from your gcloud
# login; none are stored here.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p;}' "$0"; exit "${1:-0}"; }  # the header above

ACTION="${1:-}"; [ -n "$ACTION" ] || usage 2; shift
case "$ACTION" in create|install|run|logs|delete|up) ;; -h|--help) usage 0 ;;
  *) echo "error: unknown action '$ACTION'" >&2; usage 2 ;; esac

PROJECT="" ZONE="" NAME="" ACCEL="" NUM_SLICES=1 SPOT=0 QUEUED=0 RESERVED=0 VERSION=""
CONFIG="configs/stage1.py:mio-7b" WORKDIR="" REPO="" REF="" DRY_RUN=0 EXTRA=()
while [ $# -gt 0 ]; do
  arg="$1"; shift
  case "$arg" in
    --) EXTRA=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    --spot) SPOT=1; continue ;;
    --queued) QUEUED=1; continue ;;
    --reserved) RESERVED=1; QUEUED=1; continue ;;
    -h|--help) usage 0 ;;
    --*=*) key="${arg%%=*}"; val="${arg#*=}" ;;
    --*) key="$arg"; [ $# -gt 0 ] || { echo "error: $key needs a value" >&2; exit 2; }; val="$1"; shift ;;
    *) echo "error: unexpected argument '$arg' (mio_jax.main flags go after --)" >&2; exit 2 ;;
  esac
  case "$key" in
    --project) PROJECT="$val" ;; --zone) ZONE="$val" ;; --name) NAME="$val" ;;
    --accelerator-type) ACCEL="$val" ;; --num-slices) NUM_SLICES="$val" ;;
    --runtime-version) VERSION="$val" ;; --config) CONFIG="$val" ;; --workdir) WORKDIR="$val" ;;
    --repo) REPO="$val" ;; --ref) REF="$val" ;;
    *) echo "error: unknown flag $key" >&2; exit 2 ;;
  esac
done

[ -n "$PROJECT" ] || die "--project is required"
[ -n "$ZONE" ] || die "--zone is required"
[ -n "$NAME" ] || die "--name is required"
check_name "$NAME"
[[ "$NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num-slices must be a positive integer, got '$NUM_SLICES'"
[ "$NUM_SLICES" -gt 1 ] && QUEUED=1  # multislice exists only as a queued resource

# gcloud spells v5e as v5litepod; accept both.
ACCEL="${ACCEL/#v5e-/v5litepod-}"
if [ "$ACTION" = create ] || [ "$ACTION" = up ]; then
  [[ "$ACCEL" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--accelerator-type like v5p-128 or v5e-256 is required, got '$ACCEL'"
  if [ -z "$VERSION" ]; then
    case "$ACCEL" in
      v4-*) VERSION=tpu-ubuntu2204-base ;;
      v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
      v5p-*) VERSION=v2-alpha-tpuv5 ;;
      v6e-*) VERSION=v2-alpha-tpuv6e ;;
      *) die "no default --runtime-version for $ACCEL; pass one" ;;
    esac
  fi
fi
if [ "$ACTION" = run ] || [ "$ACTION" = up ]; then
  # Every host writes checkpoints and reads the same workdir: it must be shared storage.
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path shared by all hosts, got '$WORKDIR'"
fi


LOC=(--project="$PROJECT" --zone="$ZONE")
NODES=()
if [ "$NUM_SLICES" -gt 1 ]; then
  for ((i = 0; i < NUM_SLICES; i++)); do NODES+=("$NAME-$i"); done  # --node-prefix naming
else
  NODES=("$NAME")
fi
REMOTE_DIR='~/mio_jax'

do_create() {
  local cap=()
  [ "$SPOT" = 1 ] && cap+=(--spot)
  if [ "$QUEUED" = 0 ]; then
    run gcloud compute tpus tpu-vm create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL" \
      --version="$VERSION" "${cap[@]}"
    return
  fi
  [ "$RESERVED" = 1 ] && cap+=(--reserved)
  local nodes=(--node-id="$NAME")
  [ "$NUM_SLICES" -gt 1 ] && nodes=(--node-count="$NUM_SLICES" --node-prefix="$NAME")
  run gcloud compute tpus queued-resources create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL" \
    --runtime-version="$VERSION" "${nodes[@]}" "${cap[@]}"
  wait_active
}

wait_active() {
  local describe=(gcloud compute tpus queued-resources describe "$NAME" "${LOC[@]}" --format='value(state.state)')
  if [ "$DRY_RUN" = 1 ]; then echo "# poll until ACTIVE:"; show "${describe[@]}"; return; fi
  local state=""
  until [ "$state" = ACTIVE ]; do
    state="$("${describe[@]}")"
    echo "queued resource $NAME: $state" >&2
    case "$state" in FAILED|SUSPENDED) die "queued resource $NAME is $state" ;; esac
    [ "$state" = ACTIVE ] || sleep 30
  done
}

ssh_all() {  # ssh_all NODE COMMAND: run COMMAND on every worker of NODE
  run gcloud compute tpus tpu-vm ssh "$1" "${LOC[@]}" --worker=all --command="$2"
}

do_install() {
  local setup="cd $REMOTE_DIR && bash launch/setup.sh && .venv/bin/pip install -q -r requirements-tpu.txt"
  local node
  if [ -n "$REPO" ]; then
    local fetch="([ -d $REMOTE_DIR/.git ] || git clone $(show "$REPO") $REMOTE_DIR)"
    [ -n "$REF" ] &&
      fetch+=" && git -C $REMOTE_DIR fetch origin && git -C $REMOTE_DIR checkout $(show "$REF")"
    for node in "${NODES[@]}"; do ssh_all "$node" "$fetch && $setup"; done
    return
  fi
  local root tarball="${TMPDIR:-/tmp}/mio_jax-$NAME.tgz"
  root="$(cd "$(dirname "$0")/.." && pwd)"
  ship_archive "$root" "$tarball"
  for node in "${NODES[@]}"; do
    run gcloud compute tpus tpu-vm scp "$tarball" "$node:mio_jax.tgz" "${LOC[@]}" --worker=all
    ssh_all "$node" "mkdir -p $REMOTE_DIR && tar -xzf mio_jax.tgz -C $REMOTE_DIR && $setup"
  done
}

train_command() {  # train_command ENV_PREFIX: the detached mio_jax.main command line for one worker
  local extra="" a
  for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do extra+=" $(show "$a")"; done
  # One data-parallel `dcn` mesh axis per slice, unless the caller set the mesh explicitly.
  if [ "$NUM_SLICES" -gt 1 ] && [[ "$extra" != *--config.mesh.dcn=* ]]; then
    extra+=" --config.mesh.dcn=$NUM_SLICES"
  fi
  echo "cd $REMOTE_DIR && ${1}nohup .venv/bin/python -m mio_jax.main $(show "--config=$CONFIG")" \
       "$(show "--workdir=$WORKDIR") --distributed$extra > train.log 2>&1 < /dev/null &"
}

do_run() {
  if [ "$NUM_SLICES" = 1 ]; then
    ssh_all "$NAME" "$(train_command "")"
    return
  fi
  # Multislice: every slice learns slice 0 worker 0's address, the slice count and its own id.
  local describe=(gcloud compute tpus tpu-vm describe "${NODES[0]}" "${LOC[@]}"
                  --format='value(networkEndpoints[0].ipAddress)')
  local coord
  if [ "$DRY_RUN" = 1 ]; then show "${describe[@]}"; coord='COORDINATOR_IP'; else coord="$("${describe[@]}")"; fi
  local i
  for ((i = 0; i < NUM_SLICES; i++)); do
    local env="$(show "MEGASCALE_COORDINATOR_ADDRESS=$coord:8080") MEGASCALE_NUM_SLICES=$NUM_SLICES"
    env+=" MEGASCALE_SLICE_ID=$i MEGASCALE_PORT=8080 "
    ssh_all "${NODES[$i]}" "$(train_command "$env")"
  done
}

do_logs() {
  run gcloud compute tpus tpu-vm ssh "${NODES[0]}" "${LOC[@]}" --worker=0 \
    --command="tail -n +1 -F $REMOTE_DIR/train.log"
}

do_delete() {
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${LOC[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${LOC[@]}" --quiet
  fi
}

case "$ACTION" in
  create) do_create ;;
  install) do_install ;;
  run) do_run ;;
  logs) do_logs ;;
  delete) do_delete ;;
  up) do_create; do_install; do_run; do_logs ;;
esac
