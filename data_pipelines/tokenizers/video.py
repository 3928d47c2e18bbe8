"""Video tokenizer: pick keyframes, tokenize each as an image (MIO: video = sequence of
keyframes)."""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import files
from mio_jax.io import paths
from mio_jax.tokens.tokenizers import TOKENIZER_JSON, ImageTokenizer
from mio_jax.tokens.vocab import check_codes

KIND = "keyframes"
# "mio_uniform" / "mio_scene": MIO's rules (utils.extract_frames), which ignore num_keyframes.
METHODS = ("scene", "uniform", "mio_uniform", "mio_scene")
# PySceneDetect 0.6.4's ContentDetector defaults, which MIO uses.
MIO_SCENE_THRESHOLD = 27.0
MIO_MIN_SCENE_LEN = 15
MIO_MIN_WIDTH = 256  # scenedetect's auto downscale: factor width // 256 from 512 px wide


def check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(f"video: expected uint8 frames [N, H, W, 3] with N >= 1, got {frames.shape}")
  if frames.dtype != np.uint8:
    raise ValueError(f"video: expected uint8 frames, got {frames.dtype}")
  return frames


def uniform_indices(n: int, k: int) -> np.ndarray:
  """k frame indices spread evenly over [0, n), first frame included (fewer if n < k)."""
  k = min(k, n)
  return np.unique(np.floor(np.arange(k) * n / k).astype(np.int64))


