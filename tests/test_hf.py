"""HF import/export against transformers' own Llama: golden logits, round trips, vocab growth,
errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # test extras: installed by `launch/setup.sh --test`
import transformers

from mio_jax.hf import config_json, release_vocab
from mio_jax.hf import weights as hf  # noqa: E402
from mio_jax.model.architecture import ModelConfig
from mio_jax.model.transformer import Transformer
from mio_jax.tokens.vocab import Vocab  # noqa: E402

VOCAB, SEQ = 1003, 37  # odd vocab and length catch transposes and padding assumptions


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A tiny random GQA LlamaForCausalLM saved as safetensors, with O(1) weights so errors show."""
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rope_theta=31_337.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    attn_implementation="eager",
  )
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, w in model.named_parameters():
      if name.endswith("norm.weight"):
        w.copy_(1.0 + 0.3 * torch.randn_like(w))  # non-unit norms: a swapped norm would show
      else:
        w.copy_(torch.randn_like(w) / w.shape[-1] ** 0.5)
  path = tmp_path_factory.mktemp("hf_llama")
  model.save_pretrained(path)
  return str(path)


@pytest.fixture(scope="module")
def tokens():
  return np.random.RandomState(0).randint(0, VOCAB, (2, SEQ)).astype(np.int32)


@pytest.fixture(scope="module")
def hf_logits(hf_dir, tokens):
  model = transformers.AutoModelForCausalLM.from_pretrained(
    hf_dir, dtype=torch.float32, attn_implementation="eager"
  )
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def _ours(cfg, params, tokens):
  return np.asarray(jax.jit(Transformer(cfg).apply)({"params": params}, jnp.asarray(tokens)))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_golden_logits(hf_dir, tokens, hf_logits, scan_layers):
  cfg, params = hf.load_hf(hf_dir, scan_layers=scan_layers)
  assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta) == (4, 2, 16, 31_337.0)
  assert ("layers" in params) == scan_layers
  err = np.abs(_ours(cfg, params, tokens) - hf_logits).max()
  print(
    f"golden logits scan_layers={scan_layers}: max |dlogits| = {err:.3g} "
    f"(logit scale {np.abs(hf_logits).max():.3g})"
  )
  assert np.abs(hf_logits).max() > 1.0  # the comparison is meaningful
  assert err <= 1e-4


def test_wrong_rope_theta_is_detected(hf_dir, tokens, hf_logits):
  """The golden test can fail: a wrong RoPE theta moves logits far beyond the tolerance."""
  cfg, params = hf.load_hf(hf_dir, rope_theta=10_000.0)
  assert np.abs(_ours(cfg, params, tokens) - hf_logits).max() > 1e-2


@pytest.mark.parametrize("scan_layers", [True, False])
def test_export_loads_in_transformers(hf_dir, tokens, hf_logits, tmp_path, scan_layers):
  cfg, params = hf.load_hf(hf_dir, scan_layers=scan_layers)
  hf.save_hf(cfg, params, str(tmp_path), dtype="float32")
  hf_cfg = json.loads((tmp_path / "config.json").read_text())
  assert hf_cfg["architectures"] == ["LlamaForCausalLM"] and hf_cfg["tie_word_embeddings"] is False
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  with torch.no_grad():
    exported = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  assert np.abs(exported - hf_logits).max() <= 1e-5
  # import(export(p)) == p bitwise, in both layouts.
  cfg2, params2 = hf.load_hf(str(tmp_path), scan_layers=scan_layers)
  assert cfg2 == cfg
  assert jax.tree.structure(params2) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_export_sharded_bf16_with_vocab_and_boxed_params(tmp_path):
  cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
  boxed = jax.jit(Transformer(cfg).init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  vocab = Vocab(text_size=100, image_codes=64, speech_codes=16, speech_layers=4)
  hf.save_hf(cfg, boxed, str(tmp_path), dtype="bfloat16", vocab=vocab, max_shard_bytes=20_000)
  shards = [f for f in os.listdir(tmp_path) if f.startswith("model-")]
  assert len(shards) >= 3 and (tmp_path / hf.INDEX_FILE).exists()
  assert release_vocab.load_vocab(str(tmp_path)).fingerprint() == vocab.fingerprint()
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
  assert model.dtype == torch.bfloat16
  cfg2, params = hf.load_hf(str(tmp_path), scan_layers=False, param_dtype="bfloat16")
  assert cfg2.vocab_size == 256 and params["layers_1"]["mlp"]["down"].dtype == jnp.bfloat16
  want = np.asarray(config_json.unbox(boxed)["layers"]["mlp"]["down"][1]).astype(jnp.bfloat16)
  assert np.array_equal(params["layers_1"]["mlp"]["down"], want)


def test_extend_vocab_keeps_text_logits(hf_dir, tokens, hf_logits):
  cfg, params = hf.load_hf(hf_dir)
  vocab = Vocab(text_size=VOCAB, image_codes=64, speech_codes=32, speech_layers=4)
  grown = config_json.extend_vocab(params, vocab.padded_size, jax.random.PRNGKey(1))
  assert grown["embedding"].shape == (vocab.padded_size, 64)
  assert grown["lm_head"].shape == (64, vocab.padded_size)
  np.testing.assert_array_equal(grown["embedding"][:VOCAB], params["embedding"])
  new_rows = np.asarray(grown["embedding"][VOCAB:])
  assert np.abs(new_rows - params["embedding"].mean(0)).max() < 0.01  # mean + small noise
  assert np.std(new_rows, axis=0).min() > 0  # noise breaks the symmetry between new tokens
  logits = _ours(cfg.replace(vocab_size=vocab.padded_size), grown, tokens)
  assert logits.shape[-1] == vocab.padded_size
  assert np.abs(logits[..., :VOCAB] - hf_logits).max() <= 1e-4
  with pytest.raises(ValueError, match="smaller"):
    config_json.extend_vocab(params, VOCAB - 1, jax.random.PRNGKey(1))


# ---- bad input -----------------------------------------------------------------------------------
def _copy(hf_dir, tmp_path, edit_config=None):
  for name in os.listdir(hf_dir):
    (tmp_path / name).write_bytes((open(os.path.join(hf_dir, name), "rb")).read())
  if edit_config:
    cfg = json.loads((tmp_path / "config.json").read_text())
    edit_config(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
  return tmp_path


def _rewrite_tensors(path, edit):
  from safetensors.numpy import load_file, save_file

  file = str(path / hf.SINGLE_FILE)
  tensors = load_file(file)
  edit(tensors)
  save_file(tensors, file, metadata={"format": "pt"})


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "GPT2LMHeadModel"),
    (lambda c: c.update(attention_bias=True), "attention_bias"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act"),
    (
      lambda c: c.update(rope_parameters={"rope_type": "llama3", "rope_theta": 1e4}),
      "RoPE scaling",
    ),
    (lambda c: c.pop("hidden_size"), "hidden_size"),
    (lambda c: c.update(num_key_value_heads=3), "n_kv_heads"),
  ],
)
def test_bad_config(hf_dir, tmp_path, edit, message):
  path = _copy(hf_dir, tmp_path, edit)
  with pytest.raises(config_json.HFCheckpointError, match=message) as info:
    hf.load_hf(str(path))
  assert "config.json" in str(info.value)


