"""One prompt → segments, per output mode: text / image / speech spans, keyframe video, chat turns.

Used by the CLI (__main__.py) and usable from Python with an `io.Loaded` model:

    segments = sample(model, prompt_ids, "image", preset=get_preset("image"))
    reply = chat_reply(model, turns, out_dir)   # one assistant turn, files written, turns extended
"""

from __future__ import annotations

import jax
import numpy as np

from mio_jax.generate import chat as chat_lib
from mio_jax.generate import io, outputs, prompting
from mio_jax.generate.api import generate
from mio_jax.generate.presets import Preset
from mio_jax.generate.sampling import mio_sampling
from mio_jax.generate.segments import Segment, split_segments
from mio_jax.io import paths
from mio_jax.io.media import read_image

MAX_SPEECH_FRAMES = 500  # 10 s at 50 Hz


def default_budget(
  output_modality: str, vocab, image_tokens: int, frames: int = MAX_SPEECH_FRAMES
) -> int:
  return {
    "image": image_tokens + 2,
    "video": image_tokens + 2,
    "speech": vocab.speech_layers * frames + 2,
  }.get(output_modality, 256)


def run(
  params,
  config,
  vocab,
  prompt_ids: np.ndarray,
  *,
  output_modality: str,
  max_new_tokens: int,
  cfg_scale: float = 1.0,
  beam_size: int = 1,
  seed: int = 0,
  stop_ids=None,
  bos_id=None,
  image_tokens: int = 32,
  sampling=None,
  placement=None,
) -> list[Segment]:
  """One prompt's generation (default: MIO's per-modality sampling), split into segments."""
  # A speech span may use the whole budget: content frames = (budget - 2 markers) / layers.
  frames = max(1, (max_new_tokens - 2) // vocab.speech_layers)
  out = generate(
    params,
    config,
    vocab,
    [prompt_ids],
    max_new_tokens=max_new_tokens,
    sampling=sampling or mio_sampling(),
    output_modality=output_modality,
    cfg_scale=cfg_scale,
    beam_size=beam_size,
    rng=jax.random.PRNGKey(seed),
    stop_ids=stop_ids,
    bos_id=bos_id,
    image_tokens=image_tokens,
    max_speech_tokens=frames,
    placement=placement,
  )[0]
  return split_segments(_with_prompt_opener(vocab, prompt_ids, out), vocab)


def _with_prompt_opener(vocab, prompt_ids, out) -> np.ndarray:
  """MIO's TTS and video prompts end with the output span's opener (": <spch>", ": <image>"): the
  reply continues that span, so the opener is put back in front of it for splitting."""
  last = int(np.asarray(prompt_ids).ravel()[-1])
  if last in (vocab.special_id("<image>"), vocab.special_id("<spch>")):
    return np.concatenate([[last], np.asarray(out, np.int32).ravel()]).astype(np.int32)
  return out


def run_video(
  params, config, vocab, prompt_ids, *, keyframes: int, seed: int = 0, **kw
) -> list[Segment]:
  """Keyframes one after another: each image span is appended to the prompt for the next, as the
  video layouts hold consecutive image spans."""
  segments, ids = [], np.asarray(prompt_ids, np.int32)
  for k in range(keyframes):
    seg = run(params, config, vocab, ids, output_modality="image", seed=seed + k, **kw)
    image = [s for s in seg if s.modality == "image" and s.complete]
    if not image:
      break
    segments.append(image[0])
    if ids[-1] == vocab.special_id("<image>"):  # the prompt opened the first frame's span
      ids = ids[:-1]
    ids = np.concatenate(
      [ids, [vocab.special_id("<image>")], image[0].ids, [vocab.special_id("</image>")]]
    )
  return segments


def sample(
  model: io.Loaded,
  prompt_ids,
  output_modality: str,
  max_new_tokens: int | None = None,
  cfg_scale: float = 1.0,
  beam_size: int | None = None,
  seed: int = 0,
  preset: Preset | None = None,
) -> list[Segment]:
  """`preset` supplies beam size, sampling and budget; explicit arguments win over it."""
  image_tokens = model.tokenizers.image.tokens_per_image if model.tokenizers.image else 32
  budget = max_new_tokens or (
    preset.max_new_tokens if preset else default_budget(output_modality, model.vocab, image_tokens)
  )
  beam = beam_size if beam_size is not None else (preset.beam_size if preset else 1)
  kw = dict(
    max_new_tokens=budget,
    cfg_scale=cfg_scale,
    seed=seed,
    stop_ids=prompting.stop_ids(model.builder),
    bos_id=model.builder.text.bos_id,
    image_tokens=image_tokens,
    sampling=preset.sampling if preset else None,
    placement=model.placement,
  )
  if output_modality == "video":
    keyframes = getattr(model.tokenizers.video, "num_keyframes", 4)
    return run_video(
      model.params,
      model.model_cfg,
      model.vocab,
      prompt_ids,
      keyframes=keyframes,
      beam_size=beam,
      **kw,
    )
  return run(
    model.params,
    model.model_cfg,
    model.vocab,
    prompt_ids,
    output_modality=output_modality,
    beam_size=beam,
    **kw,
  )


def write_outputs(
  model: io.Loaded, segments, out_dir: str, output_modality: str, video_format: str = "gif"
) -> list[str]:
  """auto → answer.md + parts in order; video → frames + GIF/MP4; else out.txt/PNG/WAV."""
  if output_modality == "auto":
    return outputs.write_answer(model.tokenizers, segments, out_dir)[1]
  written = io.write_segments(model.tokenizers, segments, out_dir, video=output_modality == "video")
  frames = [p for p in written if p.endswith(".png")]
  if output_modality == "video" and frames:
    path = paths.join(out_dir, f"out.{video_format}")
    written.append(outputs.write_animation([read_image(p) for p in frames], path, video_format))
  return written


def chat_reply(
  model: io.Loaded,
  turns: list[chat_lib.Turn],
  out_dir: str,
  *,
  output_modality: str = "auto",
  system: str | None = None,
  read_media=None,
  mode: str | None = None,
  **sample_kw,
) -> tuple[chat_lib.Turn, list[str]]:
  """The assistant's next turn: generated, written to `out_dir` (answer.md + parts) and appended
  to `turns`. `system` / `mode`: MIO's system prompt (chat.system_mode). Returns (the new turn,
  paths written)."""
  read_media = read_media or io.read_media_files
  media = [chat_lib.encode_turn_media(model.tokenizers, t, read_media) for t in turns]
  prompt = chat_lib.chat_prompt(model.builder, turns, media, system, mode)
  segments = sample(model, prompt, output_modality, **sample_kw)
  _, written = outputs.write_answer(model.tokenizers, segments, out_dir)
  text = outputs.answer_text(model.tokenizers, segments)
  files = {}
  for p in written[:-1]:  # the parts, at most one image and one speech kept as the turn's media
    files.setdefault("image" if p.endswith(".png") else "speech", p)
  reply = chat_lib.Turn("assistant", text, files)
  turns.append(reply)
  return reply, written
