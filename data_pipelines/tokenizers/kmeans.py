"""Deterministic k-means and residual VQ in numpy (codebook training for the built-in
tokenizers)."""

from __future__ import annotations

import numpy as np


def nearest_code(x_NxD: np.ndarray, codebook_KxD: np.ndarray, chunk: int = 8192) -> np.ndarray:
  """Index of the nearest codeword per row (squared L2), int32 [N]. Chunked to bound memory."""
  x_NxD = np.asarray(x_NxD, np.float32)
  c_sq_K = np.sum(codebook_KxD * codebook_KxD, axis=1)
  out_N = np.empty(len(x_NxD), np.int32)
  for i in range(0, len(x_NxD), chunk):
    xb = x_NxD[i : i + chunk]
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 ; |x|^2 is constant per row so it is dropped.
    d_BxK = c_sq_K[None, :] - 2.0 * (xb @ codebook_KxD.T)
    out_N[i : i + chunk] = np.argmin(d_BxK, axis=1)
  return out_N


def kmeans(
  x_NxD: np.ndarray, k: int, seed: int = 0, iters: int = 10, max_points: int = 20_000
) -> np.ndarray:
  """float32 [k, D] codebook. Same (data, k, seed, iters) -> bytewise identical result.

  Lloyd iterations on at most `max_points` rows (sampled with the seed) keep training to seconds.
  Init: distinct random rows. Empty clusters are re-seeded with the worst-fit points so that every
  code stays in use.
  """
  x_NxD = np.asarray(x_NxD, np.float32)
  if x_NxD.ndim != 2 or len(x_NxD) == 0:
    raise ValueError(f"kmeans needs a non-empty [N, D] array, got shape {x_NxD.shape}")
  rng = np.random.default_rng(seed)
  if len(x_NxD) > max_points:
    x_NxD = x_NxD[np.sort(rng.choice(len(x_NxD), max_points, replace=False))]
  n = len(x_NxD)
  # With fewer points than codes, repeat points: surplus codes are duplicates (harmless, in range).
  init = rng.choice(n, k, replace=n < k)
  codebook_KxD = x_NxD[init].copy()
  for _ in range(iters):
    assign_N = nearest_code(x_NxD, codebook_KxD)
    counts_K = np.bincount(assign_N, minlength=k)
    sums_KxD = np.zeros_like(codebook_KxD)
    np.add.at(sums_KxD, assign_N, x_NxD)
    used = counts_K > 0
    codebook_KxD[used] = sums_KxD[used] / counts_K[used, None]
    empty = np.flatnonzero(~used)
    if empty.size and n >= k:
      err_N = np.sum((x_NxD - codebook_KxD[assign_N]) ** 2, axis=1)
      worst = np.argsort(-err_N, kind="stable")[: empty.size]
      codebook_KxD[empty] = x_NxD[worst]
  return codebook_KxD.astype(np.float32)


def rvq_train(
  x_NxD: np.ndarray,
  num_layers: int,
  k: int,
  seed: int = 0,
  iters: int = 10,
  max_points: int = 20_000,
) -> np.ndarray:
  """Residual VQ: layer l is k-means on what layers < l left. float32 [L, k, D]."""
  residual = np.asarray(x_NxD, np.float32).copy()
  books = []
  for layer in range(num_layers):
    book = kmeans(residual, k, seed=seed + layer, iters=iters, max_points=max_points)
    residual -= book[nearest_code(residual, book)]
    books.append(book)
  return np.stack(books)


def rvq_encode(x_NxD: np.ndarray, books_LxKxD: np.ndarray) -> np.ndarray:
  """int32 [L, N] codes, greedy layer by layer."""
  residual = np.asarray(x_NxD, np.float32).copy()
  codes = []
  for book in books_LxKxD:
    c = nearest_code(residual, book)
    residual -= book[c]
    codes.append(c)
  return np.stack(codes).astype(np.int32)


def rvq_decode(codes_LxN: np.ndarray, books_LxKxD: np.ndarray) -> np.ndarray:
  """Sum of the selected codewords of the first `len(codes_LxN)` layers: float32 [N, D]."""
  codes_LxN = np.asarray(codes_LxN)
  out = np.zeros((codes_LxN.shape[1], books_LxKxD.shape[2]), np.float32)
  for layer, c in enumerate(codes_LxN):
    out += books_LxKxD[layer][c]
  return out
