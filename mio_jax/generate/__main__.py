"""CLI: sample from a training checkpoint and write text / PNG / WAV / video frames.

    python -m mio_jax.generate --workdir=DIR --prompt=TEXT [--image=X.png] [--speech=X.wav]
        [--video=FRAMES_DIR|X.npy|X.gif] [--output_modality=auto|text|image|speech|video]
        [--tokenizers=DIR] [--step=N] [--chat] [--max_new_tokens=N] [--cfg_scale=S] [--seed=N] --out=DIR

Dashes work too (`--output-modality=image`). The prompt is laid out as in training
(mio_jax/generate/prompting.py): image/speech/video in → captioning / ASR / video captioning
(`--prompt` then replaces the instruction); text in with an image/speech/video output →
generation / TTS prompt (`--prompt` is what to draw or say); text only → plain continuation. An SFT
checkpoint (config `stage` 4) uses the ChatML template; `--chat` / `--nochat` override.
Prints each written path on its own line. `--out`, `--tokenizers` and the media inputs may be
gs:// URLs.
"""

from __future__ import annotations


import jax
import numpy as np
from absl import flags

from mio_jax import checkpoint
from mio_jax.errors import UserError
from mio_jax.generate import io, prompting
from mio_jax.generate.api import generate
from mio_jax.generate.sampling import mio_sampling
from mio_jax.generate.segments import Segment, split_segments

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "training workdir holding checkpoints/")
flags.DEFINE_string("prompt", "", "text prompt")
flags.DEFINE_string("image", None, "input image (PNG/JPEG)")
flags.DEFINE_string("speech", None, "input speech (WAV)")
flags.DEFINE_string("video", None, "input video: a folder of frames, a .npy [N,H,W,3] or a GIF")
flags.DEFINE_enum("output_modality", "auto", ["auto", "text", "image", "speech", "video"],
                  "what to generate (video = keyframes, one image span after another)")
flags.DEFINE_string("tokenizers", None, "tokenizer dir (default: the config's data_dir/tokenizers)")
flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)")
flags.DEFINE_bool("chat", None, "ChatML prompt (default: on for SFT checkpoints, config stage 4)")
flags.DEFINE_string("out", None, "output directory")
flags.DEFINE_integer("max_new_tokens", None, "generation budget (default: 256 text, one image, "
                     "4 x 500 speech frames)")
