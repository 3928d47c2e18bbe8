"""Generation params sharded over the mesh with the training rules (fsdp x tensor), in bf16/f32:
8 virtual CPU devices give the same greedy ids as 1 device (f32)."""

import jax
import numpy as np
import pytest

from mio_jax.checkpoint import trained
from mio_jax.errors import UserError
from mio_jax.generate.api import generate
from mio_jax.parallel import placement
from tests.test_generate_cli import write_checkpoint


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  # No tokenizers needed: only the params are restored.
  return str(write_checkpoint(tmp_path_factory.mktemp("ckpt"), "unused"))


def _prompts(vocab):
  return [np.asarray([5, 17, 300, 42, 7]), np.asarray([640, 3, 18])]


def test_eight_devices_give_the_same_greedy_ids_as_one(workdir):
  assert len(jax.devices()) == 8
  one = trained.load_trained(workdir)
  assert one.placement is None
  many = trained.load_trained(workdir, tensor=2, dtype="float32")
  assert many.placement.mesh.shape == {"dcn": 1, "data": 1, "fsdp": 4, "tensor": 2}
  leaves = jax.tree.leaves(many.params)
  assert all(x.dtype == np.float32 for x in leaves)
  # Training's rules: embeddings / matmul weights really split over fsdp and tensor.
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated for x in leaves)
  kw = dict(max_new_tokens=12, output_modality="text", stop_ids=())
  a = generate(one.params, one.model_cfg, one.vocab, _prompts(one.vocab), **kw)
  b = generate(
    many.params, many.model_cfg, many.vocab, _prompts(many.vocab), placement=many.placement, **kw
  )
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_bf16_loads_cast_on_device_and_samples(workdir):
  run = trained.load_trained(workdir, dtype="bfloat16")
  assert run.model_cfg.dtype == "bfloat16" == run.model_cfg.param_dtype
  assert all(x.dtype == jax.numpy.bfloat16 for x in jax.tree.leaves(run.params))
  outs = generate(
    run.params,
    run.model_cfg,
    run.vocab,
    _prompts(run.vocab),
    max_new_tokens=6,
    output_modality="text",
    stop_ids=(),
    placement=run.placement,
  )
  assert all(len(o) == 6 and (o < run.vocab.text_size).all() for o in outs)


def test_defaults_and_errors():
  assert placement.default_dtype(7_000_000_000) == "bfloat16"
  assert placement.default_dtype(1_000_000) == "float32"
  cfg, _ = trained.get_model("tiny")
  with pytest.raises(UserError, match="does not divide"):
    placement.Placement.build(cfg, tensor=3)
  with pytest.raises(UserError, match="dtype"):
    placement.with_dtype(cfg, "float16")
