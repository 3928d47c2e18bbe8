"""Attacks on the workdir and on resuming (issue 25), each with its expected outcome and a byte
snapshot showing that nothing outside the run's own files changed:

- two runs started at the same instant in one workdir (a barrier): exactly one trains, the other
  exits 2 with one line naming the holder and writes nothing; locally and on a GCS server;
- a stale claim (dead pid, stopped heartbeat) is taken over without a human;
- the README's "Bring your own data" training command leaves the data directory untouched;
- every config key is either one that must match on resume or one that may change; changed
  must-match keys stop the run in one line, changed may-change keys are logged and recorded;
- a checkpoint missing one of its files is damaged (fallback, moved aside);
- the non-finite allowance is per run, across restarts.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import pytest

from configs import curriculum
from mio_jax.checkpoint import manager as ckpt
from mio_jax.config import get_base_config
from mio_jax.train import divergence, loop, resume
from mio_jax.train import workdir_claim as workdir_lock
from tests.test_checkpoint import MODEL, ROOT, SMALL, _env, _flags

ERROR = "mio_jax.main: error"


def _snapshot(root) -> dict:
  """relative path → sha256 of every file under `root` (empty when it does not exist)."""
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _config(shards, total_steps, every=1, **overrides):
  """The CLI's `_flags` config, in process (so the two can share a workdir)."""
  c = curriculum.demo(1)
  c.data_dir, c.data.build_demo_corpus = shards, False
  for k, v in SMALL.items():
    setattr(c, k, v)
  c.model_overrides.update(MODEL)
  c.total_steps, c.checkpoint_every, c.async_checkpoint = total_steps, every, False
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for part in parents:
      target = target[part]
    target[leaf] = value
  return c


def _train(shards, workdir, total_steps, **overrides):
  return loop.train(_config(shards, total_steps, **overrides), str(workdir), jax.devices()[:1])


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


# -- 1. one run per workdir ------------------------------------------------------------------

_CLAIMER = textwrap.dedent(
  """
  import os, sys, time
  from mio_jax.train import workdir_claim as workdir_lock
  workdir, go = sys.argv[1], sys.argv[2]
  claim = workdir_lock.WorkdirClaim(workdir)
  while not os.path.exists(go):  # the barrier: every process is imported and waiting
    time.sleep(0.001)
  try:
    claim.acquire()
  except workdir_lock.WorkdirBusyError as e:
    print("busy", e, flush=True)
    sys.exit(2)
  print("won", os.getpid(), flush=True)
  time.sleep(3)  # hold it while the other tries
  claim.release()
  """
)


def _race_claims(workdirs, go, env):
  procs = []
  for workdir in workdirs:
    for _ in range(2):
      procs.append(
        subprocess.Popen(
          [sys.executable, "-c", _CLAIMER, workdir, go],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
        )
      )
  time.sleep(8)  # imports done on 2 busy cores
  with open(go, "w"):
    pass
  outs = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
  return [outs[i : i + 2] for i in range(0, len(outs), 2)]


def _assert_one_won(pair):
  (rc_a, out_a, err_a), (rc_b, out_b, err_b) = pair
  assert sorted([rc_a, rc_b]) == [0, 2], (out_a, err_a, out_b, err_b)
  winner, loser = (out_a, out_b) if rc_a == 0 else (out_b, out_a)
  pid = int(winner.split()[1])
  assert loser.startswith("busy ") and "in use by another training run (host " in loser
  assert f"pid {pid}, since " in loser


def test_claims_started_at_one_instant_exactly_one_wins(tmp_path):
  workdirs = [str(tmp_path / f"run{i}") for i in range(8)]
  for workdir in workdirs:
    os.makedirs(workdir)
  for pair in _race_claims(workdirs, str(tmp_path / "go"), dict(os.environ)):
    _assert_one_won(pair)
  for workdir in workdirs:
    assert os.listdir(workdir) == []  # released, nothing left behind


def test_claims_on_gcs_exactly_one_wins(tmp_path, gcs):
  bucket = gcs.new_bucket()
  workdirs = [f"gs://{bucket}/run{i}" for i in range(5)]
  env = dict(os.environ, **gcs.env)
  for pair in _race_claims(workdirs, str(tmp_path / "go"), env):
    _assert_one_won(pair)
  from mio_jax.io import paths

  for workdir in workdirs:
    assert not paths.exists(workdir_lock.claim_path(workdir))


_RACER = textwrap.dedent(
  """
  import os, sys, time
  from mio_jax.cli import entry
  from mio_jax.cli import train as cli
  go, argv = sys.argv[1], sys.argv[2:]
  while not os.path.exists(go):  # the barrier: both CLIs are imported and waiting
    time.sleep(0.001)
  entry.run(cli.main, argv=["mio_jax.main", *argv])
  """
)


