"""PyTorch baseline at the same shape: `python -m benchmarks.torch_baseline --shape=S0`.

HF transformers LlamaForCausalLM (SDPA attention, untied head) + torch.optim.AdamW + grad-norm
clipping, CPU threads = cores. Prints the same JSON fields as benchmarks.train_step; MFU uses the
same FLOPs formula and the same measured CPU peak (a jax matmul) so the two are comparable.
"""

from __future__ import annotations

import json
import os
import resource
import time

from absl import app, flags

from benchmarks.train_step import (
  SHAPES,
  current_rss_mb,
  flops_per_token,
  host_fields,
  pin_one_core,
  random_batch,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("shape", "S0", "Benchmark shape (see benchmarks.train_step.SHAPES).")
flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = all cores).")
flags.DEFINE_bool("one_core", False, "Pin the process to one CPU core (as benchmarks.train_step).")


def main(argv):
  del argv
  if FLAGS.one_core:
    pin_one_core()
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  rss_imports = current_rss_mb()
  shape = SHAPES[FLAGS.shape]
  torch.set_num_threads(FLAGS.threads or os.cpu_count())
  torch.manual_seed(0)
  cfg = LlamaConfig(
    vocab_size=shape["vocab"],
    hidden_size=shape["d_model"],
    intermediate_size=shape["ffn_dim"],
    num_hidden_layers=shape["n_layers"],
    num_attention_heads=shape["n_heads"],
    num_key_value_heads=shape["n_kv_heads"],
    max_position_embeddings=shape["seq_len"],
    tie_word_embeddings=False,
    attn_implementation="sdpa",
    torch_dtype=torch.float32,
  )
  model = LlamaForCausalLM(cfg)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
  batches = []
  for i in range(2):
    b = random_batch(i, shape["batch"], shape["seq_len"], shape["vocab"])
    batches.append((torch.from_numpy(b["tokens"]).long(), torch.from_numpy(b["targets"]).long()))

  def step(tokens, targets):
    logits = model(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  for i in range(2):
    step(*batches[i % 2])
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(FLAGS.steps):
    loss = step(*batches[i % 2])
  step_time = (time.perf_counter() - t0) / FLAGS.steps
  cpu_time = (time.process_time() - c0) / FLAGS.steps  # all threads; steadier on a shared host

  tokens_per_s = shape["batch"] * shape["seq_len"] / step_time
  fpt = flops_per_token(shape)
  from mio_jax.train import mfu  # after timing: jax's thread pool must not compete with torch

  peak = mfu.total_peak_flops(shape["dtype"])
  print(
    json.dumps(
      {
        "impl": "torch",
        "shape": FLAGS.shape,
        "dtype": shape["dtype"],
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "one_core": FLAGS.one_core,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_time_s": round(step_time, 4),
        "step_cpu_s": round(cpu_time, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": rss_imports,
        "mfu": round(mfu.mfu(fpt, tokens_per_s, peak), 4),
        "flops_per_token": fpt,
        "peak_flops": peak,
        "loss": round(float(loss), 4),
        **host_fields(),
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
