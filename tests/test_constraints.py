"""Modality-constrained decoding always yields well-formed spans; segments recover the codes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.generate import constraints as cons
from mio_jax.generate.api import generate
from mio_jax.generate.sampling import SamplingConfig
from mio_jax.generate.segments import split_segments
from mio_jax.model.sizes import DEMO_VOCAB, get_model
from mio_jax.tokens.vocab import Vocab

V = DEMO_VOCAB
SID = V.special_id


def check_well_formed(ids, vocab: Vocab, image_tokens: int, max_speech: int, modality="auto"):
  """Independent validator of one generated sequence (pads only after the end). Returns span
  kinds."""
  ids = [int(x) for x in ids]
  pad = vocab.special_id("<pad>")
  if pad in ids:
    end = ids.index(pad)
    assert all(x == pad for x in ids[end:]), f"pad inside the output: {ids}"
    ids = ids[:end]
  first_speech = vocab.image_start + vocab.image_codes
  outside_ok = set(range(vocab.text_size)) | {
    SID("<image>"),
    SID("<spch>"),
    SID("<|im_start|>"),
    SID("<|im_end|>"),
  }
  if modality == "text":
    outside_ok -= {SID("<image>"), SID("<spch>")}
  spans, i = [], 0
  while i < len(ids):
    tok = ids[i]
    if modality in ("image", "speech"):
      assert i == 0, f"forced {modality} output continues after its span: {ids}"
    if tok == SID("<image>"):
      body = ids[i + 1 : i + 1 + image_tokens]
      assert len(body) == image_tokens and all(
        vocab.image_start <= x < vocab.image_start + vocab.image_codes for x in body
      ), ids
      assert ids[i + 1 + image_tokens] == SID("</image>"), ids
      spans.append("image")
      i += image_tokens + 2
    elif tok == SID("<spch>"):
      j = i + 1
      layer_of = lambda x: (
        (x - first_speech) // vocab.speech_codes if first_speech <= x < vocab.size else -1
      )
      n = 0
      while layer_of(ids[j]) == 0:
        n, j = n + 1, j + 1
      assert 1 <= n <= max_speech, (n, ids)
      for layer in range(1, vocab.speech_layers):
        block = ids[j : j + n]
        assert len(block) == n and all(layer_of(x) == layer for x in block), (layer, n, ids)
        j += n
      assert ids[j] == SID("</spch>"), ids
      spans.append("speech")
      i = j + 1
    else:
      assert tok in outside_ok, f"id {tok} not allowed outside spans: {ids}"
      i += 1
  if modality in ("image", "speech"):
    assert spans == [modality], (spans, ids)
  return spans


@functools.partial(jax.jit, static_argnames=("c", "steps", "batch"))
def random_walk(rng, c: cons.Constraints, steps: int, batch: int):
  """Sample from random logits under the constraint mask, as the decode loop does."""
  bias_V = jnp.zeros(V.padded_size).at[jnp.asarray([SID("<image>"), SID("<spch>")])].set(6.0)
  # Make ending the content block likely, so speech spans of varied lengths appear.
  bias_V = bias_V.at[V.speech_start(1) : V.speech_start(2)].set(-1.5)
  bias_V = bias_V.at[V.padded_size - 16 :].set(
    50.0
  )  # tempt padding rows hard: they must stay masked
  bias_V = bias_V.at[jnp.asarray([SID("<pad>"), SID("<cfg_null>"), SID("</image>")])].set(50.0)

  def step(carry, s):
    state, done, rng = carry
    rng, k1, k2 = jax.random.split(rng, 3)
    logits = 3.0 * jax.random.normal(k1, (batch, V.padded_size)) + bias_V
    allowed = cons.allowed_mask(c, state, steps - s, V.padded_size)
    tok = jax.random.categorical(k2, jnp.where(allowed, logits, -jnp.inf)).astype(jnp.int32)
    tok = jnp.where(done, SID("<pad>"), tok)
    state = cons.advance(c, state, tok, ~done)
    return (state, done | cons.finished(c, tok), rng), tok

  _, toks = jax.lax.scan(
    step, (cons.initial_state(batch), jnp.zeros(batch, bool), rng), jnp.arange(steps)
  )
  return toks.T


@pytest.mark.parametrize("modality", ["auto", "text", "image", "speech"])
def test_random_logits_always_well_formed(modality):
  c = cons.Constraints(V, modality, image_tokens=5, max_speech_tokens=4, stop_ids=(7,))
  kinds = set()
  for seed in range(12):
    toks = np.asarray(random_walk(jax.random.PRNGKey(seed), c, steps=40, batch=32))
    for row in toks:
      # Every row stops at its first stop id (7) or after its forced span.
      row = list(row)
      if 7 in row and modality in ("auto", "text"):
        assert all(x == SID("<pad>") for x in row[row.index(7) + 1 :])
      kinds.update(check_well_formed(row, V, 5, 4, modality))
  if modality == "auto":
    assert kinds == {"image", "speech"}  # the walk exercised both span kinds


def test_validator_rejects_bad_spans():
  ok = np.concatenate([[3], V.image_span(np.arange(5)), [4]])
  check_well_formed(ok, V, 5, 4)
  with pytest.raises(AssertionError):
    check_well_formed(V.image_span(np.arange(4)), V, 5, 4)
  bad_speech = V.speech_span([1, 2], np.array([[1, 2], [3, 4], [5, 6]]))
  check_well_formed(bad_speech, V, 5, 4)
  with pytest.raises(AssertionError):  # unequal timbre block
    check_well_formed(np.delete(bad_speech, -2), V, 5, 4)
  with pytest.raises(AssertionError):
    check_well_formed([3, SID("<cfg_null>")], V, 5, 4)


def test_budget_never_cuts_a_span():
  # Three tokens left cannot hold an image span of 5: `<image>` must be masked, speech (6) too.
  c = cons.Constraints(V, "auto", image_tokens=5, max_speech_tokens=4)
  allowed = np.asarray(cons.allowed_mask(c, cons.initial_state(1), 3, V.padded_size))[0]
  assert not allowed[SID("<image>")] and not allowed[SID("<spch>")] and allowed[5]
  # Content block of 2 with 8 left: growing to 3 needs 1 + 3*3 + 1 = 11 > 8 → only layer-1 ids.
  state = cons.SpanState(*(jnp.asarray([x]) for x in (cons.SPEECH_MODE, 0, 2, 0)))
  allowed = np.asarray(cons.allowed_mask(c, state, 8, V.padded_size))[0]
  assert not allowed[V.speech_start(0) : V.speech_start(1)].any()
  assert allowed[V.speech_start(1) : V.speech_start(2)].all() and allowed.sum() == V.speech_codes


def test_prompt_opened_span_is_continued():
  c = cons.Constraints(V, "auto", image_tokens=5)
  prompt = np.asarray([[SID("<pad>"), 3, SID("<image>"), V.image_start + 1, V.image_start + 2]])
  state = cons.state_after_prompt(
    c, jnp.asarray(prompt), jnp.asarray(prompt != SID("<pad>"), jnp.int32)
  )
  assert [int(x[0]) for x in state] == [cons.IMAGE_MODE, 0, 2, 0]
  # A content-only speech input span in the prompt closes back to text.
  prompt = np.asarray([np.concatenate([V.speech_span([1, 2, 3]), [4]])])
  state = cons.state_after_prompt(c, jnp.asarray(prompt), jnp.ones_like(prompt))
  assert int(state.mode[0]) == cons.TEXT_MODE


@pytest.fixture(scope="module")
def tiny():
  cfg, vocab = get_model(
    "tiny", n_layers=2, init_std=0.5
  )  # peaky logits: varied, confident choices
  from mio_jax.model.transformer import Transformer

  params = Transformer(cfg).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32))["params"]
  return cfg, vocab, jax.tree.map(np.asarray, __import__("flax").linen.meta.unbox(params))


@pytest.mark.parametrize("modality", ["auto", "image", "speech"])
def test_random_model_spans_well_formed(tiny, modality):
  cfg, vocab, params = tiny
  prompts = [np.asarray([5, 6, 7]), np.asarray([SID("<|im_start|>"), 9])]
  for seed in range(4):
    outs, lengths = generate(
      params,
      cfg,
      vocab,
      prompts,
      max_new_tokens=24,
      output_modality=modality,
      sampling=SamplingConfig(temperature=1.5),
      image_tokens=6,
      max_speech_tokens=5,
      rng=jax.random.PRNGKey(seed),
      pad_multiple=4,
      return_lengths=True,
    )
    for row, n in zip(outs, lengths):
      check_well_formed(row, vocab, 6, 5, modality)
      assert (row[:n] != SID("<pad>")).all() and (row[n:] == SID("<pad>")).all()


def test_split_segments_round_trip():
  img = np.arange(7) * 3
  content, timbre = np.array([4, 5, 6]), np.array([[1, 2, 3], [7, 8, 9], [0, 0, 1]])
  ids = np.concatenate(
    [
      [10, 11],
      V.image_span(img),
      [12],
      V.speech_span(content, timbre),
      V.speech_span([9, 9]),
      [SID("<|im_end|>")],
    ]
  )
  segs = split_segments(ids, V)
  assert [s.modality for s in segs] == ["text", "image", "text", "speech", "speech", "special"]
  np.testing.assert_array_equal(segs[0].ids, [10, 11])
  np.testing.assert_array_equal(segs[1].codes, img)
  np.testing.assert_array_equal(segs[3].codes, np.concatenate([content[None], timbre]))
  np.testing.assert_array_equal(segs[4].codes, [[9, 9]])
  cut = split_segments(V.image_span(img)[:-1], V)
  assert not cut[0].complete and cut[0].codes.size == 7
  with pytest.raises(ValueError, match="differ in length"):
    split_segments(np.delete(V.speech_span(content, timbre), -2), V)
