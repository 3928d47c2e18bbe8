"""Launch scripts: syntax, the exact commands their --dry-run prints (no network, no gcloud),
values quoted for the remote shell, and only tracked files shipped."""

import os
import shlex
import shutil
import subprocess
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("tpu_vm.sh", "xpk.sh", "slurm_gpu.sh")
LOC = "--project=my-proj --zone=us-east5-a"


def launch(script, *args, root=ROOT, tmpdir="/tmp"):
  env = {**os.environ, "TMPDIR": str(tmpdir)}  # where tarballs would go; dry runs write nothing
  return subprocess.run(
    ["bash", os.path.join(root, "launch", script), *args],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )


def dry_run(script, action, *args, **kw):
  r = launch(script, action, "--dry-run", *args, **kw)  # before any `--` (main.py flags follow)
  assert r.returncode == 0, r.stderr
  return r.stdout.splitlines()


def _git(root, *args):
  return subprocess.run(
    ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
  ).stdout.strip()


def ship_lines(tarball, root=ROOT):
  """What --dry-run prints for shipping `root`: the tracked-file count at HEAD, then the archive."""
  n = len(_git(root, "ls-tree", "-r", "--name-only", "HEAD").splitlines())
  rev = _git(root, "rev-parse", "--short", "HEAD")
  return [
    f"# ship the {n} files git tracks at HEAD ({rev}); untracked and ignored files stay here",
    f"git -C {root} archive --format=tar.gz --output={tarball} HEAD",
  ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_help(script):
  path = os.path.join(ROOT, "launch", script)
  assert subprocess.run(["bash", "-n", path]).returncode == 0
  r = launch(script, "--help")
  assert r.returncode == 0 and "--dry-run" in r.stdout


def test_tpu_vm_single_slice():
  lines = dry_run(
    "tpu_vm.sh",
    "up",
    *LOC.split(),
    "--name=mio",
    "--accelerator-type=v5p-128",
    "--workdir=gs://bkt/run1",
    "--",
    "--config.total_steps=10",
  )
  ssh = "gcloud compute tpus tpu-vm ssh mio --project=my-proj --zone=us-east5-a"
  assert lines == [
    "gcloud compute tpus tpu-vm create mio --project=my-proj --zone=us-east5-a "
    "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5",
    *ship_lines("/tmp/mio_jax-mio.tgz"),
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
  lines = dry_run(
    "tpu_vm.sh",
    "create",
    *LOC.split(),
    "--name=mio",
    "--accelerator-type=v5e-256",
    "--num-slices=2",
    "--spot",
  )
  assert lines[0] == (
    "gcloud compute tpus queued-resources create mio --project=my-proj --zone=us-east5-a "
    "--accelerator-type=v5litepod-256 --runtime-version=v2-alpha-tpuv5-lite --node-count=2 "
    "--node-prefix=mio --spot"
  )
  assert lines[2] == (
    "gcloud compute tpus queued-resources describe mio --project=my-proj "
    "--zone=us-east5-a '--format=value(state.state)'"
  )
  lines = dry_run(
    "tpu_vm.sh", "run", *LOC.split(), "--name=mio", "--num-slices=2", "--workdir=gs://bkt/run2"
  )
  assert lines[0].startswith("gcloud compute tpus tpu-vm describe mio-0 ")
  for i in (0, 1):
    assert lines[1 + i].startswith(f"gcloud compute tpus tpu-vm ssh mio-{i} ")
    assert (
      f"MEGASCALE_COORDINATOR_ADDRESS=COORDINATOR_IP:8080 MEGASCALE_NUM_SLICES=2 "
      f"MEGASCALE_SLICE_ID={i} MEGASCALE_PORT=8080 nohup"
    ) in lines[1 + i]
    assert "--config.mesh.dcn=2" in lines[1 + i]
  assert dry_run("tpu_vm.sh", "delete", *LOC.split(), "--name=mio", "--num-slices=2") == [
    "gcloud compute tpus queued-resources delete mio --project=my-proj --zone=us-east5-a "
    "--force --quiet"
  ]
  assert dry_run("tpu_vm.sh", "delete", *LOC.split(), "--name=mio") == [
    "gcloud compute tpus tpu-vm delete mio --project=my-proj --zone=us-east5-a --quiet"
  ]


def test_xpk_commands():
  assert dry_run(
    "xpk.sh", "cluster-create", *LOC.split(), "--cluster=c1", "--accelerator-type=v5p-128", "--spot"
  ) == [
    "xpk cluster create --cluster=c1 --project=my-proj --zone=us-east5-a --tpu-type=v5p-128 "
    "--num-slices=1 --spot"
  ]
  lines = dry_run(
    "xpk.sh",
    "up",
    *LOC.split(),
    "--cluster=c1",
    "--name=run1",
    "--accelerator-type=v5e-256",
    "--num-slices=2",
    "--workdir=gs://bkt/run1",
  )
  stage = "/tmp/mio_jax-xpk-run1"
  assert lines == [
    *ship_lines(f"{stage}.tgz"),
    f"rm -rf {stage}",
    f"mkdir -p {stage}",
    f"tar -xzf {stage}.tgz -C {stage}",
    "xpk workload create --cluster=c1 --project=my-proj --zone=us-east5-a --workload=run1 "
    f"--tpu-type=v5litepod-256 --num-slices=2 --base-docker-image=python:3.11-slim "
    f"--script-dir={stage} --max-restarts=10 --priority=medium '--command=pip install -q -r "
    "requirements.txt -r requirements-tpu.txt && python3 -m mio_jax.main "
    "--config=configs/stage1.py:mio-7b --workdir=gs://bkt/run1 --distributed "
    "--config.mesh.dcn=2'",
    "gcloud container clusters get-credentials c1 --project=my-proj --location=us-east5",
    "kubectl logs -f --tail=-1 --selector=jobset.sigs.k8s.io/jobset-name=run1,"
    "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0",
  ]
  assert dry_run("xpk.sh", "delete", *LOC.split(), "--cluster=c1", "--name=run1") == [
    "xpk workload delete --cluster=c1 --project=my-proj --zone=us-east5-a --workload=run1"
  ]


def test_slurm_submit():
  lines = dry_run(
    "slurm_gpu.sh",
    "submit",
    "--nodes=4",
    "--partition=gpu",
    "--workdir=/shared/run1",
    "--",
    "--config.total_steps=5",
  )
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


@pytest.mark.parametrize(
  "script,args,message",
  [
    ("tpu_vm.sh", ["create", "--zone=z", "--name=n", "--accelerator-type=v5p-8"], "--project"),
    ("tpu_vm.sh", ["run", *LOC.split(), "--name=n", "--workdir=/tmp/x"], "gs://"),
    ("tpu_vm.sh", ["create", *LOC.split(), "--name=n", "--accelerator-type=tpu"], "v5p-128"),
    ("xpk.sh", ["create", *LOC.split(), "--cluster=c", "--accelerator-type=v5p-8"], "gs://"),
    (
      "xpk.sh",
      [
        "cluster-create",
        *LOC.split(),
        "--cluster=c",
        "--accelerator-type=v5p-8",
        "--spot",
        "--reservation=r",
      ],
      "exclude",
    ),
    ("slurm_gpu.sh", ["submit", "--nodes=0", "--workdir=/w"], "--nodes"),
  ],
)
def test_bad_flags_fail_clearly(script, args, message):
  r = launch(script, args[0], "--dry-run", *args[1:])
  assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)


# ---- quoting: values reach mio_jax.main as one argument each -------------------------------------
CONFIG = "configs/stage1.py:mio-7b; touch pwned"
WORKDIR = "gs://bkt/my run;$(touch pwned)"
EXTRA = "--config.data_dir=gs://bkt/a b'c"


def _remote_words(script, lines):
  """The words the remote shell sees: the ssh / xpk --command, or what sbatch --wrap runs."""
  if script == "slurm_gpu.sh":
    line = next(x for x in lines if x.startswith("sbatch "))
    wrap = next(a for a in shlex.split(line) if a.startswith("--wrap="))[len("--wrap=") :]
    srun = shlex.split(wrap)
    assert srun[:4] == ["srun", "--kill-on-bad-exit=1", "bash", "-c"] and len(srun) == 5
    return shlex.split(srun[4])
  line = next(x for x in lines if "mio_jax.main" in x)
  command = next(a for a in shlex.split(line) if a.startswith("--command="))
  return shlex.split(command[len("--command=") :])


@pytest.mark.parametrize(
  "script,args",
  [
    ("tpu_vm.sh", ["run", *LOC.split(), "--name=mio"]),
    (
      "xpk.sh",
      [
        "create",
        *LOC.split(),
        "--cluster=c1",
        "--name=run1",
        "--accelerator-type=v5p-8",
        "--docker-image=img",
      ],
    ),
    ("slurm_gpu.sh", ["submit"]),
  ],
)
def test_values_with_spaces_and_semicolons_stay_quoted(script, args):
  lines = dry_run(script, *args, f"--config={CONFIG}", f"--workdir={WORKDIR}", "--", EXTRA)
  words = _remote_words(script, lines)
  i = words.index("mio_jax.main")
  want = [f"--config={CONFIG}", f"--workdir={WORKDIR}", "--distributed", EXTRA]
  assert words[i + 1 : i + 5] == want
  assert "touch" not in words and "pwned" not in words


# ---- shipping: the files git tracks, nothing else ------------------------------------------------
@pytest.fixture
def checkout(tmp_path):
  """A git checkout holding the launch scripts; untracked, ignored and uncommitted files beside."""
  root = tmp_path / "repo"
  shutil.copytree(os.path.join(ROOT, "launch"), root / "launch")
  (root / "mio_jax").mkdir()
  (root / "mio_jax" / "__init__.py").write_text("committed = True\n")
  (root / ".gitignore").write_text("/workdir*/\n/demo_data/\n/logs/\n")
  _git(root.parent, "init", "-q", str(root))
  _git(root, "add", "-A")
  _git(
    root,
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@example.com",
    "-c",
    "commit.gpgsign=false",
    "commit",
    "-qm",
    "init",
  )
  tracked = set(_git(root, "ls-files").splitlines())
  for rel in ("workdir/stage1/checkpoints/3/x", "demo_data/corpus.json", "logs/a.out", "notes.txt"):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("local only\n")
  (root / "mio_jax" / "__init__.py").write_text("committed = False\n")  # an uncommitted edit
  return root, tracked


def _execute_local(lines, tmp_path):
  """Run the local commands a dry run printed (git archive, rm, mkdir, tar), all under tmp_path."""
  for line in lines:
    argv = shlex.split(line)
    if not argv or argv[0] not in ("git", "rm", "mkdir", "tar"):
      continue
    if argv[0] == "rm":
      assert argv[-1].startswith(str(tmp_path)), argv
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def test_tpu_vm_ships_only_tracked_files(checkout, tmp_path):
  root, tracked = checkout
  r = launch(
    "tpu_vm.sh", "install", "--dry-run", *LOC.split(), "--name=mio", root=root, tmpdir=tmp_path
  )
  assert r.returncode == 0 and "uncommitted changes" in r.stderr, r.stderr
  tarball = tmp_path / "mio_jax-mio.tgz"
  assert r.stdout.splitlines()[:2] == ship_lines(tarball, root)
  _execute_local(r.stdout.splitlines()[:2], tmp_path)
  with tarfile.open(tarball) as t:
    names = {m.name for m in t.getmembers() if m.isfile()}
    assert names == tracked
    assert t.extractfile("mio_jax/__init__.py").read() == b"committed = True\n"


def test_xpk_script_dir_holds_only_tracked_files(checkout, tmp_path):
  root, tracked = checkout
  lines = dry_run(
    "xpk.sh",
    "create",
    *LOC.split(),
    "--cluster=c1",
    "--name=run1",
    "--accelerator-type=v5p-8",
    "--workdir=gs://bkt/run1",
    root=root,
    tmpdir=tmp_path,
  )
  stage = tmp_path / "mio_jax-xpk-run1"
  assert f"--script-dir={stage}" in shlex.split(lines[-1])
  _execute_local(lines, tmp_path)
  shipped = {os.path.relpath(os.path.join(d, f), stage) for d, _, fs in os.walk(stage) for f in fs}
  assert shipped == tracked
