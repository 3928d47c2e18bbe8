"""Bad input: every case raises one clear error naming the file (and record), or is skipped and
counted when config.data.skip_corrupt allows it."""

import json
import os
import zlib

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from mio_jax.data import format as fmt
from mio_jax.data import pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.errors import UserError, VocabMismatchError
from mio_jax.model.sizes import DEMO_VOCAB as VOCAB
from mio_jax.tokens import vocab as vocab_lib

SEQ = 32
SHARD = "shard-00000.array_record"


def _dataset(root, name="ds", n=20, mean=10):
  path = os.path.join(root, name)
  synthetic.write_dataset(path, VOCAB, synthetic.random_examples(n, mean, VOCAB, seed=0))
  return path


def _config(root, sources=None, weights=None, **data):
  return synthetic.data_config(str(root), sources or {"ds": "ds"}, weights, seq_len=SEQ, **data)


def _rewrite_record(path, index, edit):
  """Replaces record `index` of a shard by edit(blob), keeping every other record."""
  reader = ArrayRecordReader(path)
  blobs = [reader.read([i])[0] for i in range(reader.num_records())]
  reader.close()
  blobs[index] = edit(blobs[index])
  writer = ArrayRecordWriter(path, "group_size:1")
  for blob in blobs:
    writer.write(blob)
  writer.close()


def _drain(config, vocab=VOCAB):
  """One full pass (eval iterator): every record is read once."""
  return list(pipeline.make_eval_iterator(config, vocab, 0, 1))


def test_truncated_shard(tmp_path):
  shard = os.path.join(_dataset(tmp_path), SHARD)
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(fmt.DataFormatError, match=SHARD):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1)


def _flip(blob):
  blob = bytearray(blob)
  blob[20] ^= 0xFF  # inside the token ids
  return bytes(blob)


def test_flipped_bytes_in_a_record(tmp_path):
  _rewrite_record(os.path.join(_dataset(tmp_path), SHARD), 3, _flip)
  with pytest.raises(fmt.DataFormatError, match=f"{SHARD} record 3: checksum mismatch"):
    _drain(_config(tmp_path))


def test_flipped_bytes_in_the_file(tmp_path):
  shard = os.path.join(_dataset(tmp_path, n=200), SHARD)
  with open(shard, "r+b") as f:  # riegeli's chunk hashes catch it before our crc does
    f.seek(5000)  # inside the records (the file's tail is block padding)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(fmt.DataFormatError, match=SHARD):
    _drain(_config(tmp_path))


def test_skip_corrupt_counts_and_keeps_the_rest(tmp_path):
  _rewrite_record(os.path.join(_dataset(tmp_path), SHARD), 3, _flip)
  _rewrite_record(os.path.join(tmp_path, "ds", SHARD), 7, _flip)
  it = pipeline.make_eval_iterator(_config(tmp_path, skip_corrupt=True), VOCAB, 0, 1)
  segments = sum(int(b["segment_ids"].max(axis=1).sum()) for b in it)
  assert pipeline.skipped_records(it) == 2
  assert segments == 18  # 20 examples of ~10 tokens, none split, 2 skipped
  train = pipeline.make_train_iterator(_config(tmp_path, skip_corrupt=True), VOCAB, 0, 1)
  for _ in range(3):
    next(train)
  assert pipeline.skipped_records(train) >= 2  # seen again each epoch


def test_token_id_outside_vocab(tmp_path):
  bad = fmt.encode_record(np.array([1, 2, VOCAB.size, 3]), np.ones(4, np.uint8))
  _rewrite_record(os.path.join(_dataset(tmp_path), SHARD), 5, lambda _: bad)
  with pytest.raises(fmt.DataFormatError, match=f"{SHARD} record 5: token id {VOCAB.size} outside"):
    _drain(_config(tmp_path))


def test_overlong_reject_names_the_record(tmp_path):
  long = fmt.encode_record(np.arange(SEQ + 2), np.ones(SEQ + 2, np.uint8))
  _rewrite_record(os.path.join(_dataset(tmp_path), SHARD), 2, lambda _: long)
  with pytest.raises(fmt.DataFormatError, match=f"{SHARD} record 2: example of {SEQ + 2} tokens"):
    _drain(_config(tmp_path, overlong="reject", skip_corrupt=True))  # never skipped
  assert _drain(_config(tmp_path, overlong="split"))


def test_fingerprint_mismatch(tmp_path):
  _dataset(tmp_path)
  other = vocab_lib.Vocab(text_size=VOCAB.text_size + 1)
  with pytest.raises(VocabMismatchError, match="manifest.json: vocab fingerprint"):
    pipeline.make_train_iterator(_config(tmp_path), other, 0, 1)