def test_shape_mismatch_names_file_and_tensor(hf_dir, tmp_path):
  path = _copy(hf_dir, tmp_path, lambda c: c.update(intermediate_size=128))
  with pytest.raises(
    config_json.HFCheckpointError,
    match=r"model.safetensors: tensor model.layers.0.mlp.gate_proj"
    r".weight has shape \[96, 64\], expected \[128, 64\]",
  ):
    hf.load_hf(str(path))


def test_missing_tensor(hf_dir, tmp_path):
  path = _copy(hf_dir, tmp_path)
  _rewrite_tensors(path, lambda t: t.pop("model.layers.1.self_attn.v_proj.weight"))
  with pytest.raises(
    config_json.HFCheckpointError,
    match=r"model.safetensors: tensor "
    r"model.layers.1.self_attn.v_proj.weight not found",
  ):
    hf.load_hf(str(path))


def test_unexpected_tensor(hf_dir, tmp_path):
  path = _copy(hf_dir, tmp_path)
  _rewrite_tensors(
    path, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)})
  )
  with pytest.raises(config_json.HFCheckpointError, match=r"q_proj\.bias"):
    hf.load_hf(str(path))


def test_missing_files(hf_dir, tmp_path):
  with pytest.raises(config_json.HFCheckpointError, match="config.json"):
    hf.load_hf(str(tmp_path))
  (tmp_path / "config.json").write_text(open(os.path.join(hf_dir, "config.json")).read())
  with pytest.raises(
    config_json.HFCheckpointError,
    match="none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
    "pytorch_model.bin.index.json found",
  ):
    hf.load_hf(str(tmp_path))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")  # torch's .bin is read, weights only
  with pytest.raises(
    config_json.HFCheckpointError, match="pytorch_model.bin: not a readable torch state"
  ):
    hf.load_hf(str(tmp_path))
  (tmp_path / hf.INDEX_FILE).write_text(
    json.dumps({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})
  )
  with pytest.raises(config_json.HFCheckpointError, match="model-00002-of-00002.safetensors"):
    hf.load_hf(str(tmp_path))


def test_tied_embeddings_and_yi_names_import(hf_dir, tmp_path, tokens):
  """tie_word_embeddings=true (no lm_head tensor) copies the embedding; Yi's ln1/ln2 names map."""
  path = _copy(
    hf_dir, tmp_path, lambda c: c.update(tie_word_embeddings=True, architectures=["YiForCausalLM"])
  )

  def edit(t):
    t.pop("lm_head.weight")
    for i in range(2):
      t[f"model.layers.{i}.ln1.weight"] = t.pop(f"model.layers.{i}.input_layernorm.weight")
      t[f"model.layers.{i}.ln2.weight"] = t.pop(f"model.layers.{i}.post_attention_layernorm.weight")

  _rewrite_tensors(path, edit)
  cfg, params = hf.load_hf(str(path))
  _, ref = hf.load_hf(hf_dir)
  np.testing.assert_array_equal(params["lm_head"], params["embedding"].T)
  np.testing.assert_array_equal(
    params["layers"]["mlp_norm"]["scale"], ref["layers"]["mlp_norm"]["scale"]
  )


def test_save_rejects_mismatched_params(tmp_path):
  cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=32)
  shapes = jax.eval_shape(
    Transformer(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32)
  )
  params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), config_json.unbox(shapes))
  with pytest.raises(ValueError, match="n_layers is 3"):
    hf.save_hf(cfg.replace(n_layers=3), params, str(tmp_path))
  with pytest.raises(
    ValueError, match=r"layers/mlp/gate has shape \[2, 16, 32\], expected \[2, 16, 48\]"
  ):
    hf.save_hf(cfg.replace(ffn_dim=48), params, str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing written on error
