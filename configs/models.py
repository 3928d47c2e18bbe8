"""Named model sizes. The registry lives in `mio_jax/models.py` (configs build on mio_jax, never
the reverse); this module keeps `configs.models.get_model` working."""

from mio_jax.models import DEMO_VOCAB, MIO_VOCAB, MODELS, get_model

__all__ = ["DEMO_VOCAB", "MIO_VOCAB", "MODELS", "get_model"]
