"""Prompts in exactly the layouts the model was trained on, written as MIO writes them.

Every prompt is first a string in MIO's format (mio_jax/tokens/chat_format.py: the string MIO's
`MIOTokenizer` builds), then ids by `chat_format.encode` (the ids MIO's tokenizer gives it). The
base (pretraining) prompts are prefixes of the records `Builder` writes for the same task:

    caption   <s>IMAGE The caption of this image is                    → caption text
    draw      <s>Please generate an image of ``TEXT''                  → <image> .. </image>
    asr       <s>SPEECH_IN The transcription of this speech is         → transcript
    tts       <s>Please generate a speech of ``TEXT'': <spch>          → .. </spch>
    video     <s>Please describe the following video: KEYFRAMES        → caption text
    draw_video<s>Please generate a video for ``TEXT'': <image>         → .. </image> <image> ..
    edit      <s>IMAGE TEXT                                            → <image> .. </image>
    text      <s>TEXT

Chat prompts use MIO's chat template: the system turn first (`mode` "std", "voice" or "custom"),
"\n" between turns, `<|im_start|>assistant\n` at the end. For the `mio` vocab layout the user
turn carries MIO's instruct wordings (`MIO_WORDINGS`, from its infer.py: instruction, "\n", then
the media); demo models are asked the demo corpus's instructions (`DEMO_WORDINGS`, media first),
so each model is asked what it was trained on. Text that names its media with MIO's placeholders
(`<image_placeholder_0>`, `<speech_placeholder_0>`) gets them there instead. Speech output
(TTS, speech-to-speech, spoken answers) uses the voice system prompt, everything else the
standard one.

Media ids come from `encode_media`; `Prompt` keeps them apart so a caller can rebuild a prompt in
another layout (evaluate reuses one tokenized input for the pretraining and chat layouts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mio_jax.tokens import chat_format, layouts

# MIO's two system prompts (tokenization_mio.py), word for word.
STANDARD_SYSTEM, VOICE_SYSTEM = chat_format.STD_SYSTEM, chat_format.VOICE_SYSTEM


@dataclasses.dataclass(frozen=True)
class Wordings:
  """The chat instructions of one training corpus, and where it puts a turn's media."""

  describe_image: str
  describe_video: str
  transcribe: str
  draw: str  # {text}
  draw_video: str  # {text}
  say: str  # {text}
  media_first: bool  # media, "\n", instruction (else instruction, "\n", media)


# MIO's instruct prompts in its infer.py (the video one is ours: infer.py asks only questions).
MIO_WORDINGS = Wordings(
  describe_image="Please provide an accurate and detailed description of this image.",
  describe_video="Please provide an accurate and detailed description of this video.",
  transcribe="Please transcribe this speech.",
  draw="Please generate an image according to the caption.\n{text}",
  draw_video="Please generate a video for ``{text}''",
  say="The transcription is ``{text}''. Please generate a speech according to the given "
  "transcription. Start with <spch>.",
  media_first=False,
)
# The demo corpus's SFT instructions (data_pipelines/demo_plan.py).
DEMO_WORDINGS = Wordings(
  describe_image="Describe this image.",
  describe_video="Describe this video.",
  transcribe="Transcribe this speech.",
  draw="Draw {text}.",
  draw_video="Draw {text}.",
  say='Say this sentence: "{text}"',
  media_first=True,
)
CHAT_DESCRIBE_IMAGE = DEMO_WORDINGS.describe_image
CHAT_DESCRIBE_VIDEO = DEMO_WORDINGS.describe_video
CHAT_TRANSCRIBE = DEMO_WORDINGS.transcribe
CHAT_DRAW = DEMO_WORDINGS.draw
CHAT_SAY = DEMO_WORDINGS.say


def wordings(builder: layouts.Builder) -> Wordings:
  return MIO_WORDINGS if builder.vocab.layout_name == "mio" else DEMO_WORDINGS


@dataclasses.dataclass(frozen=True)
class Media:
  """Tokenized inputs (codes in each tokenizer's own range); any may be None."""

  image: np.ndarray | None = None  # [tokens_per_image]
  speech: np.ndarray | None = None  # [layers, T]; prompts use the content layer only
  video: np.ndarray | None = None  # [K, tokens_per_image]


def stop_ids(builder: layouts.Builder) -> tuple[int, ...]:
  """Pretraining examples end with the text EOS, SFT turns with `<|im_end|>`."""
  return (int(builder.text.eos_id), builder.vocab.special_id("<|im_end|>"))