def test_empty_source(tmp_path):
  synthetic.write_dataset(str(tmp_path / "ds"), VOCAB, [])
  with pytest.raises(fmt.DataFormatError, match="manifest.json: the dataset has 0 records"):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1)


def test_missing_shard_and_missing_manifest(tmp_path):
  path = _dataset(tmp_path)
  os.remove(os.path.join(path, SHARD))
  with pytest.raises(FileNotFoundError, match=SHARD):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1)
  os.remove(os.path.join(path, fmt.MANIFEST))
  with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    pipeline.make_train_iterator(_config(tmp_path, {"ds": "nowhere"}), VOCAB, 0, 1)


def test_manifest_not_json(tmp_path):
  path = _dataset(tmp_path)
  with open(os.path.join(path, fmt.MANIFEST), "w") as f:
    f.write("{ not json")
  with pytest.raises(fmt.DataFormatError, match="manifest.json: not valid JSON"):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1)


@pytest.mark.parametrize(
  "weights, message",
  [
    ({"a": 1.0, "b": 1.0, "zzz": 1.0}, r"unknown source\(s\) \['zzz'\]"),
    ({"a": 1.0}, r"lacks a weight for source\(s\) \['b'\]"),
    ({"a": 1.0, "b": -1.0}, r"weights\['b'\] = -1.0"),
    ({"a": 0.0, "b": 1.0}, r"weights\['a'\] = 0.0"),
    ({"a": float("nan"), "b": 1.0}, r"weights\['a'\] = nan"),
  ],
)
def test_bad_mixture_weights(tmp_path, weights, message):
  _dataset(tmp_path, "a")
  _dataset(tmp_path, "b")
  with pytest.raises(ValueError, match=message):
    pipeline.make_train_iterator(_config(tmp_path, {"a": "a", "b": "b"}, weights), VOCAB, 0, 1)


def test_bad_config(tmp_path):
  _dataset(tmp_path)
  with pytest.raises(ValueError, match="overlong must be one of .*'drop'"):
    pipeline.make_train_iterator(_config(tmp_path, overlong="truncate"), VOCAB, 0, 1)
  with pytest.raises(ValueError, match="not divisible by process_count 3"):
    pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 3)
  with pytest.raises(ValueError, match="config.data.weights is missing"):
    pipeline.make_train_iterator(_config(tmp_path, {"a": "ds", "b": "ds"}), VOCAB, 0, 1)
  assert json.loads(
    json.dumps(pipeline.make_train_iterator(_config(tmp_path), VOCAB, 0, 1).get_state())
  )


def test_source_with_nothing_to_train_on(tmp_path):
  one_token = [(np.array([5]), np.ones(1, np.uint8))] * 50
  synthetic.write_dataset(str(tmp_path / "ds"), VOCAB, one_token)
  it = pipeline.make_train_iterator(_config(tmp_path, prefetch=0), VOCAB, 0, 1)
  with pytest.raises(ValueError, match="in a row with nothing to train on"):
    next(it)


def test_negative_token_id(tmp_path):
  blob = bytearray(fmt.encode_record(np.array([1, 2, 3]), np.ones(3, np.uint8)))
  blob[16:20] = np.array([-7], "<i4").tobytes()  # the first id; a valid crc over the bad id
  body = bytes(blob[:-4])
  bad = body + np.array([zlib.crc32(body)], "<u4").tobytes()
  _rewrite_record(os.path.join(_dataset(tmp_path), SHARD), 1, lambda _: bad)
  with pytest.raises(fmt.DataFormatError, match=f"{SHARD} record 1: token id -7 outside"):
    _drain(_config(tmp_path))


def test_data_errors_are_user_errors():
  """The CLIs print user errors as one line, exit 2 (mio_jax/cli/entry.py)."""
  assert issubclass(fmt.DataFormatError, UserError) and issubclass(fmt.DataFormatError, ValueError)
  assert issubclass(VocabMismatchError, UserError)


def test_failed_shard_writer_removes_its_shards(tmp_path):
  """An exception inside `with ShardWriter` leaves no shard without a manifest: the folder the
  writer made goes; a folder that was there keeps what it held."""
  for made in (True, False):
    out = tmp_path / f"ds{made}"
    if not made:
      out.mkdir()
      (out / "notes.txt").write_text("the user's")
    with pytest.raises(RuntimeError, match="stop"):
      with fmt.ShardWriter(str(out), VOCAB, "text", "t", max_shard_bytes=256) as w:
        for _ in range(20):  # several shards
          w.write(np.arange(3, 40), np.ones(37, np.uint8))
        raise RuntimeError("stop")
    assert (not out.exists()) if made else os.listdir(out) == ["notes.txt"]
