"""Video tokenizer: pick keyframes, tokenize each as an image (MIO: video = sequence of
keyframes)."""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers.base import TOKENIZER_JSON, ImageTokenizer
from data_pipelines.tokenizers.media_io import check_codes
from mio_jax import paths

KIND = "keyframes"
METHODS = ("scene", "uniform")


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
