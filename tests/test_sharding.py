"""Mesh construction, the rules table, up-front validation, and sharded == 1-device training."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mio_jax.config import get_base_config
from mio_jax.model.sizes import get_model
from mio_jax.parallel import sharding as shd
from mio_jax.train import loop

SMALL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)


def small_config(data=1, fsdp=1, tensor=1, **kw):
  c = get_base_config()
  c.model_overrides.update(SMALL)
  c.seq_len, c.global_batch, c.total_steps, c.lr, c.log_every = 32, 8, 5, 1e-2, 1
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def run_steps(config, devices, n):
  """n steps of the real setup/init/step path; returns per-step losses and the final state."""
  s = loop.setup(config, devices)
  state = loop.init_state(s)
  data = loop.make_data_iterator(config, s.vocab, 0, 1)
  losses = []
  for _ in range(n):
    batch = shd.global_batch_arrays(next(data), s.batch_sharding, config.global_batch)
    state, metrics = s.step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  return np.asarray(losses), state, s


@pytest.fixture(scope="module")
def one_device_run():
  return run_steps(small_config(), jax.devices()[:1], 5)


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_losses_match_one_device(mesh, one_device_run):
  ref_losses, ref_state, _ = one_device_run
  losses, state, s = run_steps(small_config(*mesh), jax.devices(), 5)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert losses[-1] < losses[0]  # it trained, not just agreed
  np.testing.assert_allclose(
    np.asarray(state.params["lm_head"]),
    np.asarray(ref_state.params["lm_head"]),
    rtol=1e-4,
    atol=2e-5,
  )  # Adam amplifies tiny grad diffs

  # Params (and Adam moments) are laid out as the rules table says.
  expect = {
    ("embedding",): P("tensor", "fsdp"),
    ("lm_head",): P("fsdp", "tensor"),
    ("final_norm", "scale"): P("fsdp"),
    ("layers", "attention", "q"): P(None, "fsdp", "tensor", None),
    ("layers", "attention", "k"): P(None, "fsdp", "tensor", None),
    ("layers", "attention", "o"): P(None, "tensor", None, "fsdp"),
    ("layers", "mlp", "gate"): P(None, "fsdp", "tensor"),
    ("layers", "mlp", "down"): P(None, "tensor", "fsdp"),
    ("layers", "mlp_norm", "scale"): P(None, "fsdp"),
  }
  mu = state.opt_state[1][0].mu  # chain(clip, adamw) -> adamw's ScaleByAdamState
  for path, spec in expect.items():
    for tree in (state.params, mu):
      x = tree
      for key in path:
        x = x[key]
      want = NamedSharding(s.mesh, spec)
      assert x.sharding.is_equivalent_to(want, x.ndim), (path, x.sharding, spec)
      # ...and each device really holds only its block.
      n_blocks = [1 if a is None else s.mesh.shape[a] for a in spec] + [1] * (x.ndim - len(spec))
      assert x.addressable_shards[0].data.shape == tuple(d // b for d, b in zip(x.shape, n_blocks))


def test_kv_heads_fall_back_to_replication():
  cfg, _ = get_model("tiny", **SMALL)  # 2 KV heads
  rules = dict(shd.rules_for(cfg, shd.MeshShape(1, 1, 2, 4)))
  assert rules["kv_heads"] is None and rules["heads"] == "tensor"
  assert dict(shd.rules_for(cfg, shd.MeshShape(1, 4, 1, 2)))["kv_heads"] == "tensor"
  # The state shardings follow: K/V replicated over tensor, Q still split.
  s = loop.setup(small_config(2, 1, 4), jax.devices())
  attn = s.shardings.params["layers"]["attention"]
  assert attn["k"].is_equivalent_to(NamedSharding(s.mesh, P(None, None, None, None)), 4)
  assert attn["q"].is_equivalent_to(NamedSharding(s.mesh, P(None, None, "tensor", None)), 4)


def test_resolve_mesh_shape_fills():
  c = small_config(data=2, fsdp=-1, tensor=2)
  assert shd.resolve_mesh_shape(c.mesh, 8) == shd.MeshShape(1, 2, 2, 2)
  c.mesh.dcn, c.mesh.data, c.mesh.fsdp = 2, -1, 1
  assert shd.resolve_mesh_shape(c.mesh, 8).sizes == (2, 2, 1, 2)


def test_dcn_axis_splits_the_batch():
  mesh = shd.build_mesh(shd.MeshShape(2, 2, 1, 2), jax.devices())  # one host emulating 2 slices
  assert dict(mesh.shape) == {"dcn": 2, "data": 2, "fsdp": 1, "tensor": 2}
  local = {"tokens": np.zeros((8, 4), np.int32)}
  arr = shd.global_batch_arrays(local, shd.batch_sharding(mesh), 8)["tokens"]
  assert arr.addressable_shards[0].data.shape == (2, 4)  # 8 rows over dcn*data = 4


def test_batch_sharding_and_process_rows():
  s = loop.setup(small_config(2, 2, 2), jax.devices())
  assert shd.process_rows(s.batch_sharding, 8, 32) == (0, 8)
  local = {"tokens": np.arange(8 * 32, dtype=np.int32).reshape(8, 32)}
  arr = shd.global_batch_arrays(local, s.batch_sharding, 8)["tokens"]
  assert arr.addressable_shards[0].data.shape == (2, 32)  # batch over data*fsdp = 4
  np.testing.assert_array_equal(np.asarray(arr), local["tokens"])


class CompileCounter:
  """Counts XLA compilations (jax.monitoring events) while active."""

  def __enter__(self):
    self.count = 0
    self._listener = lambda event, *a, **k: self._on(event)
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def _on(self, event):
    if "compile" in event:
      self.count += 1

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listener)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(mesh=(3, 1, 1)), "3 but there are 8 devices"),
    (dict(mesh=(3, -1, 1)), "mesh.fsdp=-1 cannot fill 8 devices"),
    (dict(mesh=(-1, -1, 1)), "only one mesh axis may be -1"),
    (dict(mesh=(0, 8, 1)), "mesh sizes must be positive or -1"),
    (
      dict(mesh=(8, 1, 1), global_batch=12),
      "global_batch 12 is not divisible by micro_batches 1 x data-parallel size 8",
    ),
    (
      dict(mesh=(4, 1, 1), micro_batches=4),
      "global_batch 8 is not divisible by micro_batches 4 x data-parallel size 4",
    ),
    (dict(mesh=(1, 1, 8)), "model n_heads 4 is not divisible by mesh.tensor 8"),
    (dict(mesh=(4, 1, 2), ffn=129), "model ffn_dim 129 is not divisible by mesh.tensor 2"),
    (dict(mesh=(1, 8, 1), d_model=68, heads=2), "model d_model 68 is not divisible by mesh.fsdp 8"),
    (dict(mesh=(8, 1, 1), loss_chunk=5), "loss_chunk 5 must divide seq_len 32"),
  ],
)
def test_validation_errors_before_compilation(overrides, message, tmp_path):
  c = small_config(*overrides.pop("mesh"))
  if "ffn" in overrides:
    c.model_overrides.ffn_dim = overrides.pop("ffn")
  if "d_model" in overrides:
    c.model_overrides.d_model = overrides.pop("d_model")
    c.model_overrides.n_heads = c.model_overrides.n_kv_heads = overrides.pop("heads")
  for k, v in overrides.items():
    setattr(c, k, v)
  with CompileCounter() as compiles, pytest.raises(ValueError, match=message.replace("*", r"\*")):
    loop.train(c, str(tmp_path))  # the real entry point
  assert compiles.count == 0


def test_validate_lists_every_problem():
  cfg, _ = get_model("tiny", **SMALL)
  cfg = cfg.replace(vocab_size=1001, ffn_dim=100)
  with pytest.raises(shd.ShardingConfigError) as err:
    shd.validate(
      shd.MeshShape(1, 1, 1, 8), 4, global_batch=6, micro_batches=1, model_cfg=cfg, process_count=4
    )
  msg = str(err.value)
  for part in (
    "= 8 but there are 4 devices",
    "global_batch 6 is not divisible by the 4 processes",
    "n_heads 4",
    "vocab_size 1001",
  ):
    assert part in msg
  assert "ffn_dim 100" in msg and "d_model" not in msg


def test_compile_counter_sees_compiles():  # guards the "before compilation" assertions above
  with CompileCounter() as compiles:
    jax.jit(lambda x: x * 3 + 1)(np.float32(2.0)).block_until_ready()
  assert compiles.count > 0
