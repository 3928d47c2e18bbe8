"""MIO's release run as shipped: a tiny directory in MIO's exact layout (tests/mio_release.py:
`.bin` shards + index, Yi tokenizer files, SEED / unCLIP / SpeechTokenizer folders) is loaded
against transformers, its tokenizers converted with `convert_weights --from_mio`, and
`mio-generate` / `mio-evaluate --model=DIR` run on it, locally and on gs://."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mio_jax.checkpoint import trained
from mio_jax.errors import UserError
from mio_jax.generate import io
from mio_jax.hf import config_json
from mio_jax.hf import weights as hf
from mio_jax.io import paths
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer
from tests.mio_release import SEED, SEED_CONFIG_FILE, SPEECH, bin_shard_names, write_mio_release

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WEIGHT_FILES = ("config.json", "pytorch_model.bin.index.json", *bin_shard_names())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """MIO-7B-Instruct's layout, `.bin` weights, with its tokenizers converted (the default OUT)."""
  from data_pipelines import convert_weights

  root = tmp_path_factory.mktemp("release")
  directory = root / "MIO-7B-Instruct"
  write_mio_release(directory, "bin", cache=root / "cache")
  convert_weights.main([f"--from_mio={directory}", f"--seed_config={root / SEED_CONFIG_FILE}"])
  return directory


@pytest.fixture(scope="module")
def tokens():
  """Ids from every block: Yi text, ChatML, the specials, image and all four speech layers."""
  rng = np.random.RandomState(0)
  ids = [1, 6, 7, *range(64_000, 64_006), *rng.randint(64_006, 76_294, 20)]
  return np.asarray([ids, rng.randint(0, 76_294, len(ids))], np.int32)


def _transformers_logits(path, tokens):
  model = transformers.AutoModelForCausalLM.from_pretrained(
    path, dtype=torch.float32, attn_implementation="eager"
  )
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def _ours(cfg, params, tokens):
  return np.asarray(jax.jit(Transformer(cfg).apply)({"params": params}, jnp.asarray(tokens)))


def _weights_only_copy(release, out: pathlib.Path) -> pathlib.Path:
  out.mkdir()
  for name in WEIGHT_FILES:
    shutil.copy(release / name, out / name)
  return out


def _run(module: str, *flags, timeout=300):
  cmd = [sys.executable, "-m", module, *flags]
  return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


# ---- weights -------------------------------------------------------------------------------------
def test_bin_shards_logits_match_transformers(release, tokens):
  cfg, params = hf.load_hf(str(release))
  want = _transformers_logits(str(release), tokens)
  err = np.abs(_ours(cfg, params, tokens) - want).max()
  assert np.abs(want).max() > 1.0 and err <= 1e-4, err


def test_safetensors_release_matches_transformers_and_the_bin_one(release, tokens, tmp_path):
  write_mio_release(tmp_path / "st", "safetensors")  # same seed: the same weights
  assert not list((tmp_path / "st").glob("*.bin"))
  cfg, params = hf.load_hf(str(tmp_path / "st"))
  want = _transformers_logits(str(tmp_path / "st"), tokens)
  err = np.abs(_ours(cfg, params, tokens) - want).max()
  assert np.abs(want).max() > 1.0 and err <= 1e-4, err
  _, from_bin = hf.load_hf(str(release))
  jax.tree.map(np.testing.assert_array_equal, params, from_bin)


def test_model_dir_loads_sharded_in_bf16_with_padding_rows(release):
  run = trained.load_hf_model(str(release), tensor=2, dtype="bfloat16")
  assert run.vocab == get_model("mio-tiny")[1] and run.step == 0
  emb = run.params["embedding"]
  assert emb.shape == (76_416, 32) and emb.dtype == jnp.bfloat16
  assert len(emb.sharding.device_set) == 8  # fsdp 4 x tensor 2 over the 8 CPU devices
  _, f32 = hf.load_hf(str(release))
  np.testing.assert_array_equal(
    np.asarray(emb[:76_294], np.float32), f32["embedding"].astype(jnp.bfloat16).astype(np.float32)
  )
  q = run.params["layers"]["attention"]["q"]
  np.testing.assert_array_equal(
    np.asarray(q, np.float32),
    f32["layers"]["attention"]["q"].astype(jnp.bfloat16).astype(np.float32),
  )


