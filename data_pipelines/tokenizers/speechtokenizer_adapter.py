"""Adapter: SpeechTokenizer (Zhang et al. 2023; PyPI `speechtokenizer`), MIO's speech tokenizer.

16 kHz, 50 frames/s, 8 RVQ layers of 1,024 codes; RVQ layer 1 is distilled from HuBERT (content),
the rest carry timbre/acoustics. MIO keeps the first 4 layers: our layer 0 = content, 1..3 = timbre.
Input is resampled to 16 kHz as MIO's tokenize_speeches does (torchaudio's windowed-sinc resampler,
reimplemented in numpy: `mio_jax.io.media.resample_sinc_hann`); a stereo file is downmixed by
`read_audio`, where MIO's SpeechTokenizer (one input channel) raises.

Install: `pip install --no-deps speechtokenizer==1.0.1 einops==0.8.2` (its declared dependencies
pull torchaudio, accelerate, matplotlib, ... which only its trainer needs). Its package __init__
imports that trainer, so when it fails we import the model module on its own (see `_model_class`).
Weights: a directory (local or gs://) with `config.json` (the released one) and `model.safetensors`
— convert the released `.pt` once (docs/tokenizers.md); this code never unpickles.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers.optional import require, torch_no_grad
from mio_jax.io import paths
from mio_jax.io.media import check_wave, resample
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "speechtokenizer"
PIP = "--no-deps speechtokenizer==1.0.1 einops==0.8.2 (and torch)"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _model_class():
  """speechtokenizer.model.SpeechTokenizer, importable without torchaudio & co."""
  require("torch", "torch", "the SpeechTokenizer adapter")
  require("einops", "einops==0.8.2", "the SpeechTokenizer adapter")
  try:
    from speechtokenizer.model import SpeechTokenizer

    return SpeechTokenizer
  except ImportError:
    pass
  spec = importlib.util.find_spec("speechtokenizer")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"the SpeechTokenizer adapter needs `speechtokenizer`: pip install {PIP}")
  # A bare package object lets `speechtokenizer.model` import without running the package
  # __init__ (which imports the trainer: torchaudio, accelerate, lion_pytorch, matplotlib).
  pkg = types.ModuleType("speechtokenizer")
  pkg.__path__ = list(spec.submodule_search_locations)
  sys.modules["speechtokenizer"] = pkg
  return importlib.import_module("speechtokenizer.model").SpeechTokenizer


class SpeechTokenizerAdapter:
  def __init__(self, model, config: dict, num_layers: int = 4):
    if not 1 <= num_layers <= config["n_q"]:
      raise ValueError(
        f"num_layers {num_layers} outside [1, {config['n_q']}] (SpeechTokenizer n_q)"
      )
    self.model = model.eval()
    self.config = dict(config)
    self.num_layers = int(num_layers)
    self.sample_rate = int(config["sample_rate"])
    hop = int(np.prod(config["strides"]))
    if self.sample_rate % hop:
      raise ValueError(f"sample_rate {self.sample_rate} is not a multiple of the hop {hop}")
    self.frame_rate = self.sample_rate // hop
    self.codebook_size = int(config["codebook_size"])

  @classmethod
  def from_config(cls, config: dict, num_layers: int = 4, seed: int = 0) -> SpeechTokenizerAdapter:
    """A randomly initialised model (tests; or before loading weights)."""
    import torch

    torch.manual_seed(seed)
    return cls(_model_class()(config), config, num_layers)

  @classmethod
  def from_pretrained(cls, model_dir: str, num_layers: int = 4) -> SpeechTokenizerAdapter:
    from safetensors.torch import load_model

    config_file, weights = (paths.join(model_dir, n) for n in (CONFIG_FILE, WEIGHTS_FILE))
    for p in (config_file, weights):
      if not paths.exists(p):
        raise ValueError(f"SpeechTokenizer directory {model_dir} lacks {paths.basename(p)}")
    config = files.read_json(config_file)
    tok = cls(_model_class()(config), config, num_layers)
    with files.local_dir(model_dir) as local:
      load_model(tok.model, os.path.join(local, WEIGHTS_FILE), strict=True)
    return tok

  def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    import torch

    # MIO's resampler (torchaudio.functional.resample's defaults), not our polyphase default.
    wave = resample(check_wave(wave, sample_rate), sample_rate, self.sample_rate, "sinc_hann")
    with torch_no_grad():
      codes = self.model.encode(torch.from_numpy(wave)[None, None], n_q=self.num_layers)
    return codes[:, 0].numpy().astype(np.int32)  # (n_q, batch, T) -> [L, T]

  def decode(self, codes) -> np.ndarray:
    import torch

    codes = check_codes(codes, self.codebook_size, "speech codes", ndim=2)
    if codes.shape[0] > self.num_layers:
      raise ValueError(
        f"speech codes: got {codes.shape[0]} layers, tokenizer has {self.num_layers}"
      )
    with torch_no_grad():
      wave = self.model.decode(torch.from_numpy(codes.astype(np.int64))[:, None])
    return wave[0, 0].float().numpy()

  def save(self, directory: str) -> None:
    from safetensors.torch import save_model

    with files.staged_dir(directory) as local:
      save_model(self.model, os.path.join(local, WEIGHTS_FILE))
    files.write_json(paths.join(directory, CONFIG_FILE), self.config)
    files.write_json(
      paths.join(directory, TOKENIZER_JSON),
      {"kind": KIND, "format_version": 1, "num_layers": self.num_layers},
    )

  @classmethod
  def load(cls, directory: str) -> SpeechTokenizerAdapter:
    cfg = files.read_json(paths.join(directory, TOKENIZER_JSON))
    return cls.from_pretrained(directory, cfg["num_layers"])
