"""Input pipeline throughput: packed tokens/s per host at seq 2,800 on a MIO-like mixture.

    python -m benchmarks.data_throughput [--seconds=10] [--data_dir=DIR] [--worker_count=0]

Writes synthetic shards (image-text ~60 tokens, speech-text ~300, interleaved ~1,500, text ~800;
example ratio 2:1:1:12, as stage 3), then times, in the same run:
  ours       mio_jax.data.make_train_iterator (parse + crc + id validation, streams, first-fit
             decreasing over 8-row windows)
  reference  ArrayRecord → decode → shuffle → repeat → mix → grain FirstFitPackIterDataset
             (64 bins) → batch 8
Prints one JSON line: tokens/s (non-pad tokens), slots/s and the non-pad fraction of each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import grain
import numpy as np

from mio_jax.data import format as fmt
from mio_jax.data import pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import MIO_VOCAB

SEQ_LEN, BATCH = 2800, 8


def write_corpus(root: str, scale: int) -> dict:
  sources = {}
  for i, (name, (mean, ratio)) in enumerate(synthetic.MIO_LIKE.items()):
    path = os.path.join(root, name)
    if not os.path.exists(os.path.join(path, fmt.MANIFEST)):
      examples = synthetic.random_examples(ratio * scale, mean, MIO_VOCAB, seed=i)
      synthetic.write_dataset(path, MIO_VOCAB, examples, data_type=name)
    sources[name] = name
  return sources


def timed(it, seconds: float, warmup: int = 3) -> dict:
  for _ in range(warmup):
    next(it)
  n = real = 0
  waits = []
  start, cpu_start = time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    t = time.perf_counter()
    batch = next(it)
    waits.append(time.perf_counter() - t)
    real += int((batch["segment_ids"] > 0).sum())
    n += 1
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  slots = n * BATCH * SEQ_LEN
  # CPU seconds of this process (all its threads; not worker processes): on a shared machine
  # wall-clock rates depend on the neighbours, tokens per CPU second much less.
  return {
    "tokens_per_s": round(real / elapsed),
    "slots_per_s": round(slots / elapsed),
    "non_pad_fraction": round(real / slots, 4),
    "tokens_per_cpu_s": round(real / max(cpu, 1e-9)),
    "batches": n,
    "p99_batch_ms": round(1e3 * float(np.percentile(waits, 99)), 2),
  }


def reference_iterator(root: str, sources: dict, weights: dict, seed: int):
  def decode(blob):
    tokens, loss_mask = fmt.decode_record(blob)
    return {"tokens": tokens, "loss_mask": loss_mask}

  parts = []
  for i, name in enumerate(sources):
    manifest = fmt.read_manifest(os.path.join(root, name))
    files = [os.path.join(root, name, s["file"]) for s in manifest["shards"]]
    ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(files)).map(decode)
    parts.append(ds.shuffle(seed=seed + i).repeat())
  mixed = grain.MapDataset.mix(parts, [weights[n] for n in sources]).to_iter_dataset()
  packed = grain.experimental.FirstFitPackIterDataset(
    mixed, length_struct={"tokens": SEQ_LEN, "loss_mask": SEQ_LEN}, num_packing_bins=64, seed=seed
  )
  batched = packed.batch(BATCH).map(lambda b: {"segment_ids": b["tokens_segment_ids"], **b})
  return iter(batched)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--scale", type=int, default=300, help="examples per unit of ratio")
  parser.add_argument("--worker_count", type=int, default=0)
  parser.add_argument("--pack_rows", type=int, default=8)
  parser.add_argument("--skip_reference", action="store_true")
  args = parser.parse_args()
  root = args.data_dir or tempfile.mkdtemp(prefix="mio_data_bench_")
  sources = write_corpus(root, args.scale)
  weights = {name: float(ratio) for name, (_, ratio) in synthetic.MIO_LIKE.items()}
  config = synthetic.data_config(
    root,
    sources,
    weights,
    seq_len=SEQ_LEN,
    global_batch=BATCH,
    worker_count=args.worker_count,
    pack_rows=args.pack_rows,
  )
  if args.worker_count:
    from absl import flags  # pylint: disable=g-import-not-at-top

    flags.FLAGS.mark_as_parsed()
  ours_it = pipeline.make_train_iterator(config, MIO_VOCAB, 0, 1)
  ours = timed(ours_it, args.seconds)
  if args.worker_count:
    ours.pop("tokens_per_cpu_s")  # the work runs in worker processes this process cannot time
  if hasattr(ours_it, "close"):
    ours_it.close()
  result = {
    "benchmark": "data_throughput",
    "seq_len": SEQ_LEN,
    "batch": BATCH,
    "cpus": os.cpu_count(),
    "worker_count": args.worker_count,
    "pack_rows": args.pack_rows,
    "ours": ours,
  }
  if not args.skip_reference:
    result["reference_first_fit_64_bins"] = timed(
      reference_iterator(root, sources, weights, 0), args.seconds
    )
  result["tokens_per_s"] = ours["tokens_per_s"]
  if not args.data_dir:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
