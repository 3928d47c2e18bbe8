"""Architecture hyper-parameters of the Llama/Yi-family decoder."""

from __future__ import annotations

import dataclasses

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "attn_out", "dots_attn_out")
# "splash": Pallas TPU kernel (model/splash.py); "auto": splash on TPU, cuDNN on GPU, else xla.
ATTENTION_IMPLS = ("xla", "dot_product_attention", "splash", "auto")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  ffn_dim: int
  head_dim: int | None = None  # default d_model // n_heads
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-5
  init_std: float = 0.02
  dtype: str = "float32"  # compute dtype of matmuls/activations
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "xla"

  def __post_init__(self):
    if self.head_dim is None:
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
    problems = []
    if self.n_heads % self.n_kv_heads:
      problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
    if self.head_dim % 2:
      problems.append(f"head_dim {self.head_dim} must be even for RoPE")
    if self.remat_policy not in REMAT_POLICIES:
      problems.append(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
    if self.attention_impl not in ATTENTION_IMPLS:
      problems.append(f"attention_impl {self.attention_impl!r} not in {ATTENTION_IMPLS}")
    if problems:
      raise ValueError("invalid ModelConfig: " + "; ".join(problems))

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  def num_params(self, include_embedding: bool = True) -> int:
    d, h, k, hd, f = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.ffn_dim
    per_layer = d * hd * (h + 2 * k) + h * hd * d + 3 * d * f + 2 * d
    total = self.n_layers * per_layer + d + self.vocab_size * d  # final norm + LM head
    return total + (self.vocab_size * d if include_embedding else 0)

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token, PaLM convention: 6 * matmul params + 12 * L * H * Dh * T
    (attention scores and values counted without the causal saving, as MaxText and PaLM report
    MFU)."""
    matmul_params = (
      self.num_params(include_embedding=False) - self.n_layers * 2 * self.d_model - self.d_model
    )
    attention = 12.0 * self.n_layers * self.n_heads * self.head_dim * seq_len
    return 6.0 * matmul_params + attention
