"""Apache Beam version of `tokenize_jsonl`: same per-line function, same output bytes and order.

    python -m data_pipelines.beam_tokenize --manifest=raw/train.jsonl --tokenizers=TOK_DIR \
        --out=OUT \
        [--suffix=_val] [--strict] [--cfg_prob=0.1] [--seed=0] [--loss=all] [-- BEAM OPTIONS]

Local: runs on the DirectRunner. Dataflow (see docs/demo_corpus.md): pass Beam options after `--`,
e.g. `-- --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
--setup_file=./setup.py`; the manifest, media, tokenizers and OUT must be paths every worker sees:
gs:// URLs (read and written through mio_jax.io.paths), or a shared filesystem.

Stages: read the manifest (one worker; lines are small) → reshuffle → tokenize each line in parallel
(`tokenize_jsonl.encode_line`; tokenizers load once per worker in `setup`) → group by data type →
sort by (line, record) → write each dataset with `ShardWriter`. Sorting makes the shards identical
to the local runner's whatever order workers finish in. The write step holds one data type's
records on one worker (fine up to a few GB of tokens per type; beyond that split the manifest).
Skip counts are written to OUT/tokenize_report<suffix>.json and printed.
"""

from __future__ import annotations

import json
import sys

from data_pipelines.builders import BadExample, RawOptions
from mio_jax.cli import entry
from mio_jax.errors import UserError
from mio_jax.io import paths

SKIPPED = "skipped"


def _beam():
  try:
    import apache_beam as beam
  except ImportError as e:
    raise ImportError(
      "apache_beam is not installed: pip install apache-beam==2.77.0 (see docs/demo_corpus.md)"
    ) from e
  return beam


def _tokenize_dofn(beam):
  class TokenizeFn(beam.DoFn):
    """(index, example, where) -> main: (data_type, (index, j, record bytes));
    skipped: (reason, msg)."""

    def __init__(self, tokenizers_dir, model, loss, opts, strict):
      self.args = (tokenizers_dir, model, loss, opts, strict)

    def setup(self):
      from data_pipelines.builders import Builder
      from data_pipelines.tokenize_jsonl import check_tokenizers, vocab_for
      from data_pipelines.tokenizers import load_tokenizers

      tokenizers_dir, model, loss, _, _ = self.args
      vocab = vocab_for(model)
      self.toks = load_tokenizers(tokenizers_dir)
      check_tokenizers(self.toks, vocab)
      self.builder = Builder(vocab, self.toks.text, loss)

    def process(self, line):
      from data_pipelines.tokenize_jsonl import encode_line

      _, _, _, opts, strict = self.args
      index, example, where = line
      notes = []
      try:
        encoded = encode_line(index, example, where, self.builder, self.toks, opts, notes)
      except BadExample as e:
        if strict:
          raise ValueError(f"--strict: {e}") from e
        yield beam.pvalue.TaggedOutput(SKIPPED, (e.reason, str(e)))
        return
      kinds = [kind for kind, _ in encoded]
      yield beam.pvalue.TaggedOutput("processed", (kinds, sorted(set(notes))))
      for j, (kind, blob) in enumerate(encoded):
        yield kind, (index, j, blob)

  return TokenizeFn


def write_dataset(kind_items, out_dir, model, suffix, source, license):
  """(data type, records) -> writes them in (line, record) order; -> (dataset name, manifest)."""
  kind, items = kind_items
  from data_pipelines.tokenize_jsonl import vocab_for, write_datasets
  from mio_jax.data.format import decode_record

  ordered = sorted(items, key=lambda t: (t[0], t[1]))
  records = ((kind, *decode_record(blob, f"line {i}")) for i, _, blob in ordered)
  return next(
    iter(write_datasets(out_dir, records, vocab_for(model), suffix, source, license).items())
  )


