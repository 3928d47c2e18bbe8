"""SEED-Tokenizer's networks (SEED-LLaMA's `Blip2QformerQuantizer`) from transformers parts.

encode: pixels -> EVA ViT-g/14 (`Blip2VisionModel`; SEED's separate `ln_vision` is its
post_layernorm) -> BLIP-2 Q-Former (`Blip2QFormerModel`) whose learned queries attend causally among
themselves -> `encode_task_layer` (Linear, Tanh, Linear) -> index of the nearest codebook row by
squared L2 distance. SEED-LLaMA's quantizer does *not* l2-normalise (its `l2norm` is commented out).
decode: codebook rows -> `decode_task_layer` (Linear, Tanh, Linear) -> + `pos_embed_image` -> ViT
blocks -> `image_down` MLP per query -> flattened -> `distill_image_proj` -> one unCLIP image
embedding (1,024-d for stable-diffusion-2-1-unclip). Runs in the dtype of its parameters (the
adapter casts it: float16 as MIO, or float32).

Imports torch and transformers at import time: only `seed_tokenizer` and `convert_weights` import
this module, after checking both are installed.
"""

from __future__ import annotations

import dataclasses

import torch
import transformers
from torch import nn
from torch.nn import functional as F

# CLIP's normalisation, which MIO applies after a bilinear squash to 224 x 224.
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class SEEDConfig:
  """Defaults are SEED-LLaMA's released tokenizer (seed_quantizer.pt + LAVIS' eva_vit_g.pth)."""

  image_size: int = 224
  patch_size: int = 14
  vision_width: int = 1408
  vision_layers: int = 39
  vision_heads: int = 16
  vision_mlp: int = 6144  # int(1408 * 4.3637)
  vision_eps: float = 1e-6
  ln_vision_eps: float = 1e-5  # SEED's ln_vision is a default nn.LayerNorm, unlike the blocks'
  qformer_width: int = 768
  qformer_layers: int = 12
  qformer_heads: int = 12
  qformer_mlp: int = 3072
  qformer_eps: float = 1e-12
  cross_attention_freq: int = 2
  num_queries: int = 32
  codebook_size: int = 8192
  codebook_dim: int = 32
  decoder_depth: int = 4
  decoder_heads: int = 12
  decoder_mlp: int = 3072
  decoder_eps: float = 1e-6
  image_down: tuple[int, ...] = (256, 128, 32)
  image_embed_dim: int = 1024

  @classmethod
  def from_dict(cls, d: dict) -> SEEDConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown SEED config keys {unknown}; known: {sorted(known)}")
    d = dict(d)
    if "image_down" in d:
      d["image_down"] = tuple(int(x) for x in d["image_down"])
    return cls(**d)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["image_down"] = list(self.image_down)
    return d


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
  """Pre-norm ViT block, as in SEED's decoder (`blocks_image`); parameter names follow SEED's."""

  def __init__(self, dim: int, heads: int, mlp: int, eps: float):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=eps)
    self.attn = SelfAttention(dim, heads)
    self.norm2 = nn.LayerNorm(dim, eps=eps)
    self.mlp = Mlp(dim, mlp)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def _task_layer(d_in: int, d_out: int) -> nn.Sequential:
  return nn.Sequential(nn.Linear(d_in, d_in), nn.Tanh(), nn.Linear(d_in, d_out))


class SEEDQuantizer(nn.Module):
  def __init__(self, cfg: SEEDConfig):
    super().__init__()
    self.cfg = cfg
    vision_cfg = transformers.Blip2VisionConfig(
      hidden_size=cfg.vision_width,
      intermediate_size=cfg.vision_mlp,
      num_hidden_layers=cfg.vision_layers,
      num_attention_heads=cfg.vision_heads,
      image_size=cfg.image_size,
      patch_size=cfg.patch_size,
      hidden_act="gelu",
      layer_norm_eps=cfg.vision_eps,
      qkv_bias=True,
    )
    self.vision = transformers.Blip2VisionModel(vision_cfg)
    # transformers has one epsilon for the blocks and the final norm; SEED's ln_vision differs.
    self.vision.post_layernorm.eps = cfg.ln_vision_eps
    qformer_cfg = transformers.Blip2QFormerConfig(
      hidden_size=cfg.qformer_width,
      num_hidden_layers=cfg.qformer_layers,
      num_attention_heads=cfg.qformer_heads,
      intermediate_size=cfg.qformer_mlp,
      hidden_act="gelu",
      layer_norm_eps=cfg.qformer_eps,
      cross_attention_frequency=cfg.cross_attention_freq,
      encoder_hidden_size=cfg.vision_width,
      use_qformer_text_input=False,
    )
    self.qformer = transformers.Blip2QFormerModel(qformer_cfg)
    h, q = cfg.qformer_width, cfg.num_queries
    self.query_tokens = nn.Parameter(torch.zeros(1, q, h))
    self.encode_task_layer = _task_layer(h, cfg.codebook_dim)
    self.codebook = nn.Embedding(cfg.codebook_size, cfg.codebook_dim)
    self.decode_task_layer = nn.Sequential(
      nn.Linear(cfg.codebook_dim, cfg.codebook_dim), nn.Tanh(), nn.Linear(cfg.codebook_dim, h)
    )
    self.pos_embed_image = nn.Parameter(torch.zeros(1, q, h))
    self.blocks_image = nn.ModuleList(
      Block(h, cfg.decoder_heads, cfg.decoder_mlp, cfg.decoder_eps)
      for _ in range(cfg.decoder_depth)
    )
    down, widths = [], (h, *cfg.image_down)
    for i in range(len(cfg.image_down)):
      down += [nn.Linear(widths[i], widths[i + 1], bias=False), nn.ReLU()]
    self.image_down = nn.Sequential(*down[:-1])  # no ReLU after the last projection
    self.distill_image_proj = nn.Linear(q * cfg.image_down[-1], cfg.image_embed_dim)
    self.eval()

  def query_features(self, pixels, query_tokens=None):
    """[B, 3, S, S] CLIP-normalised pixels -> Q-Former outputs [B, num_queries, width]."""
    image = self.vision(pixel_values=pixels).last_hidden_state
    queries = self.query_tokens if query_tokens is None else query_tokens
    queries = queries.expand(image.shape[0], -1, -1)
    n = queries.shape[1]
    # Additive mask [1, 1, n, n]: query i sees queries 0..i (SEED's causal Q-Former).
    future = torch.ones(n, n, dtype=torch.bool, device=pixels.device).triu(1)
    mask = torch.zeros(n, n, dtype=image.dtype, device=pixels.device).masked_fill(
      future, torch.finfo(image.dtype).min
    )
    out = self.qformer(
      query_embeds=queries, attention_mask=mask[None, None], encoder_hidden_states=image
    )
    return out.last_hidden_state

  def quantize(self, z):
    """[B, n, codebook_dim] -> int64 [B, n] nearest codebook rows (squared L2, no normalising)."""
    e = self.codebook.weight
    dist = (z * z).sum(-1, keepdim=True) + (e * e).sum(-1) - 2.0 * z @ e.T
    return dist.argmin(-1)

  def encode(self, pixels):
    return self.quantize(self.encode_task_layer(self.query_features(pixels)))

  def image_embeds(self, codes):
    """int64 [B, num_queries] -> [B, image_embed_dim] unCLIP image embeddings."""
    x = self.decode_task_layer(self.codebook(codes)) + self.pos_embed_image
    for block in self.blocks_image:
      x = block(x)
    return self.distill_image_proj(self.image_down(x).flatten(1))
