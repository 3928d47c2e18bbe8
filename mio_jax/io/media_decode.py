"""Decoding real-world media from an open binary file: audio through soundfile (libsndfile: WAV,
FLAC, OGG, MP3, ...), images of any Pillow mode, video containers through PyAV (MP4, WebM, AVI,
...). `mio_jax/io/media.py` opens the file (local or URL) and calls these; errors are ValueErrors
naming `path`.
"""

from __future__ import annotations

import numpy as np

# Container videos are decoded whole; past this many frames every k-th frame is kept, so a long
# clip cannot exhaust memory (keyframe selection only needs the shots, not every frame).
MAX_DECODED_FRAMES = 512
ANIMATION_EXTS = (".gif", ".webp", ".png", ".apng")  # read by Pillow, not PyAV


def decode_audio(f, path: str) -> tuple[np.ndarray, int]:
  """(float32 mono wave in [-1, 1], sample_rate); channels are averaged (downmix)."""
  import soundfile

  try:
    data, rate = soundfile.read(f, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError, EOFError) as e:
    raise ValueError(f"cannot read audio {path}: {e}") from e
  if data.size == 0:
    raise ValueError(f"audio {path} holds no samples")
  return data.mean(axis=1).astype(np.float32), int(rate)


def to_rgb(im) -> np.ndarray:
  """uint8 [H, W, 3] from a PIL image of any mode: EXIF orientation applied, 16/32-bit greyscale
  scaled to 8 bits, transparency (LA, RGBA, PA, palette with a transparent index) composited on
  white, CMYK/YCbCr/palette converted."""
  from PIL import Image, ImageOps

  im = ImageOps.exif_transpose(im)
  if im.mode.startswith("I") or im.mode == "F":
    return _wide_grey(np.asarray(im))
  if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, rgba)
  return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _wide_grey(values: np.ndarray) -> np.ndarray:
  """16-bit ("I;16*", or "I" as some decoders give 16-bit PNGs) and float ("F", assumed [0, 1]
  when it fits) greyscale -> uint8 RGB."""
  floats = values.dtype.kind == "f"
  values = values.astype(np.float64)
  if floats and values.size and values.max() <= 1.0:
    grey = values * 255.0
  else:
    grey = np.clip(values, 0, 65535) / 257.0  # 65535 -> 255 exactly
  grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def decode_video(f, path: str, max_frames: int | None = MAX_DECODED_FRAMES) -> np.ndarray:
  """uint8 [N, H, W, 3] frames in presentation order from a container PyAV (FFmpeg) reads; past
  `max_frames` thinned evenly (None: every frame, as MIO's keyframe rules count them)."""
  import av

  try:
    with av.open(f) as container:
      if not container.streams.video:
        raise ValueError(f"video {path} has no video stream")
      stream = container.streams.video[0]
      stride = 1 if max_frames is None else max(1, -(-int(stream.frames or 0) // max_frames))
      frames = []
      for i, frame in enumerate(container.decode(stream)):
        if i % stride == 0:
          pts = frame.pts if frame.pts is not None else i
          frames.append((pts, i, frame.to_ndarray(format="rgb24")))
  except (av.FFmpegError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read video {path}: {e}") from e
  if not frames:
    raise ValueError(f"video {path} holds no frames")
  frames.sort(key=lambda t: t[:2])  # presentation order, whatever order the decoder gave them in
  if max_frames is not None and len(frames) > max_frames:  # count unknown up front: thin now
    frames = [frames[j] for j in np.linspace(0, len(frames) - 1, max_frames).astype(int)]
  return np.stack([x for _, _, x in frames]).astype(np.uint8)
