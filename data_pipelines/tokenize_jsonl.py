"""Local tokenization of a JSONL manifest of raw examples into shard datasets (one per data type).

    python -m data_pipelines.tokenize_jsonl --manifest=raw/train.jsonl --tokenizers=TOK_DIR \
        --out=OUT [--suffix=_val] [--strict] [--cfg_prob=0.1] [--seed=0] [--loss=all] \
        [--runtime=jax --encode_batch=256]

Writes OUT/<data_type><suffix>/ (manifest.json + shards) for every data type present, records in
manifest order. The Beam job (`beam_tokenize.py`) runs the same per-line function and writes the
same bytes. Bad inputs are skipped with a message naming the line and file, counted and summarised
at the end; `--strict` makes the first one an error. The manifest, media, `--tokenizers` and `--out`
may be gs:// URLs (shards are staged locally and uploaded; see mio_jax/data/format.py).

`--runtime=jax` computes SEED image codes and SpeechTokenizer speech codes with the JAX encoders
(mio_jax/encoders) in sharded batches on every local device (`JaxEncoder`,
data_pipelines/accelerated_encoding.py); everything else, records included, is the same code, so
float32 codes give the torch runtime's bytes. Under several JAX processes each takes every
process_count-th line and writes its own datasets (`<type><suffix>_host<i>of<n>`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import deque

import numpy as np

from data_pipelines import accelerated_encoding as accel
from data_pipelines.builders import BadExample, Builder, RawOptions, tokenize_raw
from data_pipelines.report import Report
from mio_jax.cli import entry
from mio_jax.data.format import ShardWriter, encode_record
from mio_jax.errors import UserError
from mio_jax.io import paths
from mio_jax.model.sizes import MODELS, get_model
from mio_jax.tokens.tokenizers import TOKENIZER_JSON


def read_jsonl(path: str):
  """-> list of (index, example dict or None, where). A line that is not JSON yields None."""
  out = []
  try:
    text = paths.read_text(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"manifest not found: {path}") from None
  for i, line in enumerate(text.splitlines()):
    if not line.strip():
      continue
    where = f"{path}:{i + 1}"
    try:
      example = json.loads(line)
    except json.JSONDecodeError:
      example = None
    out.append((i, example, where))
  return out


def encode_line(
  index: int,
  example,
  where: str,
  builder: Builder,
  toks,
  opts: RawOptions,
  notes: list | None = None,
):
  """The per-example function both runners share: -> list of (data_type, record bytes).
  Raises BadExample naming `where`; `notes` collects e.g. "resampled_audio" for the report."""
  if example is None:
    raise BadExample("bad_json", f"{where}: not a JSON object")
  return [
    (kind, encode_record(tokens, mask))
    for kind, tokens, mask in tokenize_raw(example, index, builder, toks, opts, where, notes)
  ]


def write_datasets(
  out_dir: str,
  records,
  vocab,
  suffix: str = "",
  source: str = "",
  license: str = "",
  max_shard_bytes: int = 64 << 20,
) -> dict:
  """Writes (data_type, tokens, loss_mask) in the given order; -> {dataset name: manifest}.
  When anything fails (a bad line under --strict, a full disk), every dataset this call started
  is removed again: no shard is ever left without its manifest."""
  writers = {}
  try:
    for kind, tokens, mask in records:
      if kind not in writers:
        writers[kind] = ShardWriter(
          paths.join(out_dir, kind + suffix),
          vocab,
          data_type=kind,
          source=source,
          license=license,
          max_shard_bytes=max_shard_bytes,
        )
      writers[kind].write(tokens, mask)
    return {kind + suffix: w.close() for kind, w in sorted(writers.items())}
  except BaseException:
    for w in writers.values():  # finished ones keep their manifest; the rest go
      w.abort()
    raise


class Encoder:
  """Runs `encode_line` over lines, in order, in `workers` processes (1 = in this process).

  Workers are spawned with single-threaded BLAS: the tokenizers do many tiny matmuls, which
  multi-threaded OpenBLAS slows down by 10-70x on a busy machine.
  """

  def __init__(self, tokenizers_dir: str, vocab, loss: str = "all", workers: int = 1):
    self.args, self.workers, self.pool = (tokenizers_dir, vocab, loss), workers, None

  def __enter__(self):
    if self.workers > 1:
      import multiprocessing

      env = {k: os.environ.get(k) for k in _THREAD_VARS}
      os.environ.update({k: "1" for k in _THREAD_VARS})  # inherited by the spawned workers
      try:
        self.pool = multiprocessing.get_context("spawn").Pool(self.workers, _init_worker, self.args)
      finally:
        for k, v in env.items():
          os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    else:
      _init_worker(*self.args)
    return self

  def __exit__(self, exc_type, *_):
    if self.pool is not None:
      self.pool.terminate() if exc_type else self.pool.close()
      self.pool.join()

  def encode(self, lines, opts: RawOptions):
    """Yields ("ok", [(data_type, record bytes)], notes) or ("skip", reason, message) per line,
    in order."""
    jobs = [(line, opts) for line in lines]
    if self.pool is None:
      return map(_encode_job, jobs)
    return self.pool.imap(_encode_job, jobs, chunksize=8)


_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_WORKER = {}


def _init_worker(tokenizers_dir, vocab, loss):
  from data_pipelines.tokenizers import load_tokenizers

  toks = load_tokenizers(tokenizers_dir)
  check_tokenizers(toks, vocab)
  _WORKER.update(toks=toks, builder=Builder(vocab, toks.text, loss))


def _encode_job(job):
  (index, example, where), opts = job
  notes = []
  try:
    encoded = encode_line(index, example, where, _WORKER["builder"], _WORKER["toks"], opts, notes)
    return ("ok", encoded, notes)
  except (
    BadExample
  ) as e:  # returned, not raised: a custom exception does not cross processes cleanly
    return ("skip", e.reason, str(e))


class JaxEncoder:
  """`Encoder`'s interface (`encode(lines, opts)` yields one result per line, in order) with SEED
  image and SpeechTokenizer speech codes computed by the JAX encoders, `encode_batch` media per
  call sharded over a 1-D "data" mesh of this process's devices (rounded up to a multiple of
  their count). Other tokenizer kinds (and video) run as in `Encoder`, in this process. Media
  are read and preprocessed by `decode_threads` Grain threads; see accelerated_encoding.py."""

  def __init__(
    self,
    tokenizers_dir: str,
    vocab,
    loss: str = "all",
    encode_batch: int = 32,
    compute_dtype: str = "float32",
    decode_threads: int = 4,
    progress_every_s: float = 30.0,
    stream=None,
  ):
    self.tokenizers_dir, self.vocab, self.loss = tokenizers_dir, vocab, loss
    self.encode_batch, self.compute_dtype = encode_batch, compute_dtype
    self.decode_threads, self.progress_every_s = decode_threads, progress_every_s
    self.stream = stream or sys.stderr  # looked up now: a test's or a caller's redirection

  def _kind(self, part: str) -> str | None:
    meta = paths.join(self.tokenizers_dir, part, TOKENIZER_JSON)
    return json.loads(paths.read_text(meta)).get("kind") if paths.exists(meta) else None

  def __enter__(self):
    from data_pipelines.tokenizers import load_tokenizers

    toks = load_tokenizers(self.tokenizers_dir)
    check_tokenizers(toks, self.vocab)
    self.builder = Builder(self.vocab, toks.text, self.loss)
    mesh = accel.data_mesh()
    batch = accel.sharded_batch(self.encode_batch, mesh.size)
    if batch != self.encode_batch:
      print(
        f"--encode_batch={self.encode_batch} rounded up to {batch}, a multiple of the "
        f"{mesh.size} local devices",
        file=self.stream,
      )
    encoders, hooks = {}, {}
    if toks.image is not None and self._kind("image") == "seed":
      encoders[accel.IMAGE] = accel.seed_image_encoder(
        paths.join(self.tokenizers_dir, "image"), mesh, self.compute_dtype
      )
      codes_per_image = int(toks.image.tokens_per_image)
      hooks[accel.IMAGE] = (
        lambda image: accel.image_pixels(toks.image, image),
        lambda _: np.zeros(codes_per_image, np.int32),
      )
    if toks.speech is not None and self._kind("speech") == "speechtokenizer":
      encoders[accel.SPEECH], config = accel.speech_encoder(
        paths.join(self.tokenizers_dir, "speech"),
        toks.speech.num_layers,
        mesh,
        self.compute_dtype,
      )
      hooks[accel.SPEECH] = (
        lambda wave, rate: accel.speech_wave(toks.speech, wave, rate),
        lambda wave: np.zeros((config.num_layers, config.num_frames(wave.size)), np.int32),
      )
    others = [p for p in ("image", "speech") if getattr(toks, p) is not None and p not in hooks]
    if others:
      print(f"--runtime=jax: {', '.join(others)} codes from their own tokenizer", file=self.stream)
    self.parts = accel.MediaParts(toks, hooks)
    self.batcher = accel.MediaBatcher(encoders, batch, mesh.size)
    # Lines waiting for a batch to fill; past this many, the partial batches run (padded).
    self.window = 8 * batch
    return self

  def __exit__(self, *_):
    pass

  def encode(self, lines, opts: RawOptions):
    """Yields ("ok", [(data_type, record bytes)], notes) or ("skip", reason, message) per line,
    in order, as `Encoder.encode`."""
    lines = list(lines)
    batcher, codes = self.batcher, self.batcher.codes
    progress = accel.Progress(len(lines), self.stream, self.progress_every_s, "tokenize_jsonl")
    media_of_lines = accel.collected(lines, self.parts, self.builder, opts, self.decode_threads)
    waiting = deque()  # (position, line, media keys), in order
    for position, (line, media) in enumerate(zip(lines, media_of_lines)):
      for kind, key, array in media:
        batcher.add(kind, key, array)
      waiting.append((position, line, [key for _, key, _ in media]))
      batcher.run_full()
      if len(waiting) >= self.window:
        batcher.flush()
      while waiting and all(key in codes for key in waiting[0][2]):
        yield self._build(*waiting.popleft(), opts, progress)
    batcher.flush()
    while waiting:
      yield self._build(*waiting.popleft(), opts, progress)

  def _build(self, position, line, keys, opts, progress):
    (index, example, where), notes = line, []
    toks = self.parts.lookup(position, self.batcher.codes)
    # Reported before the line is handed on: the caller stops at the last line, not after it.
    progress.update(position + 1, self.batcher.batches, final=position + 1 == progress.total)
    try:
      return ("ok", encode_line(index, example, where, self.builder, toks, opts, notes), notes)
    except BadExample as e:
      return ("skip", e.reason, str(e))
    finally:
      for key in keys:  # a line that failed part-way leaves codes it never asked for
        self.batcher.codes.pop(key, None)


def tokenize_lines(lines, encoder: Encoder, opts: RawOptions, report: Report):
  """Yields (data_type, tokens, loss_mask) for every good line, in order; skips go to `report`."""
  from mio_jax.data.format import decode_record

  for (_, _, where), result in zip(lines, encoder.encode(lines, opts)):
    if result[0] == "skip":
      report.skip(BadExample(result[1], result[2]))
      continue
    report.ok(result[1], result[2])
    for kind, blob in result[1]:
      yield (kind, *decode_record(blob, where))


def run(
  manifest,
  tokenizers_dir: str,
  out_dir: str,
  vocab,
  suffix: str = "",
  strict: bool = False,
  opts: RawOptions | None = None,
  loss: str = "all",
  source: str = "",
  license: str = "",
  stream=sys.stderr,
  workers: int = 1,
  encoder: Encoder | None = None,
) -> Report:
  """Tokenizes a JSONL manifest (path) or a list of (index, example, where) lines (e.g. from
  `beam_sources.tfds_lines`) into OUT/<type><suffix>/. Pass `encoder` to reuse its worker pool."""
  lines, source, opts = resolve_input(manifest, source, opts)
  report = Report(strict=strict, stream=stream)
  with (
    contextlib.nullcontext(encoder) if encoder else Encoder(tokenizers_dir, vocab, loss, workers)
  ) as enc:
    write_datasets(
      out_dir, tokenize_lines(lines, enc, opts, report), vocab, suffix, source, license
    )
  return report


def resolve_input(manifest, source: str = "", opts: RawOptions | None = None):
  """-> (lines, source note, options); relative media paths resolve against the manifest's
  folder."""
  if isinstance(manifest, str):
    opts = opts or RawOptions(base_dir=paths.parent(paths.absolute(manifest)))
    return read_jsonl(manifest), source or f"tokenized from {manifest}", opts
  return list(manifest), source or "tokenized from in-memory lines", opts or RawOptions()


def vocab_for(name: str):
  """The unified vocab of a model name in the registry (mio_jax/model/sizes.py)."""
  return get_model(name)[1]


def check_tokenizers(toks, vocab) -> None:
  """Tokenizers must fit the vocab's ranges, or ids would spill into the next block."""
  if toks.text is None:
    raise ValueError("a text tokenizer is required (tokenizers dir has no text/)")
  if toks.image is not None and toks.image.codebook_size > vocab.image_codes:
    raise ValueError(
      f"image tokenizer has {toks.image.codebook_size} codes, vocab {vocab.image_codes}"
    )
  if toks.speech is not None and (
    toks.speech.num_layers != vocab.speech_layers or toks.speech.codebook_size > vocab.speech_codes
  ):
    raise ValueError(
      f"speech tokenizer is {toks.speech.num_layers}x{toks.speech.codebook_size}, vocab "
      f"{vocab.speech_layers}x{vocab.speech_codes}"
    )


