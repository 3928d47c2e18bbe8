"""The Python entry point the CLI uses: list of prompt id arrays in, list of generated id arrays
out."""

from __future__ import annotations

import contextlib

import jax
import numpy as np

from mio_jax.generate import beam as beam_lib
from mio_jax.generate import constraints as cons
from mio_jax.generate import decode as dec
from mio_jax.generate import sampling as smp
from mio_jax.model.architecture import ModelConfig
from mio_jax.tokens.vocab import Vocab


def left_pad(prompts, pad_id: int, multiple: int = 1):
  """Stack 1-D id arrays into ([B, T] tokens, [B, T] segment ids), padded on the left.
  T is rounded up to `multiple` so nearby prompt lengths share one compiled program."""
  prompts = [np.asarray(p, np.int32).ravel() for p in prompts]
  if not prompts or any(p.size == 0 for p in prompts):
    raise ValueError("need at least one prompt, each with at least one token")
  t = max(p.size for p in prompts)
  t = -(-t // multiple) * multiple
  tokens = np.full((len(prompts), t), pad_id, np.int32)
  segments = np.zeros((len(prompts), t), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, t - p.size :] = p
    segments[i, t - p.size :] = 1
  return tokens, segments


def default_null_prompt(vocab: Vocab, bos_id: int | None = None) -> np.ndarray:
  """The unconditional prompt for CFG, as null-prompt dropout builds it in training
  (mio_jax/tokens/layouts.py): `<bos> <cfg_null>`, the whole prompt replaced."""
  null = [vocab.special_id("<cfg_null>")]
  return np.asarray(null if bos_id is None else [bos_id] + null, np.int32)


def _batch_sharder(mesh, batch: int, placement=None):
  """Places [B, ...] arrays split over `mesh`'s one axis (identity without a mesh)."""
  if mesh is None:
    return lambda x: x
  if placement is not None:
    raise ValueError("batch_mesh (data parallel) and placement (sharded params) do not combine")
  if len(mesh.axis_names) != 1 or batch % mesh.size:
    raise ValueError(
      f"data-parallel generation needs a 1-D mesh dividing the batch: batch "
      f"{batch}, mesh {dict(mesh.shape)}"
    )
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
  return lambda x: None if x is None else jax.device_put(x, spec)


def generate(
  params,
  config: ModelConfig,
  vocab: Vocab,
  prompts,
  *,
  max_new_tokens: int,
  sampling: smp.Sampling = smp.GREEDY,
  output_modality: str = "auto",
  cfg_scale: float = 1.0,
  null_prompts=None,
  rng=None,
  image_tokens: int = 32,
  max_speech_tokens: int = 1500,
  stop_ids: tuple[int, ...] | None = None,
  beam_size: int = 1,
  length_penalty: float = 1.0,
  bos_id: int | None = None,
  pad_multiple: int = 16,
  return_lengths: bool = False,
  placement=None,
  batch_mesh=None,
):
  """Generate continuations of `prompts` (1-D arrays of unified-vocab ids).

  output_modality: 'auto' (the model picks; spans stay well-formed), 'text', 'image' or 'speech'
  (the output is exactly one span, e.g. `<image> c_1..c_N </image>`).
  cfg_scale != 1: classifier-free guidance on image tokens against `null_prompts` (default
  `<bos> <cfg_null>` as in training's null-prompt dropout; BOS only if `bos_id` is given).
  stop_ids: None = (`<|im_end|>`,), () = never stop; pretraining examples end with the text
  tokenizer's EOS, so the CLI should pass (eos_id, <|im_end|>).
  beam_size > 1: beam search under the same modality constraints (any output_modality, so image
  and speech spans too, as MIO decodes them; no CFG; of the sampling settings only the repetition
  penalty applies). Returns one id array per prompt, ending with its stop / closing token if any;
  with `return_lengths`, the padded [B, max_new_tokens] array and [B] lengths instead.
  placement: a mio_jax.parallel.placement.Placement when `params` are sharded over its mesh.
  batch_mesh: data parallel instead: a 1-D mesh over which the prompt batch is split (B must
  divide evenly; params replicated), so every chip decodes its share of the batch.
  """
  stop = None if stop_ids is None else tuple(stop_ids)
  constraints = cons.Constraints(vocab, output_modality, image_tokens, max_speech_tokens, stop)
  if max_new_tokens < constraints.min_budget():
    raise ValueError(
      f"max_new_tokens={max_new_tokens} cannot hold one {output_modality} span "
      f"(needs {constraints.min_budget()})"
    )
  if config.vocab_size < vocab.size:
    raise ValueError(f"model has {config.vocab_size} vocab rows, vocab needs {vocab.size}")
  pad_id = vocab.special_id("<pad>")
  tokens, segments = left_pad(prompts, pad_id, pad_multiple)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  shard = _batch_sharder(batch_mesh, len(prompts), placement)
  features = smp.SamplingFeatures.of(sampling)
  table = smp.make_table(sampling)

  context = placement.context() if placement is not None else contextlib.nullcontext()
  if beam_size > 1:
    if cfg_scale != 1.0:
      raise ValueError("beam search does not combine with CFG: use cfg_scale 1 or beam_size 1")
    spec = beam_lib.BeamSpec(
      config, constraints, max_new_tokens, beam_size, float(length_penalty), features.penalty
    )
    with context:
      out, lengths, _ = beam_lib.beam_search(
        params, shard(tokens), shard(segments), table.repetition_penalty, spec=spec
      )
  else:
    use_cfg = cfg_scale != 1.0
    null_tokens = null_segments = None
    if use_cfg:
      nulls = null_prompts
      if nulls is None:
        nulls = [default_null_prompt(vocab, bos_id)] * len(prompts)
      if len(nulls) != len(prompts):
        raise ValueError(f"{len(nulls)} null prompts for {len(prompts)} prompts")
      # Pad both halves to one T so they share the cache.
      both, both_seg = left_pad(list(prompts) + list(nulls), pad_id, pad_multiple)
      tokens, null_tokens = both[: len(prompts)], both[len(prompts) :]
      segments, null_segments = both_seg[: len(prompts)], both_seg[len(prompts) :]
    spec = dec.DecodeSpec(config, constraints, max_new_tokens, features, use_cfg)
    with context:
      out, lengths = dec.decode(
        params,
        shard(tokens),
        shard(segments),
        rng,
        table,
        float(cfg_scale),
        shard(null_tokens),
        shard(null_segments),
        spec=spec,
      )
  out, lengths = np.asarray(out), np.asarray(lengths)
  if return_lengths:
    return out, lengths
  return [out[i, : lengths[i]] for i in range(out.shape[0])]
