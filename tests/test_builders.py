"""Token layouts and loss masks of every data type (mio_jax/tokens/layouts.py)."""

import numpy as np
import pytest

from mio_jax.model.sizes import DEMO_VOCAB as V
from mio_jax.tokens import chat_format
from mio_jax.tokens import layouts as L
from mio_jax.tokens.layouts import BadExample, Builder, Image, Speech

TEXTS = [
  "a red circle at the top left",
  "a blue square in the centre",
  "describe this image",
  "hello world",
  *L.TEMPLATE_TEXTS,
] * 20


@pytest.fixture(scope="module")
def text_tok(tmp_path_factory):
  from data_pipelines.tokenizers.text import train_sentencepiece

  return train_sentencepiece(TEXTS, str(tmp_path_factory.mktemp("spm")), vocab_size=300)


@pytest.fixture
def b(text_tok):
  return Builder(V, text_tok)


IMG = np.arange(32, dtype=np.int32) * 7 % 512
SPEECH = (np.arange(4 * 10, dtype=np.int32).reshape(4, 10) * 13) % 256
S = V.special_id


def ids(b, text):
  """A text piece as the records encode it: this (demo) sentencepiece model puts a dummy "▁"
  before every text, which stands for a piece's leading space (" The caption" = "▁The caption")."""
  return list(b.text.encode(text[1:] if text.startswith(" ") else text))


def test_text_only(b):
  t, m = b.text_only("hello world")
  assert list(t) == [b.text.bos_id, *ids(b, "hello world"), b.text.eos_id]
  assert list(m) == [0] + [1] * (len(t) - 1)
  assert t.dtype == np.int32 and m.dtype == np.uint8


@pytest.mark.parametrize("loss", ["all", "output"])
def test_image_caption(text_tok, loss):
  b = Builder(V, text_tok, loss)
  t, m = b.image_caption(IMG, "a red circle at the top left")
  span = list(V.image_span(IMG))
  prompt, cap = ids(b, L.CAPTION_IMAGE), ids(b, "a red circle at the top left")
  assert list(t) == [b.text.bos_id, *span, *prompt, *cap, b.text.eos_id]
  assert t[1] == S("<image>") and t[34] == S("</image>") and len(span) == 34
  p = int(loss == "all")
  assert list(m) == [0] + [p] * (len(span) + len(prompt)) + [1] * (len(cap) + 1)


@pytest.mark.parametrize("loss", ["all", "output"])
def test_image_generation_and_cfg(text_tok, loss):
  b = Builder(V, text_tok, loss)
  t, m = b.image_generation("a red circle", IMG)
  prompt = ids(b, "Please generate an image of ``a red circle''")
  assert list(t) == [b.text.bos_id, *prompt, *V.image_span(IMG), b.text.eos_id]
  assert list(m) == [0] + [int(loss == "all")] * len(prompt) + [1] * 35
  t, m = b.image_generation("a red circle", IMG, cfg_null=True)
  assert list(t) == [b.text.bos_id, S("<cfg_null>"), *V.image_span(IMG), b.text.eos_id]
  assert list(m) == [0, 0] + [1] * 35


def test_cfg_dropped_is_deterministic_and_near_p():
  draws = [L.cfg_dropped(3, i, 0.2) for i in range(2000)]
  assert draws == [L.cfg_dropped(3, i, 0.2) for i in range(2000)]
  assert 0.15 < np.mean(draws) < 0.25
  assert not any(L.cfg_dropped(3, i, 0.0) for i in range(100))


def test_video_both_directions(b):
  frames = np.stack([IMG, (IMG + 1) % 512, (IMG + 2) % 512, (IMG + 3) % 512])
  t, m = b.video_caption(frames, "a red circle moves")
  spans = [x for f in frames for x in V.image_span(f)]
  prompt = ids(b, L.CAPTION_VIDEO)  # MIO: "Please describe the following video: " + frames
  assert list(t[: 1 + len(prompt) + len(spans)]) == [b.text.bos_id, *prompt, *spans]
  assert (t == S("<image>")).sum() == 4 and (t == S("</image>")).sum() == 4
  t, m = b.video_generation("a red circle moves", frames)
  assert list(t[-len(spans) - 1 : -1]) == spans and all(m[-len(spans) - 1 :] == 1)


@pytest.mark.parametrize("loss", ["all", "output"])
def test_asr_uses_content_only(text_tok, loss):
  b = Builder(V, text_tok, loss)
  t, m = b.asr(SPEECH, "hello world")
  span = [S("<spch>"), *V.speech_id(SPEECH[0], 0), S("</spch>")]
  assert list(t[1 : 1 + len(span)]) == span
  assert (V.speech_layer_of(t) > 0).sum() == 0  # no timbre in input speech
  cap = ids(b, "hello world")
  assert list(t[-len(cap) - 1 : -1]) == cap and all(m[-len(cap) - 1 :] == 1)
  assert all(m[1 : 1 + len(span)] == int(loss == "all"))


