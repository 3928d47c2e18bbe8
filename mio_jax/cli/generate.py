"""CLI: sample from a training checkpoint and write text / PNG / WAV / video / Markdown answers.

    python -m mio_jax.generate (--workdir=DIR | --model=HF_DIR) --prompt=TEXT [--image=X.png]
        [--speech=X.wav]
        [--video=FRAMES_DIR|X.npy|X.gif] [--output_modality=auto|text|image|speech|video]
        [--preset=text|image|tts|speech|s2s|video|interleaved] [--history=FILE.json] [--interactive]
        [--video_format=gif|mp4] [--dtype=bfloat16|float32] [--tensor=N]
        [--tokenizers=DIR] [--step=N] [--chat] [--max_new_tokens=N] [--cfg_scale=S] [--seed=N]
        --out=DIR

Dashes work too (`--output-modality=image`). The prompt is laid out as in training
(mio_jax/generate/prompting.py): image/speech/video in → captioning / ASR / video captioning
(`--prompt` then replaces the instruction); text in with an image/speech/video output →
generation / TTS prompt (`--prompt` is what to draw or say); image in + image out → editing
(`--prompt` is the instruction); speech in + speech out → speech-to-speech (MIO's voice system
prompt, speech-only user turn); text only → plain continuation. An SFT checkpoint (config `stage`
4) uses the ChatML template; `--chat` / `--nochat` override.

`--model=DIR` samples from an HF directory as released (MIO-7B-Base/-Instruct: config.json with
MIO's vocab keys, safetensors or `pytorch_model*.bin` shards) instead of a training `--workdir`;
its tokenizers come from DIR/mio_jax_tokenizers, written once by
`python -m data_pipelines.convert_weights --from_mio=DIR` (or `--tokenizers=DIR`). Such a
directory does not say whether it is an instruction model: pass `--chat` for MIO-7B-Instruct.

Outputs: `auto` writes answer.md with the text and the images / speech inline, in generation order,
plus the parts; `video` writes keyframes and out.gif (or out.mp4). `--history=FILE.json` continues
a multi-turn chat (mio_jax/generate/chat.py) and writes OUT/history.json with the reply;
`--interactive` reads one user turn per stdin line until EOF, each reply in OUT/turnK/.
`--preset` picks MIO's decoding settings for a task (presets.py). With `--tensor` or `--dtype` the
params are loaded sharded over every device (fsdp x tensor) in that dtype (default bf16 above ~1B
params). Prints each written path on its own line. Paths may be gs:// URLs.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import flags

from mio_jax.cli import entry, placement_flags
from mio_jax.errors import UserError
from mio_jax.generate import chat as chat_lib
from mio_jax.generate import io, outputs, prompting
from mio_jax.generate.io import read_media_files
from mio_jax.generate.modes import chat_reply, default_budget, run, run_video, sample, write_outputs
from mio_jax.generate.presets import PRESETS, get_preset
from mio_jax.io import paths
from mio_jax.tokens import chat_format

__all__ = [
  "default_budget",
  "encode_prompt",
  "read_inputs",
  "read_media_files",
  "run",
  "run_video",
  "sample",
]

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "training workdir holding checkpoints/")
flags.DEFINE_string(
  "model",
  None,
  "instead of --workdir: an HF model directory as released (MIO-7B-Base/-Instruct; safetensors "
  "or pytorch_model*.bin), tokenizers from DIR/mio_jax_tokenizers (convert_weights --from_mio)",
)
flags.DEFINE_string("prompt", "", "text prompt")
flags.DEFINE_string("image", None, "input image (PNG/JPEG)")
flags.DEFINE_string("speech", None, "input speech (WAV)")
flags.DEFINE_string("video", None, "input video: a folder of frames, a .npy [N,H,W,3] or a GIF")
flags.DEFINE_enum(
  "output_modality",
  "auto",
  ["auto", "text", "image", "speech", "video"],
  "what to generate (video = keyframes, one image span after another)",
)
flags.DEFINE_enum("preset", None, sorted(PRESETS), "MIO's decoding settings for a task")
flags.DEFINE_string("history", None, "multi-turn chat: a JSON list of {role, content, media?}")
flags.DEFINE_bool("interactive", False, "chat: one user turn per stdin line until EOF")
flags.DEFINE_enum("video_format", "gif", list(outputs.VIDEO_FORMATS), "animation of the keyframes")
flags.DEFINE_string("tokenizers", None, "tokenizer dir (default: the config's data_dir/tokenizers)")
flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)")
flags.DEFINE_bool("chat", None, "ChatML prompt (default: on for SFT checkpoints, config stage 4)")
flags.DEFINE_string("out", None, "output directory")
flags.DEFINE_integer(
  "max_new_tokens",
  None,
  "generation budget (default: the preset's 512, else 256 text, one image, 4 x 500 speech frames)",
)
flags.DEFINE_float("cfg_scale", 1.0, "classifier-free guidance scale for image tokens (1 = off)")
flags.DEFINE_integer("beam_size", None, "beam search (default: the preset's, else 1; MIO: 5)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_bool(
  "print_prompt",
  False,
  'print {"prompt": MIO\'s prompt string, "ids": [...]} as one JSON line and exit (no decoding)',
)
flags.DEFINE_enum(
  "mode",
  None,
  list(chat_format.SYSTEM_MODES),
  "chat system prompt, as MIO's apply_chat_template: std, voice (speech replies; default for "
  "speech output), custom (the --history's first system turn)",
)
placement_flags.define()
flags.mark_flags_as_required(["out"])


def read_inputs(tokenizers, image=None, speech=None, video=None) -> prompting.Media:
  """Media files → codes with the media readers and the checkpoint's tokenizers."""
  raw = read_media_files(image, speech, video)
  return prompting.encode_media(tokenizers, **raw)