def _speech_codes(builder) -> int:
  return builder.vocab.speech_codes


def image_strings(media: Media) -> list[str]:
  """What MIO's `<image_placeholder_j>` stand for: the image, then the video's keyframes."""
  out = [] if media.image is None else [chat_format.image_string(media.image)]
  if media.video is not None:
    out += [chat_format.image_string(frame) for frame in np.asarray(media.video)]
  return out


def media_string(builder, media: Media, output_speech: bool = False) -> str:
  """All of `media` in the order the builders put it: video, image, speech."""
  parts = []
  if media.video is not None:
    parts.append(chat_format.video_string(media.video))
  if media.image is not None:
    parts.append(chat_format.image_string(media.image))
  if media.speech is not None:
    parts.append(chat_format.speech_string(media.speech, output_speech, _speech_codes(builder)))
  return "".join(parts)


def fill_media(
  builder, text: str, media: Media, media_first: bool, sep: str, output_speech: bool = False
) -> str:
  """`text` with its placeholders replaced by `media` (MIO's way), or, when it names none, the
  media joined to it by `sep` (before or after it)."""
  if chat_format.has_placeholders(text):
    speech = [] if media.speech is None else [media.speech]
    speeches = [chat_format.speech_string(c, output_speech, _speech_codes(builder)) for c in speech]
    return chat_format.expand_placeholders(text, image_strings(media), speeches)
  spans = media_string(builder, media, output_speech)
  if not spans or not text:
    return spans or text
  return spans + sep + text if media_first else text + sep + spans


def encode_string(builder: layouts.Builder, string: str) -> np.ndarray:
  """A prompt string → ids, as MIO's tokenizer encodes it."""
  return chat_format.encode(string, builder.vocab, builder.text)


def chat_string(
  builder: layouts.Builder,
  media: Media,
  text: str | None,
  system: str | None = None,
  mode: str = "std",
) -> str:
  """One user turn (MIO's template; media placed by this model's `wordings`) and the assistant
  header; `system` given = that system prompt (MIO's "custom" mode), else `mode`'s."""
  content = fill_media(builder, text or "", media, wordings(builder).media_first, "\n")
  if not content:
    raise ValueError("a chat prompt needs text or media")
  turns = [{"role": "user", "content": content}]
  if system:
    turns, mode = [{"role": "system", "content": system}, *turns], "custom"
  return chat_format.render_chat(turns, mode, bos=chat_format.bos_string(builder.text))


def chat_prompt(
  builder: layouts.Builder,
  media: Media,
  text: str | None,
  system: str | None = None,
  mode: str = "std",
) -> np.ndarray:
  return encode_string(builder, chat_string(builder, media, text, system, mode))


def default_task(media: Media, output_modality: str) -> str:
  """Which training task a CLI call means: media in → describe it; text in → draw / speak /
  continue."""
  if (
    output_modality in ("image", "video", "speech")
    and media.image is None
    and media.video is None
    and media.speech is None
  ):
    return {"image": "draw", "video": "draw_video", "speech": "tts"}[output_modality]
  if output_modality == "image" and media.image is not None and media.video is None:
    return "edit"  # image + instruction → image
  if output_modality == "speech" and media.speech is not None:
    return "s2s"
  if media.video is not None:
    return "video_caption"
  if media.image is not None:
    return "caption"
  if media.speech is not None:
    return "asr"
  return "text"


def _after_media(builder, text: str, media: Media) -> str:
  """Base prompts: media first, then the text after a space (MIO's "<image_placeholder_0> The
  caption of this image is")."""
  if chat_format.has_placeholders(text) or not text or text[0].isspace():
    return fill_media(builder, text, media, True, "")
  return fill_media(builder, text, media, True, " ")


