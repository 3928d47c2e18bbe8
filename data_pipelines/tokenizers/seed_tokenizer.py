"""Adapter: SEED-Tokenizer (SEED-LLaMA, github.com/AILab-CVC/SEED), MIO's image tokenizer.

224 x 224 image -> EVA ViT-g/14 -> causal Q-Former with 32 queries -> 32 codes from an 8,192-row
codebook. Preprocessing is MIO's (`clip_transform.yaml`: torchvision `Resize((224, 224))` on a PIL
image, i.e. PIL's bilinear squash with its antialiasing support, ToTensor, CLIP mean/std), and the
quantizer runs in float16 by default as MIO's (`seed_llama_tokenizer.yaml` fp16: True casts the
whole quantizer and the pixels to half); `dtype="float32"` on request. Decoding maps the codes to
a 1,024-d unCLIP image embedding and runs `diffusers.StableUnCLIPImg2ImgPipeline` (float32) on
it (empty prompt, guidance 10, 20 steps, noise level 0, a seeded generator: deterministic).
Networks: `seed_modules.py`.

Directory (local or gs://), written by `save` or by `python -m data_pipelines.convert_weights
--kind=seed` from SEED's released pickles; nothing here unpickles:
  tokenizer.json     {"kind": "seed", "format_version": 1, "dtype": "float16", "decode": {...}}
  config.json        `SEEDConfig` (network sizes)
  model.safetensors  encoder, Q-Former, codebook and the codes -> embedding decoder
  unclip/            the diffusers pipeline (save_pretrained, safetensors); only `decode` reads it
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers.optional import require, torch_no_grad
from mio_jax.io import paths
from mio_jax.io.media import resize_image
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "seed"
PIP = "transformers==5.23.0 torch==2.13.0"
DIFFUSERS_PIP = "diffusers==0.42.1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
UNCLIP_DIR = "unclip"
# SEED-LLaMA's decode settings (seed_llama_tokenizer.py); `seed` replaces its fixed random latents.
DECODE_DEFAULTS = {"guidance_scale": 10.0, "num_inference_steps": 20, "seed": 0}
# The quantizer's compute dtype; MIO runs it in float16. Weights are always saved as float32.
DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"


def modules():
  """seed_modules, after checking that torch and transformers are installed."""
  require("torch", PIP, "the SEED image tokenizer")
  require("transformers", PIP, "the SEED image tokenizer")
  from data_pipelines.tokenizers import seed_modules

  return seed_modules


def pick_device(device: str | None = None) -> str:
  import torch

  return device or ("cuda" if torch.cuda.is_available() else "cpu")


def check_dtype(dtype: str) -> str:
  if dtype not in DTYPES:
    raise ValueError(f"SEED tokenizer dtype {dtype!r} unknown; known: {DTYPES}")
  return dtype


class SEEDImageTokenizer:
  """`ImageTokenizer` over `seed_modules.SEEDQuantizer`; `unclip` is a loaded pipeline or the
  directory to load it from on the first `decode` (None: decode raises). `dtype` is the
  quantizer's compute dtype: the model is cast on first use, so that converting and saving a
  model never rounds its float32 weights."""

  def __init__(
    self,
    model,
    unclip=None,
    decode: dict | None = None,
    device: str | None = None,
    dtype: str = DEFAULT_DTYPE,
  ):
    self.device = pick_device(device)
    self.dtype = check_dtype(dtype)
    self.model = model.eval().to(self.device)
    self.config = model.cfg
    self.codebook_size = int(self.config.codebook_size)
    self.tokens_per_image = int(self.config.num_queries)
    self.image_size = int(self.config.image_size)
    self.decode_settings = {**DECODE_DEFAULTS, **(decode or {})}
    self._unclip = unclip

  @classmethod
  def from_config(cls, config: dict, seed: int = 0, **kwargs) -> SEEDImageTokenizer:
    """A randomly initialised model (tests; or before loading weights)."""
    import torch

    m = modules()
    torch.manual_seed(seed)
    return cls(m.SEEDQuantizer(m.SEEDConfig.from_dict(config)), **kwargs)

  def compute_model(self):
    """The quantizer in `self.dtype` (cast in place on first use, as MIO's `model.half()`)."""
    import torch

    want = getattr(torch, self.dtype)
    if self.model.query_tokens.dtype != want:
      self.model.to(want)
    return self.model

  def pixels(self, image_HxWx3: np.ndarray):
    """uint8 HxWx3 -> CLIP-normalised [1, 3, S, S] in `self.dtype` on the model's device: the
    arithmetic of MIO's torchvision transform (bilinear squash, /255 and normalise in float32),
    then the cast to half that MIO's `ImageTokenizer.encode` applies."""
    import torch

    m = modules()
    x = resize_image(image_HxWx3, self.image_size, "bilinear").astype(np.float32) / 255.0
    x = (x - np.float32(m.PIXEL_MEAN)) / np.float32(m.PIXEL_STD)
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    return x.to(device=self.device, dtype=getattr(torch, self.dtype))

  def encode(self, image_HxWx3: np.ndarray) -> np.ndarray:
    with torch_no_grad():
      codes = self.compute_model().encode(self.pixels(image_HxWx3))
    return codes[0].cpu().numpy().astype(np.int32)

  def image_embeds(self, codes):
    """int [tokens_per_image] -> float32 [1, image_embed_dim] torch tensor (the unCLIP input)."""
    import torch

    codes = check_codes(codes, self.codebook_size, "image codes", ndim=1)
    if codes.size != self.tokens_per_image:
      raise ValueError(f"image codes: expected {self.tokens_per_image} codes, got {codes.size}")
    with torch_no_grad():
      ids = torch.from_numpy(codes.astype(np.int64))[None].to(self.device)
      return self.compute_model().image_embeds(ids).float()

  def unclip(self):
    if self._unclip is None:
      raise ValueError(
        "this SEED tokenizer has no unCLIP pipeline (unclip/ in its directory): decode needs one; "
        "convert with `python -m data_pipelines.convert_weights --kind=seed --unclip=DIR`"
      )
    if isinstance(self._unclip, str):
      self._unclip = load_unclip(self._unclip, self.device)
    return self._unclip

  def decode(self, codes) -> np.ndarray:
    """-> uint8 [H, W, 3] at the unCLIP pipeline's resolution (768 for SD-2.1-unclip)."""
    import torch

    embeds = self.image_embeds(codes)
    pipe, s = self.unclip(), self.decode_settings
    with torch_no_grad():
      out = pipe(
        prompt="",
        image_embeds=embeds.to(pipe.unet.dtype),
        guidance_scale=float(s["guidance_scale"]),
        num_inference_steps=int(s["num_inference_steps"]),
        noise_level=0,
        # A CPU generator: the same starting latents on every device.
        generator=torch.Generator().manual_seed(int(s["seed"])),
        output_type="np",
      )
    return np.clip(np.rint(out.images[0] * 255.0), 0, 255).astype(np.uint8)

  def save(self, directory: str) -> None:
    import torch
    from safetensors.torch import save_file

    with files.staged_dir(directory) as local:
      # float32 on disk whatever the compute dtype (upcasting a half model loses nothing more).
      state = {k: v.detach().to("cpu", torch.float32) for k, v in self.model.state_dict().items()}
      save_file(state, os.path.join(local, WEIGHTS_FILE))
      if self._unclip is not None and not isinstance(self._unclip, str):
        self._unclip.save_pretrained(os.path.join(local, UNCLIP_DIR), safe_serialization=True)
    target = paths.join(directory, UNCLIP_DIR)
    if isinstance(self._unclip, str) and paths.absolute(self._unclip) != paths.absolute(target):
      paths.copy_tree(self._unclip, target)
    files.write_json(paths.join(directory, CONFIG_FILE), self.config.to_dict())
    meta = {"kind": KIND, "format_version": 1, "dtype": self.dtype, "decode": self.decode_settings}
    files.write_json(paths.join(directory, TOKENIZER_JSON), meta)

  @classmethod
  def load(
    cls, directory: str, device: str | None = None, dtype: str | None = None
  ) -> SEEDImageTokenizer:
    """`dtype` overrides tokenizer.json's (float16, MIO's, when the file names none)."""
    from safetensors.torch import load_model

    m = modules()
    for name in (TOKENIZER_JSON, CONFIG_FILE, WEIGHTS_FILE):
      if not paths.exists(paths.join(directory, name)):
        raise ValueError(f"SEED tokenizer directory {directory} lacks {name}")
    meta = files.read_json(paths.join(directory, TOKENIZER_JSON))
    config = m.SEEDConfig.from_dict(files.read_json(paths.join(directory, CONFIG_FILE)))
    model = m.SEEDQuantizer(config)
    with files.local_dir(directory) as local:
      load_model(model, os.path.join(local, WEIGHTS_FILE), strict=True)
    unclip = paths.join(directory, UNCLIP_DIR)
    unclip = unclip if paths.exists(paths.join(unclip, "model_index.json")) else None
    dtype = check_dtype(dtype or meta.get("dtype", DEFAULT_DTYPE))
    return cls(model, unclip, meta.get("decode"), device, dtype)


def load_unclip(directory: str, device: str):
  """`StableUnCLIPImg2ImgPipeline` from a diffusers save_pretrained directory, safetensors only."""
  diffusers = require("diffusers", DIFFUSERS_PIP, "decoding SEED image codes")
  with files.local_dir(directory) as local:
    pipe = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained(
      local, use_safetensors=True, local_files_only=True
    )
  pipe.set_progress_bar_config(disable=True)
  return pipe.to(device)
