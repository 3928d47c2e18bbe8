"""Llama/Yi-family decoder in Flax Linen."""

from mio_jax.model.architecture import ModelConfig
from mio_jax.model.transformer import Transformer, init_cache

__all__ = ["ModelConfig", "Transformer", "init_cache"]