def write_report(processed, skipped, path):
  from data_pipelines.report import Report

  report = Report()
  records, notes = {}, {}
  for kinds, line_notes in processed:
    for k in kinds:
      records[k] = records.get(k, 0) + 1
    for n in line_notes:
      notes[n] = notes.get(n, 0) + 1
  reasons = {}
  for reason, _ in skipped:
    reasons[reason] = reasons.get(reason, 0) + 1
  report.merge(len(processed), records, reasons, sorted(m for _, m in skipped), notes)
  from data_pipelines.tokenize_jsonl import write_report as write

  write(path, report)


def build(
  p,
  manifest,
  tokenizers_dir,
  out_dir,
  model="tiny",
  suffix="",
  strict=False,
  opts=None,
  loss="all",
  source="",
  license="",
):
  """Adds the tokenization pipeline to Beam pipeline `p`."""
  beam = _beam()
  from data_pipelines.tokenize_jsonl import read_jsonl, resolve_input

  paths.makedirs(out_dir)
  if isinstance(manifest, str):  # read by a worker: the launcher never holds the manifest
    source = source or f"tokenized from {manifest}"
    opts = opts or RawOptions(base_dir=paths.parent(paths.absolute(manifest)))
    lines = p | "Manifest" >> beam.Create([manifest]) | "ReadLines" >> beam.FlatMap(read_jsonl)
  else:  # lines built on the launcher (e.g. beam_sources.tfds_lines)
    items, source, opts = resolve_input(manifest, source, opts)
    lines = p | "Lines" >> beam.Create(items)
  out = (
    lines
    | "Spread" >> beam.Reshuffle()
    | "Tokenize"
    >> beam.ParDo(_tokenize_dofn(beam)(tokenizers_dir, model, loss, opts, strict))
    # Declared: Beam cannot infer it from a generator that also yields tagged outputs.
    .with_output_types(beam.typehints.Tuple[str, beam.typehints.Any])
    .with_outputs(SKIPPED, "processed", main="records")
  )
  (
    out.records
    | "ByType" >> beam.GroupByKey()
    | "Write"
    >> beam.Map(
      write_dataset, out_dir=out_dir, model=model, suffix=suffix, source=source, license=license
    )
  )
  processed = out.processed | "AllProcessed" >> beam.combiners.ToList()
  skipped = out[SKIPPED] | "AllSkipped" >> beam.combiners.ToList()
  report_path = paths.join(out_dir, f"tokenize_report{suffix}.json")
  (
    processed
    | "Report" >> beam.Map(write_report, skipped=beam.pvalue.AsSingleton(skipped), path=report_path)
  )
  return report_path


def run(manifest, tokenizers_dir, out_dir, beam_args=(), **kwargs) -> dict:
  beam = _beam()
  from apache_beam.options.pipeline_options import PipelineOptions

  options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
  with beam.Pipeline(options=options) as p:
    report_path = build(p, manifest, tokenizers_dir, out_dir, **kwargs)
  return json.loads(paths.read_text(report_path))


def main(argv=None) -> int:
  from data_pipelines.tokenize_jsonl import add_flags, input_from_flags

  argv = list(sys.argv[1:] if argv is None else argv)
  beam_args = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  p = entry.ArgumentParser(prog="data_pipelines.beam_tokenize", description=__doc__.split("\n")[0])
  add_flags(p)
  a = p.parse_args(argv)
  try:  # a missing manifest or tokenizer dir: one line now, not a Beam worker's traceback later
    src, opts = input_from_flags(a)
  except (UserError, paths.PathError) as e:
    p.error(str(e))
  report = run(
    src,
    a.tokenizers,
    a.out,
    beam_args,
    model=a.model,
    suffix=a.suffix,
    strict=a.strict,
    opts=opts,
    loss=a.loss,
    source=a.source or (f"tfds:{a.tfds}" if a.tfds else ""),
    license=a.license,
  )
  print(json.dumps({k: v for k, v in report.items() if k != "messages"}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
