"""Prompt pools: >= 10 paraphrases per direction with MIO's wording first, a deterministic
per-example choice spread over the pool, and a pinned/fixed template when a config asks."""

import collections

import pytest

from data_pipelines.builders import RawOptions
from data_pipelines.builders import prompt_pools as P

# MIO's base-model prompts, quoted from its infer.py (img_cap_prompts_base, imagen_prompts_base,
# vid_cap_prompts_base, vid_gen_prompts_base, asr_prompts_base, tts_prompts_base) with the media
# placeholders and the quoted text cut out; the TTS / video ones end with ": " before the output
# span's opener (`<spch>` / `<image>`), which the span itself supplies.
MIO = {
  "caption_image": " The caption of this image is",
  "generate_image": "Please generate an image of ``{text}''",
  "caption_video": "Please describe the following video: ",
  "generate_video": "Please generate a video for ``{text}'': ",
  "asr": " The transcription of this speech is",
  "tts": "Please generate a speech of ``{text}'': ",
}


def test_every_direction_has_a_pool_of_ten_with_mio_wording_first():
  assert set(P.POOLS) == set(MIO)
  for direction, pool in P.POOLS.items():
    assert len(pool) >= 10 and len(set(pool)) == len(pool), direction
    assert pool[0] == MIO[direction]
    # Generation and TTS prompts quote the text; the others must not expect one.
    assert all(("{text}" in t) == ("{text}" in MIO[direction]) for t in pool), direction


def test_choice_is_deterministic_and_seeded():
  for direction in P.POOLS:
    picks = [P.choose(direction, f"ex{i}", seed=3) for i in range(50)]
    assert picks == [P.choose(direction, f"ex{i}", seed=3) for i in range(50)]
    assert picks != [P.choose(direction, f"ex{i}", seed=4) for i in range(50)]


def test_choice_spreads_across_the_pool():
  for direction, pool in P.POOLS.items():
    counts = collections.Counter(P.choose(direction, i) for i in range(2000))
    assert set(counts) == set(pool), direction  # every paraphrase is used
    expected = 2000 / len(pool)
    assert max(counts.values()) < 1.5 * expected and min(counts.values()) > 0.5 * expected


def test_fixed_and_pinned():
  assert all(P.choose(d, i, mode="fixed") == MIO[d] for d in P.POOLS for i in range(20))
  pinned = (("asr", "Transcript:"),)
  assert {P.choose("asr", i, pinned=pinned) for i in range(20)} == {"Transcript:"}
  with pytest.raises(ValueError, match="must contain"):
    P.check_pinned((("tts", "Say it:"),))
  with pytest.raises(ValueError, match="unknown direction"):
    RawOptions(pinned_prompts=(("sing", "x"),))
  with pytest.raises(ValueError, match="prompts="):
    RawOptions(prompts="random")


def test_raw_examples_use_the_pool_by_id():
  """Same id -> same instruction; the demo's fixed mode -> MIO's own wording."""
  from types import SimpleNamespace

  import numpy as np

  from data_pipelines.builders import Builder, tokenize_raw
  from mio_jax.model.sizes import DEMO_VOCAB

  seen = []
  text = SimpleNamespace(
    bos_id=1,
    eos_id=2,
    vocab_size=10,
    adds_dummy_prefix=False,
    encode=lambda s: seen.append(s) or np.array([3], np.int32),
  )
  toks = SimpleNamespace(image=SimpleNamespace(encode=lambda px: np.zeros(4, np.int32)))
  b = Builder(DEMO_VOCAB, text)
  pixels = np.zeros((4, 4, 3), np.uint8)

  def prompt(example_id, **opts):
    seen.clear()
    ex = {
      "type": "image_text",
      "image": pixels,
      "text": "x",
      "direction": "caption",
      "id": example_id,
    }
    tokenize_raw(ex, 0, b, toks, RawOptions(**opts))
    return seen[0]

  assert prompt("a") == prompt("a")
  assert len({prompt(f"id{i}") for i in range(60)}) >= 8
  assert {prompt(f"id{i}", prompts="fixed") for i in range(10)} == {MIO["caption_image"]}