def encode_prompt(
  model: io.Loaded,
  text: str,
  media: prompting.Media,
  output_modality: str,
  chat: bool | None = None,
  mode: str | None = None,
) -> np.ndarray:
  """Prompt text and media codes → unified-vocab ids in the training layout of the implied task."""
  return prompting.encode_string(
    model.builder, prompt_string(model, text, media, output_modality, chat, mode)
  )


def prompt_string(model, text, media, output_modality, chat=None, mode=None) -> str:
  """The prompt as MIO writes it (mio_jax/tokens/chat_format.py): what `encode_prompt` encodes."""
  task = prompting.default_task(media, output_modality)
  use_chat = model.is_sft if chat is None else chat
  if mode == "custom":
    raise UserError("--mode=custom needs a --history whose first turn is the system prompt")
  if mode is None and use_chat and output_modality == "speech":
    mode = "voice"
  return prompting.prompt_string(model.builder, task, media, text, chat=use_chat, mode=mode)


def _print_prompt(string: str, ids) -> None:
  print(json.dumps({"prompt": string, "ids": [int(i) for i in ids]}, ensure_ascii=False))


def _chat(model, modality: str, sample_kw: dict) -> None:
  """--history and/or --interactive: each reply appended to the turns and OUT/history.json."""
  turns = chat_lib.load_history(FLAGS.history) if FLAGS.history else []
  mode = FLAGS.mode or ("voice" if modality == "speech" else None)  # None: std, or the history's
  history_out = paths.join(FLAGS.out, "history.json")
  if FLAGS.prompt or FLAGS.image or FLAGS.speech or FLAGS.video:
    media = {
      k: v
      for k, v in (("image", FLAGS.image), ("speech", FLAGS.speech), ("video", FLAGS.video))
      if v
    }
    turns.append(chat_lib.Turn("user", FLAGS.prompt, media))
  if FLAGS.print_prompt:
    media = [chat_lib.encode_turn_media(model.tokenizers, t, read_media_files) for t in turns]
    string = chat_lib.chat_string(model.builder, turns, media, mode=mode)
    return _print_prompt(string, prompting.encode_string(model.builder, string))
  if not FLAGS.interactive:
    _, written = _reply(model, turns, FLAGS.out, modality, mode, sample_kw)
    for p in written + [chat_lib.save_history(turns, history_out)]:
      print(p)
    return
  k = 0
  for line in sys.stdin:
    if not line.strip():
      continue
    turns.append(chat_lib.Turn("user", line.strip()))
    _, written = _reply(model, turns, paths.join(FLAGS.out, f"turn{k}"), modality, mode, sample_kw)
    for p in written + [chat_lib.save_history(turns, history_out)]:
      print(p, flush=True)
    k += 1


def _reply(model, turns, out_dir, modality, mode, sample_kw):
  return chat_reply(model, turns, out_dir, output_modality=modality, mode=mode, **sample_kw)


def main(argv):
  del argv
  io.check_model_flags(FLAGS.workdir, FLAGS.model, FLAGS.step)
  preset = get_preset(FLAGS.preset) if FLAGS.preset else None
  modality = FLAGS.output_modality
  if preset and not FLAGS["output_modality"].present:
    modality = preset.output_modality
  chatting = bool(FLAGS.history or FLAGS.interactive)
  if chatting and modality == "video":
    raise UserError("--history/--interactive chat replies cannot be video; pick another modality")
  # Everything the user named is checked before the (slow) checkpoint load.
  raw = read_media_files(FLAGS.image, FLAGS.speech, FLAGS.video)
  if FLAGS.history:
    chat_lib.load_history(FLAGS.history)
  if FLAGS.mode == "custom" and not FLAGS.history:
    raise UserError("--mode=custom needs a --history whose first turn is the system prompt")
  model = io.load_requested(
    FLAGS.workdir, FLAGS.model, FLAGS.step, FLAGS.tokenizers, **placement_flags.kwargs()
  )
  sample_kw = dict(
    max_new_tokens=FLAGS.max_new_tokens,
    cfg_scale=FLAGS.cfg_scale,
    beam_size=FLAGS.beam_size,
    seed=FLAGS.seed,
    preset=preset,
  )
  if chatting:
    return _chat(model, modality, sample_kw)
  media = prompting.encode_media(model.tokenizers, **raw)
  prompt_ids = encode_prompt(model, FLAGS.prompt, media, modality, FLAGS.chat, FLAGS.mode)
  if FLAGS.print_prompt:
    string = prompt_string(model, FLAGS.prompt, media, modality, FLAGS.chat, FLAGS.mode)
    return _print_prompt(string, prompt_ids)
  segments = sample(model, prompt_ids, modality, **sample_kw)
  for path in write_outputs(model, segments, FLAGS.out, modality, FLAGS.video_format):
    print(path)


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  entry.run(main, flags_parser=lambda argv: FLAGS(io.underscore_flags(argv)))
