"""Token layouts of MIO's data types: text ids + media codes -> (tokens int32[n], loss_mask
uint8[n]). Shared by the offline builders (data_pipelines/builders) and generation's prompts.

Convention: `loss_mask[i] == 1` means token i is a training target (predicted from tokens[:i]).
BOS is never a target. Every example is `<bos> ... <eos>` with the text tokenizer's BOS/EOS.

Each piece of a sequence has a kind that decides its mask under the pretraining loss policy:

    kind     what                                             "all" (MIO, default)   "output"
    fixed    BOS, <cfg_null>, ChatML role headers             0                      0
    prompt   instruction text and conditioning media/text     1                      0
    output   what the example teaches to produce, EOS         1                      1

MIO computes the loss on all tokens in pretraining, hence "all". "output" restricts it to the
direction's target (the caption for captioning, the image span for generation, text for ASR, the
speech span for TTS). SFT ignores the policy: loss on assistant turns (content + <|im_end|>) only.

Speech: input spans carry content codes only (layer 0); output spans carry all layers sequentially
(`Vocab.speech_span(content, timbre)`), as in MIO. Video = its keyframes as consecutive image spans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mio_jax.tokens import chat_format
from mio_jax.tokens.vocab import Vocab

FIXED, PROMPT, OUTPUT = "fixed", "prompt", "output"
LOSS_POLICIES = ("all", "output")

# Prompt templates: MIO's base-model wordings, quoted from its infer.py (kept here so the demo
# tokenizer is trained on exactly these strings). Where each sits: captions and transcripts follow
# the media (" The caption of this image is" after the image), the video caption prompt precedes
# the frames, and the generation prompts precede their output span (MIO's TTS / video prompts end
# with ": <spch>" / ": <image>", the output span's own opener).
CAPTION_IMAGE = " The caption of this image is"
GENERATE_IMAGE = "Please generate an image of ``{text}''"
CAPTION_VIDEO = "Please describe the following video: "
GENERATE_VIDEO = "Please generate a video for ``{text}'': "
TRANSCRIBE = " The transcription of this speech is"
SPEAK = "Please generate a speech of ``{text}'': "
ROLES = chat_format.ROLES
TEMPLATE_TEXTS = (
  CAPTION_IMAGE,
  GENERATE_IMAGE.format(text=""),
  CAPTION_VIDEO,
  GENERATE_VIDEO.format(text=""),
  TRANSCRIBE,
  SPEAK.format(text=""),
  *(r + "\n" for r in ROLES),
  chat_format.STD_SYSTEM,
  chat_format.VOICE_SYSTEM,
  # MIO's instruct wordings (mio_jax/generate/prompting.py MIO_WORDINGS), from its infer.py.
  "Please provide an accurate and detailed description of this image.\n",
  "Please transcribe this speech.\n",
  "Please generate an image according to the caption.\n",
  "The transcription is ``''. Please generate a speech according to the given transcription. "
  "Start with <spch>.",
)


class BadExample(ValueError):
  """An input that cannot become an example. `reason` is a short key counted by the report."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Image:
  codes: np.ndarray  # int32 [tokens_per_image]


@dataclasses.dataclass(frozen=True)
class Video:
  codes: np.ndarray  # int32 [K, tokens_per_image], keyframes in time order


@dataclasses.dataclass(frozen=True)
class Speech:
  codes: np.ndarray  # int32 [layers, T]; layer 0 = content


Part = str | Image | Video | Speech