def _race_cli(flags, go, env, log_dir):
  procs = []
  for i in range(2):
    log = open(os.path.join(log_dir, f"racer{i}.log"), "w+")
    procs.append(
      (
        subprocess.Popen(
          [sys.executable, "-c", _RACER, go, *flags],
          cwd=ROOT,
          env=env,
          stdout=subprocess.DEVNULL,
          stderr=log,
          text=True,
        ),
        log,
      )
    )
  time.sleep(15)
  with open(go, "w"):
    pass
  out = []
  for proc, log in procs:
    rc = proc.wait(timeout=600)
    log.seek(0)
    out.append((rc, log.read()))
  return out


def _assert_cli_race(results):
  assert sorted(rc for rc, _ in results) == [0, 2], [err[-3000:] for _, err in results]
  loser = next(err for rc, err in results if rc == 2)
  errors = [line for line in loser.splitlines() if line.startswith(ERROR)]
  assert len(errors) == 1 and "is in use by another training run (host " in errors[0], loser
  assert "Traceback" not in loser


@pytest.mark.parametrize("attempt", range(2))
def test_two_cli_runs_at_one_instant_one_trains_other_exits_2(shards, tmp_path, attempt):
  workdir = str(tmp_path / "run")
  flags = _flags(shards, workdir, 2, 1)[3:]
  _assert_cli_race(_race_cli(flags, str(tmp_path / "go"), _env(), str(tmp_path)))
  files = _snapshot(workdir)
  # Exactly one run's files: its metrics (each step once), one event file, its checkpoints, and
  # no claim left behind.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2]
  assert len([n for n in files if n.startswith("events.out.tfevents")]) == 1
  assert _steps(workdir) == [1, 2]
  assert set(files) == {
    n
    for n in files
    if n == "metrics.jsonl" or n.startswith(("events.out.tfevents", "checkpoints/"))
  }


def test_two_cli_runs_on_gcs_one_trains_other_exits_2(shards, tmp_path, gcs):
  from mio_jax.io import paths

  workdir = f"gs://{gcs.new_bucket()}/run"
  env = dict(_env(), **gcs.env)
  flags = _flags(shards, workdir, 2, 1)[3:]
  _assert_cli_race(_race_cli(flags, str(tmp_path / "go"), env, str(tmp_path)))
  lines = paths.read_text(f"{workdir}/metrics.jsonl").splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2]
  names = paths.listdir(workdir)
  assert workdir_lock.CLAIM_NAME not in names
  assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def _write_claim(workdir, **fields):
  import socket

  now = time.time()
  record = dict(host=socket.gethostname(), pid=os.getpid(), run_id="old", started=now - 600)
  record.update(heartbeat=now, heartbeat_s=30.0)
  record.update(fields)
  from mio_jax.io import paths

  paths.write_text(workdir_lock.claim_path(workdir), json.dumps(record))


