"""Adapter: pretrained VQ-VAE image tokenizers implemented in Hugging Face transformers.

Supported `model_type`s (from the model directory's config.json):
  chameleon_vqgan  Chameleon's VQ-GAN (8,192 codes, 512 px -> 32x32 = 1,024 tokens). transformers
                   ships its *encoder only*, so `decode` raises; use it to tokenize inputs.
  janus_vqgan      Janus / LlamaGen VQ (16,384 codes, 384 px -> 24x24 tokens), encoder and decoder.
Weights load from a directory, safetensors only (`from_pretrained(dir, use_safetensors=True)`); a
gs:// directory is copied to a temporary local one first.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers.optional import require, torch_no_grad
from mio_jax.io import paths
from mio_jax.io.media import resize_image
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "hf_vqvae"
MODEL_CLASSES = {"chameleon_vqgan": "ChameleonVQVAE", "janus_vqgan": "JanusVQVAE"}
PIP = "transformers==5.23.0 torch==2.13.0"


def _grid_and_size(config) -> tuple[int, int]:
  """(latent grid side, input image side): the encoder halves the size once per extra level."""
  down = 2 ** (len(config.channel_multiplier) - 1)
  if config.model_type == "chameleon_vqgan":
    return config.resolution // down, config.resolution
  return config.num_patches, config.num_patches * down


class HFVQVAEImageTokenizer:
  """`ImageTokenizer` over a transformers VQ-VAE; pixels are scaled to [-1, 1] as both models
  expect."""

  def __init__(self, model):
    self.model = model.eval()
    cfg = model.config
    if cfg.model_type not in MODEL_CLASSES:
      raise ValueError(
        f"unsupported VQ-VAE model_type {cfg.model_type!r}; known: {sorted(MODEL_CLASSES)}"
      )
    grid, self.image_size = _grid_and_size(cfg)
    self.tokens_per_image = grid * grid
    self.codebook_size = int(cfg.num_embeddings)

  @classmethod
  def from_pretrained(cls, model_dir: str) -> HFVQVAEImageTokenizer:
    transformers = require("transformers", PIP, "the transformers VQ-VAE image adapter")
    path = paths.join(model_dir, "config.json")
    if not paths.exists(path):
      raise ValueError(f"no config.json in VQ-VAE directory {model_dir}")
    model_type = files.read_json(path).get("model_type")
    if model_type not in MODEL_CLASSES:
      raise ValueError(f"{path}: model_type {model_type!r} is not one of {sorted(MODEL_CLASSES)}")
    model_cls = getattr(transformers, MODEL_CLASSES[model_type])
    with files.local_dir(model_dir) as local:
      return cls(model_cls.from_pretrained(local, use_safetensors=True, local_files_only=True))

  def encode(self, image_HxWx3: np.ndarray) -> np.ndarray:
    import torch

    x = resize_image(image_HxWx3, self.image_size).astype(np.float32) / 127.5 - 1.0
    with torch_no_grad():
      out = self.model.encode(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    return out.image_tokens.reshape(-1).numpy().astype(np.int32)

  def decode(self, codes) -> np.ndarray:
    import torch

    codes = check_codes(codes, self.codebook_size, "image codes", ndim=1)
    if codes.size != self.tokens_per_image:
      raise ValueError(f"image codes: expected {self.tokens_per_image} codes, got {codes.size}")
    if not hasattr(self.model, "decode"):
      raise ValueError(
        f"{type(self.model).__name__} in transformers has no decoder; "
        "decode with a janus_vqgan model or the built-in kmeans_vq tokenizer"
      )
    with torch_no_grad():
      px = self.model.decode(torch.from_numpy(codes.astype(np.int64))[None])
    x = px[0].permute(1, 2, 0).float().numpy()
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)

  def save(self, directory: str) -> None:
    with files.staged_dir(directory) as local:
      self.model.save_pretrained(local, safe_serialization=True)
    meta = {"kind": KIND, "format_version": 1, "model_type": self.model.config.model_type}
    files.write_json(paths.join(directory, TOKENIZER_JSON), meta)

  @classmethod
  def load(cls, directory: str) -> HFVQVAEImageTokenizer:
    return cls.from_pretrained(directory)