# ---- bad weight files: one named error each ------------------------------------------------------
def test_truncated_foreign_and_missing_shards_are_named_errors(release, tmp_path):
  first, second = bin_shard_names()
  bad = _weights_only_copy(release, tmp_path / "truncated")
  data = (bad / second).read_bytes()
  (bad / second).write_bytes(data[: len(data) // 2])
  with pytest.raises(
    config_json.HFCheckpointError, match=f"{second}: not a readable torch state dict"
  ):
    hf.load_hf(str(bad))

  foreign = _weights_only_copy(release, tmp_path / "foreign")
  state = {"model.norm.weight": torch.ones(32)}
  state["extra"] = pathlib.PurePosixPath("a custom class: weights_only refuses it")
  torch.save(state, foreign / first)
  with pytest.raises(
    config_json.HFCheckpointError, match=f"{first}: not a readable torch state dict"
  ):
    hf.load_hf(str(foreign))

  missing = _weights_only_copy(release, tmp_path / "missing")
  (missing / second).unlink()
  with pytest.raises(
    config_json.HFCheckpointError,
    match=rf"pytorch_model.bin.index.json: shard file\(s\) missing: \['{second}'\]",
  ):
    hf.load_hf(str(missing))


def test_bf16_bin_shards_keep_their_bits(release, tmp_path):
  """MIO ships bf16: read through the bits (numpy has no bf16), so no value changes."""
  from tests.mio_release import llama, write_bin_weights

  model = llama().to(torch.bfloat16)
  out = tmp_path / "bf16"
  out.mkdir()
  shutil.copy(release / "config.json", out / "config.json")
  write_bin_weights(model, out)
  _, params = hf.load_hf(str(out), param_dtype="bfloat16")
  assert params["embedding"].dtype == jnp.bfloat16
  want = model.model.embed_tokens.weight.detach().float().numpy()
  np.testing.assert_array_equal(params["embedding"].astype(np.float32), want)
  want = model.lm_head.weight.detach().float().numpy().T
  np.testing.assert_array_equal(params["lm_head"].astype(np.float32), want)


def test_without_torch_bin_weights_say_how_to_install_it(release, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if absent
  with pytest.raises(
    config_json.HFCheckpointError, match=r"needs torch: pip install torch==2\.13\.0"
  ):
    hf.load_hf(str(release))


# ---- tokenizers: convert_weights --from_mio --------------------------------------------------
def test_from_mio_writes_the_tokenizers(release):
  from mio_jax.tokens.tokenizers import load_tokenizers

  out = release / "mio_jax_tokenizers"
  assert sorted(p.name for p in out.iterdir()) == ["image", "speech", "text", "video"]
  toks = load_tokenizers(str(out))
  assert toks.video.method == "mio_scene" and toks.video.image is toks.image
  assert toks.text.vocab_size == 64_000
  assert (toks.image.codebook_size, toks.image.tokens_per_image) == (8_192, SEED["num_queries"])
  assert (toks.speech.codebook_size, toks.speech.num_layers) == (SPEECH["codebook_size"], 4)
  for name in ("tokenizer.model", "added_tokens.json", "tokenizer_config.json"):
    assert (out / "text" / name).read_bytes() == (release / name).read_bytes(), name


def test_model_without_converted_tokenizers_names_the_command(release, tmp_path):
  bare = _weights_only_copy(release, tmp_path / "bare")
  with pytest.raises(UserError, match=f"convert_weights --from_mio={bare}"):
    io.load_hf_model(str(bare))
  with pytest.raises(UserError, match="exactly one of --workdir"):
    io.check_model_flags(str(tmp_path), str(bare), None)
  with pytest.raises(UserError, match="exactly one of --workdir"):
    io.check_model_flags(None, None, None)
  from data_pipelines.convert_weights import convert_mio

  with pytest.raises(UserError, match="lacks seed-tokenizer-2/seed_quantizer.pt, .*SpeechTok"):
    convert_mio(str(bare))


# ---- the command lines ---------------------------------------------------------------------------
def test_generate_model_dir_text_cli_and_image(release, tmp_path):
  out = tmp_path / "text"
  r = _run(
    "mio_jax.generate",
    f"--model={release}",
    "--prompt=Question: What's the capital of France? Answer:",
    "--output_modality=text",
    "--max_new_tokens=6",
    "--chat",
    f"--out={out}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.splitlines() == [str(out / "out.txt")] and (out / "out.txt").exists()
  # An image through the same loader in-process (a second CLI start costs more than the run).
  from mio_jax.generate import modes, prompting
  from mio_jax.io.media import read_image

  model = io.load_hf_model(str(release))
  media = prompting.encode_media(model.tokenizers)
  task = prompting.default_task(media, "image")
  prompt = prompting.build_prompt(model.builder, task, media, "a beautiful sunset over the ocean")
  segments = modes.sample(model, prompt, "image")
  written = modes.write_outputs(model, segments, str(tmp_path / "image"), "image")
  assert written == [str(tmp_path / "image" / "out_image0.png")]
  assert read_image(written[0]).shape == (16, 16, 3)  # decoded by the tiny unCLIP


def test_generate_cli_errors_are_one_line(release, tmp_path):
  bad = _weights_only_copy(release, tmp_path / "truncated")
  data = (bad / bin_shard_names()[0]).read_bytes()
  (bad / bin_shard_names()[0]).write_bytes(data[:1000])
  r = _run(
    "mio_jax.generate",
    f"--model={bad}",
    f"--tokenizers={release / 'mio_jax_tokenizers'}",
    "--prompt=hi",
    f"--out={tmp_path / 'o'}",
  )
  assert r.returncode == 2, r.stderr[-3000:]
  lines = [x for x in r.stderr.splitlines() if "error" in x]
  assert len(lines) == 1 and "pytorch_model-00001-of-00002.bin: not a readable" in lines[0]
  assert "Traceback" not in r.stderr


def test_evaluate_model_dir_writes_metrics(release, tmp_path):
  from mio_jax.io.media import write_image

  write_image(str(tmp_path / "a.png"), np.full((28, 28, 3), 200, np.uint8))
  row = {"type": "image_text", "image": "a.png", "text": "a red circle", "direction": "caption"}
  (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
  out = tmp_path / "res" / "m.json"
  r = _run(
    "mio_jax.evaluate",
    f"--model={release}",
    f"--manifest={tmp_path / 'm.jsonl'}",
    "--tasks=image_captioning",
    "--limit=1",
    "--max_text_tokens=4",
    "--greedy",
    f"--out={out}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["step"] == 0 and result["checkpoint"] == str(release)
  task = result["tasks"]["image_captioning"]
  assert task["n"] == 1 and task["metrics"]
  assert list((tmp_path / "res" / "m").iterdir())  # TensorBoard scalars beside the JSON


# ---- gs:// ---------------------------------------------------------------------------------------
def test_model_dir_on_gs_loads_the_same_params(release, gcs):
  url = f"gs://{gcs.new_bucket()}/MIO-7B-Instruct"
  for name in WEIGHT_FILES + ("added_tokens.json", "tokenizer_config.json"):
    paths.copy_file(str(release / name), f"{url}/{name}")
  loaded = io.load_hf_model(url, str(release / "mio_jax_tokenizers"))
  local = trained.load_hf_model(str(release))
  assert loaded.vocab == local.vocab and loaded.step_dir == url
  jax.tree.map(np.testing.assert_array_equal, loaded.params, local.params)
