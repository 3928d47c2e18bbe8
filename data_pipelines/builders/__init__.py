"""Example builders: MIO data types -> (tokens, loss_mask) records (layouts), and raw inputs ->
records (raw)."""

from data_pipelines.builders.raw import DATA_TYPES, SFT_TASKS, RawOptions, read_video, tokenize_raw
from mio_jax.tokens.layouts import (
  LOSS_POLICIES,
  TEMPLATE_TEXTS,
  BadExample,
  Builder,
  Image,
  Speech,
  Video,
  cfg_dropped,
)

__all__ = [
  "BadExample",
  "Builder",
  "Image",
  "Speech",
  "Video",
  "cfg_dropped",
  "LOSS_POLICIES",
  "TEMPLATE_TEXTS",
  "DATA_TYPES",
  "SFT_TASKS",
  "RawOptions",
  "read_video",
  "tokenize_raw",
]
