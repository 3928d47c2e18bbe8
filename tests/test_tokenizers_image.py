"""Built-in k-means patch VQ image tokenizer: reconstruction quality, determinism, save/load,
errors."""

import numpy as np
import pytest

from data_pipelines.tokenizers import ImageTokenizer, load_tokenizers, read_image, write_image
from data_pipelines.tokenizers.image_vq import KMeansImageTokenizer, train_image_vq

PSNR_BOUND_DB = 20.0  # measured 22.4 dB (600 training images, 100 held out); see docs/tokenizers.md


def shape_images(n, size=32, seed=0):
  """Flat-coloured circles, squares and triangles on a plain background."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  out = np.empty((n, size, size, 3), np.uint8)
  for i in range(n):
    bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    r = rng.uniform(0.15, 0.35) * size
    kind = rng.integers(3)
    if kind == 0:
      mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    elif kind == 1:
      mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
    else:
      mask = (abs(yy - cy) < r) & (abs(xx - cx) < (yy - cy + r) / 2)
    out[i] = np.where(mask[..., None], fg, bg)
  return out


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def tok():
  return train_image_vq(shape_images(600, seed=0), codebook_size=512, seed=0)


def test_interface(tok):
  assert isinstance(tok, ImageTokenizer)
  assert (tok.codebook_size, tok.tokens_per_image, tok.image_size) == (512, 32, 32)


def test_held_out_psnr(tok):
  test = shape_images(100, seed=1)
  codes = np.stack([tok.encode(im) for im in test])
  assert codes.dtype == np.int32 and codes.shape == (100, 32)
  assert codes.min() >= 0 and codes.max() < 512
  rec = np.stack([tok.decode(c) for c in codes])
  assert rec.dtype == np.uint8 and rec.shape == test.shape
  assert psnr(test, rec) >= PSNR_BOUND_DB
  # The residual layer must help: dropping it (codes of layer 1 -> a constant) hurts.
  assert psnr(test, rec) > psnr(
    test, np.stack([tok.decode(np.r_[c[:16], c[:16] * 0]) for c in codes])
  )
  # And the tokenizer must beat a trivial "mean colour" baseline by a wide margin.
  flat = np.broadcast_to(test.mean(axis=(1, 2), keepdims=True), test.shape).round()
  assert psnr(test, rec) > psnr(test, flat) + 4  # measured +5.8 dB


def test_resizes_any_input_size(tok):
  big = np.repeat(np.repeat(shape_images(1, seed=3)[0], 3, axis=0), 2, axis=1)  # 96 x 64
  codes = tok.encode(big)
  assert codes.shape == (32,)
  assert tok.decode(codes).shape == (32, 32, 3)


def test_deterministic_codebooks():
  imgs = shape_images(200, seed=5)
  a = train_image_vq(imgs, codebook_size=64, seed=7, iters=4)
  b = train_image_vq(imgs, codebook_size=64, seed=7, iters=4)
  c = train_image_vq(imgs, codebook_size=64, seed=8, iters=4)
  assert a.books_LxKxP.tobytes() == b.books_LxKxP.tobytes()
  assert a.books_LxKxP.tobytes() != c.books_LxKxP.tobytes()


def test_save_load_round_trip(tok, tmp_path):
  tok.save(str(tmp_path / "image"))
  assert sorted(p.name for p in (tmp_path / "image").iterdir()) == [
    "codebook.npz",
    "tokenizer.json",
  ]
  loaded = load_tokenizers(str(tmp_path)).image
  assert isinstance(loaded, KMeansImageTokenizer)
  assert loaded.books_LxKxP.tobytes() == tok.books_LxKxP.tobytes()
  im = shape_images(1, seed=9)[0]
  np.testing.assert_array_equal(loaded.encode(im), tok.encode(im))


def test_png_round_trip_through_files(tok, tmp_path):
  im = shape_images(1, seed=11)[0]
  write_image(str(tmp_path / "x.png"), im)
  np.testing.assert_array_equal(read_image(str(tmp_path / "x.png")), im)


def test_bad_inputs(tok, tmp_path):
  (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
  with pytest.raises(ValueError, match="broken.png"):
    read_image(str(tmp_path / "broken.png"))
  with pytest.raises(ValueError, match="not found"):
    read_image(str(tmp_path / "missing.png"))
  with pytest.raises(ValueError, match="HxWx3"):
    tok.encode(np.zeros((32, 32), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    tok.encode(np.zeros((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[0, 512\)"):
    tok.decode(np.full(32, 512))
  with pytest.raises(ValueError, match="expected 32 codes"):
    tok.decode(np.zeros(16, np.int32))
  with pytest.raises(ValueError, match="multiple"):
    KMeansImageTokenizer(np.zeros((1, 4, 192)), image_size=30, patch_size=8)
