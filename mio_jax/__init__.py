"""mio_jax: pretrain MIO-style any-to-any foundation models in JAX."""

__version__ = "0.3.0"
