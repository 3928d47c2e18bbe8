"""Instruction pools: each data direction draws its prompt from >= 10 paraphrases, so the model
learns the task rather than one fixed string. The first entry of every pool is MIO's own wording,
the base-model prompt of its infer.py (the fixed template in mio_jax/tokens/layouts.py, which
`prompts="fixed"` pins, as the demo does); the others are ours. Each sits where MIO's does: after
the media for captions and transcripts (hence the leading space, as in MIO's " The caption of this
image is"), before the frames for video captions and before the output span for generation (MIO's
TTS / video prompts end with ": " and the span's own opener).

The choice is a pure function of (seed, direction, example id): the local runner, Beam and a
re-run pick the same prompt for an example whatever order the examples arrive in.
"""

from __future__ import annotations

import hashlib

from mio_jax.tokens import layouts as L

MODES = ("pool", "fixed")

POOLS = {
  "caption_image": (
    L.CAPTION_IMAGE,
    " Describe this image:",
    " Write a short caption for this image:",
    " What does this image show?",
    " Give a one-sentence description of the picture:",
    " Caption:",
    " Briefly describe what you see in this image:",
    " A caption for the image above:",
    " Summarise the content of this picture:",
    " What is in this photo?",
    " Tell me what this image depicts:",
  ),
  "generate_image": (
    L.GENERATE_IMAGE,
    'Generate an image of "{text}":',
    'Draw "{text}":',
    'Create a picture showing "{text}":',
    'Please paint an image that matches "{text}":',
    'Show me an image of "{text}":',
    'Render "{text}" as an image:',
    'An image depicting "{text}":',
    'Make a picture of "{text}":',
    'Illustrate the following description: "{text}":',
    'Produce an image for the caption "{text}":',
  ),
  "caption_video": (
    L.CAPTION_VIDEO,
    "Describe this video: ",
    "Write a short caption for this video: ",
    "What happens in this video? ",
    "Give a one-sentence description of the clip: ",
    "Caption: ",
    "Briefly describe what you see in this video: ",
    "A caption for the video below: ",
    "Summarise this clip: ",
    "What is shown in this video? ",
    "Tell me what this video depicts: ",
  ),
  "generate_video": (
    L.GENERATE_VIDEO,
    'Generate a video of "{text}":',
    'Create a clip showing "{text}":',
    'Please animate "{text}":',
    'Show me a video of "{text}":',
    'Render "{text}" as a video:',
    'A video depicting "{text}":',
    'Make a short video of "{text}":',
    'Produce a clip for the caption "{text}":',
    'Film the following description: "{text}":',
    'Turn "{text}" into a video:',
  ),
  "asr": (
    L.TRANSCRIBE,
    " Transcribe this speech:",
    " What is said in this audio?",
    " Write down what the speaker says:",
    " Convert this speech to text:",
    " Transcript:",
    " Please transcribe the audio above:",
    " What did the speaker say?",
    " Write out the spoken words:",
    " Recognise the speech and give the text:",
    " The words spoken in this recording are:",
  ),
  "tts": (
    L.SPEAK,
    'Read this aloud: "{text}":',
    'Say "{text}":',
    'Please speak the following text: "{text}":',
    'Convert this text to speech: "{text}":',
    'Pronounce "{text}":',
    'Read the sentence "{text}" out loud:',
    'Speak: "{text}":',
    'Turn "{text}" into speech:',
    'Say the following out loud: "{text}":',
    'Give a spoken version of "{text}":',
  ),
}

# Every string the pools can put in front of a tokenizer (train text tokenizers on these too).
POOL_TEXTS = tuple(
  t.format(text="") if "{text}" in t else t for pool in POOLS.values() for t in pool
)


def check_pinned(pinned) -> dict:
  """{direction: template} from pairs, validated (a generation template needs its {text})."""
  out = dict(pinned or ())
  for direction, template in out.items():
    if direction not in POOLS:
      raise ValueError(f"pinned prompt for unknown direction {direction!r}; known: {sorted(POOLS)}")
    wants_text = "{text}" in POOLS[direction][0]
    if wants_text != ("{text}" in template):
      raise ValueError(
        f"pinned {direction} prompt {template!r} must "
        f"{'contain' if wants_text else 'not contain'} {{text}}"
      )
  return out


def choose(direction: str, example_id, seed: int = 0, mode: str = "pool", pinned=()) -> str:
  """The template example `example_id` uses for `direction`: pinned, MIO's own (mode "fixed"),
  or one drawn from the pool by a hash of (seed, direction, example id)."""
  if mode not in MODES:
    raise ValueError(f"prompt mode {mode!r} not in {MODES}")
  pinned = dict(pinned or ())
  if direction in pinned:
    return pinned[direction]
  pool = POOLS[direction]
  if mode == "fixed":
    return pool[0]
  digest = hashlib.sha256(f"{seed}\x00{direction}\x00{example_id}".encode()).digest()
  return pool[int.from_bytes(digest[:8], "little") % len(pool)]