def add_flags(p: argparse.ArgumentParser) -> None:
  """Flags shared by this runner and the Beam job."""
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--manifest", help="JSONL of raw examples (schema: builders/raw.py)")
  src.add_argument("--tfds", help="NAME[:SPLIT] of a prepared TFDS dataset (see beam_sources.py)")
  p.add_argument("--tfds_type", default="image_text", help="data type of every TFDS example")
  p.add_argument("--tfds_fields", default="image=image,text=text", help="raw key=feature path, ...")
  p.add_argument("--tfds_data_dir", default=None)
  p.add_argument("--tfds_limit", type=int, default=None)
  p.add_argument("--tokenizers", required=True, help="directory read by load_tokenizers")
  p.add_argument("--out", required=True)
  p.add_argument(
    "--model",
    default="tiny",
    choices=sorted(MODELS),
    help="model name (mio_jax/model/sizes.py) whose vocab to use",
  )
  p.add_argument("--suffix", default="", help="appended to each dataset dir name, e.g. _val")
  p.add_argument("--strict", action="store_true", help="fail on the first bad input")
  p.add_argument(
    "--cfg_prob", type=float, default=0.0, help="null-prompt dropout of generation examples"
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_speech_s", type=float, default=15.0)
  p.add_argument("--loss", default="all", choices=("all", "output"))
  p.add_argument(
    "--prompts",
    default="pool",
    choices=("pool", "fixed"),
    help="instructions drawn per example from builders/prompt_pools.py, or MIO's own",
  )
  p.add_argument(
    "--pin_prompt",
    action="append",
    default=[],
    metavar="DIRECTION=TEMPLATE",
    help="one template for a direction (caption_image, generate_image, asr, tts, ...)",
  )
  p.add_argument(
    "--one_sft_source",
    action="store_true",
    help="every SFT row into `sft` (default: rows with a task into sft_<task>)",
  )
  p.add_argument("--source", default="")
  p.add_argument("--license", default="")


def input_from_flags(a):
  """-> (manifest path or lines, RawOptions) from parsed `add_flags` flags. A missing manifest
  or tokenizer directory is a UserError/PathError here, before any worker or Beam job starts."""
  paths.check_readable_dir(a.tokenizers, "--tokenizers")
  if a.tfds:
    from data_pipelines.beam_sources import parse_fields, tfds_lines

    src = tfds_lines(
      a.tfds, a.tfds_type, parse_fields(a.tfds_fields), a.tfds_data_dir, a.tfds_limit
    )
    base = "."
  else:
    if not paths.exists(a.manifest):
      raise UserError(f"manifest not found: {a.manifest}")
    src, base = a.manifest, paths.parent(paths.absolute(a.manifest))
  pinned = tuple(tuple(kv.split("=", 1)) for kv in a.pin_prompt)
  if any(len(kv) != 2 for kv in pinned):
    raise UserError(f"--pin_prompt takes DIRECTION=TEMPLATE, got {a.pin_prompt}")
  return src, RawOptions(
    base_dir=base,
    max_speech_s=a.max_speech_s,
    cfg_prob=a.cfg_prob,
    seed=a.seed,
    prompts=a.prompts,
    pinned_prompts=pinned,
    sft_by_task=not a.one_sft_source,
  )


def write_report(path: str, report: Report) -> None:
  paths.write_text(
    path, json.dumps({**report.as_dict(), "messages": report.messages}, indent=2, sort_keys=True)
  )


def main(argv=None) -> int:
  p = entry.ArgumentParser(prog="data_pipelines.tokenize_jsonl", description=__doc__.split("\n")[0])
  add_flags(p)
  p.add_argument("--workers", type=int, default=2, help="tokenizer processes (--runtime=torch)")
  p.add_argument(
    "--runtime",
    default="torch",
    choices=("torch", "jax"),
    help="jax: SEED image and SpeechTokenizer speech codes from the JAX encoders (local devices)",
  )
  p.add_argument(
    "--encode_batch",
    type=int,
    default=32,
    help="media per accelerator call (--runtime=jax; rounded up to a multiple of the devices)",
  )
  p.add_argument("--encode_dtype", default="float32", choices=tuple(accel.COMPUTE_DTYPES))
  p.add_argument("--decode_threads", type=int, default=4, help="host threads reading media (jax)")
  p.add_argument(
    "--distributed",
    action="store_true",
    help="--runtime=jax on several hosts: jax.distributed.initialize(), every process its lines",
  )
  a = p.parse_args(argv)
  try:  # missing manifest/tokenizers, unwritable --out, a bad line under --strict: one line
    src, opts = input_from_flags(a)
    if a.runtime == "jax":
      return _main_jax(a, src, opts)
    report = run(
      src,
      a.tokenizers,
      a.out,
      vocab_for(a.model),
      a.suffix,
      a.strict,
      opts,
      a.loss,
      a.source or (f"tfds:{a.tfds}" if a.tfds else ""),
      a.license,
      workers=a.workers,
    )
  except (UserError, paths.PathError, FileNotFoundError, BadExample) as e:
    # argparse's "prog: error: …" without its usage line; a --strict BadExample names the file
    # and line, and write_datasets has removed every unfinished shard
    print(f"{p.prog}: error: {e}", file=sys.stderr)
    return 2
  write_report(paths.join(a.out, f"tokenize_report{a.suffix}.json"), report)  # as Beam writes it
  print(report.summary())
  return 0


def _main_jax(a, src, opts) -> int:
  """main's --runtime=jax branch: this process's share of the lines, through `JaxEncoder`."""
  process_index, process_count = accel.processes(a.distributed)
  source = a.source or (f"tfds:{a.tfds}" if a.tfds else "")
  lines, source, opts = resolve_input(src, source, opts)
  lines = accel.process_share(lines, process_index, process_count)
  suffix = accel.process_suffix(a.suffix, process_index, process_count)
  vocab = vocab_for(a.model)
  encoder = JaxEncoder(
    a.tokenizers, vocab, a.loss, a.encode_batch, a.encode_dtype, a.decode_threads
  )
  with encoder:
    report = run(
      lines,
      a.tokenizers,
      a.out,
      vocab,
      suffix,
      a.strict,
      opts,
      a.loss,
      source,
      a.license,
      encoder=encoder,
    )
  write_report(paths.join(a.out, f"tokenize_report{suffix}.json"), report)
  print(report.summary())
  return 0


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  sys.exit(main())


if __name__ == "__main__":
  cli()
