"""MIO's decoding settings per task, by name: the 7 generation settings of MIO's infer.py (all
with temperature 1, length penalty 1, top-k off; top-p only matters where MIO samples).

    text         beam 5
    image        beam 5, repetition penalty 1.15
    tts          sampling top-p 0.7, repetition penalty 1.15
    speech       beam 5, repetition penalty 2.0 (speech generation that is not TTS: spoken answers)
    s2s          beam 5, repetition penalty 1.15
    video        sampling top-p 0.7, repetition penalty 1.15
    interleaved  sampling top-p 0.7, repetition penalty 1.15
    all: at most 512 new tokens

One setting covers every modality of a preset's output (MIO uses one `generate` call per task).
Beam search ignores top-p; it keeps the repetition penalty and the modality constraints.
"""

from __future__ import annotations

import dataclasses

from mio_jax.errors import UserError
from mio_jax.generate.sampling import GREEDY, SamplingConfig

MAX_NEW_TOKENS = 512
_TOP_P = SamplingConfig(top_p=0.7, repetition_penalty=1.15)


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  output_modality: str  # what the task generates ('auto' = the model interleaves)
  beam_size: int
  sampling: SamplingConfig
  max_new_tokens: int = MAX_NEW_TOKENS


PRESETS = {
  "text": Preset("text", "text", 5, GREEDY),
  "image": Preset("image", "image", 5, SamplingConfig(temperature=0.0, repetition_penalty=1.15)),
  "tts": Preset("tts", "speech", 1, _TOP_P),
  "speech": Preset("speech", "speech", 5, SamplingConfig(temperature=0.0, repetition_penalty=2.0)),
  "s2s": Preset("s2s", "speech", 5, SamplingConfig(temperature=0.0, repetition_penalty=1.15)),
  "video": Preset("video", "video", 1, _TOP_P),
  "interleaved": Preset("interleaved", "auto", 1, _TOP_P),
}


def get_preset(name: str) -> Preset:
  if name not in PRESETS:
    raise UserError(f"--preset={name}: unknown; choose one of {sorted(PRESETS)}")
  return PRESETS[name]
