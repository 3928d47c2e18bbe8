"""Reading/writing media files and input checks, with errors that name the offending input.

Paths may be local or URLs (gs://): files are read and written whole, through mio_jax.paths.
Shared by generation and evaluation (here, in the core) and by the offline tokenizers and
builders (data_pipelines/tokenizers/media_io.py re-exports this module).
"""

from __future__ import annotations

import io
import os

import numpy as np

from mio_jax import paths
from mio_jax.media_decode import ANIMATION_EXTS, decode_audio, decode_video, to_rgb


def media_file(path: str, what: str):
  """A readable binary file for `path`: the local file, or a URL's bytes in memory.
  ValueError '<what> file not found: <path>' when there is none."""
  if not paths.is_url(path):
    if not os.path.isfile(path):
      raise ValueError(f"{what} file not found: {path}")
    return open(path, "rb")
  try:
    return io.BytesIO(paths.read_bytes(path))
  except FileNotFoundError:
    raise ValueError(f"{what} file not found: {path}") from None


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB from any format and mode Pillow reads: EXIF rotation applied, alpha
  composited on white, CMYK / 16-bit / palette converted (media_decode.to_rgb)."""
  from PIL import Image, UnidentifiedImageError

  with media_file(path, "image") as f:
    try:
      with Image.open(f) as im:
        return to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
      raise ValueError(f"cannot read image {path}: {e}") from e


def write_image(path: str, image_HxWx3: np.ndarray) -> None:
  """Any format Pillow writes, picked by the extension (PNG for .png)."""
  from PIL import Image

  image = Image.fromarray(check_image(image_HxWx3, path))
  if not paths.is_url(path):
    image.save(path)
    return
  ext = os.path.splitext(path)[1].lower()
  if ext not in Image.registered_extensions():
    raise ValueError(f"{path}: unknown image extension {ext!r}")
  buf = io.BytesIO()
  image.save(buf, format=Image.registered_extensions()[ext])
  paths.write_bytes(path, buf.getvalue())


def read_wav(path: str) -> tuple[np.ndarray, int]:
  """(float32 mono wave in [-1, 1], sample_rate) from any file libsndfile reads (WAV, FLAC, OGG,
  MP3, ...), at the file's own rate; channels are averaged. Resampling is the caller's choice."""
  with media_file(path, "audio") as f:
    wave, sample_rate = decode_audio(f, path)
  return check_wave(wave, sample_rate, path), sample_rate


read_audio = read_wav  # the name says WAV for history; every libsndfile format is read


def write_wav(path: str, wave: np.ndarray, sample_rate: int) -> None:
  """16-bit PCM WAV (what every player and espeak-ng use)."""
  from scipy.io import wavfile

  wave = check_wave(wave, sample_rate, path)
  pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
  if not paths.is_url(path):
    wavfile.write(path, int(sample_rate), pcm)
    return
  buf = io.BytesIO()
  wavfile.write(buf, int(sample_rate), pcm)
  paths.write_bytes(path, buf.getvalue())


def check_image(image, what: str = "image") -> np.ndarray:
  """Validates an RGB image array; returns it as uint8 [H, W, 3]."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f"{what}: expected an HxWx3 RGB array, got shape {image.shape}")
  if image.dtype != np.uint8:
    raise ValueError(f"{what}: expected uint8 pixels, got {image.dtype}")
  return image


def check_wave(wave, sample_rate: int, what: str = "wave") -> np.ndarray:
  """Validates a mono wave; returns float32 [n]."""
  wave = np.asarray(wave)
  if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
    raise ValueError(f"{what}: sample_rate must be a positive int, got {sample_rate!r}")
  if wave.ndim != 1:
    raise ValueError(f"{what}: expected a mono wave of shape [n], got shape {wave.shape}")
  if wave.size == 0:
    raise ValueError(f"{what}: empty wave")
  if not np.issubdtype(wave.dtype, np.floating):
    raise ValueError(f"{what}: expected float samples in [-1, 1], got {wave.dtype}")
  if not np.all(np.isfinite(wave)):
    raise ValueError(f"{what}: wave contains NaN or inf")
  return wave.astype(np.float32)


def resize_image(image_HxWx3: np.ndarray, size: int) -> np.ndarray:
  """Square resize (bicubic down/up; aspect ratio not kept — MIO's tokenizers also squash)."""
  from PIL import Image

  image = check_image(image_HxWx3)
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Polyphase resampling (exact for integer ratios, e.g. espeak's 22,050 Hz -> 16,000 Hz)."""
  if rate_in == rate_out:
    return wave.astype(np.float32)
  from math import gcd

  from scipy.signal import resample_poly  # imported here: scipy.signal takes seconds to import

  g = gcd(int(rate_in), int(rate_out))
  return resample_poly(wave, rate_out // g, rate_in // g).astype(np.float32)


def check_codes(codes, n: int, what: str, ndim: int) -> np.ndarray:
  """Validates token codes before decoding: int array of rank `ndim`, values in [0, n)."""
  codes = np.asarray(codes)
  if codes.ndim != ndim or codes.size == 0:
    raise ValueError(
      f"{what}: expected a non-empty rank-{ndim} code array, got shape {codes.shape}"
    )
  if not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{what}: codes must be integers, got {codes.dtype}")
  if codes.min() < 0 or codes.max() >= n:
    raise ValueError(f"{what}: codes must lie in [0, {n}), got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)


def read_video(path: str) -> np.ndarray:
  """uint8 [N, H, W, 3] frames in time order from a `.npy` array, an animated GIF/WebP/PNG, a
  folder of images, or any container PyAV reads (MP4, WebM, AVI, ...); local paths or URLs."""
  if paths.isdir(path):
    names = [n for n in paths.listdir(path) if not n.startswith(".")]
    if not names:
      raise ValueError(f"video folder {path} holds no frames")
    return np.stack([read_image(paths.join(path, n)) for n in names])
  with media_file(path, "video") as f:
    if path.endswith(".npy"):
      try:
        frames = np.load(f, allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read video {path}: {e}") from e
      if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"video {path}: expected frames [N, H, W, 3], got shape {frames.shape}")
      return np.stack([check_image(x, path) for x in frames])
    if path.lower().endswith(ANIMATION_EXTS):
      return _read_animation(f, path)
    return decode_video(f, path)


def _read_animation(f, path):
  from PIL import Image as PILImage
  from PIL import ImageSequence, UnidentifiedImageError

  try:
    with PILImage.open(f) as im:
      return np.stack([to_rgb(x) for x in ImageSequence.Iterator(im)])
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"cannot read video {path}: {e}") from e
