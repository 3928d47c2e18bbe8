"""The JSONL tokenization pipeline: local runner, Beam DirectRunner equality, bad-input handling."""

import collections
import io
import json
import os

# A test extra (requirements-test.txt): collection fails without it, nothing here is skipped.
import apache_beam  # noqa: F401
import numpy as np
import pytest

from data_pipelines.builders import BadExample, RawOptions, cfg_dropped
from mio_jax.data.format import decode_record, read_manifest
from mio_jax.model.sizes import DEMO_VOCAB as V
from mio_jax.tokens.layouts import TEMPLATE_TEXTS

GOOD = [
  {"type": "image_text", "image": "img0.png", "text": "a red circle at the top left"},
  {"type": "image_text", "image": "img1.png", "text": "a blue square", "direction": "generate"},
  {"type": "speech_text", "audio": "tone0.wav", "text": "hello world", "sample_rate": 16000},
  {"type": "video_text", "video": "vid0.npy", "text": "a red circle moves"},
  {
    "type": "video_text",
    "video": "vid1.gif",
    "text": "a blue square moves",
    "direction": "caption",
  },
  {"type": "text", "text": "a red circle is round."},
  {
    "type": "interleaved",
    "parts": [
      {"text": "first a red circle."},
      {"image": "img0.png"},
      {"text": "then a blue square."},
      {"image": "img1.png"},
    ],
  },
  {
    "type": "sft",
    "messages": [
      {"role": "user", "content": [{"image": "img0.png"}, {"text": "Describe this image."}]},
      {"role": "assistant", "content": "a red circle at the top left"},
      {"role": "user", "content": [{"audio": "tone0.wav"}]},
      {"role": "assistant", "content": [{"audio": "tone1.wav"}]},
    ],
  },
]
# (raw line, reason it must be skipped for)
BAD = [
  ({"type": "image_text", "image": "not_an_image.png", "text": "a red circle"}, "unreadable_image"),
  ({"type": "image_text", "image": "missing.png", "text": "a red circle"}, "unreadable_image"),
  ({"type": "speech_text", "audio": "garbage.wav", "text": "hello"}, "unreadable_audio"),
  (
    {"type": "video_text", "video": "garbage.npy", "text": "a red circle moves"},
    "unreadable_video",
  ),
  (
    {"type": "speech_text", "audio": "tone0.wav", "text": "hello", "sample_rate": 22050},
    "wrong_sample_rate",
  ),
  ({"type": "speech_text", "audio": "low_rate.wav", "text": "hello"}, "wrong_sample_rate"),
  ({"type": "image_text", "image": "img0.png", "text": "   "}, "empty_text"),
  ({"type": "speech_text", "audio": "long.wav", "text": "a long one"}, "speech_too_long"),
  ({"type": "podcast", "text": "hello"}, "unknown_type"),
  ("{not json", "bad_json"),
]


def make_tokenizers(directory: str) -> str:
  from data_pipelines.tokenizers import Tokenizers, save_tokenizers, train_sentencepiece
  from data_pipelines.tokenizers.image_vq import train_image_vq
  from data_pipelines.tokenizers.speech_rvq import train_speech_rvq
  from data_pipelines.tokenizers.video import KeyframeVideoTokenizer

  rng = np.random.default_rng(0)
  texts = [t for ex in GOOD for t in _strings(ex)] + list(TEMPLATE_TEXTS) + ["Describe this image."]
  text = train_sentencepiece(texts * 10, os.path.join(directory, "text"), vocab_size=300)
  image = train_image_vq(
    [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(8)], codebook_size=64, iters=3
  )
  speech = train_speech_rvq(
    [_tone(f, 1.0, 16000) for f in (220, 330, 440)], 16000, codebook_size=32, num_layers=4, iters=3
  )
  save_tokenizers(
    Tokenizers(text, image, speech, KeyframeVideoTokenizer(image, num_keyframes=4)), directory
  )
  return directory


