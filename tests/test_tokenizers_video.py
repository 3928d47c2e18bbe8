"""Keyframe video tokenizer and the `load_tokenizers` directory layout."""

import json

import numpy as np
import pytest

from data_pipelines.tokenizers import (
  Tokenizers,
  VideoTokenizer,
  load_tokenizers,
  save_tokenizers,
  train_sentencepiece,
)
from data_pipelines.tokenizers.image_vq import train_image_vq
from data_pipelines.tokenizers.video import KeyframeVideoTokenizer, scene_indices, uniform_indices


def three_shot_clip(frames_per_shot=(5, 7, 4), size=32, seed=0):
  """Shots of a square drifting over a flat background; background colour changes at each cut."""
  rng = np.random.default_rng(seed)
  frames = []
  for n in frames_per_shot:
    bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    for i in range(n):
      f = np.empty((size, size, 3), np.uint8)
      f[:] = bg
      f[8:16, 4 + i : 12 + i] = fg
      frames.append(f)
  return np.stack(frames)


@pytest.fixture(scope="module")
def image_tok():
  rng = np.random.default_rng(0)
  return train_image_vq(
    rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), codebook_size=32, iters=3
  )


def test_scene_cuts_found():
  clip = three_shot_clip()
  np.testing.assert_array_equal(scene_indices(clip, 3), [0, 5, 12])
  # Asking for more keyframes than cuts fills in inside the longest shots.
  idx = scene_indices(clip, 6)
  assert len(idx) == 6 and {0, 5, 12} <= set(idx.tolist())
  # Fewer: the biggest cuts win and frame 0 is always kept.
  assert scene_indices(clip, 1).tolist() == [0]


def test_uniform_indices():
  assert uniform_indices(16, 4).tolist() == [0, 4, 8, 12]
  assert uniform_indices(3, 8).tolist() == [0, 1, 2]


def test_encode_decode_shapes(image_tok):
  video = KeyframeVideoTokenizer(image_tok, num_keyframes=4, method="scene")
  assert isinstance(video, VideoTokenizer)
  clip = three_shot_clip()
  keys = video.keyframes(clip)
  assert keys.shape == (4, 32, 32, 3) and keys.dtype == np.uint8
  codes = video.encode(clip)
  assert codes.shape == (4, image_tok.tokens_per_image) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < image_tok.codebook_size
  assert video.decode(codes).shape == (4, 32, 32, 3)
  uni = KeyframeVideoTokenizer(image_tok, num_keyframes=8, method="uniform")
  assert uni.encode(clip).shape == (8, image_tok.tokens_per_image)


def test_bad_inputs(image_tok):
  video = KeyframeVideoTokenizer(image_tok)
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    video.encode(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    video.encode(np.zeros((0, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    video.encode(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="method"):
    KeyframeVideoTokenizer(image_tok, method="magic")


def test_load_tokenizers_layout(image_tok, tmp_path):
  text = train_sentencepiece(["a red square.", "the blue circle."] * 50, str(tmp_path / "sp"), 300)
  video = KeyframeVideoTokenizer(image_tok, num_keyframes=5, method="uniform")
  save_tokenizers(Tokenizers(text=text, image=image_tok, video=video), str(tmp_path / "tok"))
  loaded = load_tokenizers(str(tmp_path / "tok"))
  assert loaded.speech is None
  assert loaded.text.encode("a red circle.").tolist() == text.encode("a red circle.").tolist()
  assert loaded.video.num_keyframes == 5 and loaded.video.method == "uniform"
  assert loaded.image.books_LxKxP.tobytes() == image_tok.books_LxKxP.tobytes()
  # Only image: video gets default keyframe settings.
  save_tokenizers(Tokenizers(image=image_tok), str(tmp_path / "img_only"))
  assert load_tokenizers(str(tmp_path / "img_only")).video.num_keyframes == 8


def test_load_tokenizers_errors(image_tok, tmp_path):
  with pytest.raises(ValueError, match="not found"):
    load_tokenizers(str(tmp_path / "nowhere"))
  (tmp_path / "a" / "image").mkdir(parents=True)
  with pytest.raises(ValueError, match="tokenizer.json"):
    load_tokenizers(str(tmp_path / "a"))
  (tmp_path / "a" / "image" / "tokenizer.json").write_text(json.dumps({"kind": "nope"}))
  with pytest.raises(ValueError, match="unknown image tokenizer kind 'nope'"):
    load_tokenizers(str(tmp_path / "a"))
  (tmp_path / "b" / "video").mkdir(parents=True)
  with pytest.raises(ValueError, match="needs an image tokenizer"):
    load_tokenizers(str(tmp_path / "b"))


def test_train_builtin_for_demo_vocab(tmp_path):
  from data_pipelines.tokenizers.train import train_builtin
  from mio_jax.model.sizes import DEMO_VOCAB

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
  waves = [0.1 * rng.standard_normal(8000).astype(np.float32) for _ in range(2)]
  timings = {}
  train_builtin(
    str(tmp_path),
    DEMO_VOCAB,
    ["a red square.", "a blue circle."] * 20,
    images,
    waves,
    16_000,
    timings=timings,
  )
  tok = load_tokenizers(str(tmp_path))
  assert tok.text.vocab_size <= DEMO_VOCAB.text_size
  assert tok.image.codebook_size == DEMO_VOCAB.image_codes
  assert (tok.speech.num_layers, tok.speech.codebook_size) == (
    DEMO_VOCAB.speech_layers,
    DEMO_VOCAB.speech_codes,
  )
  assert tok.video is not None and set(timings) == {"text", "image", "speech"}
  # Codes map into the unified vocabulary without leaving their blocks.
  ids = DEMO_VOCAB.image_span(tok.image.encode(images[0]))
  assert len(ids) == tok.image.tokens_per_image + 2
  speech = tok.speech.encode(waves[0], 16_000)
  assert len(DEMO_VOCAB.speech_span(speech[0], speech[1:])) == 2 + speech.size
