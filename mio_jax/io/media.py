"""Reading/writing media files and input checks, with errors that name the offending input.

Paths may be local or URLs (gs://): files are read and written whole, through mio_jax.io.paths.
Shared by generation and evaluation (here, in the core) and by the offline tokenizers and
builders in data_pipelines/.
"""

from __future__ import annotations

import io
import os

import numpy as np

from mio_jax.io import paths
from mio_jax.io.media_decode import (
  ANIMATION_EXTS,
  MAX_DECODED_FRAMES,
  decode_audio,
  decode_video,
  to_rgb,
)


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


# How read_image turns a PIL image of any mode into RGB.
RGB_MODES = ("composite", "convert")


def read_image(path: str, rgb: str = "composite") -> np.ndarray:
  """uint8 [H, W, 3] RGB from any format and mode Pillow reads. rgb="composite": EXIF rotation
  applied, alpha composited on white, CMYK / 16-bit / palette converted (media_decode.to_rgb).
  rgb="convert": Pillow's `.convert('RGB')` alone, as MIO's tokenize_images (no EXIF rotation,
  alpha dropped, not composited; Pillow's own 16-bit handling)."""
  from PIL import Image, UnidentifiedImageError

  if rgb not in RGB_MODES:
    raise ValueError(f"read_image: rgb={rgb!r} unknown; known: {RGB_MODES}")
  with media_file(path, "image") as f:
    try:
      with Image.open(f) as im:
        if rgb == "convert":
          return np.asarray(im.convert("RGB"), dtype=np.uint8)
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


def resize_image(image_HxWx3: np.ndarray, size: int, filter: str = "bicubic") -> np.ndarray:
  """Square resize with Pillow's `filter` ("bicubic" or "bilinear"; Pillow widens the filter
  when shrinking, i.e. antialiases); aspect ratio not kept: MIO's tokenizers also squash.
  "bilinear" is exactly torchvision's `Resize((size, size))` on a PIL image (MIO's SEED)."""
  from PIL import Image

  filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
  if filter not in filters:
    raise ValueError(f"resize_image: filter {filter!r} unknown; known: {sorted(filters)}")
  image = check_image(image_HxWx3)
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), filters[filter]), dtype=np.uint8)


RESAMPLE_METHODS = ("poly", "sinc_hann")


def resample(wave: np.ndarray, rate_in: int, rate_out: int, method: str = "poly") -> np.ndarray:
  """Rational-ratio resampling of a mono wave. method="poly": scipy's polyphase filter (Kaiser
  window). method="sinc_hann": torchaudio.functional.resample's defaults, which MIO uses before
  SpeechTokenizer (`resample_sinc_hann`)."""
  if method not in RESAMPLE_METHODS:
    raise ValueError(f"resample: method {method!r} unknown; known: {RESAMPLE_METHODS}")
  if rate_in == rate_out:
    return wave.astype(np.float32)
  if method == "sinc_hann":
    return resample_sinc_hann(wave, rate_in, rate_out)
  from math import gcd

  from scipy.signal import resample_poly  # imported here: scipy.signal takes seconds to import

  g = gcd(int(rate_in), int(rate_out))
  return resample_poly(wave, rate_out // g, rate_in // g).astype(np.float32)


def sinc_hann_kernels(
  rate_in: int, rate_out: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[np.ndarray, int]:
  """(float32 [new, 2 * width + orig] filters, width) of torchaudio's documented "sinc_interp_hann"
  resampler, with orig/new the gcd-reduced rates. Output phase p of every block of `new` outputs
  is a sinc low-passed at rolloff * min(rates) / 2, Hann-windowed over `lowpass_filter_width`
  zero crossings each side, sampled at the input offsets the phase falls between."""
  from math import ceil, gcd

  g = gcd(int(rate_in), int(rate_out))
  orig, new = int(rate_in) // g, int(rate_out) // g
  base_freq = min(orig, new) * rolloff  # cutoff, in units of the reduced rates
  width = ceil(lowpass_filter_width * orig / base_freq)  # input samples each side
  offsets = np.arange(-width, width + orig, dtype=np.float64) / orig
  t = (-np.arange(new, dtype=np.float64)[:, None] / new + offsets[None]) * base_freq
  t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
  window = np.cos(t * np.pi / lowpass_filter_width / 2) ** 2
  t = t * np.pi
  safe = np.where(t == 0, 1.0, t)
  sinc = np.where(t == 0, 1.0, np.sin(safe) / safe)
  return (sinc * window * (base_freq / orig)).astype(np.float32), width


def resample_sinc_hann(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """torchaudio.functional.resample(wave, rate_in, rate_out) with its defaults (sinc_interp_hann,
  lowpass_filter_width=6, rolloff=0.99) in numpy: the wave is zero-padded by `width` before and
  `width + orig` after, every `orig`-th window is filtered by the `new` kernels, and the
  interleaved outputs are cut to ceil(new * n / orig) samples. float32 [ceil(n * out / in)]."""
  from math import gcd

  wave = np.asarray(wave, np.float32)
  g = gcd(int(rate_in), int(rate_out))
  orig, new = int(rate_in) // g, int(rate_out) // g
  kernels_PxK, width = sinc_hann_kernels(rate_in, rate_out)
  padded = np.concatenate([np.zeros(width, np.float32), wave, np.zeros(width + orig, np.float32)])
  windows_FxK = np.lib.stride_tricks.sliding_window_view(padded, kernels_PxK.shape[1])[::orig]
  out = (windows_FxK @ kernels_PxK.T).reshape(-1)
  return out[: -(-new * len(wave) // orig)].astype(np.float32)


def read_video(path: str, max_frames: int | None = MAX_DECODED_FRAMES) -> np.ndarray:
  """uint8 [N, H, W, 3] frames in time order from a `.npy` array, an animated GIF/WebP/PNG, a
  folder of images, or any container PyAV reads (MP4, WebM, AVI, ...); local paths or URLs.
  Containers past `max_frames` frames are thinned evenly; None keeps every frame (MIO's keyframe
  rules, video.py "mio_uniform" / "mio_scene", count frames of the whole clip)."""
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
    return decode_video(f, path, max_frames)


def _read_animation(f, path):
  from PIL import Image as PILImage
  from PIL import ImageSequence, UnidentifiedImageError

  try:
    with PILImage.open(f) as im:
      return np.stack([to_rgb(x) for x in ImageSequence.Iterator(im)])
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"cannot read video {path}: {e}") from e
