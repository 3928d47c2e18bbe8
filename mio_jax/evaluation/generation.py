"""Batched, data-parallel generation for the evaluation tasks (tasks.py) and their options.

Each batch is split over a 1-D mesh of all devices (`devices` limits it), the batch size rounded
up to a multiple of the device count; params sharded by a placement (big models, io.load_model)
are used as they are, the batch then replicated.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mio_jax.generate import io, prompting
from mio_jax.generate.api import generate
from mio_jax.generate.sampling import GREEDY, mio_sampling
from mio_jax.generate.segments import split_segments


@dataclasses.dataclass(frozen=True)
class Options:
  batch_size: int = 8
  max_text_tokens: int = 48
  max_speech_frames: int = 300  # TTS budget: 6 s at 50 Hz (demo utterances last at most ~5 s)
  cfg_scale: float = 1.0
  seed: int = 0
  chat: bool = False  # SFT layout for the tasks that have one (video QA always uses it)
  beam_size: int = 1  # text outputs (MIO decodes text with beam 5)
  greedy: bool = False  # argmax everywhere instead of MIO's sampling settings
  devices: int | None = None  # data parallel over the first N devices (None: all)
  tts_asr_model: str | None = None  # local Whisper folder: TTS WER from an external recogniser
  clip_model: str | None = None  # local CLIP folder: text-to-image CLIP similarity


_REPLICATED: dict = {}  # (id(params), n) -> (params, mesh, replicated params): the last model


def data_parallel(params, n: int):
  """(1-D mesh of the first n devices, params replicated on it), placed once per model."""
  key = (id(params), n)
  if key not in _REPLICATED or _REPLICATED[key][0] is not params:
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:n]), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    _REPLICATED.clear()
    _REPLICATED[key] = (params, mesh, jax.device_put(params, replicated))
  return _REPLICATED[key][1:]


def generate_batched(
  model: io.Loaded,
  prompts,
  output_modality: str,
  max_new_tokens: int,
  opts: Options,
  max_speech_tokens: int = 1500,
):
  """Segments per prompt, `batch_size` prompts per call. Every batch has the same size (the last
  is filled with copies) and prompts are padded to a multiple of 128: tasks share compiled programs.
  Batches are split over the devices (data parallel): bs is rounded up to a multiple of them."""
  bs = max(1, min(opts.batch_size, len(prompts)))
  params, mesh = model.params, None
  if getattr(model, "placement", None) is None:
    n = len(jax.devices()) if opts.devices is None else opts.devices
    if not 1 <= n <= len(jax.devices()):
      raise ValueError(f"devices={n}: this host has {len(jax.devices())}")
    bs = -(-bs // n) * n
    mesh, params = data_parallel(model.params, n)
  image_tokens = model.tokenizers.image.tokens_per_image if model.tokenizers.image else 32
  out = []
  for start in range(0, len(prompts), bs):
    chunk = list(prompts[start : start + bs])
    batch = chunk + [chunk[-1]] * (bs - len(chunk))
    ids = generate(
      params,
      model.model_cfg,
      model.vocab,
      batch,
      max_new_tokens=max_new_tokens,
      sampling=GREEDY if opts.greedy else mio_sampling(),
      output_modality=output_modality,
      batch_mesh=mesh,
      placement=getattr(model, "placement", None),
      cfg_scale=opts.cfg_scale if output_modality == "image" else 1.0,
      rng=jax.random.PRNGKey(opts.seed + start),
      image_tokens=image_tokens,
      max_speech_tokens=max_speech_tokens,
      stop_ids=prompting.stop_ids(model.builder),
      bos_id=model.builder.text.bos_id,
      pad_multiple=128,
      beam_size=opts.beam_size if output_modality == "text" else 1,
    )
    out += [split_segments(x, model.vocab) for x in ids[: len(chunk)]]
  return out
