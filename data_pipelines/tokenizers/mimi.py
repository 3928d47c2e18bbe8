"""Adapter: Kyutai's Mimi codec (`transformers.MimiModel`) as a `SpeechTokenizer`.

Mimi's first codebook is distilled from WavLM (semantic) -> our layer 0 = content; the next
`num_layers - 1` acoustic codebooks are the timbre layers. Mimi runs at 24 kHz and 12.5 frames/s
(so `frame_rate` is a float here, not MIO's 50). Safetensors only; a gs:// directory is copied to a
temporary local one first.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers.optional import require, torch_no_grad
from mio_jax.io import paths
from mio_jax.io.media import check_wave, resample
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "mimi"
PIP = "transformers==5.23.0 torch==2.13.0"


class MimiSpeechTokenizer:
  def __init__(self, model, num_layers: int = 4):
    cfg = model.config
    if not 1 <= num_layers <= cfg.num_quantizers:
      raise ValueError(
        f"num_layers {num_layers} outside [1, {cfg.num_quantizers}] (Mimi quantizers)"
      )
    self.model = model.eval()
    self.num_layers = int(num_layers)
    self.sample_rate = int(cfg.sampling_rate)
    self.frame_rate = float(cfg.frame_rate)
    self.codebook_size = int(cfg.codebook_size)

  @classmethod
  def from_pretrained(cls, model_dir: str, num_layers: int = 4) -> MimiSpeechTokenizer:
    transformers = require("transformers", PIP, "the Mimi speech adapter")
    if not paths.exists(paths.join(model_dir, "config.json")):
      raise ValueError(f"no config.json in Mimi directory {model_dir}")
    with files.local_dir(model_dir) as local:
      model = transformers.MimiModel.from_pretrained(
        local, use_safetensors=True, local_files_only=True
      )
    return cls(model, num_layers)

  def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    import torch

    wave = resample(check_wave(wave, sample_rate), sample_rate, self.sample_rate)
    with torch_no_grad():
      out = self.model.encode(torch.from_numpy(wave)[None, None], num_quantizers=self.num_layers)
    return out.audio_codes[0].numpy().astype(np.int32)

  def decode(self, codes) -> np.ndarray:
    import torch

    codes = check_codes(codes, self.codebook_size, "speech codes", ndim=2)
    if codes.shape[0] > self.num_layers:
      raise ValueError(
        f"speech codes: got {codes.shape[0]} layers, tokenizer has {self.num_layers}"
      )
    with torch_no_grad():
      out = self.model.decode(torch.from_numpy(codes.astype(np.int64))[None])
    return out.audio_values[0, 0].float().numpy()

  def save(self, directory: str) -> None:
    with files.staged_dir(directory) as local:
      self.model.save_pretrained(local, safe_serialization=True)
    files.write_json(
      paths.join(directory, TOKENIZER_JSON),
      {"kind": KIND, "format_version": 1, "num_layers": self.num_layers},
    )

  @classmethod
  def load(cls, directory: str) -> MimiSpeechTokenizer:
    cfg = files.read_json(paths.join(directory, TOKENIZER_JSON))
    return cls.from_pretrained(directory, cfg["num_layers"])
