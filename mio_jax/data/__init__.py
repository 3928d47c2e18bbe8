"""Grain input pipeline over pre-tokenized multimodal shards (see docs/data_format.md)."""

from mio_jax.data.format import (
  DataFormatError,
  ShardWriter,
  decode_record,
  encode_record,
  read_manifest,
)
from mio_jax.data.pipeline import (
  dropped_records,
  make_eval_iterator,
  make_train_iterator,
  record_counts,
  short_records,
  skipped_records,
  split_records,
)

__all__ = [
  "DataFormatError",
  "ShardWriter",
  "decode_record",
  "encode_record",
  "read_manifest",
  "make_train_iterator",
  "make_eval_iterator",
  "skipped_records",
  "dropped_records",
  "short_records",
  "split_records",
  "record_counts",
]
