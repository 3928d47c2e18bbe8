"""CLI: `python -m mio_jax.generate --workdir=DIR --prompt=TEXT [--image=X.png] [--speech=X.wav]
[--video=X] [--output_modality=auto|text|image|speech] --out=DIR`.

The generation itself is `run()` below (ids in → segments out). Loading the checkpoint, turning the
prompt and media into ids, and writing text / PNG / WAV / frames are the `load_model`,
`encode_prompt` and `write_segments` hooks, wired on top of mio_jax/checkpoint.py and
data_pipelines tokenizers.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from mio_jax.generate.api import generate
from mio_jax.generate.sampling import mio_sampling
from mio_jax.generate.segments import Segment, split_segments

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "training workdir holding checkpoints/ (or an HF export dir)")
flags.DEFINE_string("prompt", "", "text prompt")
flags.DEFINE_string("image", None, "input image (PNG/JPEG)")
flags.DEFINE_string("speech", None, "input speech (WAV)")
flags.DEFINE_string("video", None, "input video (keyframes)")
flags.DEFINE_enum("output_modality", "auto", ["auto", "text", "image", "speech"], "what to generate")
flags.DEFINE_string("out", None, "output directory")
flags.DEFINE_integer("max_new_tokens", 256, "generation budget")
flags.DEFINE_float("cfg_scale", 1.0, "classifier-free guidance scale for image tokens (1 = off)")
flags.DEFINE_integer("beam_size", 1, "beam search for text outputs (MIO: 5)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.mark_flags_as_required(["workdir", "out"])


def run(params, config, vocab, prompt_ids: np.ndarray, *, output_modality: str, max_new_tokens: int,
        cfg_scale: float = 1.0, beam_size: int = 1, seed: int = 0, stop_ids=None, bos_id=None,
        image_tokens: int = 32) -> list[Segment]:
  """One prompt's generation with MIO's decoding settings, split into per-modality segments."""
  out = generate(params, config, vocab, [prompt_ids], max_new_tokens=max_new_tokens,
                 sampling=mio_sampling(), output_modality=output_modality, cfg_scale=cfg_scale,
                 beam_size=beam_size, rng=jax.random.PRNGKey(seed), stop_ids=stop_ids, bos_id=bos_id,
                 image_tokens=image_tokens)[0]
  return split_segments(out, vocab)


def load_model(workdir: str):
  """→ (params, ModelConfig, Vocab, text tokenizer). To be wired to mio_jax/checkpoint.py."""
  raise NotImplementedError("checkpoint loading for generate is not wired yet")


def encode_prompt(tokenizers, vocab, text: str, image, speech, video) -> np.ndarray:
  """Prompt text and media → unified-vocab ids. To be wired to data_pipelines tokenizers."""
  raise NotImplementedError("prompt encoding for generate is not wired yet")


def write_segments(tokenizers, vocab, segments: list[Segment], out_dir: str) -> None:
  """Text → out.txt, image codes → PNG, speech codes [L, n] → WAV. To be wired to the tokenizers."""
  raise NotImplementedError("output decoding for generate is not wired yet")


def main(argv):
  del argv
  params, config, vocab, tokenizers = load_model(FLAGS.workdir)
  prompt_ids = encode_prompt(tokenizers, vocab, FLAGS.prompt, FLAGS.image, FLAGS.speech, FLAGS.video)
  segments = run(params, config, vocab, prompt_ids, output_modality=FLAGS.output_modality,
                 max_new_tokens=FLAGS.max_new_tokens, cfg_scale=FLAGS.cfg_scale,
                 beam_size=FLAGS.beam_size, seed=FLAGS.seed)
  write_segments(tokenizers, vocab, segments, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
