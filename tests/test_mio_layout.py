"""MIO's released vocabulary layout: ids, HF import/export of a tiny MIO-shaped checkpoint built
here (MIO's 76,294 ids, config keys and added tokens), and training continued from it."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # test extras: installed by `launch/setup.sh --test`
import transformers

from mio_jax.cli import export
from mio_jax.config import get_base_config
from mio_jax.generate import constraints as cons
from mio_jax.hf import release_vocab
from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.hf import weights as hf
from mio_jax.model.sizes import MIO_VOCAB, get_model
from mio_jax.model.transformer import Transformer
from mio_jax.tokens import vocab as V
from mio_jax.train import loop
from tests.mio_release import MIO_KEYS, llama

SPECIALS = [
  "<speech_placeholder>",
  "</spch>",
  "<image_placeholder>",
  "<spch>",
  "</image>",
  "<image>",
]


def _added_tokens() -> dict:
  """MIO's added tokens, written out literally (not from the layout under test)."""
  out = {name: 64_000 + i for i, name in enumerate(SPECIALS)}
  out.update({f"<img{i}>": 64_006 + i for i in range(8_192)})
  out.update({f"<spch{i}>": 72_198 + i for i in range(4_096)})
  return out


def _write_tokenizer(path, added: dict) -> None:
  (path / "added_tokens.json").write_text(json.dumps(added))
  base = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 6, "<|im_end|>": 7}
  decoder = {str(i): {"content": t, "special": True} for t, i in {**base, **added}.items()}
  (path / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": decoder})
  )


@pytest.fixture(scope="module")
def mio_dir(tmp_path_factory):
  """A tiny random LlamaForCausalLM with MIO's vocab, config keys and added tokens."""
  model = llama(seed=0)
  path = tmp_path_factory.mktemp("mio_hf")
  model.save_pretrained(path)
  _write_tokenizer(path, _added_tokens())
  return path


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


def test_mio_layout_ids():
  v = get_model("mio-tiny")[1]
  assert (v.layout_name, v.size, v.padded_size, v.hf_rows) == ("mio", 76_294, 76_416, 76_294)
  assert [v.special_id(n) for n in SPECIALS] == list(range(64_000, 64_006))
  chat_and_pad = ("<|im_start|>", "<|im_end|>", "<pad>")
  assert [v.special_id(n) for n in chat_and_pad] == [6, 7, 0]
  assert v.special_id("<cfg_null>") == v.special_id("<image_placeholder>")
  assert v.added_tokens() == _added_tokens()
  span = v.speech_span([5], [[1], [2], [3]])  # <spch> content timbre1..3 </spch>
  np.testing.assert_array_equal(span, [64_003, 72_203, 73_223, 74_248, 75_273, 64_001])
  np.testing.assert_array_equal(
    v.modality_of([0, 7, 64_000, 64_006, 72_198, 76_294]),
    [V.TEXT, V.TEXT, V.SPECIAL, V.IMAGE, V.SPEECH, V.PADDING],
  )
  assert V.Vocab.from_json(v.to_json()) == v
  # The default layout keeps its old fingerprint; the mio one differs (its name is in it).
  assert MIO_VOCAB.fingerprint() == "c8bad195740e14e0" != v.fingerprint()
  assert get_model("tiny")[1].fingerprint() == "7764ad71c244ca83"


def test_constraints_in_mio_layout():
  v = get_model("mio-tiny")[1]
  c = cons.Constraints(v)
  assert c.stop_ids == (7,)
  allowed = np.asarray(cons.allowed_mask(c, cons.initial_state(1), 100, v.padded_size))[0]
  assert allowed[[1, 6, 7, 63_999, 64_003, 64_005]].all()  # text, ChatML, span openers
  assert not allowed[[0, 64_000, 64_001, 64_002, 64_004, 64_006, 72_198, 76_294]].any()


def test_load_vocab_returns_mio_layout(mio_dir):
  assert release_vocab.load_vocab(str(mio_dir)) == get_model("mio-tiny")[1]


def test_logits_match_transformers(mio_dir, tokens):
  cfg, params = hf.load_hf(str(mio_dir))
  want = _transformers_logits(str(mio_dir), tokens)
  err = np.abs(_ours(cfg, params, tokens) - want).max()
  assert np.abs(want).max() > 1.0 and err <= 1e-4, err


def test_init_from_trains_one_step_and_exports(mio_dir, tokens, tmp_path):
  c = get_base_config()
  c.model, c.init_from = "mio-tiny", str(mio_dir)
  c.seq_len, c.global_batch, c.total_steps, c.checkpoint_every, c.log_every = 16, 2, 1, 1, 1
  c.async_checkpoint = False
  run = loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert int(run.state.step) == 1 and np.isfinite(run.history[-1]["loss"])
  params = jax.device_get(run.state.params)
  model_cfg, vocab = get_model("mio-tiny")
  _, source_params = hf.load_hf(str(mio_dir))
  assert params["embedding"].shape == (76_416, 32)  # padded to 128 rows, ids kept in place
  step = np.abs(params["embedding"][:76_294] - source_params["embedding"]).max()
  assert step < 0.05, step  # one small AdamW step away from MIO's weights, not a fresh init

  out = tmp_path / "hf"
  export.export(str(tmp_path / "run"), str(out), dtype="float32")
  source = json.loads((mio_dir / "config.json").read_text())
  written = json.loads((out / "config.json").read_text())
  keys = [
    *MIO_KEYS,
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_key_value_heads",
    "intermediate_size",
    "rms_norm_eps",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
  ]
  assert {k: written[k] for k in keys} == {k: source[k] for k in keys}
  for name in ("added_tokens.json", "tokenizer_config.json"):  # token strings kept verbatim
    assert (out / name).read_text() == (mio_dir / name).read_text()
  assert release_vocab.load_vocab(str(out)) == vocab
  want = _ours(model_cfg, params, tokens)[..., :76_294]
  np.testing.assert_allclose(_transformers_logits(str(out), tokens), want, atol=1e-4, rtol=0)


def test_wrong_added_token_id_is_an_error(mio_dir, tmp_path):
  shutil.copy(mio_dir / "config.json", tmp_path / "config.json")
  added = _added_tokens()
  added["<img7>"] = 70_000
  (tmp_path / "added_tokens.json").write_text(json.dumps(added))
  with pytest.raises(
    hf_vocab.TokenizerMismatchError,
    match=r"added_tokens.json: added token '<img7>' has id 70000, .* id 64013",
  ):
    release_vocab.load_vocab(str(tmp_path))


def test_wrong_config_id_and_wrong_model_are_errors(mio_dir, tmp_path):
  config = json.loads((mio_dir / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "image_bos_id": 64_004}))
  with pytest.raises(ValueError, match=r"config.json: image_bos_id is 64004, .* <image> at 64005"):
    release_vocab.load_vocab(str(tmp_path))
  c = get_base_config()
  c.model, c.init_from, c.total_steps = "tiny", str(mio_dir), 1
  c.model_overrides.update(dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64))
  with pytest.raises(ValueError, match="vocab layout 'mio' .* mio-7b-released"):
    loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