def mio_uniform_indices(n: int) -> np.ndarray:
  """MIO's extract_frames uniform rule: every max(1, n // 10)-th frame from frame 0, so 10 or 11
  frames for n >= 10 (n // 10 does not divide n exactly: an 11th) and all n frames below 10. MIO
  uses it for base video captioning (force_uniform) and when scene detection finds no cut."""
  return np.arange(0, n, max(1, n // 10), dtype=np.int64)


def opencv_hsv(rgb_NxHxWx3: np.ndarray) -> np.ndarray:
  """int32 [..., 3] (H in [0, 180], S, V) by OpenCV's 8-bit RGB->HSV fixed-point arithmetic
  (12-bit reciprocal tables rounded half to even, results rounded half up), which scenedetect's
  ContentDetector compares between frames."""
  rgb = rgb_NxHxWx3.astype(np.int64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v, vmin = rgb.max(-1), rgb.min(-1)
  diff = v - vmin
  shift, i = 12, np.arange(256, dtype=np.float64)
  with np.errstate(divide="ignore"):
    sdiv = np.where(i == 0, 0, np.rint((255 << shift) / i)).astype(np.int64)
    hdiv = np.where(i == 0, 0, np.rint((180 << shift) / (6.0 * i))).astype(np.int64)
  s = (diff * sdiv[v] + (1 << (shift - 1))) >> shift
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = (h * hdiv[diff] + (1 << (shift - 1))) >> shift
  h = np.where(h < 0, h + 180, h)
  return np.stack([h, s, v], -1).astype(np.int32)


def _bilinear_downscale(frames_NxHxWx3: np.ndarray, factor: int) -> np.ndarray:
  """Bilinear resize to (round(W / factor), round(H / factor)) with pixel centres aligned and no
  antialiasing, as OpenCV's INTER_LINEAR (in floating point: OpenCV's 11-bit fixed point can
  differ by one grey level)."""
  n, h, w, _ = frames_NxHxWx3.shape
  out_h, out_w = max(1, round(h / factor)), max(1, round(w / factor))

  def taps(size_in, size_out):
    pos = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, size_in - 1), pos - lo

  y0, y1, fy = taps(h, out_h)
  x0, x1, fx = taps(w, out_w)
  x = frames_NxHxWx3.astype(np.float64)
  wy, wx = fy.reshape(1, out_h, 1, 1), fx.reshape(1, 1, out_w, 1)
  rows = x[:, y0] * (1 - wy) + x[:, y1] * wy
  out = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
  return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def mio_scene_cuts(frames_NxHxWx3: np.ndarray) -> list[int]:
  """Cut frames by PySceneDetect 0.6.4's ContentDetector as MIO calls it (threshold 27,
  min_scene_len 15, auto downscale, its default "merge" flash filter): a frame's score is the
  mean over H, S and V of the mean |difference| from the previous frame."""
  n, _, w, _ = frames_NxHxWx3.shape
  factor = w // MIO_MIN_WIDTH if w >= MIO_MIN_WIDTH else 1
  frames = frames_NxHxWx3 if factor == 1 else _bilinear_downscale(frames_NxHxWx3, factor)
  hsv = opencv_hsv(frames)
  scores = np.zeros(n)
  scores[1:] = np.abs(np.diff(hsv, axis=0)).mean(axis=(1, 2)).mean(-1)
  cuts, last_above, merge_enabled, merging, merge_start = [], 0, False, False, 0
  for i in range(n):
    above = scores[i] >= MIO_SCENE_THRESHOLD
    long_enough = i - last_above >= MIO_MIN_SCENE_LEN
    if above:
      last_above = i
    if merging:  # a flash: wait until the scene after it is long enough, then cut at its end
      if long_enough and not above and last_above - merge_start >= MIO_MIN_SCENE_LEN:
        merging = False
        cuts.append(last_above)
      continue
    if not above:
      continue
    if long_enough:
      merge_enabled = True
      cuts.append(i)
    elif merge_enabled:
      merging, merge_start = True, i
  return cuts


def mio_scene_indices(frames_NxHxWx3: np.ndarray) -> np.ndarray:
  """MIO's extract_frames scene mode: the middle frame of every scene between cuts
  (scenedetect's save_images, num_images=1: start + length // 2); no cut -> the uniform rule."""
  n = len(frames_NxHxWx3)
  cuts = mio_scene_cuts(frames_NxHxWx3)
  if not cuts:
    return mio_uniform_indices(n)
  bounds = [0, *cuts, n]
  return np.array([a + (b - a) // 2 for a, b in zip(bounds[:-1], bounds[1:])], np.int64)


def scene_indices(frames_NxHxWx3: np.ndarray, k: int, threshold: float = 30.0) -> np.ndarray:
  """Frame 0 plus frames whose mean |pixel change| from the previous frame exceeds `threshold`
  (0..255 scale): cuts. Keeps the k-1 largest cuts; with fewer cuts than k, fills in uniformly
  inside the longest scenes so that a single-shot clip still yields k views of its motion."""
  n = len(frames_NxHxWx3)
  small = frames_NxHxWx3[:, ::4, ::4].astype(np.float32)  # subsampled: cuts are global changes
  diff_N = np.concatenate([[np.inf], np.abs(np.diff(small, axis=0)).mean(axis=(1, 2, 3))])
  cuts = [i for i in np.argsort(-diff_N, kind="stable") if diff_N[i] > threshold][:k]
  chosen = set(int(i) for i in cuts) | {0}
  while len(chosen) < min(k, n):
    starts = sorted(chosen) + [n]
    # Split the longest span between chosen frames at its midpoint.
    lengths = np.diff(starts)
    j = int(np.argmax(lengths))
    if lengths[j] < 2:
      break
    chosen.add(starts[j] + lengths[j] // 2)
  return np.array(sorted(chosen)[:k], np.int64)


class KeyframeVideoTokenizer:
  """`VideoTokenizer`: K <= num_keyframes keyframes, each encoded by `image`."""

  def __init__(
    self,
    image: ImageTokenizer,
    num_keyframes: int = 8,
    method: str = "scene",
    threshold: float = 30.0,
  ):
    if method not in METHODS:
      raise ValueError(f"unknown keyframe method {method!r}; known: {METHODS}")
    if num_keyframes < 1:
      raise ValueError(f"num_keyframes must be >= 1, got {num_keyframes}")
    self.image, self.num_keyframes = image, int(num_keyframes)
    self.method, self.threshold = method, float(threshold)

  def keyframe_indices(self, frames_NxHxWx3) -> np.ndarray:
    frames = check_frames(frames_NxHxWx3)
    if self.method == "uniform":
      return uniform_indices(len(frames), self.num_keyframes)
    if self.method == "mio_uniform":
      return mio_uniform_indices(len(frames))
    if self.method == "mio_scene":
      return mio_scene_indices(frames)
    return scene_indices(frames, self.num_keyframes, self.threshold)

  def keyframes(self, frames_NxHxWx3) -> np.ndarray:
    return check_frames(frames_NxHxWx3)[self.keyframe_indices(frames_NxHxWx3)]

  def encode(self, frames_NxHxWx3) -> np.ndarray:
    return np.stack([self.image.encode(f) for f in self.keyframes(frames_NxHxWx3)]).astype(np.int32)

  def decode(self, codes_KxT) -> np.ndarray:
    codes = check_codes(codes_KxT, self.image.codebook_size, "video codes", ndim=2)
    return np.stack([self.image.decode(c) for c in codes])

  def save(self, directory: str) -> None:
    """Only the keyframe settings; the image tokenizer is saved (and loaded) separately."""
    paths.makedirs(directory)
    files.write_json(
      paths.join(directory, TOKENIZER_JSON),
      {
        "kind": KIND,
        "format_version": 1,
        "num_keyframes": self.num_keyframes,
        "method": self.method,
        "threshold": self.threshold,
      },
    )

  @classmethod
  def load(cls, directory: str, image: ImageTokenizer) -> KeyframeVideoTokenizer:
    cfg = files.read_json(paths.join(directory, TOKENIZER_JSON))
    return cls(image, cfg["num_keyframes"], cfg["method"], cfg["threshold"])
