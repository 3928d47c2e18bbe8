"""`python -m data_pipelines.convert_weights`: SEED and SpeechTokenizer pickles -> safetensors
tokenizer directories, with every source key used and every weight filled, or one-line errors."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.test_seed_tokenizer import TINY, image, seed_checkpoint, seed_layout
from tests.test_tokenizers_adapters import ST_CONFIG

REPO = pathlib.Path(__file__).resolve().parents[1]


def fake_unclip(directory: pathlib.Path, embed_dim: int) -> str:
  """Just the files the converter checks (decoding is tested in test_seed_tokenizer.py)."""
  (directory / "image_normalizer").mkdir(parents=True)
  (directory / "unet").mkdir()
  (directory / "model_index.json").write_text('{"_class_name": "StableUnCLIPImg2ImgPipeline"}')
  (directory / "image_normalizer" / "config.json").write_text(
    json.dumps({"embedding_dim": embed_dim})
  )
  (directory / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
  return str(directory)


@pytest.fixture
def setup(tmp_path):
  source = seed_checkpoint(TINY)
  torch.save(source, tmp_path / "seed.pt")
  (tmp_path / "tiny.json").write_text(json.dumps(TINY))
  return tmp_path, source


def convert_seed(tmp_path, src="seed.pt", out="out", **kw):
  from data_pipelines.convert_weights import convert

  kw.setdefault("config", str(tmp_path / "tiny.json"))
  convert("seed", str(tmp_path / src), str(tmp_path / out), **kw)
  return tmp_path / out


def test_seed_weights_equal_the_pickled_tensors(setup):
  from safetensors.torch import load_file

  tmp_path, source = setup
  out = convert_seed(tmp_path, unclip=fake_unclip(tmp_path / "pipe", TINY["image_embed_dim"]))
  assert sorted(p.name for p in out.iterdir()) == [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "unclip",
  ]
  assert (out / "unclip" / "model_index.json").exists()
  assert json.loads((out / "tokenizer.json").read_text())["kind"] == "seed"
  got = load_file(str(out / "model.safetensors"))
  pairs = {
    "visual_encoder.cls_token": "vision.embeddings.class_embedding",
    "visual_encoder.pos_embed": "vision.embeddings.position_embedding",
    "visual_encoder.patch_embed.proj.weight": "vision.embeddings.patch_embedding.weight",
    "visual_encoder.blocks.1.attn.qkv.weight": "vision.encoder.layers.1.self_attn.qkv.weight",
    "visual_encoder.blocks.0.attn.proj.bias": "vision.encoder.layers.0.self_attn.projection.bias",
    "visual_encoder.blocks.1.norm2.weight": "vision.encoder.layers.1.layer_norm2.weight",
    "visual_encoder.blocks.0.mlp.fc2.weight": "vision.encoder.layers.0.mlp.fc2.weight",
    "ln_vision.weight": "vision.post_layernorm.weight",
    "query_tokens": "query_tokens",
    "Qformer.bert.embeddings.LayerNorm.bias": "qformer.layernorm.bias",
    "Qformer.bert.encoder.layer.0.crossattention.self.key.weight": (
      "qformer.encoder.layer.0.crossattention.attention.key.weight"
    ),
    "Qformer.bert.encoder.layer.1.attention.self.query.bias": (
      "qformer.encoder.layer.1.attention.attention.query.bias"
    ),
    "Qformer.bert.encoder.layer.1.attention.output.LayerNorm.weight": (
      "qformer.encoder.layer.1.attention.output.LayerNorm.weight"
    ),
    "Qformer.bert.encoder.layer.0.output_query.dense.weight": (
      "qformer.encoder.layer.0.output_query.dense.weight"
    ),
    "quantize.embedding.weight": "codebook.weight",
    "encode_task_layer.2.weight": "encode_task_layer.2.weight",
    "blocks_image.1.attn.qkv.bias": "blocks_image.1.attn.qkv.bias",
    "image_down.4.weight": "image_down.4.weight",
    "distill_image_proj.bias": "distill_image_proj.bias",
  }
  for src_key, dst_key in pairs.items():
    torch.testing.assert_close(got[dst_key], source[src_key], rtol=0, atol=0, msg=src_key)
  for i in range(TINY["vision_layers"]):
    b = f"visual_encoder.blocks.{i}.attn."
    q, v = source[b + "q_bias"], source[b + "v_bias"]
    want = torch.cat([q, torch.zeros_like(q), v])
    torch.testing.assert_close(got[f"vision.encoder.layers.{i}.self_attn.qkv.bias"], want)
  # Every used source tensor landed somewhere, once: q/v biases merge, so one fewer per layer.
  assert len(got) == len(seed_layout(TINY)) - TINY["vision_layers"]


def test_seed_with_eva_weights_in_their_own_file(setup):
  from safetensors.torch import load_file

  tmp_path, source = setup
  eva = {k[len("visual_encoder.") :]: v for k, v in source.items() if k.startswith("visual_")}
  rest = {k: v for k, v in source.items() if not k.startswith("visual_")}
  torch.save(eva, tmp_path / "eva_vit_g.pth")
  torch.save(rest, tmp_path / "rest.pt")
  whole = load_file(str(convert_seed(tmp_path) / "model.safetensors"))
  split = convert_seed(tmp_path, src="rest.pt", out="split", eva=str(tmp_path / "eva_vit_g.pth"))
  got = load_file(str(split / "model.safetensors"))
  assert sorted(got) == sorted(whole)
  for k in got:
    torch.testing.assert_close(got[k], whole[k], rtol=0, atol=0)
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer

  tok = SEEDImageTokenizer.load(str(split), device="cpu")  # no unclip: encode only
  assert tok.encode(image(0)).shape == (TINY["num_queries"],)
  with pytest.raises(Exception, match="both hold"):
    convert_seed(tmp_path, out="dup", eva=str(tmp_path / "eva_vit_g.pth"))


@pytest.mark.parametrize(
  "edit, message",
  [
    (
      lambda s: s.pop("Qformer.bert.encoder.layer.1.output_query.dense.bias"),
      r"missing 1: qformer\.encoder\.layer\.1\.output_query\.dense\.bias",
    ),
    (
      lambda s: s.update({"Qformer.extra_head.weight": torch.zeros(2)}),
      r"unexpected SEED keys 1: Qformer\.extra_head\.weight",
    ),
    (lambda s: s.pop("visual_encoder.blocks.0.attn.v_bias"), r"has q_bias but not the other"),
    (
      lambda s: s.update({"query_tokens": torch.zeros(1, 9, 32)}),
      r"shape mismatches, e\.g\. query_tokens \(1, 9, 32\) vs \(1, 8, 32\)",
    ),
    (
      lambda s: s.update({"visual_encoder.blocks.2.norm1.weight": torch.zeros(32)}),
      r"unexpected 1: vision\.encoder\.layers\.2\.layer_norm1\.weight",
    ),
  ],
)
def test_seed_rejects_a_pickle_that_does_not_fit(setup, edit, message):
  from mio_jax.errors import UserError

  tmp_path, source = setup
  edit(source)
  torch.save(source, tmp_path / "bad.pt")
  with pytest.raises(UserError, match=message):
    convert_seed(tmp_path, src="bad.pt")
  assert not (tmp_path / "out").exists()


def test_seed_without_eva_weights_asks_for_them(setup):
  from mio_jax.errors import UserError

  tmp_path, source = setup
  rest = {k: v for k, v in source.items() if not k.startswith("visual_encoder.")}
  torch.save(rest, tmp_path / "rest.pt")
  with pytest.raises(UserError, match="holds no EVA ViT-g weights .*--eva=eva_vit_g.pth"):
    convert_seed(tmp_path, src="rest.pt")


def test_allow_unused_drops_a_named_family(setup):
  tmp_path, source = setup
  source["Qformer.extra_head.weight"] = torch.zeros(2)
  torch.save(source, tmp_path / "extra.pt")
  out = convert_seed(tmp_path, src="extra.pt", allow_unused=("Qformer.extra_head.",))
  assert (out / "model.safetensors").exists()


def test_bad_inputs_are_user_errors(setup, tmp_path_factory):
  from data_pipelines.convert_weights import convert
  from mio_jax.errors import UserError

  tmp_path, _ = setup
  src = str(tmp_path / "seed.pt")
  with pytest.raises(UserError, match="unknown --kind 'vqgan'"):
    convert("vqgan", src, str(tmp_path / "o"))
  with pytest.raises(UserError, match="--src: no such file"):
    convert("seed", str(tmp_path / "nope.pt"), str(tmp_path / "o"))
  torch.save([1, 2, 3], tmp_path / "list.pt")
  with pytest.raises(UserError, match="flat {name: tensor} state dict"):
    convert_seed(tmp_path, src="list.pt")
  (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
  with pytest.raises(UserError, match="not a loadable torch state dict"):
    convert_seed(tmp_path, src="junk.pt")
  torch.save({"w": torch.zeros(1), "cfg": pathlib.PurePosixPath("x")}, tmp_path / "obj.pt")
  with pytest.raises(UserError, match="not a loadable torch state dict"):  # weights_only refuses
    convert_seed(tmp_path, src="obj.pt")
  with pytest.raises(UserError, match="image embeddings of 8 dims, SEED's decoder makes 16"):
    convert_seed(tmp_path, unclip=fake_unclip(tmp_path_factory.mktemp("u"), 8))
  with pytest.raises(UserError, match="for --kind=seed"):
    convert("speechtokenizer", src, str(tmp_path / "o"), unclip=str(tmp_path))


def test_cli_error_is_one_line_and_exit_2(setup):
  tmp_path, source = setup
  source["Qformer.extra_head.weight"] = torch.zeros(2)
  torch.save(source, tmp_path / "extra.pt")
  cmd = [sys.executable, "-m", "data_pipelines.convert_weights", "--kind=seed"]
  cmd += [f"--src={tmp_path / 'extra.pt'}", f"--config={tmp_path / 'tiny.json'}"]
  cmd += [f"--out={tmp_path / 'cli'}"]
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  lines = [x for x in r.stderr.splitlines() if "error" in x]
  assert len(lines) == 1 and "unexpected SEED keys 1: Qformer.extra_head.weight" in lines[0]
  assert "Traceback" not in r.stderr
  with pytest.raises(SystemExit) as e:  # argparse's own errors take the same one-line form
    from data_pipelines.convert_weights import main

    main(["--kind=seed"])
  assert e.value.code == 2


# ---- SpeechTokenizer ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_speechtokenizer_pickle_to_adapter_dir(tmp_path):
  from data_pipelines.convert_weights import convert
  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter
  from mio_jax.errors import UserError
  from mio_jax.tokens.tokenizers import load_part

  release = tmp_path / "speechtokenizer_hubert_avg"
  release.mkdir()
  (release / "config.json").write_text(json.dumps(ST_CONFIG))
  original = SpeechTokenizerAdapter.from_config(ST_CONFIG, num_layers=4, seed=3)
  state = original.model.state_dict()
  torch.save(state, release / "SpeechTokenizer.pt")
  convert("speechtokenizer", str(release / "SpeechTokenizer.pt"), str(tmp_path / "speech"))
  assert sorted(p.name for p in (tmp_path / "speech").iterdir()) == [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
  ]
  loaded = load_part("speech", str(tmp_path / "speech"))
  assert loaded.num_layers == 4
  for k, v in loaded.model.state_dict().items():
    torch.testing.assert_close(v, state[k], rtol=0, atol=0)
  wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000).astype(np.float32)
  np.testing.assert_array_equal(loaded.encode(wave, 16_000), original.encode(wave, 16_000))
  key = sorted(state)[0]
  state.pop(key)
  torch.save(state, release / "SpeechTokenizer.pt")
  with pytest.raises(UserError, match=f"missing 1: {key}"):
    convert("speechtokenizer", str(release / "SpeechTokenizer.pt"), str(tmp_path / "s2"))


def test_torch_load_only_in_convert_weights_and_hf_and_always_weights_only():
  """Two documented places read torch pickles: the tokenizer converter, and mio_jax/hf/weights.py
  for a
  released model's `pytorch_model*.bin` shards; both with weights_only=True, on the CPU."""
  needle = "torch." + "load("  # split so this file does not match itself
  hits = {}
  for path in REPO.rglob("*.py"):
    rel = path.relative_to(REPO)
    if rel.parts[0].startswith(".") or "site-packages" in rel.parts:
      continue
    text = path.read_text(encoding="utf-8", errors="replace")
    if needle in text:
      hits[str(rel)] = text
  assert sorted(hits) == ["data_pipelines/convert_weights.py", "mio_jax/hf/weights.py"]
  for file, text in hits.items():
    calls = text.split(needle)[1:]
    assert calls, file
    for call in calls:  # every mention, docstrings included, names both arguments
      args = call[: call.index(")")]
      assert "weights_only=True" in args and 'map_location="cpu"' in args, file
