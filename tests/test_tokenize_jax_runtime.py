"""`tokenize_jsonl --runtime=jax` (data_pipelines/accelerated_encoding.py) against today's torch
runtime on the tiny real SEED checkpoint tests/test_seed_tokenizer.py converts, with a real
sentencepiece text tokenizer: image files of every format read_image meets, one unreadable, one
interleaved line with two images; speech from the tiny SpeechTokenizer of
tests/test_encoder_speechtokenizer_jax.py in WAV and FLAC at two rates. The 8 virtual CPU devices
of conftest.py form the data mesh. The two output trees must be the same bytes, file for file."""

import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines import accelerated_encoding as accel
from data_pipelines import tokenize_jsonl
from mio_jax.data.format import decode_record
from mio_jax.errors import UserError
from mio_jax.model.sizes import get_model
from tests import test_encoder_speechtokenizer_jax as speech
from tests import test_seed_tokenizer as seed
from tests.test_encoder_seed_jax import write_images
from tests.test_reliability_data import _text_tokenizers

# Their module-scoped fixtures, bound here so that pytest finds them (built once for this module).
converted, speech_dir = seed.converted, speech.speech_dir


@pytest.fixture(scope="module")
def tokenizers(converted, tmp_path_factory):
  """text/ (sentencepiece) + image/ (the converted SEED directory, compute dtype float32)."""
  root = tmp_path_factory.mktemp("tok")
  _text_tokenizers(str(root))
  shutil.copytree(converted[0], root / "image")
  meta_path = root / "image" / "tokenizer.json"
  meta = json.loads(meta_path.read_text())
  meta_path.write_text(json.dumps({**meta, "dtype": "float32"}))
  return str(root)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  """12 image_text lines (JPEG, PNG in every mode, BMP, GIF), an unreadable .png, a text line
  and an interleaved line with two images: 15 lines."""
  root = tmp_path_factory.mktemp("raw")
  images = [os.path.basename(p) for p in write_images(root)]
  (root / "broken.png").write_bytes(b"not an image at all")
  lines = [
    {"type": "image_text", "image": name, "text": f"picture number {i} of a red circle"}
    for i, name in enumerate(images)
  ]
  lines.insert(5, {"type": "image_text", "image": "broken.png", "text": "a blue square"})
  lines.insert(9, {"type": "text", "text": "a red circle and a blue square"})
  parts = [{"text": "first"}, {"image": images[0]}, {"text": "then"}, {"image": images[3]}]
  lines.append({"type": "interleaved", "parts": parts})
  path = root / "train.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return str(path)


def tree(directory) -> dict:
  """{relative path: bytes} of every file under `directory`."""
  out = {}
  for dirpath, _, names in os.walk(directory):
    for name in names:
      full = os.path.join(dirpath, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, directory)] = f.read()
  return out


def records(dataset_dir) -> list:
  from array_record.python.array_record_module import ArrayRecordReader

  manifest = json.loads(open(os.path.join(dataset_dir, "manifest.json")).read())
  out = []
  for shard in manifest["shards"]:
    reader = ArrayRecordReader(os.path.join(dataset_dir, shard["file"]))
    out += [decode_record(b, shard["file"]) for b in reader.read_all()]
    reader.close()
  return out


def tokenize(manifest, tokenizers, out, *flags):
  argv = [f"--manifest={manifest}", f"--tokenizers={tokenizers}", f"--out={out}", *flags]
  return tokenize_jsonl.main(argv)


@pytest.fixture(scope="module")
def torch_out(manifest, tokenizers, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("torch") / "shards")
  assert tokenize(manifest, tokenizers, out, "--runtime=torch", "--workers=1") == 0
  return out


def test_jax_runtime_writes_the_torch_runtimes_bytes(
  manifest, tokenizers, torch_out, tmp_path, capfd
):
  capfd.readouterr()
  out = str(tmp_path / "shards")
  # 5 rounds up to 8 (the 8 devices): 14 images = one full batch and one padded with copies.
  assert tokenize(manifest, tokenizers, out, "--runtime=jax", "--encode_batch=5") == 0
  err = capfd.readouterr().err
  assert "--encode_batch=5 rounded up to 8, a multiple of the 8 local devices" in err
  assert "tokenize_jsonl: 15/15 lines," in err and "lines/s, ETA 0 s, 2 batches" in err

  want, got = tree(torch_out), tree(out)
  assert sorted(got) == sorted(want)
  assert {"image_text/manifest.json", "interleaved/manifest.json", "text/manifest.json"} <= set(got)
  for name in want:
    assert got[name] == want[name], name
  # The bad line is skipped, counted and named the same way under both runtimes.
  report = json.loads(got["tokenize_report.json"])
  assert report["skipped"] == {"unreadable_image": 1} and report["processed"] == 14
  assert len(report["messages"]) == 1
  assert report["messages"][0].startswith(
    f"skipped (unreadable_image): {manifest}:6: cannot read image "
  )
  assert report["records"] == {"image_text": 24, "interleaved": 1, "text": 1}


