"""Built-in image tokenizer: k-means VQ over pixel patches (no downloaded weights; for the demo).

An image is resized to `image_size` square and cut into `patch_size` patches (row-major). Each patch
is coded by a `depth`-layer residual VQ (layer 0: nearest codebook patch; layer l: nearest codeword
to what layers < l left). Tokens are layer-major: [layer 0 of all patches, layer 1 of all, ...], so
32 px / 8 px patches / depth 2 gives 32 tokens per image, MIO's count. Decoding sums the codewords.
All layers share one code range [0, codebook_size).
"""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import files
from data_pipelines.tokenizers import kmeans as km
from mio_jax.io import paths
from mio_jax.io.media import resize_image
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "kmeans_vq"
CODEBOOK_FILE = "codebook.npz"


def to_patches(images_BxSxSx3: np.ndarray, patch: int) -> np.ndarray:
  """uint8 [B, S, S, 3] -> float32 [B, (S/p)^2, p*p*3], patches in row-major order."""
  b, s = images_BxSxSx3.shape[:2]
  g = s // patch
  x = images_BxSxSx3.reshape(b, g, patch, g, patch, 3).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * g, patch * patch * 3).astype(np.float32)


def from_patches(patches_BxNxP: np.ndarray, patch: int) -> np.ndarray:
  """Inverse of `to_patches`; rounds and clips to uint8 [B, S, S, 3]."""
  b, n = patches_BxNxP.shape[:2]
  g = int(round(n**0.5))
  x = patches_BxNxP.reshape(b, g, g, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
  return np.clip(np.rint(x.reshape(b, g * patch, g * patch, 3)), 0, 255).astype(np.uint8)


class KMeansImageTokenizer:
  """`ImageTokenizer` with float32 [depth, codebook_size, patch*patch*3] pixel-patch codebooks."""

  def __init__(self, books_LxKxP: np.ndarray, image_size: int = 32, patch_size: int = 8):
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    books_LxKxP = np.asarray(books_LxKxP, np.float32)
    if books_LxKxP.ndim != 3 or books_LxKxP.shape[2] != patch_size * patch_size * 3:
      raise ValueError(f"codebook shape {books_LxKxP.shape} does not fit patch_size {patch_size}")
    self.books_LxKxP = books_LxKxP
    self.image_size = int(image_size)
    self.patch_size = int(patch_size)
    self.depth = int(books_LxKxP.shape[0])
    self.codebook_size = int(books_LxKxP.shape[1])
    self.num_patches = (image_size // patch_size) ** 2
    self.tokens_per_image = self.depth * self.num_patches

  def encode(self, image_HxWx3: np.ndarray) -> np.ndarray:
    return self.encode_batch(resize_image(image_HxWx3, self.image_size)[None])[0]

  def encode_batch(self, images_BxSxSx3: np.ndarray) -> np.ndarray:
    """Already-resized uint8 [B, S, S, 3] -> int32 [B, tokens_per_image]."""
    p_BxNxP = to_patches(images_BxSxSx3, self.patch_size)
    b, n, _ = p_BxNxP.shape
    codes_LxBN = km.rvq_encode(p_BxNxP.reshape(b * n, -1), self.books_LxKxP)
    return codes_LxBN.reshape(self.depth, b, n).transpose(1, 0, 2).reshape(b, self.depth * n)

  def decode(self, codes) -> np.ndarray:
    codes = check_codes(codes, self.codebook_size, "image codes", ndim=1)
    if codes.size != self.tokens_per_image:
      raise ValueError(f"image codes: expected {self.tokens_per_image} codes, got {codes.size}")
    patches_NxP = km.rvq_decode(codes.reshape(self.depth, self.num_patches), self.books_LxKxP)
    return from_patches(patches_NxP[None], self.patch_size)[0]

  # ---- persistence: JSON + npz only ----------------------------------------------------------
  def save(self, directory: str) -> None:
    paths.makedirs(directory)
    files.save_npz(paths.join(directory, CODEBOOK_FILE), codebooks=self.books_LxKxP)
    files.write_json(
      paths.join(directory, TOKENIZER_JSON),
      {
        "kind": KIND,
        "format_version": 1,
        "image_size": self.image_size,
        "patch_size": self.patch_size,
        "codebook_size": self.codebook_size,
        "depth": self.depth,
      },
    )

  @classmethod
  def load(cls, directory: str) -> KMeansImageTokenizer:
    cfg = files.read_json(paths.join(directory, TOKENIZER_JSON))
    with files.load_npz(paths.join(directory, CODEBOOK_FILE)) as z:
      codebooks = z["codebooks"]
    tok = cls(codebooks, cfg["image_size"], cfg["patch_size"])
    if (tok.codebook_size, tok.depth) != (cfg["codebook_size"], cfg["depth"]):
      raise ValueError(
        f"{directory}: codebooks are {tok.depth}x{tok.codebook_size}, JSON says "
        f"{cfg['depth']}x{cfg['codebook_size']}"
      )
    return tok


def train_image_vq(
  images,
  codebook_size: int = 512,
  image_size: int = 32,
  patch_size: int = 8,
  depth: int = 2,
  seed: int = 0,
  iters: int = 12,
  max_points: int = 20_000,
) -> KMeansImageTokenizer:
  """Trains the patch codebook on an iterable of uint8 HxWx3 images (any sizes; resized)."""
  resized = [resize_image(im, image_size) for im in images]
  if not resized:
    raise ValueError("train_image_vq got no images")
  patches = to_patches(np.stack(resized), patch_size).reshape(-1, patch_size * patch_size * 3)
  books = km.rvq_train(patches, depth, codebook_size, seed=seed, iters=iters, max_points=max_points)
  return KMeansImageTokenizer(books, image_size, patch_size)