def pretrain_string(builder: layouts.Builder, task: str, media: Media, text: str = "") -> str:
  """MIO's base-model prompt for `task`. For media→text tasks a non-empty `text` replaces the
  task's instruction (free-form prompting); for text→media tasks it is the content."""
  if task in ("caption", "asr"):
    body = _after_media(
      builder, text or {"caption": layouts.CAPTION_IMAGE, "asr": layouts.TRANSCRIBE}[task], media
    )
  elif task == "video_caption":
    instruction = text or layouts.CAPTION_VIDEO
    if chat_format.has_placeholders(instruction):
      body = fill_media(builder, instruction, media, False, "")
    else:
      sep = "" if instruction[-1].isspace() else " "
      body = fill_media(builder, instruction, media, False, sep)
  elif task in ("draw", "draw_video", "tts"):
    if not text.strip():
      raise ValueError(f"task {task!r} needs a text prompt (what to draw or say)")
    template = {
      "draw": layouts.GENERATE_IMAGE,
      "draw_video": layouts.GENERATE_VIDEO,
      "tts": layouts.SPEAK,
    }[task]
    # MIO's TTS and video prompts end with the output span's opener (": <spch>", ": <image>").
    opener = {"draw": "", "draw_video": "<image>", "tts": "<spch>"}[task]
    body = template.format(text=text) + opener
  elif task == "text":
    body = _after_media(builder, text, media)
  elif task == "edit":
    body = _after_media(builder, _need_text(task, text), media)
  elif task == "s2s":
    return s2s_string(builder, media)
  else:
    raise ValueError(f"unknown task {task!r}")
  return chat_format.bos_string(builder.text) + body


def pretrain_prompt(
  builder: layouts.Builder, task: str, media: Media, text: str = ""
) -> np.ndarray:
  return encode_string(builder, pretrain_string(builder, task, media, text))


def chat_mode(task: str) -> str:
  """MIO's system mode for a task: "voice" where the answer is speech, else "std"."""
  return "voice" if task in ("tts", "s2s") else "std"


def chat_task_string(
  builder: layouts.Builder, task: str, media: Media, text: str = "", mode: str | None = None
) -> str:
  """The SFT layout of `task`, asked in this model's `wordings`."""
  w, mode = wordings(builder), mode or chat_mode(task)
  if task in ("caption", "asr", "video_caption", "text"):
    default = {
      "caption": w.describe_image,
      "asr": w.transcribe,
      "video_caption": w.describe_video,
      "text": "",
    }[task]
    return chat_string(builder, media, text or default, mode=mode)
  if task in ("draw", "draw_video", "tts"):
    template = {"draw": w.draw, "draw_video": w.draw_video, "tts": w.say}[task]
    return chat_string(builder, Media(), template.format(text=_need_text(task, text)), mode=mode)
  if task == "edit":
    return chat_string(builder, media, _need_text(task, text), mode=mode)
  if task == "s2s":
    return s2s_string(builder, media, mode)
  raise ValueError(f"unknown task {task!r}")


def chat_task_prompt(
  builder: layouts.Builder, task: str, media: Media, text: str = "", mode: str | None = None
) -> np.ndarray:
  return encode_string(builder, chat_task_string(builder, task, media, text, mode))


def _need_text(task: str, text: str) -> str:
  if not text.strip():
    raise ValueError(f"task {task!r} needs a text prompt (the instruction)")
  return text


def s2s_string(builder: layouts.Builder, media: Media, mode: str = "voice") -> str:
  """Speech-to-speech: the voice system prompt and a speech-only user turn (any layout)."""
  if media.speech is None:
    raise ValueError("speech-to-speech needs input speech")
  return chat_string(builder, Media(speech=media.speech), None, mode=mode)


def s2s_prompt(builder: layouts.Builder, media: Media) -> np.ndarray:
  return encode_string(builder, s2s_string(builder, media))


def prompt_string(
  builder: layouts.Builder,
  task: str,
  media: Media,
  text: str = "",
  chat: bool = False,
  mode: str | None = None,
) -> str:
  if chat:
    return chat_task_string(builder, task, media, text, mode)
  return pretrain_string(builder, task, media, text)


def build_prompt(
  builder: layouts.Builder,
  task: str,
  media: Media,
  text: str = "",
  chat: bool = False,
  mode: str | None = None,
) -> np.ndarray:
  return encode_string(builder, prompt_string(builder, task, media, text, chat, mode))


def encode_media(
  tokenizers, image=None, speech=None, video=None, sample_rate: int | None = None
) -> Media:
  """Pixels / waves / frames → codes with the loaded tokenizers. `speech` is a float wave
  at `sample_rate`; `video` uint8 frames [N, H, W, 3]."""

  def need(part):
    tok = getattr(tokenizers, part)
    if tok is None:
      raise ValueError(f"the tokenizer directory has no {part} tokenizer")
    return tok

  return Media(
    image=None if image is None else need("image").encode(image),
    speech=None if speech is None else need("speech").encode(speech, sample_rate),
    video=None if video is None else need("video").encode(video),
  )
