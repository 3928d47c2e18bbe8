"""Media files and input checks. They live in `mio_jax/media.py` (generation and evaluation read
media too, and the core never imports data_pipelines); this module re-exports them."""

from mio_jax.media import (
  check_codes,
  check_image,
  check_wave,
  media_file,
  read_audio,
  read_image,
  read_video,
  read_wav,
  resample,
  resize_image,
  write_image,
  write_wav,
)

__all__ = [
  "check_codes",
  "check_image",
  "check_wave",
  "media_file",
  "read_audio",
  "read_image",
  "read_video",
  "read_wav",
  "resample",
  "resize_image",
  "write_image",
  "write_wav",
]
