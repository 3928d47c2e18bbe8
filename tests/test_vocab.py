"""The unified vocabulary: block layout, id <-> code maps, span builders, fingerprint."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.model.sizes import DEMO_VOCAB, MIO_VOCAB
from mio_jax.tokens import vocab as V
from mio_jax.tokens.vocab import Vocab

SMALL = Vocab(text_size=100, image_codes=40, speech_codes=16, speech_layers=4)


def _blocks(v: Vocab):
  """(name, start, stop) of every block in id order."""
  out = [
    ("text", 0, v.text_size),
    ("special", v.specials_start, v.image_start),
    ("image", v.image_start, v.image_start + v.image_codes),
  ]
  out += [
    (f"speech{l}", v.speech_start(l), v.speech_start(l) + v.speech_codes)
    for l in range(v.speech_layers)
  ]
  return out + [("padding", v.size, v.padded_size)]


@pytest.mark.parametrize("v", [SMALL, DEMO_VOCAB, MIO_VOCAB, Vocab(text_size=7, speech_layers=1)])
def test_blocks_are_disjoint_contiguous_and_padded(v):
  blocks = _blocks(v)
  assert blocks[0][1] == 0 and blocks[-1][2] == v.padded_size
  for (_, _, stop), (_, start, _) in zip(blocks, blocks[1:]):
    assert stop == start  # contiguous, no overlap
  assert v.image_start - v.specials_start == len(V.SPECIALS) >= 4
  assert v.padded_size % v.pad_multiple == 0 and 0 <= v.padded_size - v.size < v.pad_multiple
  assert v.multimodal_rows == v.size - v.text_size


def test_mio_7b_sizes():
  assert MIO_VOCAB.text_size == 64_000
  assert MIO_VOCAB.size == 64_000 + 8 + 8_192 + 4 * 1_024 == 76_296
  assert MIO_VOCAB.padded_size == 76_416


def test_modality_of_every_id_numpy_and_jit():
  v = SMALL
  ids = np.arange(v.padded_size, dtype=np.int32)
  want = np.empty_like(ids)
  for name, start, stop in _blocks(v):
    want[start:stop] = {
      "text": V.TEXT,
      "special": V.SPECIAL,
      "image": V.IMAGE,
      "padding": V.PADDING,
    }.get(name, V.SPEECH)
  got = v.modality_of(ids)
  assert isinstance(got, np.ndarray)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(jax.jit(v.modality_of)(jnp.asarray(ids)), want)
  layers = jax.jit(v.speech_layer_of)(jnp.asarray(ids))
  np.testing.assert_array_equal(
    layers, np.where(want == V.SPEECH, (ids - v.speech_start(0)) // 16, -1)
  )
  np.testing.assert_array_equal(v.speech_layer_of(ids), layers)


def test_id_code_round_trips():
  v = SMALL
  codes = np.arange(v.image_codes)
  np.testing.assert_array_equal(v.image_code(v.image_id(codes)), codes)
  assert v.image_id(0) == v.image_start
  for layer in range(v.speech_layers):
    codes = np.arange(v.speech_codes)
    ids = v.speech_id(codes, layer)
    assert ids.dtype == np.int32 and ids[0] == v.speech_start(layer)
    np.testing.assert_array_equal(v.speech_code(ids, layer), codes)
  for name in V.SPECIALS:
    assert v.modality_of(v.special_id(name)) == V.SPECIAL  # plain Python ints work too
  assert v.speech_layer_of([v.speech_start(2), 0]).tolist() == [2, -1]


def test_out_of_range_codes_and_ids_raise():
  v = SMALL
  with pytest.raises(ValueError, match="image codes"):
    v.image_id([0, v.image_codes])
  with pytest.raises(ValueError, match="speech layer 1"):
    v.speech_id([-1], 1)
  with pytest.raises(ValueError, match="image range"):
    v.image_code([v.image_start - 1])
  with pytest.raises(ValueError, match="speech layer 0"):
    v.speech_code([v.speech_start(1)], 0)
  with pytest.raises(ValueError, match="speech layer 4"):
    v.speech_start(4)
  with pytest.raises(KeyError, match="<video>"):
    v.special_id("<video>")


def test_image_span():
  v = SMALL
  span = v.image_span(np.arange(32).reshape(4, 8) % v.image_codes)
  assert span.dtype == np.int32 and span.shape == (34,)
  assert span[0] == v.special_id("<image>") and span[-1] == v.special_id("</image>")
  np.testing.assert_array_equal(v.image_code(span[1:-1]), np.arange(32) % v.image_codes)


def test_speech_spans_input_and_output_layouts():
  v = SMALL
  content = np.array([3, 1, 4, 1, 5])
  spin = v.speech_span(content)  # input: content only
  assert spin[0] == v.special_id("<spch>") and spin[-1] == v.special_id("</spch>")
  np.testing.assert_array_equal(spin[1:-1], v.speech_id(content, 0))
  timbre = np.arange(15).reshape(3, 5)
  spout = v.speech_span(content, timbre)  # output: all content, then timbre layers 1, 2, 3
  assert spout.shape == (2 + 4 * 5,)
  body = spout[1:-1].reshape(4, 5)
  np.testing.assert_array_equal(body[0], v.speech_id(content, 0))
  for layer in (1, 2, 3):
    np.testing.assert_array_equal(v.speech_code(body[layer], layer), timbre[layer - 1])
  np.testing.assert_array_equal(v.speech_layer_of(body), np.repeat(np.arange(4), 5).reshape(4, 5))


@pytest.mark.parametrize("timbre_shape", [(3, 4), (2, 5), (15,)])
def test_speech_span_rejects_mismatched_timbre(timbre_shape):
  with pytest.raises(ValueError, match="timbre must have shape"):
    SMALL.speech_span(np.arange(5), np.zeros(timbre_shape, np.int64))


@pytest.mark.parametrize(
  "field", ["text_size", "image_codes", "speech_codes", "speech_layers", "pad_multiple"]
)
def test_fingerprint_changes_with_every_size(field):
  other = dataclasses.replace(SMALL, **{field: getattr(SMALL, field) + 1})
  assert other.fingerprint() != SMALL.fingerprint()
  assert SMALL.fingerprint() == Vocab(text_size=100, image_codes=40, speech_codes=16).fingerprint()
  with pytest.raises(ValueError, match="shard-7.*fingerprint"):
    SMALL.check_fingerprint(other.fingerprint(), "shard-7")
  SMALL.check_fingerprint(SMALL.fingerprint(), "shard-7")


def test_json_round_trip_and_tamper_check():
  for v in (SMALL, MIO_VOCAB):
    again = Vocab.from_json(v.to_json())
    assert again == v and again.fingerprint() == v.fingerprint()
  tampered = SMALL.to_json().replace('"image_codes": 40', '"image_codes": 41')
  with pytest.raises(ValueError, match="does not match"):
    Vocab.from_json(tampered)


@pytest.mark.parametrize(
  "bad",
  [
    dict(text_size=0),
    dict(text_size=10, image_codes=-1),
    dict(text_size=10, pad_multiple=0),
    dict(text_size=10.5),
  ],
)
def test_invalid_sizes_raise(bad):
  with pytest.raises(ValueError):
    Vocab(**bad)