def test_tts_sequential_layers(b):
  t, m = b.tts("hello world", SPEECH)
  span = list(t[-(2 + 4 * 10) - 1 : -1])
  assert span[0] == S("<spch>") and span[-1] == S("</spch>")
  layers = V.speech_layer_of(np.asarray(span[1:-1]))
  assert list(layers) == [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10
  for l in range(4):
    assert list(V.speech_code(span[1 + 10 * l : 11 + 10 * l], l)) == list(SPEECH[l])
  assert all(m[-43:] == 1)


def test_interleaved(b):
  t, m = b.interleaved(["hello world", Image(IMG), "a red circle", Image(IMG)])
  assert (t == S("<image>")).sum() == 2
  assert list(m) == [0] + [1] * (len(t) - 1)
  with pytest.raises(BadExample, match="at least one image"):
    b.interleaved(["only text"])


def test_chat_loss_only_on_assistant(b):
  msgs = [
    {"role": "system", "content": "hello world"},
    {"role": "user", "content": [Image(IMG), "describe this image"]},
    {"role": "assistant", "content": "a red circle"},
    {"role": "user", "content": [Speech(SPEECH)]},
    {"role": "assistant", "content": [Speech(SPEECH)]},
  ]
  t, m = b.chat(msgs)
  starts = np.flatnonzero(t == S("<|im_start|>"))
  ends = np.flatnonzero(t == S("<|im_end|>"))
  # MIO's layout: the messages' own system turn first, no </s> after the last <|im_end|>.
  assert len(starts) == len(ends) == 5 and t[0] == b.text.bos_id and t[-1] == S("<|im_end|>")
  assert b.text.decode(t[starts[0] + 1 : ends[0]]) == "system\nhello world"
  expect = np.zeros(len(t), np.uint8)
  for i in (2, 4):  # assistant turns: content after the role header, through <|im_end|>
    head = starts[i] + 1 + len(ids(b, "assistant\n"))
    assert list(t[starts[i] + 1 : head]) == ids(b, "assistant\n")
    expect[head : ends[i] + 1] = 1
  np.testing.assert_array_equal(m, expect)
  # User speech is content-only; assistant speech carries all four layers.
  user_speech = t[starts[3] : ends[3]]
  asst_speech = t[starts[4] : ends[4]]
  assert set(V.speech_layer_of(user_speech[V.modality_of(user_speech) == 3])) == {0}
  assert set(V.speech_layer_of(asst_speech[V.modality_of(asst_speech) == 3])) == {0, 1, 2, 3}


def test_chat_without_trailing_assistant_has_no_eos_loss(b):
  t, m = b.chat(
    [
      {"role": "user", "content": "hello world"},
      {"role": "assistant", "content": "hi"},
      {"role": "user", "content": "hello world"},
    ]
  )
  assert m[-1] == 0 and m.sum() > 0
  # Without a system turn of their own, records open with MIO's standard system prompt, and
  # turns are separated by "\n" (not a target).
  starts, ends = np.flatnonzero(t == S("<|im_start|>")), np.flatnonzero(t == S("<|im_end|>"))
  assert b.text.decode(t[starts[0] + 1 : ends[0]]) == "system\n" + chat_format.STD_SYSTEM
  for end, start in zip(ends[:-1], starts[1:]):
    assert b.text.decode(t[end + 1 : start]) == "\n" and not m[end + 1 : start].any()


@pytest.mark.parametrize(
  "call",
  [
    lambda b: b.text_only("  "),
    lambda b: b.image_caption(IMG, ""),
    lambda b: b.image_generation("", IMG),
    lambda b: b.tts("", SPEECH),
    lambda b: b.chat([{"role": "assistant", "content": ""}]),
  ],
)
def test_empty_text_is_a_bad_example(b, call):
  with pytest.raises(BadExample) as e:
    call(b)
  assert e.value.reason == "empty_text"


def test_bad_chat_and_media(b):
  with pytest.raises(BadExample, match="assistant"):
    b.chat([{"role": "user", "content": "hello"}])
  with pytest.raises(BadExample, match="role"):
    b.chat([{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}])
  with pytest.raises(BadExample, match="output speech"):
    b.tts("hello", SPEECH[:1])
  with pytest.raises(ValueError, match="text range"):
    Builder(type(V)(text_size=100, image_codes=512, speech_codes=256), b.text)


def test_chat_system_turn_is_voice_when_every_reply_is_speech(b):
  t, _ = b.chat(
    [
      {"role": "user", "content": "hello world"},
      {"role": "assistant", "content": [Speech(SPEECH)]},
    ]
  )
  starts, ends = np.flatnonzero(t == S("<|im_start|>")), np.flatnonzero(t == S("<|im_end|>"))
  system = t[starts[0] + 1 : ends[0]]
  # MIO's voice prompt names <spch> and </spch>: its tokenizer reads them as those added tokens.
  opener, closer = np.flatnonzero(system == S("<spch>")), np.flatnonzero(system == S("</spch>"))
  assert len(opener) == len(closer) == 1
  head = chat_format.VOICE_SYSTEM.split("<spch>")[0]
  assert b.text.decode(system[: opener[0]]) == "system\n" + head