def write_raw(directory: str, bad: bool = True) -> str:
  """Media files and manifest.jsonl (good lines, then bad ones interleaved); -> manifest path."""
  from PIL import Image

  from data_pipelines.tokenizers import write_image, write_wav

  rng = np.random.default_rng(1)
  os.makedirs(directory, exist_ok=True)
  p = lambda name: os.path.join(directory, name)  # noqa: E731
  for i in range(2):
    write_image(p(f"img{i}.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    write_wav(p(f"tone{i}.wav"), _tone(220 * (i + 1), 0.6, 16000), 16000)
  np.save(p("vid0.npy"), rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8))
  frames = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
  frames[0].save(p("vid1.gif"), save_all=True, append_images=frames[1:])
  write_wav(p("low_rate.wav"), _tone(200, 0.5, 4000), 4000)
  write_wav(p("long.wav"), _tone(200, 16.0, 8000), 8000)
  for name in ("not_an_image.png", "garbage.wav", "garbage.npy"):
    with open(p(name), "w") as f:
      f.write("this is not media")
  lines = [json.dumps(ex) for ex in GOOD]
  if bad:
    for i, (ex, _) in enumerate(BAD):  # spread bad lines between good ones
      lines.insert(2 * i % (len(lines) + 1), ex if isinstance(ex, str) else json.dumps(ex))
  with open(p("manifest.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return p("manifest.jsonl")


def tree_bytes(directory: str) -> dict:
  """{relative path: bytes} of every shard and manifest under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      if name.endswith(".array_record") or name == "manifest.json":
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, directory)] = f.read()
  return out


def _tone(freq, seconds, rate):
  t = np.arange(int(seconds * rate)) / rate
  return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
    np.float32
  )


def _strings(ex):
  if "text" in ex:
    yield ex["text"]
  for part in ex.get("parts", []):
    if "text" in part:
      yield part["text"]
  for m in ex.get("messages", []):
    yield m["role"] + "\n"
    c = m["content"]
    if isinstance(c, str):
      yield c


# ---- tests --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = tmp_path_factory.mktemp("pipeline")
  return make_tokenizers(str(base / "tok")), write_raw(str(base / "raw")), base


def _local(setup, out, strict=False, workers=1):
  from data_pipelines.tokenize_jsonl import run

  tok, manifest, _ = setup
  return run(manifest, tok, str(out), V, strict=strict, workers=workers, stream=io.StringIO())


def test_local_counts_every_skip_reason(setup, tmp_path):
  report = _local(setup, tmp_path / "out")
  want = collections.Counter(reason for _, reason in BAD)
  assert report.skipped == want
  assert report.processed == len(GOOD)
  # image_text: both directions + one generate-only; video: both + caption-only; speech: asr + tts.
  assert dict(report.records) == {
    "image_text": 3,
    "speech_text": 2,
    "video_text": 3,
    "text": 1,
    "interleaved": 1,
    "sft": 1,
  }
  summary = report.summary()
  for reason in want:
    assert reason in summary
  for name in ("image_text", "speech_text", "video_text", "text", "interleaved", "sft"):
    m = read_manifest(str(tmp_path / "out" / name), V)
    assert m["records"] == report.records[name] and m["data_type"] == name
  # Messages name the input: manifest line and media file.
  text = "\n".join(report.messages)
  assert "manifest.jsonl:" in text and "not_an_image.png" in text and "long.wav" in text


@pytest.mark.parametrize(
  "reason",
  [
    "unreadable_image",
    "unreadable_audio",
    "unreadable_video",
    "wrong_sample_rate",
    "empty_text",
    "speech_too_long",
    "bad_json",
  ],
)
def test_strict_raises_naming_the_input(setup, tmp_path, reason):
  from data_pipelines.tokenize_jsonl import run

  tok, _, base = setup
  ex = next(e for e, r in BAD if r == reason)
  manifest = tmp_path / "one.jsonl"
  manifest.write_text(
    json.dumps(GOOD[0]) + "\n" + (ex if isinstance(ex, str) else json.dumps(ex)) + "\n"
  )
  opts = RawOptions(base_dir=str(base / "raw"))
  with pytest.raises(BadExample) as e:
    run(str(manifest), tok, str(tmp_path / "out"), V, strict=True, opts=opts, stream=io.StringIO())
  assert e.value.reason == reason and f"{manifest}:2" in str(e.value)


def test_parallel_local_matches_serial(setup, tmp_path):
  _local(setup, tmp_path / "serial")
  _local(setup, tmp_path / "parallel", workers=2)
  a, b = tree_bytes(str(tmp_path / "serial")), tree_bytes(str(tmp_path / "parallel"))
  assert a and a == b


def test_beam_writes_the_same_bytes_as_local(setup, tmp_path):
  from data_pipelines import beam_tokenize

  tok, manifest, _ = setup
  local = _local(setup, tmp_path / "local")
  report = beam_tokenize.run(manifest, tok, str(tmp_path / "beam"))
  a, b = tree_bytes(str(tmp_path / "local")), tree_bytes(str(tmp_path / "beam"))
  assert len(a) == 12 and sorted(a) == sorted(b)
  for name in a:
    assert a[name] == b[name], name
  assert report["skipped"] == dict(local.skipped) and report["processed"] == local.processed
  assert report["records"] == dict(local.records)


def test_beam_strict_fails_naming_the_input(setup, tmp_path):
  from data_pipelines import beam_tokenize

  tok, manifest, _ = setup
  with pytest.raises(Exception, match=r"--strict: .*manifest.jsonl:\d+"):
    beam_tokenize.run(manifest, tok, str(tmp_path / "beam"), strict=True)


def test_cfg_dropout_is_applied_to_generation_only(setup, tmp_path):
  from data_pipelines.tokenize_jsonl import run

  tok, manifest, base = setup
  rows = [{"type": "image_text", "image": "img0.png", "text": "a red circle"}] * 40
  path = tmp_path / "gen.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  opts = RawOptions(base_dir=str(base / "raw"), cfg_prob=0.5, seed=1)
  run(str(path), tok, str(tmp_path / "out"), V, opts=opts, stream=io.StringIO())
  from array_record.python.array_record_module import ArrayRecordReader

  reader = ArrayRecordReader(str(tmp_path / "out" / "image_text" / "shard-00000.array_record"))
  records = [decode_record(b) for b in reader.read(list(range(reader.num_records())))]
  null = V.special_id("<cfg_null>")
  dropped = [bool((t == null).any()) for t, _ in records]
  assert not any(dropped[0::2])  # captioning records never drop
  gen = dropped[1::2]
  assert gen == [cfg_dropped(1, i, 0.5) for i in range(40)] and 5 < sum(gen) < 35


def _tiny_tfds(data_dir):
  """A 3-example image+caption TFDS dataset prepared offline (greyscale images, list captions)."""
  import tensorflow_datasets as tfds

  class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(24, 24, 1)),
            "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for i, text in enumerate(
        ["a red circle", "a blue square", ""]
      ):  # the last one: empty caption
        yield (
          i,
          {
            "image": rng.integers(0, 255, (24, 24, 1), dtype=np.uint8),
            "captions": {"text": [text, "another caption"]},
          },
        )

  TinyShapes(data_dir=data_dir).download_and_prepare()
  return "tiny_shapes"


def test_tfds_source_local_and_beam_agree(setup, tmp_path):
  from data_pipelines.beam_sources import parse_fields, tfds_lines
  from data_pipelines.tokenize_jsonl import run

  tok = setup[0]
  name = _tiny_tfds(str(tmp_path / "tfds"))
  lines = tfds_lines(
    name, "image_text", parse_fields("image=image,text=captions/text"), str(tmp_path / "tfds")
  )
  assert [w for _, _, w in lines] == [f"tfds:{name}/train[{i}]" for i in range(3)]
  local = run(lines, tok, str(tmp_path / "local"), V, stream=io.StringIO())
  assert local.processed == 2 and dict(local.skipped) == {"empty_text": 1}
  # Both directions of each kept caption.
  assert dict(local.records) == {"image_text": 4}
  from data_pipelines import beam_tokenize

  report = beam_tokenize.run(lines, tok, str(tmp_path / "beam"))
  a, b = tree_bytes(str(tmp_path / "local")), tree_bytes(str(tmp_path / "beam"))
  assert "image_text/manifest.json" in a and a == b
  assert report["processed"] == 2 and report["skipped"] == {"empty_text": 1}
