"""A TFDS dataset prepared locally (array_record files) is read as a source by name. No network."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mio_jax.data import pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import DEMO_VOCAB as VOCAB

EXAMPLES = synthetic.random_examples(40, 9, VOCAB, seed=5)


class MioTinyTokens(tfds.core.GeneratorBasedBuilder):
  """40 random examples with the features the pipeline reads."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
          "loss_mask": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        }
      ),
      metadata=tfds.core.MetadataDict(vocab_fingerprint=VOCAB.fingerprint()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, (tokens, mask) in enumerate(EXAMPLES):
      yield i, {"tokens": tokens, "loss_mask": mask}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  builder = MioTinyTokens(data_dir=str(root), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return str(root)


def test_tfds_source_by_name(tfds_dir):
  cfg = synthetic.data_config(tfds_dir, {"x": "tfds:mio_tiny_tokens:train"}, seq_len=32)
  seen = collections.Counter()
  for batch in pipeline.make_eval_iterator(cfg, VOCAB, 0, 1):
    for r in range(batch["tokens"].shape[0]):
      seg_L = batch["segment_ids"][r]
      for s in range(1, seg_L.max() + 1):
        idx = np.flatnonzero(seg_L == s)
        seen[np.append(batch["tokens"][r, idx], batch["targets"][r, idx[-1]]).tobytes()] += 1
  assert seen == collections.Counter(t.tobytes() for t, _ in EXAMPLES)
  train = pipeline.make_train_iterator(cfg, VOCAB, 0, 1)
  assert next(train)["tokens"].shape == (4, 32)


def test_tfds_errors_name_the_dataset(tfds_dir):
  small = type(VOCAB)(text_size=VOCAB.text_size + 1)
  cfg = synthetic.data_config(tfds_dir, {"x": "tfds:mio_tiny_tokens:train"}, seq_len=32)
  with pytest.raises(ValueError, match="tfds:mio_tiny_tokens:train.*vocab fingerprint"):
    pipeline.make_train_iterator(cfg, small, 0, 1)
  cfg = synthetic.data_config(tfds_dir, {"x": "tfds:mio_tiny_tokens:nosuchsplit"}, seq_len=32)
  with pytest.raises(FileNotFoundError, match="tfds:mio_tiny_tokens:nosuchsplit"):
    pipeline.make_train_iterator(cfg, VOCAB, 0, 1)