def test_rerun_refuses_a_finished_dataset_as_the_torch_runtime_does(
  manifest, tokenizers, torch_out, tmp_path
):
  """tokenize_jsonl's rule today: a dataset whose manifest.json exists is never written again;
  a rerun over the same --out stops at it (FileExistsError) and changes no file."""
  out = str(tmp_path / "shards")
  assert tokenize(manifest, tokenizers, out, "--runtime=jax", "--encode_batch=8") == 0
  before = tree(out)
  for runtime, target in (("jax", out), ("torch", torch_out)):
    kept = tree(target)
    with pytest.raises(FileExistsError, match="image_text already holds a finished dataset"):
      tokenize(manifest, tokenizers, target, f"--runtime={runtime}", "--workers=1")
    assert tree(target) == kept
  assert tree(out) == before


def test_process_share_and_names():
  lines = list(range(10))
  shares = [accel.process_share(lines, i, 3) for i in range(3)]
  assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
  assert accel.process_share(lines, 0, 1) == lines
  with pytest.raises(ValueError, match="process_index 3 outside"):
    accel.process_share(lines, 3, 3)
  assert accel.process_suffix("_val", 0, 1) == "_val"  # one process: the torch runtime's names
  names = [accel.process_suffix("_val", i, 12) for i in range(12)]
  assert names[0] == "_val_host00of12" and names[11] == "_val_host11of12"
  assert len(set(names)) == 12
  assert accel.sharded_batch(5, 8) == 8 and accel.sharded_batch(256, 8) == 256
  assert accel.sharded_batch(257, 4) == 260
  with pytest.raises(UserError, match="--encode_batch must be >= 1, got 0"):
    accel.sharded_batch(0, 8)


def test_two_process_shares_write_apart_and_together_hold_every_record(
  manifest, tokenizers, torch_out, tmp_path
):
  """Each process's share, through the JaxEncoder, into one --out: no file collides, and the
  records interleave back into the single-process output."""
  _, vocab = get_model("tiny")
  lines, source, opts = tokenize_jsonl.resolve_input(manifest)
  out = str(tmp_path / "shards")
  for index in range(2):
    with tokenize_jsonl.JaxEncoder(tokenizers, vocab, encode_batch=8) as encoder:
      tokenize_jsonl.run(
        accel.process_share(lines, index, 2),
        tokenizers,
        out,
        vocab,
        accel.process_suffix("", index, 2),
        source=source,
        opts=opts,
        encoder=encoder,
      )
  assert sorted(os.listdir(out)) == [
    "image_text_host0of2",
    "image_text_host1of2",
    "interleaved_host0of2",
    "text_host1of2",
  ]
  # Line positions 0, 2, 4, ... went to process 0; each image line makes 2 records.
  whole = records(os.path.join(torch_out, "image_text"))
  parts = [records(os.path.join(out, f"image_text_host{i}of2")) for i in range(2)]
  assert len(parts[0]) + len(parts[1]) == len(whole) == 24
  got = sorted(np.concatenate([t, m]).tobytes() for part in parts for t, m in part)
  assert got == sorted(np.concatenate([t, m]).tobytes() for t, m in whole)


# ---- speech: the SpeechTokenizer encoder ---------------------------------------------------------
@pytest.fixture(scope="module")
def speech_setup(speech_dir, tmp_path_factory):
  """(manifest, tokenizers dir): text/ + speech/ (the tiny SpeechTokenizer of
  tests/test_encoder_speechtokenizer_jax.py, 4 layers); 10 speech_text lines of two lengths after
  resampling (16 kHz and 22.05 kHz files, mono and stereo, WAV and FLAC) and one unreadable file."""
  import soundfile

  root = tmp_path_factory.mktemp("speech_raw")
  tok = str(root / "tok")
  _text_tokenizers(tok)
  shutil.copytree(speech_dir, os.path.join(tok, "speech"))
  lines = []
  for i in range(10):
    rate, seconds, channels = ((16_000, 1.0, 1), (22_050, 1.0, 2), (16_000, 1.5, 1))[i % 3]
    name = f"clip{i}.{'flac' if i % 2 else 'wav'}"
    wave = speech.noise_and_tones(seconds, rate, channels, seed=i)
    soundfile.write(str(root / name), wave, rate)
    lines.append({"type": "speech_text", "audio": name, "text": f"a spoken sentence {i}"})
  (root / "broken.wav").write_bytes(b"RIFF but not really")
  lines.insert(4, {"type": "speech_text", "audio": "broken.wav", "text": "nothing"})
  path = root / "train.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return str(path), tok


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_jax_runtime_speech_writes_the_torch_runtimes_bytes(speech_setup, tmp_path, capfd):
  manifest, tok = speech_setup
  torch_out, jax_out = str(tmp_path / "torch"), str(tmp_path / "jax")
  assert tokenize(manifest, tok, torch_out, "--runtime=torch", "--workers=1") == 0
  capfd.readouterr()
  assert tokenize(manifest, tok, jax_out, "--runtime=jax", "--encode_batch=8") == 0
  # 16000-sample waves (7, from 16 and 22.05 kHz) and 24000-sample ones (3): one batch each.
  assert "tokenize_jsonl: 11/11 lines," in capfd.readouterr().err
  want, got = tree(torch_out), tree(jax_out)
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name] == want[name], name
  report = json.loads(got["tokenize_report.json"])
  assert report["skipped"] == {"unreadable_audio": 1} and report["records"] == {"speech_text": 20}
  assert report["notes"] == {"resampled_audio": 3}
