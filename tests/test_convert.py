"""Dataset converters: each public layout (built here as a tiny fixture) -> raw JSONL ->
tokenize_jsonl shards whose manifests count what the converter wrote; bad rows counted or,
under --strict, errors naming the row."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from data_pipelines import convert
from data_pipelines.builders import BadExample
from data_pipelines.converters import CONVERTERS
from mio_jax.data.format import read_manifest
from mio_jax.model.sizes import DEMO_VOCAB as V
from tests import convert_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rows per converter output: data type and how many records tokenize_jsonl makes of each row.
RECORDS_PER_ROW = {
  "coco_captions": ("image_text", 2),
  "librispeech": ("speech_text", 2),
  "webdataset": ("image_text", 2),
  "webvid": ("video_text", 2),
  "mmc4": ("interleaved", 1),
  "llava": ("sft_vqa", 1),
  "speech_dialogue": ("sft_s2s", 1),
  "vqav2": ("sft_vqa", 1),
  "video_qa": ("sft_video", 1),
}
# SFT rows land per task (sft_<task>): the llava fixture has one image and one text-only item.
RECORDS_BY_KIND = {"llava": {"sft_vqa": 1, "sft_chat": 1}}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  return fx.make_tokenizers(str(tmp_path_factory.mktemp("tok")))


def _fixture(fmt, tmp_path):
  write, src, split = fx.FIXTURES[fmt]
  root = tmp_path / "src"
  want = write(str(root))
  return str(root / src) if src else str(root), split, want


def test_registry_covers_every_format():
  assert set(CONVERTERS) == set(fx.FIXTURES) == set(RECORDS_PER_ROW)


@pytest.mark.parametrize("fmt", sorted(fx.FIXTURES))
def test_convert_then_tokenize(fmt, tmp_path, tokenizers):
  from data_pipelines.tokenize_jsonl import run

  src, split, want = _fixture(fmt, tmp_path)
  out = str(tmp_path / "raw" / "train.jsonl")
  report = convert.convert(fmt, src, out, split=split, stream=io.StringIO())
  assert report.processed == want["rows"] and dict(report.skipped) == want["bad"]
  saved = json.load(open(convert.report_path(out)))
  assert saved["skipped"] == want["bad"] and saved["processed"] == want["rows"]
  assert saved["messages"] and all(str(tmp_path / "src") in m for m in saved["messages"])
  rows = [json.loads(line) for line in open(out)]
  assert len(rows) == want["rows"] and len({r["id"] for r in rows}) == len(rows)
  # Media paths are relative to the JSONL's folder (nothing absolute leaks in).
  assert not any(os.path.isabs(v) for r in rows for v in _media(r))

  tok_report = run(
    out, tokenizers, str(tmp_path / "shards"), V, strict=True, workers=1, stream=io.StringIO()
  )
  kind, per_row = RECORDS_PER_ROW[fmt]
  assert tok_report.processed == want["rows"] and not tok_report.skipped
  by_kind = RECORDS_BY_KIND.get(fmt, {kind: want["rows"] * per_row})
  assert sum(by_kind.values()) == want["rows"] * per_row
  for name, records in by_kind.items():
    manifest = read_manifest(str(tmp_path / "shards" / name))
    assert manifest["records"] == records == tok_report.records[name]
  if fmt in ("librispeech", "speech_dialogue"):  # 44.1 kHz stereo FLAC, tokenizer at 16 kHz
    assert tok_report.notes["resampled_audio"] == want["rows"]


def _media(row):
  for key in ("image", "audio", "video"):
    if key in row:
      yield row[key]
  for part in row.get("parts", []) + [
    p for m in row.get("messages", []) if isinstance(m["content"], list) for p in m["content"]
  ]:
    yield from (v for k, v in part.items() if k != "text")


@pytest.mark.parametrize("fmt", sorted(fx.FIXTURES))
def test_strict_names_the_bad_row(fmt, tmp_path):
  src, split, _ = _fixture(fmt, tmp_path)
  out = str(tmp_path / "raw.jsonl")
  with pytest.raises(BadExample) as e:
    convert.convert(fmt, src, out, split=split, strict=True, stream=io.StringIO())
  assert e.value.reason.startswith("missing_")  # each fixture's bad row lacks its media
  assert str(tmp_path / "src") in str(e.value)  # the message names the source file
  assert not os.path.exists(out) and not os.path.exists(out + ".tmp")  # nothing half-written


def test_cli_limit_and_layout(tmp_path):
  src, split, _ = _fixture("coco_captions", tmp_path)
  out = str(tmp_path / "coco.jsonl")
  assert (
    convert.main(
      ["--format=coco_captions", f"--src={src}", f"--out={out}", "--split=val", "--limit=2"]
    )
    == 0
  )
  rows = [json.loads(line) for line in open(out)]
  assert len(rows) == 2 and rows[0] == {
    "type": "image_text",
    "id": "coco_10",
    "direction": "both",
    "image": os.path.join("src", "val2017", "000000000001.jpg"),
    "text": "a red circle",
  }


def test_cli_strict_is_one_line_exit_2(tmp_path, capsys):
  src, _, _ = _fixture("coco_captions", tmp_path)
  out = str(tmp_path / "coco.jsonl")
  argv = ["--format=coco_captions", f"--src={src}", f"--out={out}", "--split=val", "--strict"]
  assert convert.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err
  assert re.fullmatch(
    r"data_pipelines.convert: error: --strict: .*annotation 3 .*image file not found: .*", err
  ), err


def test_cli_coco_root_without_the_split_names_what_is_there(tmp_path):
  """A COCO root holding only val (the common first download) asked for the default train split:
  one line naming the missing file and the split to pass, exit 2, through the real CLI."""
  src, _, _ = _fixture("coco_captions", tmp_path)
  assert sorted(os.listdir(os.path.join(src, "annotations"))) == ["captions_val2017.json"]
  out = tmp_path / "coco.jsonl"
  run = subprocess.run(
    [sys.executable, "-m", "data_pipelines.convert", "--format=coco_captions", f"--src={src}"]
    + [f"--out={out}"],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert run.returncode == 2, run.stderr
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
  assert f"not found: {os.path.join(src, 'annotations', 'captions_train2017.json')};" in lines[0]
  assert lines[0].endswith("found val: pass --split=val"), lines[0]
  assert not out.exists()


def test_llava_and_dialogue_rows(tmp_path):
  src, _, _ = _fixture("llava", tmp_path)
  convert.convert("llava", src, str(tmp_path / "l.jsonl"), stream=io.StringIO())
  first = json.loads(open(tmp_path / "l.jsonl").readline())
  assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
  assert first["messages"][0]["content"] == [
    {"image": os.path.join("src", "coco", "a.jpg")},
    {"text": "What is in this image?"},
  ]
  src = str(tmp_path / "d")
  fx.speech_dialogue(src)
  convert.convert(
    "speech_dialogue",
    os.path.join(src, "dialogues.jsonl"),
    str(tmp_path / "d.jsonl"),
    stream=io.StringIO(),
  )
  row = json.loads(open(tmp_path / "d.jsonl").readline())
  assert row["messages"][1] == {
    "role": "assistant",
    "content": [{"text": "a red circle"}, {"audio": os.path.join("d", "a0.flac")}],
  }


def test_beam_counts_resampled_audio_like_the_local_runner(tmp_path, tokenizers):
  from data_pipelines import beam_tokenize
  from data_pipelines.tokenize_jsonl import run

  src, split, want = _fixture("librispeech", tmp_path)
  out = str(tmp_path / "ls.jsonl")
  convert.convert("librispeech", src, out, split=split, stream=io.StringIO())
  local = run(out, tokenizers, str(tmp_path / "local"), V, workers=1, stream=io.StringIO())
  beam = beam_tokenize.run(out, tokenizers, str(tmp_path / "beam"))
  assert beam["notes"] == dict(local.notes) == {"resampled_audio": want["rows"]}
  assert beam["records"] == dict(local.records)