def test_stale_claims_are_taken_over_live_ones_are_not(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  _write_claim(workdir, host="elsewhere", pid=4242)  # fresh heartbeat on another host
  with pytest.raises(workdir_lock.WorkdirBusyError, match=r"host elsewhere, pid 4242, since "):
    workdir_lock.WorkdirClaim(workdir).acquire()
  for stale in (dict(pid=_dead_pid()), dict(host="elsewhere", heartbeat=time.time() - 121)):
    _write_claim(workdir, **stale)
    claim = workdir_lock.WorkdirClaim(workdir, heartbeat_s=3600)
    with caplog.at_level("WARNING", logger="mio_jax.train.workdir_claim"):
      claim.acquire()
    assert "taking over the stale claim" in caplog.text
    assert f"pid {stale.get('pid', os.getpid())}, since " in caplog.text
    with open(workdir_lock.claim_path(workdir)) as f:
      assert json.load(f)["run_id"] == claim.run_id
    claim.release()
    assert os.listdir(workdir) == []
    caplog.clear()


def test_a_claim_taken_over_stops_its_old_owner(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  owner = workdir_lock.WorkdirClaim(workdir, heartbeat_s=3600)
  owner.acquire()
  _write_claim(workdir, run_id="thief")  # what a takeover leaves (owner hung for minutes)
  owner.refresh()
  with pytest.raises(workdir_lock.WorkdirClaimLostError, match="taken over"):
    owner.check()
  owner.release()  # never removes the new holder's claim
  with open(workdir_lock.claim_path(workdir)) as f:
    assert json.load(f)["run_id"] == "thief"


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_one_taker_removes_a_stale_claim_and_only_the_version_judged(tmp_path, request, where):
  from mio_jax.io import paths

  if where == "gcs":
    workdir = f"gs://{request.getfixturevalue('gcs').new_bucket()}/run"
  else:
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
  claim = workdir_lock.claim_path(workdir)
  store = workdir_lock._store(claim)
  _write_claim(workdir, host="elsewhere", heartbeat=0.0)
  _, stale = store.read(claim)
  token = f"{claim}.takeover-{workdir_lock._version_tag(stale)}"
  store.create(token, json.dumps({"t": time.time()}))  # another job is taking it over
  assert not workdir_lock.take_over(store, claim, stale, 120)
  store.delete(token)
  _write_claim(workdir, host="elsewhere", run_id="fresh")  # replaced since it was judged
  assert not workdir_lock.take_over(store, claim, stale, 120)
  assert json.loads(paths.read_text(claim))["run_id"] == "fresh"
  _, current = store.read(claim)
  assert workdir_lock.take_over(store, claim, current, 120)
  assert not paths.exists(claim) and not paths.exists(token)


# -- 2. the user's data ----------------------------------------------------------------------


def _readme_train_command() -> list[str]:
  """The training command of README.md's "Bring your own data" section, as written."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  section = text[text.index("## Bring your own data") :]
  start = section.index(".venv/bin/python -m mio_jax.main")
  lines, end = [], start
  while True:
    line_end = section.index("\n", end)
    line = section[end:line_end].split("#")[0].strip()
    lines.append(line.rstrip("\\").strip())
    if not line.endswith("\\"):
      break
    end = line_end + 1
  return " ".join(lines).split()


def test_readme_byod_training_writes_nothing_into_the_data(tmp_path):
  from data_pipelines import convert
  from data_pipelines.tokenize_jsonl import run as tokenize
  from mio_jax.model.sizes import DEMO_VOCAB
  from tests import convert_fixtures as fx

  raw, lines = tmp_path / "raw", []
  for fmt in ("coco_captions", "librispeech"):  # the datasets the README's mixture names
    write, src, split = fx.FIXTURES[fmt]
    write(str(tmp_path / "src" / fmt))
    convert.convert(
      fmt, str(tmp_path / "src" / fmt), str(raw / f"{fmt}.jsonl"), split=split, stream=io.StringIO()
    )
    lines += (raw / f"{fmt}.jsonl").read_text().splitlines()
  (raw / "train.jsonl").write_text("\n".join(lines) + "\n")
  tok = fx.make_tokenizers(str(tmp_path / "tok"))
  for suffix in ("", "_val"):
    tokenize(str(raw / "train.jsonl"), tok, str(tmp_path / "shards"), DEMO_VOCAB, suffix=suffix)
  os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
  before = _snapshot(tmp_path / "shards")
  assert {n.split("/")[0] for n in before} == {
    "image_text",
    "speech_text",
    "image_text_val",
    "speech_text_val",
  }

  command = _readme_train_command()
  assert command[:3] == [".venv/bin/python", "-m", "mio_jax.main"]
  assert "--config.data_dir=shards" in command and "--workdir=/tmp/run" in command
  workdir = str(tmp_path / "run")
  small = [f"--config.{k}={v}" for k, v in SMALL.items()]
  small += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  argv = [sys.executable, *command[1:], *small, "--config.total_steps=2", f"--workdir={workdir}"]
  env = dict(_env(), PYTHONPATH=ROOT)
  out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "reading it as it is" in out.stderr
  assert _snapshot(tmp_path / "shards") == before  # not one byte written into the user's data
  assert _steps(workdir) == [2]

  # A dataset the mixture names but data_dir lacks: one line naming it, still nothing written.
  argv += ["--config.data.mixture=image_text:12,speech_text:2,text:1", f"--workdir={workdir}2"]
  out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith(ERROR)]
  assert len(errors) == 1 and "shards/text does not exist" in errors[0]
  assert "Traceback" not in out.stderr
  assert _snapshot(tmp_path / "shards") == before


def test_demo_corpus_goes_only_into_a_missing_or_empty_dir(tmp_path):
  assert loop.demo_corpus_wanted(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  assert loop.demo_corpus_wanted(str(tmp_path / "empty"))
  (tmp_path / "user" / "image_text").mkdir(parents=True)
  assert not loop.demo_corpus_wanted(str(tmp_path / "user"))  # the user's datasets: read as is
  (tmp_path / "done").mkdir()
  (tmp_path / "done" / "corpus.json").write_text("{}")
  assert not loop.demo_corpus_wanted(str(tmp_path / "done"))
  (tmp_path / "half" / "raw").mkdir(parents=True)  # our own build, interrupted
  (tmp_path / "half" / loop.DEMO_BUILDING_MARKER).write_text("")
  assert loop.demo_corpus_wanted(str(tmp_path / "half"))


# -- 3. resume checks ------------------------------------------------------------------------


def test_every_config_key_is_classified_exactly_once():
  keys = set(resume.config_keys(get_base_config()))
  for stage in (1, 2, 3, 4):
    for variant in ("demo", "mio-7b"):
      keys |= set(resume.config_keys(curriculum.stage_config(stage, variant)))
  assert "data.pack_rows" in keys and "model_overrides.rope_theta" in keys and "lr" in keys
  for key in sorted(keys):
    rules = [
      r for r in resume.MUST_MATCH + resume.MAY_CHANGE if key == r or key.startswith(r + ".")
    ]
    assert len(rules) == 1, f"config key {key!r} is covered by {rules or 'no rule'}"
  for rule in resume.MUST_MATCH + resume.MAY_CHANGE:  # no rule for a key that is gone
    assert any(k == rule or k.startswith(rule + ".") for k in keys), rule


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
  """A 1-step run of the CLI's config, with its checkpoint (copied per test)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  _train(shards, workdir, 1)
  return workdir


def _copy(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  return workdir


@pytest.mark.parametrize(
  "key,value,shown",
  [
    ("data.pack_rows", 4, "data.pack_rows=8 but this run has data.pack_rows=4"),
    ("model_overrides.rope_theta", 5e5, "rope_theta=None but this run has "),
  ],
)
def test_changed_must_match_key_stops_before_anything_is_written(
  shards, trained, tmp_path, key, value, shown
):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(ckpt.CheckpointMismatchError, match=shown.replace(".", r"\.")):
    _train(shards, workdir, 2, **{key: value})
  assert _snapshot(workdir) == before


def test_changed_model_is_one_line_exit_2(shards, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  cmd = _flags(shards, str(workdir), 2, 1) + ["--config.model=small"]
  out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith(ERROR)]
  assert len(errors) == 1 and "model='tiny' but this run has model='small'" in errors[0]
  assert "Traceback" not in out.stderr and "fingerprint" not in out.stderr
  assert _snapshot(workdir) == before


def test_changed_lr_resumes_logs_and_records_the_change(shards, trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  with caplog.at_level("WARNING", logger="mio_jax.train.resume"):
    run = _train(shards, workdir, 2, lr=5e-4)
  assert [h["step"] for h in run.history] == [2]
  assert "changed since step 1: lr 0.003 → 0.0005" in caplog.text
  meta = ckpt.read_meta(str(workdir / "checkpoints" / "2"))
  assert meta["changes"] == [
    {"step": 1, "key": "lr", "from": 0.003, "to": 0.0005},
    {"step": 1, "key": "total_steps", "from": 1, "to": 2},
  ]
  assert meta["settings"]["lr"] == 0.0005 and meta["resume"]["data.pack_rows"] == 8


# -- 4. damage and the non-finite allowance -------------------------------------------------


@pytest.mark.parametrize(
  "missing,reason",
  [
    ("state/_METADATA", "CheckpointDamaged: "),
    ("meta/metadata", "CheckpointDamaged: "),
    ("data/process_0-of-1.json", "CheckpointDamaged: "),
  ],
)
def test_checkpoint_missing_a_file_is_damaged_and_falls_back(
  shards, tmp_path, caplog, missing, reason
):
  workdir = tmp_path / "run"
  _train(shards, workdir, 2)
  os.remove(workdir / "checkpoints" / "2" / missing)
  with caplog.at_level("WARNING", logger="mio_jax.checkpoint"):
    run = _train(shards, workdir, 2)
  unusable = [r.getMessage() for r in caplog.records if "is unusable" in r.getMessage()]
  assert len(unusable) == 1 and "checkpoints/2 is unusable (" + reason in unusable[0]
  assert missing.split("/")[0] in unusable[0]  # names what is missing
  assert [h["step"] for h in run.history] == [2]  # resumed from step 1, step 2 trained again
  assert os.path.isdir(workdir / "checkpoints.damaged" / "2")  # kept, not deleted
  assert not os.path.exists(workdir / "checkpoints.damaged" / "2" / missing)
  assert _steps(workdir) == [1, 2]


def test_nonfinite_allowance_is_per_run_across_restarts(shards, tmp_path):
  workdir = tmp_path / "run"
  blowup = dict(lr=1e30, warmup_frac=0.0, skip_nonfinite_updates=1)
  with pytest.raises(divergence.NonFiniteError) as first:
    _train(shards, workdir, 12, **blowup)  # one skip allowed: stops at the second
  bad = int(str(first.value).split("non-finite update at step ")[1].split(":")[0])
  last = _steps(workdir)[-1]
  assert last == bad - 1
  assert ckpt.read_meta(str(workdir / "checkpoints" / str(last)))["skipped_updates"] == 1
  before = _snapshot(workdir / "checkpoints")
  with pytest.raises(divergence.NonFiniteError) as second:  # the allowance is used up
    _train(shards, workdir, 12, **blowup)
  assert f"non-finite update at step {bad}:" in str(second.value)
  assert _snapshot(workdir / "checkpoints") == before  # nothing saved after the bad step
