"""mio_jax: pretrain MIO-style any-to-any foundation models in JAX."""
