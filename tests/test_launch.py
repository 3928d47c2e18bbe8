"""Launch scripts: syntax, and the exact commands their --dry-run prints (no network, no gcloud)."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("tpu_vm.sh", "xpk.sh", "slurm_gpu.sh")
LOC = "--project=my-proj --zone=us-east5-a"


def launch(script, *args):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


def dry_run(script, action, *args):
  r = launch(script, action, "--dry-run", *args)  # before any `--` (which starts main.py flags)
  assert r.returncode == 0, r.stderr
  return r.stdout.splitlines()


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_help(script):
  path = os.path.join(ROOT, "launch", script)
  assert subprocess.run(["bash", "-n", path]).returncode == 0
  r = launch(script, "--help")
  assert r.returncode == 0 and "--dry-run" in r.stdout


def test_tpu_vm_single_slice():
  lines = dry_run("tpu_vm.sh", "up", *LOC.split(), "--name=mio", "--accelerator-type=v5p-128",
                  "--workdir=gs://bkt/run1", "--", "--config.total_steps=10")
  ssh = "gcloud compute tpus tpu-vm ssh mio --project=my-proj --zone=us-east5-a"
  assert lines == [
      "gcloud compute tpus tpu-vm create mio --project=my-proj --zone=us-east5-a "
      "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5",
      f"tar -czf /tmp/mio_jax-mio.tgz --exclude=.venv --exclude=.git --exclude=__pycache__ -C {ROOT} .",
      "gcloud compute tpus tpu-vm scp /tmp/mio_jax-mio.tgz mio:mio_jax.tgz --project=my-proj "
      "--zone=us-east5-a --worker=all",
      f"{ssh} --worker=all '--command=mkdir -p ~/mio_jax && tar -xzf mio_jax.tgz -C ~/mio_jax && "
      "cd ~/mio_jax && bash launch/setup.sh && .venv/bin/pip install -q -r requirements-tpu.txt'",
      f"{ssh} --worker=all '--command=cd ~/mio_jax && nohup .venv/bin/python -m mio_jax.main "
      "--config=configs/stage1.py:mio-7b --workdir=gs://bkt/run1 --distributed "
      "--config.total_steps=10 > train.log 2>&1 < /dev/null &'",
      f"{ssh} --worker=0 '--command=tail -n +1 -F ~/mio_jax/train.log'",
  ]


def test_tpu_vm_multislice_spot_queued():
  lines = dry_run("tpu_vm.sh", "create", *LOC.split(), "--name=mio", "--accelerator-type=v5e-256",
                  "--num-slices=2", "--spot")
  assert lines[0] == (
      "gcloud compute tpus queued-resources create mio --project=my-proj --zone=us-east5-a "
      "--accelerator-type=v5litepod-256 --runtime-version=v2-alpha-tpuv5-lite --node-count=2 "
      "--node-prefix=mio --spot")
  assert lines[2] == ("gcloud compute tpus queued-resources describe mio --project=my-proj "
                      "--zone=us-east5-a '--format=value(state.state)'")
  lines = dry_run("tpu_vm.sh", "run", *LOC.split(), "--name=mio", "--num-slices=2",
                  "--workdir=gs://bkt/run2")
  assert lines[0].startswith("gcloud compute tpus tpu-vm describe mio-0 ")
  for i in (0, 1):
    assert lines[1 + i].startswith(f"gcloud compute tpus tpu-vm ssh mio-{i} ")
    assert (f"MEGASCALE_COORDINATOR_ADDRESS=COORDINATOR_IP:8080 MEGASCALE_NUM_SLICES=2 "
            f"MEGASCALE_SLICE_ID={i} MEGASCALE_PORT=8080 nohup") in lines[1 + i]
    assert "--config.mesh.dcn=2" in lines[1 + i]
  assert dry_run("tpu_vm.sh", "delete", *LOC.split(), "--name=mio", "--num-slices=2") == [
      "gcloud compute tpus queued-resources delete mio --project=my-proj --zone=us-east5-a "
      "--force --quiet"]
  assert dry_run("tpu_vm.sh", "delete", *LOC.split(), "--name=mio") == [
      "gcloud compute tpus tpu-vm delete mio --project=my-proj --zone=us-east5-a --quiet"]


def test_xpk_commands():
  assert dry_run("xpk.sh", "cluster-create", *LOC.split(), "--cluster=c1",
                 "--accelerator-type=v5p-128", "--spot") == [
      "xpk cluster create --cluster=c1 --project=my-proj --zone=us-east5-a --tpu-type=v5p-128 "
      "--num-slices=1 --spot"]
  lines = dry_run("xpk.sh", "up", *LOC.split(), "--cluster=c1", "--name=run1",
                  "--accelerator-type=v5e-256", "--num-slices=2", "--workdir=gs://bkt/run1")
  assert lines == [
      "xpk workload create --cluster=c1 --project=my-proj --zone=us-east5-a --workload=run1 "
      f"--tpu-type=v5litepod-256 --num-slices=2 --base-docker-image=python:3.11-slim "
      f"--script-dir={ROOT} --max-restarts=10 --priority=medium '--command=pip install -q -r "
      "requirements.txt -r requirements-tpu.txt && python3 -m mio_jax.main "
      "--config=configs/stage1.py:mio-7b --workdir=gs://bkt/run1 --distributed "
      "--config.mesh.dcn=2'",
      "gcloud container clusters get-credentials c1 --project=my-proj --location=us-east5",
      "kubectl logs -f --tail=-1 --selector=jobset.sigs.k8s.io/jobset-name=run1,"
      "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0",
  ]
  assert dry_run("xpk.sh", "delete", *LOC.split(), "--cluster=c1", "--name=run1") == [
      "xpk workload delete --cluster=c1 --project=my-proj --zone=us-east5-a --workload=run1"]


def test_slurm_submit():
  lines = dry_run("slurm_gpu.sh", "submit", "--nodes=4", "--partition=gpu",
                  "--workdir=/shared/run1", "--", "--config.total_steps=5")
  py = f"{ROOT}/.venv/bin/python"
  assert lines == [
      f"mkdir -p {ROOT}/logs",
      f"sbatch --job-name=mio-train --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 "
      f"--cpus-per-task=32 --time=24:00:00 --output={ROOT}/logs/%x-%j.out --partition=gpu "
      f"'--wrap=srun --kill-on-bad-exit=1 bash -c '\\''cd {ROOT} && {py} -m mio_jax.main "
      "--config=configs/stage1.py:mio-7b --workdir=/shared/run1 --distributed "
      "--config.total_steps=5'\\'''",
  ]
  assert dry_run("slurm_gpu.sh", "cancel") == ["scancel --name=mio-train"]


@pytest.mark.parametrize("script,args,message", [
    ("tpu_vm.sh", ["create", "--zone=z", "--name=n", "--accelerator-type=v5p-8"], "--project"),
    ("tpu_vm.sh", ["run", *LOC.split(), "--name=n", "--workdir=/tmp/x"], "gs://"),
    ("tpu_vm.sh", ["create", *LOC.split(), "--name=n", "--accelerator-type=tpu"], "v5p-128"),
    ("xpk.sh", ["create", *LOC.split(), "--cluster=c", "--accelerator-type=v5p-8"], "gs://"),
    ("xpk.sh", ["cluster-create", *LOC.split(), "--cluster=c", "--accelerator-type=v5p-8",
                "--spot", "--reservation=r"], "exclude"),
    ("slurm_gpu.sh", ["submit", "--nodes=0", "--workdir=/w"], "--nodes"),
])
def test_bad_flags_fail_clearly(script, args, message):
  r = launch(script, args[0], "--dry-run", *args[1:])
  assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)
