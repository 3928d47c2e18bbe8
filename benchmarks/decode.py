"""Decode throughput: mio_jax.generate vs Hugging Face `generate`, measured in the same run.

    python -m benchmarks.decode [--model=small] [--prompt_len=32] [--new_tokens=32] [--batches=1,8]
        [--beam=5] [--beam_batch=1]

Both sides: the named model shape with random weights (ours: Flax init; HF: LlamaForCausalLM with
the same dims, f32), the same random prompt ids, greedy, exactly `new_tokens` new tokens per row
(no stop ids), KV cache on. Timed: the whole call (prefill + decode) after two warm-up calls, best
of `--repeats`, the two sides alternating. `--beam=K` (0 = off) adds beam search with K beams at
`--beam_batch` prompts on both sides (HF `num_beams=K`, length penalty 1, no early stop).
Ours runs with the modality constraints on
(`--output_modality`, default auto), as the CLI would. tokens/s = batch * new_tokens / seconds.
Prints one JSON line.

Single-threaded comparison (steadier on a shared CPU):
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
      python -m benchmarks.decode --torch_threads=1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax
import numpy as np

from mio_jax.generate import beam as beam_lib
from mio_jax.generate import constraints as cons
from mio_jax.generate import decode as dec
from mio_jax.generate import sampling as smp
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer


def best_times(fns, repeats: int) -> list[float]:
  """Best wall time of each fn; runs alternate so a noisy shared machine hits both alike."""
  for fn in fns:
    for _ in range(2):  # warm-up: compilation, allocator, HF generate caches
      fn()
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - start)
  return best


def init_params(cfg):
  tokens = np.ones((1, 4), np.int32)
  return jax.jit(lambda k: nn.meta.unbox(Transformer(cfg).init(k, tokens)["params"]))(
    jax.random.PRNGKey(0)
  )


def ours(cfg, vocab, params, prompt_BxT, new_tokens: int, modality: str):
  spec = dec.DecodeSpec(
    cfg,
    cons.Constraints(vocab, modality, stop_ids=()),
    new_tokens,
    smp.SamplingFeatures.of(smp.GREEDY),
  )
  segments = np.ones_like(prompt_BxT)
  table = smp.make_table(smp.GREEDY)

  def run():
    out, lengths = dec.decode(params, prompt_BxT, segments, jax.random.PRNGKey(0), table, spec=spec)
    assert int(np.asarray(lengths).min()) == new_tokens
    jax.block_until_ready(out)

  return run


def ours_beam(cfg, vocab, params, prompt_BxT, new_tokens: int, beams: int):
  spec = beam_lib.BeamSpec(cfg, cons.Constraints(vocab, "auto", stop_ids=()), new_tokens, beams)
  segments = np.ones_like(prompt_BxT)
  penalty = smp.make_table(smp.GREEDY).repetition_penalty

  def run():
    out, lengths, _ = beam_lib.beam_search(params, prompt_BxT, segments, penalty, spec=spec)
    assert int(np.asarray(lengths).min()) == new_tokens
    jax.block_until_ready(out)

  return run


def hf_llama(cfg):
  import torch
  import transformers

  config = transformers.LlamaConfig(
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.d_model,
    intermediate_size=cfg.ffn_dim,
    num_hidden_layers=cfg.n_layers,
    num_attention_heads=cfg.n_heads,
    num_key_value_heads=cfg.n_kv_heads,
    head_dim=cfg.head_dim,
    rms_norm_eps=cfg.norm_eps,
    rope_theta=cfg.rope_theta,
    rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
  )
  torch.manual_seed(0)
  return transformers.LlamaForCausalLM(config).eval()


def hf(model, prompt_BxT, new_tokens: int, beams: int = 1):
  import torch

  ids = torch.as_tensor(prompt_BxT, dtype=torch.long)

  def run():
    with torch.no_grad():
      out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=beams,
        use_cache=True,
        pad_token_id=0,
      )
    assert out.shape[1] == ids.shape[1] + new_tokens

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="small")
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--output_modality", default="auto")
  parser.add_argument("--beam", type=int, default=5, help="beams for the beam row (0 = none)")
  parser.add_argument("--beam_batch", type=int, default=1)
  parser.add_argument("--torch_threads", type=int, default=0, help="0 = torch's default")
  args = parser.parse_args()
  import torch
  import transformers

  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  cfg, vocab = get_model(args.model)
  model, params = hf_llama(cfg), init_params(cfg)
  result = {
    "benchmark": "decode",
    "model": args.model,
    "prompt_len": args.prompt_len,
    "new_tokens": args.new_tokens,
    "device": jax.devices()[0].device_kind,
    "torch_threads": torch.get_num_threads(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "transformers": transformers.__version__,
  }
  rng = np.random.default_rng(0)
  for b in (int(x) for x in args.batches.split(",")):
    prompt = rng.integers(0, vocab.text_size, (b, args.prompt_len)).astype(np.int32)
    t_ours, t_hf = best_times(
      [
        ours(cfg, vocab, params, prompt, args.new_tokens, args.output_modality),
        hf(model, prompt, args.new_tokens),
      ],
      args.repeats,
    )
    tokens = b * args.new_tokens
    result[f"batch{b}"] = {
      "ours_tokens_per_s": round(tokens / t_ours, 1),
      "hf_tokens_per_s": round(tokens / t_hf, 1),
      "ratio": round(t_hf / t_ours, 3),
    }
  if args.beam:
    b, k = args.beam_batch, args.beam
    prompt = rng.integers(0, vocab.text_size, (b, args.prompt_len)).astype(np.int32)
    t_ours, t_hf = best_times(
      [
        ours_beam(cfg, vocab, params, prompt, args.new_tokens, k),
        hf(model, prompt, args.new_tokens, k),
      ],
      args.repeats,
    )
    tokens = b * args.new_tokens  # returned tokens (the best beam per prompt)
    result[f"beam{k}"] = {
      "batch": b,
      "ours_tokens_per_s": round(tokens / t_ours, 1),
      "hf_tokens_per_s": round(tokens / t_hf, 1),
      "ratio": round(t_hf / t_ours, 3),
    }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
