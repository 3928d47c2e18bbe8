"""Every command line answers a user's mistake (a missing file, a bad flag value, a typo in a flag
or config key) with exactly one line on stderr naming what is wrong, and exit code 2: no
traceback, no usage block, no library warning before it. Each case fails before any heavy work,
so the whole matrix costs only the CLIs' start-up."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MISSING, BAD_VALUE, TYPO = "missing file", "bad value", "typo"

# (cli, case, argv, the text the one line must hold); {tmp} is the test's tmp_path, which holds a
# regular file named `file`.
CASES = [
  ("mio_jax.main", MISSING, ["--config=no/such/file.py"],
   "mio_jax.main: error: --config=no/such/file.py: no such config file 'no/such/file.py'"),
  ("mio_jax.main", BAD_VALUE, ["--config.total_steps=abc"],
   "mio_jax.main: error: flag --config.total_steps=abc: invalid literal for int()"),
  ("mio_jax.main", TYPO, ["--config.totl_steps=5"],
   "mio_jax.main: error: unknown config key 'totl_steps' (did you mean 'total_steps'"),
  ("mio_jax.main", TYPO, ["--config.no_such_key=1"],
   "mio_jax.main: error: unknown config key 'no_such_key'; the keys here: async_checkpoint"),
  ("mio_jax.main", TYPO, ["--config=configs/stage1.py:demo", "--config.mesh.fsdpp=2"],
   "mio_jax.main: error: unknown config key 'mesh.fsdpp' (did you mean 'mesh.fsdp'"),
  ("mio_jax.main", BAD_VALUE, ["--config=configs/stage1.py:nosuch"],
   "mio_jax.main: error: --config=configs/stage1.py:nosuch: unknown variant 'nosuch'"),
  ("mio_jax.generate", MISSING, ["--workdir={tmp}/none", "--prompt=hi", "--out={tmp}/o"],
   "mio_jax.generate: error: no finished checkpoint under {tmp}/none"),
  ("mio_jax.generate", BAD_VALUE, ["--workdir={tmp}", "--seed=abc"],
   "mio_jax.generate: error: flag --seed=abc: invalid literal for int()"),
  ("mio_jax.generate", TYPO, ["--workdri={tmp}", "--prompt=hi"],
   "mio_jax.generate: error: Unknown command line flag 'workdri'. Did you mean: workdir"),
  ("mio_jax.evaluate", MISSING, ["--workdir={tmp}/none"],
   "mio_jax.evaluate: error: no finished checkpoint under {tmp}/none"),
  ("mio_jax.evaluate", BAD_VALUE, ["--workdir={tmp}", "--limit=-3"],
   "mio_jax.evaluate: error: flag --limit=-3: "),
  ("mio_jax.evaluate", TYPO, ["--workdri={tmp}"],
   "mio_jax.evaluate: error: Unknown command line flag 'workdri'. Did you mean: workdir"),
  ("mio_jax.export", MISSING, ["--workdir={tmp}/none", "--out={tmp}/hf"],
   "mio_jax.export: error: no finished checkpoint under {tmp}/none"),
  ("mio_jax.export", BAD_VALUE, ["--workdir={tmp}", "--out={tmp}/hf", "--dtype=x"],
   "mio_jax.export: error: flag --dtype=x: value should be one of <bfloat16|float32>"),
  ("mio_jax.export", TYPO, ["--workdri={tmp}", "--out={tmp}/hf"],
   "mio_jax.export: error: Unknown command line flag 'workdri'. Did you mean: workdir"),
  ("mio_jax.aot", MISSING, ["--config=no/such/file.py", "--topology=v5p-8"],
   "mio_jax.aot: error: --config=no/such/file.py: no such config file 'no/such/file.py'"),
  ("mio_jax.aot", BAD_VALUE, ["--topology=v5p-8", "--num_slices=abc"],
   "mio_jax.aot: error: flag --num_slices=abc: invalid literal for int()"),
  ("mio_jax.aot", TYPO, ["--topology=v5p-8", "--config.totl_steps=3"],
   "mio_jax.aot: error: unknown config key 'totl_steps' (did you mean 'total_steps'"),
  ("data_pipelines.tokenize_jsonl", MISSING,
   ["--manifest={tmp}/no.jsonl", "--tokenizers={tmp}", "--out={tmp}/o"],
   "data_pipelines.tokenize_jsonl: error: manifest not found: {tmp}/no.jsonl"),
  ("data_pipelines.tokenize_jsonl", BAD_VALUE,
   ["--manifest={tmp}/file", "--tokenizers={tmp}", "--out={tmp}/o", "--workers=abc"],
   "data_pipelines.tokenize_jsonl: error: argument --workers: invalid int value: 'abc'"),
  ("data_pipelines.tokenize_jsonl", TYPO,
   ["--manifest={tmp}/file", "--tokenizers={tmp}", "--out={tmp}/o", "--modle=tiny"],
   "data_pipelines.tokenize_jsonl: error: unrecognized argument --modle=tiny "
   "(did you mean --model?)"),
  ("data_pipelines.beam_tokenize", MISSING,
   ["--manifest={tmp}/file", "--tokenizers={tmp}/no_tokenizers", "--out={tmp}/o"],
   "data_pipelines.beam_tokenize: error: --tokenizers {tmp}/no_tokenizers does not exist"),
  ("data_pipelines.beam_tokenize", BAD_VALUE,
   ["--manifest={tmp}/file", "--tokenizers={tmp}", "--out={tmp}/o", "--model=tinyy"],
   "data_pipelines.beam_tokenize: error: argument --model: invalid choice: 'tinyy'"),
  ("data_pipelines.beam_tokenize", TYPO,
   ["--manifest={tmp}/file", "--tokenizers={tmp}", "--outt={tmp}/o"],
   "data_pipelines.beam_tokenize: error: unrecognized argument --outt={tmp}/o "
   "(did you mean --out?)"),
  ("data_pipelines.demo_corpus", MISSING, ["--out={tmp}/file/corpus"],
   "data_pipelines.demo_corpus: error: {tmp}/file/corpus: cannot write there"),
  ("data_pipelines.demo_corpus", BAD_VALUE, ["--out={tmp}/o", "--scale=abc"],
   "data_pipelines.demo_corpus: error: argument --scale: invalid float value: 'abc'"),
  ("data_pipelines.demo_corpus", TYPO, ["--outt={tmp}/o"],
   "data_pipelines.demo_corpus: error: unrecognized argument --outt={tmp}/o "
   "(did you mean --out?)"),
  ("data_pipelines.convert_weights", MISSING,
   ["--kind=seed", "--src={tmp}/no.pt", "--out={tmp}/o"],
   "data_pipelines.convert_weights: error: --src: no such file: {tmp}/no.pt"),
  ("data_pipelines.convert_weights", BAD_VALUE,
   ["--kind=seed", "--src={tmp}/file", "--out={tmp}/o", "--num_layers=abc"],
   "data_pipelines.convert_weights: error: argument --num_layers: invalid int value: 'abc'"),
  ("data_pipelines.convert_weights", TYPO, ["--knd=seed", "--src={tmp}/file", "--out={tmp}/o"],
   "data_pipelines.convert_weights: error: unrecognized argument --knd=seed "
   "(did you mean --kind?)"),
  ("data_pipelines.convert", MISSING,
   ["--format=coco_captions", "--src={tmp}/none", "--out={tmp}/o.jsonl"],
   "data_pipelines.convert: error: COCO captions annotations not found: "
   "{tmp}/none/annotations/captions_train2017.json"),
  ("data_pipelines.convert", BAD_VALUE,
   ["--format=coco_captions", "--src={tmp}", "--out={tmp}/o.jsonl", "--limit=-3"],
   "data_pipelines.convert: error: argument --limit: must be at least 1, got -3"),
  ("data_pipelines.convert", TYPO,
   ["--formt=coco_captions", "--src={tmp}", "--out={tmp}/o.jsonl"],
   "data_pipelines.convert: error: unrecognized argument --formt=coco_captions "
   "(did you mean --format?)"),
  ("benchmarks.run", MISSING, ["--out_dir={tmp}/file/results"],
   "benchmarks.run: error: --out_dir: {tmp}/file/results: cannot write there"),
  ("benchmarks.run", BAD_VALUE, ["--out_dir={tmp}/r", "--timeout=abc"],
   "benchmarks.run: error: argument --timeout: invalid float value: 'abc'"),
  ("benchmarks.run", TYPO, ["--out_dir={tmp}/r", "--siute=cpu"],
   "benchmarks.run: error: unrecognized argument --siute=cpu (did you mean --suite?)"),
]  # fmt: skip


@pytest.mark.parametrize(
  "cli,case,argv,expected", CASES, ids=[f"{c[0]}-{c[1]}-{c[2][-1]}" for c in CASES]
)
def test_user_mistake_is_one_line_and_exit_2(cli, case, argv, expected, tmp_path):
  (tmp_path / "file").write_text("not a directory\n")
  argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
  expected = expected.replace("{tmp}", str(tmp_path))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-m", cli, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
    timeout=300,
  )  # fmt: skip
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith(expected), (lines[0], expected)