@dataclasses.dataclass(frozen=True)
class Builder:
  """Turns text + media codes into records. `loss` is the pretraining policy (see module doc)."""

  vocab: Vocab
  text: object  # a TextTokenizer (mio_jax/tokens/tokenizers.py)
  loss: str = "all"

  def __post_init__(self):
    if self.loss not in LOSS_POLICIES:
      raise ValueError(f"loss policy {self.loss!r} not in {LOSS_POLICIES}")
    for name in ("bos_id", "eos_id"):
      tid = getattr(self.text, name, None)
      if tid is None or tid < 0:
        raise ValueError(f"text tokenizer has no {name}; examples need <bos> ... <eos>")
    if self.text.vocab_size > self.vocab.text_size:
      raise ValueError(
        f"text tokenizer has {self.text.vocab_size} ids, vocab text range is {self.vocab.text_size}"
      )

  # ---- pieces -------------------------------------------------------------------------------
  def words(self, text: str, what: str = "text") -> np.ndarray:
    """Text that follows `<bos>` (or other tokens) in a record, encoded as MIO's tokenizer
    encodes it inside a longer string (mio_jax/tokens/chat_format.py: added tokens in the text, e.g.
    "<spch>", become their ids; a leading space marks a word boundary)."""
    if not isinstance(text, str) or not text.strip():
      raise BadExample("empty_text", f"empty {what}")
    return chat_format.encode(text, self.vocab, self.text, self._specials, string_start=False)

  @property
  def _specials(self) -> dict[str, int]:
    return chat_format.special_strings(self.vocab, self.text)

  def special(self, name: str) -> np.ndarray:
    return np.asarray([self.vocab.special_id(name)], np.int32)

  def image(self, codes) -> np.ndarray:
    return self.vocab.image_span(codes)

  def video(self, codes_KxT) -> np.ndarray:
    codes_KxT = np.asarray(codes_KxT)
    if codes_KxT.ndim != 2 or len(codes_KxT) == 0:
      raise BadExample(
        "bad_video", f"video codes must be [keyframes, tokens], got {codes_KxT.shape}"
      )
    return np.concatenate([self.image(c) for c in codes_KxT])

  def speech_in(self, codes_LxT) -> np.ndarray:
    """Input speech: content layer only."""
    codes_LxT = np.atleast_2d(codes_LxT)
    return self.vocab.speech_span(codes_LxT[0])

  def speech_out(self, codes_LxT) -> np.ndarray:
    """Output speech: content then timbre layers, sequentially."""
    codes_LxT = np.asarray(codes_LxT)
    if codes_LxT.ndim != 2 or len(codes_LxT) != self.vocab.speech_layers:
      raise BadExample(
        "bad_speech",
        f"output speech needs [{self.vocab.speech_layers}, T] codes, got {codes_LxT.shape}",
      )
    return self.vocab.speech_span(codes_LxT[0], codes_LxT[1:])

  def assemble(self, pieces: Sequence[tuple[np.ndarray, str]]) -> tuple[np.ndarray, np.ndarray]:
    """`<bos> pieces <eos>`; masks per kind under this builder's loss policy."""
    on = {FIXED: 0, PROMPT: int(self.loss == "all"), OUTPUT: 1}
    pieces = [
      (np.asarray([self.text.bos_id]), FIXED),
      *pieces,
      (np.asarray([self.text.eos_id]), OUTPUT),
    ]
    return _join([(ids, on[kind]) for ids, kind in pieces])

  # ---- pretraining data types ---------------------------------------------------------------
  def text_only(self, text: str):
    return self.assemble([(self.words(text), OUTPUT)])

  # `prompt` replaces the fixed instruction (data_pipelines/builders/prompt_pools.py draws it).
  def image_caption(self, image_codes, caption: str, prompt: str | None = None):
    """`<bos> <image>..</image> The caption of this image is {caption} <eos>`."""
    return self.assemble(
      [
        (self.image(image_codes), PROMPT),
        (self.words(prompt or CAPTION_IMAGE), PROMPT),
        (self.words(" " + self._clean(caption, "caption")), OUTPUT),
      ]
    )

  def image_generation(
    self, caption: str, image_codes, cfg_null: bool = False, prompt: str | None = None
  ):
    """`<bos> Please generate an image of ``{caption}'' <image>..</image> <eos>`; with `cfg_null`
    the whole prompt becomes `<cfg_null>` (null-prompt dropout for classifier-free guidance)."""
    return self.assemble(
      [
        self._gen_prompt(prompt or GENERATE_IMAGE, caption, cfg_null),
        (self.image(image_codes), OUTPUT),
      ]
    )

  def video_caption(self, codes_KxT, caption: str, prompt: str | None = None):
    """`<bos> Please describe the following video: <image>..</image>.. {caption} <eos>` (MIO's
    base prompt puts the frames after the instruction)."""
    return self.assemble(
      [
        (self.words(prompt or CAPTION_VIDEO), PROMPT),
        (self.video(codes_KxT), PROMPT),
        (self.words(" " + self._clean(caption, "caption")), OUTPUT),
      ]
    )

  def video_generation(
    self, caption: str, codes_KxT, cfg_null: bool = False, prompt: str | None = None
  ):
    return self.assemble(
      [
        self._gen_prompt(prompt or GENERATE_VIDEO, caption, cfg_null),
        (self.video(codes_KxT), OUTPUT),
      ]
    )

  def asr(self, codes_LxT, transcript: str, prompt: str | None = None):
    """`<bos> <spch> content </spch> The transcription of this speech is {text} <eos>`."""
    return self.assemble(
      [
        (self.speech_in(codes_LxT), PROMPT),
        (self.words(prompt or TRANSCRIBE), PROMPT),
        (self.words(" " + self._clean(transcript, "transcript")), OUTPUT),
      ]
    )

  def tts(self, text: str, codes_LxT, prompt: str | None = None):
    """`<bos> Please generate a speech of ``{text}'': <spch> content timbre.. </spch> <eos>`."""
    text = self._clean(text, "text to speak")
    return self.assemble(
      [
        (self.words((prompt or SPEAK).format(text=text)), PROMPT),
        (self.speech_out(codes_LxT), OUTPUT),
      ]
    )

  def interleaved(self, parts: Sequence[Part]):
    """Text and images in document order; every piece is a target (it is all "document")."""
    if not any(isinstance(p, str) for p in parts) or not any(isinstance(p, Image) for p in parts):
      raise BadExample("bad_interleaved", "interleaved example needs text and at least one image")
    return self.assemble([(self._part(p, output_speech=False), OUTPUT) for p in parts])

  # ---- SFT ----------------------------------------------------------------------------------
  def chat(self, messages: Sequence[dict]):
    """MIO's chat template (mio_jax/tokens/chat_format.py), as `apply_chat_template(...,
    add_generation_prompt=False)` writes it:

        <bos><|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{..}<|im_end|>\\n
        <|im_start|>assistant\\n{..}<|im_end|>

    `messages`: [{"role": "system"|"user"|"assistant", "content": str | [Part, ...]}]. The
    system turn always comes first: the messages' own when the first one is a system turn (MIO's
    "custom" mode), else MIO's voice system prompt when every reply is speech only, else its
    standard one. A turn's parts are joined by "\\n" (MIO
    puts a newline between an instruction and its media). Loss on assistant content and its
    <|im_end|> only; the "\\n" separator after it is not a target (see chat_format). Speech in
    assistant turns is output speech (all layers); elsewhere content-only input speech.
    """
    if not messages or not any(m.get("role") == "assistant" for m in messages):
      raise BadExample("bad_chat", "chat needs at least one assistant turn")
    for m in messages:
      if m.get("role") not in ROLES:
        raise BadExample("bad_chat", f"unknown chat role {m.get('role')!r}; known: {ROLES}")
    custom = messages[0]["role"] == "system"
    system = self._content(messages[0], output=False) if custom else self._system(messages)
    segments = [(chat_format.bos_string(self.text), 0)]
    segments.append((chat_format.turn("system", system) + chat_format.SEPARATOR, 0))
    turns = [m for m in messages[int(custom) :] if m["role"] != "system"]
    for i, m in enumerate(turns):
      train = int(m["role"] == "assistant")
      content = self._content(m, output=bool(train))
      segments += [(f"<|im_start|>{m['role']}\n", 0), (content + "<|im_end|>", train)]
      if i + 1 < len(turns):
        segments.append((chat_format.SEPARATOR, 0))
    return chat_format.encode_with_mask(segments, self.vocab, self.text)

  @staticmethod
  def _system(messages: Sequence[dict]) -> str:
    """MIO's voice system prompt when every reply is speech only (its "voice" mode: TTS,
    speech-to-speech, spoken answers), else the standard one, so records match the prompts."""

    def speech_only(m):
      c = m.get("content")
      parts = [c] if isinstance(c, (str, Image, Video, Speech)) else list(c or [])
      return bool(parts) and all(isinstance(p, Speech) for p in parts)

    replies = [m for m in messages if m.get("role") == "assistant"]
    voice = all(speech_only(m) for m in replies)
    return chat_format.VOICE_SYSTEM if voice else chat_format.STD_SYSTEM

  def _content(self, message: dict, output: bool) -> str:
    """A turn's content as MIO's string: text as given, media as their token strings."""
    content = message.get("content")
    parts = [content] if isinstance(content, (str, Image, Video, Speech)) else list(content or [])
    strings = [self._part_string(p, output) for p in parts]
    if not strings or not "".join(strings).strip():
      raise BadExample("empty_text", f"empty {message.get('role')} turn")
    return "\n".join(strings)

  def _part_string(self, part: Part, output: bool) -> str:
    if isinstance(part, str):
      return part
    if isinstance(part, Image):
      self.vocab.image_id(part.codes)  # range check, as the id builders do
      return chat_format.image_string(part.codes)
    if isinstance(part, Video):
      codes = np.asarray(part.codes)
      if codes.ndim != 2 or len(codes) == 0:
        raise BadExample("bad_video", f"video codes must be [keyframes, tokens], got {codes.shape}")
      self.vocab.image_id(codes)
      return chat_format.video_string(codes)
    if isinstance(part, Speech):
      codes = np.atleast_2d(part.codes)
      if output and len(codes) != self.vocab.speech_layers:
        raise BadExample(
          "bad_speech",
          f"output speech needs [{self.vocab.speech_layers}, T] codes, got {codes.shape}",
        )
      for layer, row in enumerate(codes if output else codes[:1]):
        self.vocab.speech_id(row, layer)  # range check, as the id builders do
      return chat_format.speech_string(codes, output, self.vocab.speech_codes)
    raise TypeError(f"unknown part type {type(part).__name__}")

  # ---- helpers ------------------------------------------------------------------------------
  def _clean(self, text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
      raise BadExample("empty_text", f"empty {what}")
    return text

  def _gen_prompt(self, template: str, caption: str, cfg_null: bool):
    prompt = template.format(text=self._clean(caption, "caption"))
    return (self.special("<cfg_null>"), FIXED) if cfg_null else (self.words(prompt), PROMPT)

  def _part(self, part: Part, output_speech: bool) -> np.ndarray:
    if isinstance(part, str):
      return self.words(part)
    if isinstance(part, Image):
      return self.image(part.codes)
    if isinstance(part, Video):
      return self.video(part.codes)
    if isinstance(part, Speech):
      return self.speech_out(part.codes) if output_speech else self.speech_in(part.codes)
    raise TypeError(f"unknown part type {type(part).__name__}")


def cfg_dropped(seed: int, index: int, p: float) -> bool:
  """Whether example `index` drops its prompt for CFG; a pure function of (seed, index), so the
  local and Beam pipelines agree whatever order examples are processed in."""
  return p > 0 and np.random.default_rng([seed, index, 0xCF6]).random() < p


def _join(rows) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.concatenate([np.asarray(ids, np.int32).ravel() for ids, _ in rows])
  mask = np.concatenate([np.full(np.asarray(ids).size, m, np.uint8) for ids, m in rows])
  return tokens.astype(np.int32), mask
