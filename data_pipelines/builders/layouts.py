"""Token layouts of MIO's data types. They live in `mio_jax/layouts.py` (generation builds its
prompts from them, and the core never imports data_pipelines); this module re-exports them."""

from mio_jax.layouts import (
                             CAPTION_IMAGE,
                             CAPTION_VIDEO,
                             FIXED,
                             GENERATE_IMAGE,
                             GENERATE_VIDEO,
                             LOSS_POLICIES,
                             OUTPUT,
                             PROMPT,
                             ROLES,
                             SPEAK,
                             TEMPLATE_TEXTS,
                             TRANSCRIBE,
                             BadExample,
                             Builder,
                             Image,
                             Part,
                             Speech,
                             Video,
                             cfg_dropped,
)

__all__ = ["CAPTION_IMAGE", "CAPTION_VIDEO", "FIXED", "GENERATE_IMAGE", "GENERATE_VIDEO",
           "LOSS_POLICIES", "OUTPUT", "PROMPT", "ROLES", "SPEAK", "TEMPLATE_TEXTS", "TRANSCRIBE",
           "BadExample", "Builder", "Image", "Part", "Speech", "Video", "cfg_dropped"]
