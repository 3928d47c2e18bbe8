"""Public dataset layouts -> the raw JSONL that `tokenize_jsonl` and the Beam job read.

    python -m data_pipelines.convert --format=F --src=PATH --out=RAW.jsonl [--split=NAME] \
        [--limit=N] [--strict] [--media_root=DIR] [--media_dir=DIR]

Formats (data_pipelines/converters/, one module each, layouts in their docstrings): coco_captions,
librispeech, webdataset, webvid, mmc4, llava, speech_dialogue, and the benchmarks vqav2 and
video_qa (MSRVTT-QA, MSVD-QA). Media paths in the rows are
relative to RAW.jsonl's folder. Bad source rows are skipped with a message naming the file and
row, counted by reason in the printed summary and in RAW.convert_report.json; `--strict` makes
the first one an error. `--limit` stops after N rows written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from data_pipelines.converters import CONVERTERS, ConvertOptions
from data_pipelines.converters.common import SourceError
from data_pipelines.report import Report
from mio_jax.cli import entry
from mio_jax.tokens.layouts import BadExample


def report_path(out: str) -> str:
  return os.path.splitext(out)[0] + ".convert_report.json"


def convert(
  fmt: str,
  src: str,
  out: str,
  split: str | None = None,
  limit: int | None = None,
  strict: bool = False,
  media_root: str | None = None,
  media_dir: str | None = None,
  stream=sys.stderr,
) -> Report:
  """Writes `out` (atomically) and its report; -> the Report (processed = rows written)."""
  if fmt not in CONVERTERS:
    raise ValueError(f"unknown --format {fmt!r}; known: {sorted(CONVERTERS)}")
  out_dir = os.path.dirname(os.path.abspath(out))
  os.makedirs(out_dir, exist_ok=True)
  media_dir = media_dir or os.path.splitext(os.path.abspath(out))[0] + "_media"
  opts = ConvertOptions(src, out_dir, split, media_root, media_dir)
  report = Report(strict=strict, stream=stream)
  tmp = out + ".tmp"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for item in CONVERTERS[fmt](opts):
        if isinstance(item, BadExample):
          report.skip(item)  # raises under --strict
          continue
        f.write(json.dumps(item, ensure_ascii=False) + "\n")
        report.ok([(item["type"],)])
        if limit and report.processed >= limit:
          break
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  with open(report_path(out), "w") as f:
    json.dump(
      {"format": fmt, "src": src, **report.as_dict(), "messages": report.messages},
      f,
      indent=2,
      sort_keys=True,
    )
  return report


def main(argv=None) -> int:
  p = entry.ArgumentParser(prog="data_pipelines.convert", description=__doc__.split("\n")[0])
  p.add_argument("--format", required=True, choices=sorted(CONVERTERS))
  p.add_argument("--src", required=True, help="the dataset as downloaded (layout per format)")
  p.add_argument("--out", required=True, help="raw JSONL to write")
  p.add_argument("--split", default=None, help="e.g. train / val (coco), train-clean-100")
  p.add_argument("--limit", type=_positive_int, default=None, help="stop after this many rows")
  p.add_argument("--strict", action="store_true", help="fail on the first bad source row")
  p.add_argument("--media_root", default=None, help="where the source's media paths resolve")
  p.add_argument("--media_dir", default=None, help="where media unpacked from archives go")
  a = p.parse_args(argv)
  try:
    report = convert(a.format, a.src, a.out, a.split, a.limit, a.strict, a.media_root, a.media_dir)
  except BadExample as e:
    return _user_error(p.prog, f"--strict: {e}")
  except SourceError as e:
    return _user_error(p.prog, str(e))
  print(report.summary())
  print(f"wrote {a.out} and {report_path(a.out)}")
  return 0


def _positive_int(text: str) -> int:
  """--limit: a count of rows, so at least 1 (0 or less would silently convert nothing)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def _user_error(prog: str, message: str) -> int:
  """A mistake in what the user pointed us at: one line, exit 2 (argparse's code for bad usage)."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
