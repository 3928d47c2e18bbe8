"""Every training config key, with defaults. They live in `mio_jax/config.py` (configs build on
mio_jax, never the reverse); this module keeps `configs.base.get_base_config` working.

Override any key on the command line: `--config.total_steps=3 --config.mesh.fsdp=-1`.
"""

from mio_jax.config import MODEL_OVERRIDE_TYPES, get_base_config, model_overrides

__all__ = ["MODEL_OVERRIDE_TYPES", "get_base_config", "model_overrides"]
