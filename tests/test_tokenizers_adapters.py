"""Adapters for pretrained tokenizers, each on a tiny randomly initialised model built here."""

import json

import numpy as np
import pytest
import torch  # noqa: F401  test extras: installed by `launch/setup.sh --test`
import transformers  # noqa: F401

from data_pipelines.tokenizers import ImageTokenizer, SpeechTokenizer, load_tokenizers

TINY_VQ = dict(
  embed_dim=8,
  num_embeddings=64,
  latent_channels=32,
  base_channels=32,
  channel_multiplier=[1, 1, 1],
  num_res_blocks=1,
)


def random_image(seed=0, shape=(40, 50, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def random_wave(seconds=0.75, rate=16_000, seed=0):
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def randomise_codebooks(model, *suffixes):
  """Random codebooks: these codecs start with all-zero codebooks (filled by k-means in training),
  which would make every code 0 and the range checks vacuous."""
  gen = torch.Generator().manual_seed(0)
  for name, buf in model.named_buffers():
    if name.endswith(suffixes):
      buf.copy_(torch.randn(buf.shape, generator=gen))


# ---- image: transformers VQ-VAEs -----------------------------------------------------------------
@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
  torch.manual_seed(0)
  cfg = transformers.JanusVQVAEConfig(
    **TINY_VQ, num_patches=8, projection_dim=32, image_token_embed_dim=32
  )
  d = tmp_path_factory.mktemp("janus")
  transformers.JanusVQVAE(cfg).save_pretrained(str(d))
  return d


def test_janus_vqvae_encode_decode(janus_dir, tmp_path):
  from data_pipelines.tokenizers.hf_vqvae import HFVQVAEImageTokenizer

  tok = HFVQVAEImageTokenizer.from_pretrained(str(janus_dir))
  assert isinstance(tok, ImageTokenizer)
  assert (tok.image_size, tok.tokens_per_image, tok.codebook_size) == (32, 64, 64)
  codes = tok.encode(random_image())
  assert codes.shape == (64,) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 64 and len(np.unique(codes)) > 1
  image = tok.decode(codes)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  # Save/load through the registry: same codes and same decoded pixels.
  tok.save(str(tmp_path / "image"))
  loaded = load_tokenizers(str(tmp_path)).image
  np.testing.assert_array_equal(loaded.encode(random_image()), codes)
  np.testing.assert_array_equal(loaded.decode(codes), image)
  with pytest.raises(ValueError, match="expected 64 codes"):
    tok.decode(codes[:10])
  with pytest.raises(ValueError, match=r"\[0, 64\)"):
    tok.decode(np.full(64, 64))


def test_chameleon_vqvae_encodes_and_says_it_cannot_decode(tmp_path):
  from data_pipelines.tokenizers.hf_vqvae import HFVQVAEImageTokenizer

  torch.manual_seed(0)
  cfg = transformers.ChameleonVQVAEConfig(**TINY_VQ, resolution=32, attn_resolutions=[])
  transformers.ChameleonVQVAE(cfg).save_pretrained(str(tmp_path / "cham"))
  tok = HFVQVAEImageTokenizer.from_pretrained(str(tmp_path / "cham"))
  codes = tok.encode(random_image(1))
  assert codes.shape == (tok.tokens_per_image,) == (64,)
  assert codes.min() >= 0 and codes.max() < 64 and len(np.unique(codes)) > 1
  with pytest.raises(ValueError, match="no decoder"):
    tok.decode(codes)


def test_hf_vqvae_bad_directories(tmp_path):
  from data_pipelines.tokenizers.hf_vqvae import HFVQVAEImageTokenizer

  with pytest.raises(ValueError, match="no config.json"):
    HFVQVAEImageTokenizer.from_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(ValueError, match="model_type 'llama'"):
    HFVQVAEImageTokenizer.from_pretrained(str(tmp_path))


# ---- speech: Mimi (transformers) ---------------------------------------------------------------
def test_mimi_encode_decode_save_load(tmp_path):
  from data_pipelines.tokenizers.mimi import MimiSpeechTokenizer

  torch.manual_seed(0)
  # 8 kHz, hop 5*4*4*2 = 160 -> 50 frames/s, like MIO (real Mimi: 24 kHz, 12.5 frames/s).
  cfg = transformers.MimiConfig(
    sampling_rate=8000,
    hidden_size=32,
    num_filters=8,
    upsampling_ratios=[5, 4, 4],
    codebook_size=64,
    codebook_dim=16,
    num_quantizers=6,
    vector_quantization_hidden_dimension=16,
    upsample_groups=32,
    num_hidden_layers=1,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=2,
    sliding_window=16,
    max_position_embeddings=256,
  )
  model = transformers.MimiModel(cfg)
  randomise_codebooks(model, "embed_sum")
  model.save_pretrained(str(tmp_path / "speech"))
  tok = MimiSpeechTokenizer.from_pretrained(str(tmp_path / "speech"), num_layers=4)
  assert isinstance(tok, SpeechTokenizer)
  assert (tok.sample_rate, tok.frame_rate, tok.codebook_size, tok.num_layers) == (8000, 50.0, 64, 4)
  codes = tok.encode(random_wave(), 16_000)  # resampled 16 kHz -> 8 kHz
  assert codes.dtype == np.int32 and codes.shape[0] == 4 and abs(codes.shape[1] - 38) <= 1
  assert codes.min() >= 0 and codes.max() < 64 and len(np.unique(codes)) > 1
  wave = tok.decode(codes)
  assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - codes.shape[1] * 160) < 160
  assert tok.decode(codes[:1]).shape == wave.shape  # content only
  tok.save(str(tmp_path / "speech"))
  loaded = load_tokenizers(str(tmp_path)).speech
  assert isinstance(loaded, MimiSpeechTokenizer) and loaded.num_layers == 4
  np.testing.assert_array_equal(loaded.encode(random_wave(), 16_000), codes)
  with pytest.raises(ValueError, match="layers"):
    tok.decode(np.zeros((5, 3), np.int32))
  with pytest.raises(ValueError, match="num_layers"):
    MimiSpeechTokenizer(model, num_layers=7)


# ---- speech: SpeechTokenizer (MIO's) -------------------------------------------------------------
ST_CONFIG = {
  "n_filters": 8,
  "dimension": 32,
  "strides": [8, 5, 4, 2],
  "lstm_layers": 1,
  "bidirectional": True,
  "dilation_base": 2,
  "residual_kernel_size": 3,
  "n_residual_layers": 1,
  "activation": "ELU",
  "sample_rate": 16000,
  "n_q": 6,
  "codebook_size": 64,
  "semantic_dimension": 16,
}


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_speechtokenizer_encode_decode_save_load(tmp_path):
  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter

  tok = SpeechTokenizerAdapter.from_config(ST_CONFIG, num_layers=4)
  randomise_codebooks(tok.model, "_codebook.embed")
  assert isinstance(tok, SpeechTokenizer)
  assert (tok.sample_rate, tok.frame_rate, tok.codebook_size, tok.num_layers) == (16000, 50, 64, 4)
  codes = tok.encode(random_wave(1.0, 22_050), 22_050)  # espeak-ng's rate, resampled
  assert codes.shape == (4, 50) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 64 and len(np.unique(codes)) > 1
  wave = tok.decode(codes)
  assert wave.shape == (16_000,) and wave.dtype == np.float32
  assert tok.decode(codes[:1]).shape == (16_000,)  # content only
  tok.save(str(tmp_path / "speech"))
  assert sorted(p.name for p in (tmp_path / "speech").iterdir()) == [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
  ]
  loaded = load_tokenizers(str(tmp_path)).speech
  np.testing.assert_array_equal(loaded.encode(random_wave(1.0, 22_050), 22_050), codes)
  np.testing.assert_allclose(loaded.decode(codes), wave, atol=1e-6)
  with pytest.raises(ValueError, match="lacks config.json"):
    SpeechTokenizerAdapter.from_pretrained(str(tmp_path))