flags.DEFINE_float("cfg_scale", 1.0, "classifier-free guidance scale for image tokens (1 = off)")
flags.DEFINE_integer("beam_size", 1, "beam search for text outputs (MIO: 5)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.mark_flags_as_required(["workdir", "out"])

MAX_SPEECH_FRAMES = 500  # 10 s at 50 Hz


def default_budget(output_modality: str, vocab, image_tokens: int, frames: int = MAX_SPEECH_FRAMES) -> int:
  return {"image": image_tokens + 2, "video": image_tokens + 2,
          "speech": vocab.speech_layers * frames + 2}.get(output_modality, 256)


def run(params, config, vocab, prompt_ids: np.ndarray, *, output_modality: str, max_new_tokens: int,
        cfg_scale: float = 1.0, beam_size: int = 1, seed: int = 0, stop_ids=None, bos_id=None,
        image_tokens: int = 32) -> list[Segment]:
  """One prompt's generation with MIO's decoding settings, split into per-modality segments."""
  # A speech span may use the whole budget: content frames = (budget - 2 markers) / layers.
  frames = max(1, (max_new_tokens - 2) // vocab.speech_layers)
  out = generate(params, config, vocab, [prompt_ids], max_new_tokens=max_new_tokens,
                 sampling=mio_sampling(), output_modality=output_modality, cfg_scale=cfg_scale,
                 beam_size=beam_size, rng=jax.random.PRNGKey(seed), stop_ids=stop_ids, bos_id=bos_id,
                 image_tokens=image_tokens, max_speech_tokens=frames)[0]
  return split_segments(out, vocab)


def run_video(params, config, vocab, prompt_ids, *, keyframes: int, seed: int = 0, **kw) -> list[Segment]:
  """Keyframes one after another: each image span is appended to the prompt for the next, as the
  video layouts hold consecutive image spans."""
  segments, ids = [], np.asarray(prompt_ids, np.int32)
  for k in range(keyframes):
    seg = run(params, config, vocab, ids, output_modality="image", seed=seed + k, **kw)
    image = [s for s in seg if s.modality == "image" and s.complete]
    if not image:
      break
    segments.append(image[0])
    ids = np.concatenate([ids, [vocab.special_id("<image>")], image[0].ids, [vocab.special_id("</image>")]])
  return segments


def read_media_files(image=None, speech=None, video=None) -> dict:
  """Decoded media (no tokenizer needed yet); UserError naming a file that cannot be read."""
  from mio_jax.media import read_image, read_video, read_wav
  out = {"image": None, "speech": None, "video": None, "sample_rate": None}
  for flag, value, read in (("image", image, read_image), ("speech", speech, read_wav),
                            ("video", video, read_video)):
    if not value:
      continue
    try:
      decoded = read(value)
    except (OSError, ValueError) as e:  # missing file, unknown format, corrupt data
      raise UserError(f"--{flag}={value}: cannot read it ({type(e).__name__}: {e})") from e
    if flag == "speech":
      out["speech"], out["sample_rate"] = decoded
    else:
      out[flag] = decoded
  return out


def read_inputs(tokenizers, image=None, speech=None, video=None) -> prompting.Media:
  """Media files → codes with the media readers and the checkpoint's tokenizers."""
  from mio_jax.media import read_image, read_video, read_wav
  wave, rate = read_wav(speech) if speech else (None, None)
  return prompting.encode_media(tokenizers, image=read_image(image) if image else None, speech=wave,
                                video=read_video(video) if video else None, sample_rate=rate)


def encode_prompt(model: io.Loaded, text: str, media: prompting.Media, output_modality: str,
                  chat: bool | None = None) -> np.ndarray:
  """Prompt text and media codes → unified-vocab ids in the training layout of the implied task."""
  task = prompting.default_task(media, output_modality)
  use_chat = model.is_sft if chat is None else chat
  return prompting.build_prompt(model.builder, task, media, text, chat=use_chat)


def sample(model: io.Loaded, prompt_ids, output_modality: str, max_new_tokens: int | None = None,
           cfg_scale: float = 1.0, beam_size: int = 1, seed: int = 0) -> list[Segment]:
  image_tokens = model.tokenizers.image.tokens_per_image if model.tokenizers.image else 32
  budget = max_new_tokens or default_budget(output_modality, model.vocab, image_tokens)
  kw = dict(max_new_tokens=budget, cfg_scale=cfg_scale, seed=seed,
            stop_ids=prompting.stop_ids(model.builder), bos_id=model.builder.text.bos_id,
            image_tokens=image_tokens)
  if output_modality == "video":
    keyframes = getattr(model.tokenizers.video, "num_keyframes", 4)
    return run_video(model.params, model.model_cfg, model.vocab, prompt_ids, keyframes=keyframes, **kw)
  return run(model.params, model.model_cfg, model.vocab, prompt_ids, output_modality=output_modality,
             beam_size=beam_size, **kw)


def main(argv):
  del argv
  # Everything the user named is checked before the (slow) checkpoint load.
  raw = read_media_files(FLAGS.image, FLAGS.speech, FLAGS.video)
  checkpoint.latest_step_dir(FLAGS.workdir)  # NoCheckpointError: one line, exit 2
  model = io.load_model(FLAGS.workdir, FLAGS.step, FLAGS.tokenizers)
  media = prompting.encode_media(model.tokenizers, **raw)
  prompt_ids = encode_prompt(model, FLAGS.prompt, media, FLAGS.output_modality, FLAGS.chat)
  segments = sample(model, prompt_ids, FLAGS.output_modality, FLAGS.max_new_tokens, FLAGS.cfg_scale,
                    FLAGS.beam_size, FLAGS.seed)
  for path in io.write_segments(model.tokenizers, segments, FLAGS.out,
                                video=FLAGS.output_modality == "video"):
    print(path)


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  from mio_jax import entry
  entry.run(main, flags_parser=lambda argv: FLAGS(io.underscore_flags(argv)))


if __name__ == "__main__":
  cli()
