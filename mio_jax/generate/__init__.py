"""Sampling from a trained model: KV-cache decoding, modality constraints, CFG, beam search.

    from mio_jax.generate import generate, SamplingConfig, split_segments
    outs = generate(params, config, vocab, [prompt_ids], max_new_tokens=64, output_modality="image",
                    sampling=mio_sampling(), cfg_scale=3.0, rng=jax.random.PRNGKey(0))
    segments = split_segments(outs[0], vocab)   # text ids / image codes [N] / speech codes [L, n]

CLI: `python -m mio_jax.generate ...` (see __main__.py).
"""

from mio_jax.generate.api import default_null_prompt, generate, left_pad
from mio_jax.generate.constraints import Constraints
from mio_jax.generate.presets import PRESETS, get_preset
from mio_jax.generate.sampling import GREEDY, SamplingConfig, mio_sampling
from mio_jax.generate.segments import Segment, split_segments

__all__ = [
  "Constraints",
  "GREEDY",
  "PRESETS",
  "SamplingConfig",
  "Segment",
  "default_null_prompt",
  "generate",
  "get_preset",
  "left_pad",
  "mio_sampling",
  "split_segments",
]
