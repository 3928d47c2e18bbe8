"""Prompts in exactly the layouts the model was trained on (mio_jax/layouts.py).

Every prompt is a prefix of the training record of the same task, built from the same `Builder`
pieces (each text piece is tokenized on its own, as the builders do, so sentencepiece splits match):

    caption   <bos> IMAGE The caption of this image is:           → caption text
    draw      <bos> Please generate an image of "TEXT":            → <image> .. </image>
    asr       <bos> SPEECH_IN The transcription of this speech is: → transcript
    tts       <bos> Please read this aloud: "TEXT":                → <spch> .. </spch>
    video     <bos> KEYFRAMES The caption of this video is:        → caption text
    edit      <bos> IMAGE TEXT                                     → <image> .. </image>
    s2s       <bos> <|im_start|> system\n VOICE <|im_end|> <|im_start|> user\n SPEECH_IN <|im_end|>
              <|im_start|> assistant\n
                               → <spch> .. </spch>  (always chat)
    chat      <bos> <|im_start|> user\\n MEDIA.. TEXT <|im_end|> <|im_start|> assistant\\n
                                                                   (SFT, stage 4)

Media ids come from `encode_media`; `Prompt` keeps them apart so a caller can rebuild a prompt in
another layout (evaluate reuses one tokenized input for the pretraining and chat layouts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mio_jax import layouts

# SFT instructions of the demo corpus (data_pipelines/demo_plan.py) for chat-layout prompts.
CHAT_DESCRIBE_IMAGE = "Describe this image."
CHAT_DESCRIBE_VIDEO = "Describe this video."
CHAT_TRANSCRIBE = "Transcribe this speech."
CHAT_DRAW = "Draw {text}."
CHAT_SAY = 'Say this sentence: "{text}"'
# MIO's two system prompts, word for word as its inference code and paper give them (the voice one,
# for TTS and speech-to-speech, asks for speech-only replies that start with <spch>).
STANDARD_SYSTEM = (
  "You are MIO, an AI assistant capable of understanding and generating images, "
  "text, videos, and speech, selecting the appropriate modality according to the "
  "context."
)
VOICE_SYSTEM = (
  "You are MIO, an AI assistant capable of understanding images, text, videos, and "
  "speech, and generating speech. Please respond to the user with speech only, "
  "starting with <spch> and ending with </spch>."
)


@dataclasses.dataclass(frozen=True)
class Media:
  """Tokenized inputs (codes in each tokenizer's own range); any may be None."""

  image: np.ndarray | None = None  # [tokens_per_image]
  speech: np.ndarray | None = None  # [layers, T]; prompts use the content layer only
  video: np.ndarray | None = None  # [K, tokens_per_image]


def stop_ids(builder: layouts.Builder) -> tuple[int, ...]:
  """Pretraining examples end with the text EOS, SFT turns with `<|im_end|>`."""
  return (int(builder.text.eos_id), builder.vocab.special_id("<|im_end|>"))


def _bos(builder) -> np.ndarray:
  return np.asarray([builder.text.bos_id], np.int32)


def _media_pieces(builder, media: Media) -> list[np.ndarray]:
  """Media in the order the builders put them: video, image, speech (inputs come first)."""
  pieces = []
  if media.video is not None:
    pieces.append(builder.video(media.video))
  if media.image is not None:
    pieces.append(builder.image(media.image))
  if media.speech is not None:
    pieces.append(builder.speech_in(media.speech))
  return pieces


def _join(pieces) -> np.ndarray:
  return np.concatenate([np.asarray(p, np.int32).ravel() for p in pieces])


def chat_prompt(
  builder: layouts.Builder, media: Media, text: str | None, system: str | None = None
) -> np.ndarray:
  """One user turn (media, then text) and the assistant header, as `Builder.chat` lays them out;
  with `system`, a system turn first."""
  content = _media_pieces(builder, media) + ([builder.words(text)] if text else [])
  if not content:
    raise ValueError("a chat prompt needs text or media")
  head = []
  if system:
    head = [
      builder.special("<|im_start|>"),
      builder.words("system\n"),
      builder.words(system),
      builder.special("<|im_end|>"),
    ]
  return _join(
    [
      _bos(builder),
      *head,
      builder.special("<|im_start|>"),
      builder.words("user\n"),
      *content,
      builder.special("<|im_end|>"),
      builder.special("<|im_start|>"),
      builder.words("assistant\n"),
    ]
  )


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


def pretrain_prompt(
  builder: layouts.Builder, task: str, media: Media, text: str = ""
) -> np.ndarray:
  """The pretraining layout of `task`. For media→text tasks a non-empty `text` replaces the
  task's instruction (free-form prompting); for text→media tasks it is the content."""
  bos = _bos(builder)
  if task in ("caption", "asr", "video_caption"):
    instruction = (
      text
      or {
        "caption": layouts.CAPTION_IMAGE,
        "asr": layouts.TRANSCRIBE,
        "video_caption": layouts.CAPTION_VIDEO,
      }[task]
    )
    return _join([bos, *_media_pieces(builder, media), builder.words(instruction)])
  if task in ("draw", "draw_video", "tts"):
    template = {
      "draw": layouts.GENERATE_IMAGE,
      "draw_video": layouts.GENERATE_VIDEO,
      "tts": layouts.SPEAK,
    }[task]
    if not text.strip():
      raise ValueError(f"task {task!r} needs a text prompt (what to draw or say)")
    return _join([bos, builder.words(template.format(text=text))])
  if task == "text":
    return _join([bos, *_media_pieces(builder, media)] + ([builder.words(text)] if text else []))
  if task == "edit":
    return _join([bos, *_media_pieces(builder, media), builder.words(_need_text(task, text))])
  if task == "s2s":
    return s2s_prompt(builder, media)
  raise ValueError(f"unknown task {task!r}")


def chat_task_prompt(
  builder: layouts.Builder, task: str, media: Media, text: str = ""
) -> np.ndarray:
  """The SFT layout of `task` with the demo corpus's instructions (data_pipelines/demo_plan.py
  asks the same questions, so an SFT checkpoint answers in the trained format)."""
  if task in ("caption", "asr", "video_caption", "text"):
    default = {
      "caption": CHAT_DESCRIBE_IMAGE,
      "asr": CHAT_TRANSCRIBE,
      "video_caption": CHAT_DESCRIBE_VIDEO,
      "text": "",
    }[task]
    return chat_prompt(builder, media, text or default)
  if task in ("draw", "draw_video"):
    return chat_prompt(builder, Media(), CHAT_DRAW.format(text=text))
  if task == "tts":
    return chat_prompt(builder, Media(), CHAT_SAY.format(text=text))
  if task == "edit":
    return chat_prompt(builder, media, _need_text(task, text))
  if task == "s2s":
    return s2s_prompt(builder, media)
  raise ValueError(f"unknown task {task!r}")


def _need_text(task: str, text: str) -> str:
  if not text.strip():
    raise ValueError(f"task {task!r} needs a text prompt (the instruction)")
  return text


def s2s_prompt(builder: layouts.Builder, media: Media) -> np.ndarray:
  """Speech-to-speech: the voice system prompt and a speech-only user turn (any layout)."""
  if media.speech is None:
    raise ValueError("speech-to-speech needs input speech")
  return chat_prompt(builder, Media(speech=media.speech), None, system=VOICE_SYSTEM)


def build_prompt(
  builder: layouts.Builder, task: str, media: Media, text: str = "", chat: bool = False
) -> np.ndarray:
  return (chat_task_prompt if chat else pretrain_prompt)(builder, task, media, text)


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
