"""User mistakes end in one line naming the problem and exit code 2, without a traceback, and
before anything slow (checkpoint load, compile) runs. The matrix of every CLI x (missing file,
bad value, typo) is tests/test_cli_user_errors.py; these are the other mistakes."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [
  (["mio_jax.main", "--workdri=x"], "Unknown command line flag 'workdri'. Did you mean: workdir"),
  (
    ["mio_jax.main", "--config.model=tinyy", "--workdir={tmp}/w"],
    "unknown model 'tinyy' (did you mean 'tiny'?)",
  ),
  (
    ["mio_jax.main", "--workdir={tmp}/w", "--config.data.mixture=image_text=12"],
    "config.data.mixture='image_text=12': 'image_text=12' is not NAME:WEIGHT with a weight > 0",
  ),
  (  # the stage's mixture names datasets this data_dir lacks: all named, and the way out
    [
      "mio_jax.main",
      "--workdir={tmp}/w",
      "--config.data_dir={tmp}",
      "--config.data.build_demo_corpus=false",
    ],
    "dataset directories {tmp}/image_text, {tmp}/speech_text, {tmp}/text do not exist;",
  ),
  (
    ["mio_jax.aot", "--topology=h100-8"],
    "--topology=h100-8: XLA cannot compile for GPUs from a CPU host",
  ),
  (
    [
      "mio_jax.generate",
      "--workdir={tmp}/none",
      "--prompt=hi",
      "--image={tmp}/missing.png",
      "--out={tmp}/o",
    ],
    "--image={tmp}/missing.png: cannot read it",
  ),
  (
    ["mio_jax.evaluate", "--workdir={tmp}/none", "--tasks=asrr"],
    "mio_jax.evaluate: error: --tasks: unknown ['asrr']",
  ),
  (
    [
      "data_pipelines.tokenize_jsonl",
      "--manifest=x.jsonl",
      "--tokenizers=t",
      "--out={tmp}/o",
      "--model=tinyy",
    ],
    "argument --model: invalid choice: 'tinyy'",
  ),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_user_error_is_one_line_and_exit_2(args, expected, tmp_path):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  expected = expected.replace("{tmp}", str(tmp_path))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if "error: " in line or "Unknown" in line]
  assert len(errors) == 1 and expected in errors[0], out.stderr[-2000:]
  assert "Traceback" not in out.stderr
