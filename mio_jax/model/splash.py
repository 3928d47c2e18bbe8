"""Pallas splash attention (jax.experimental.pallas.ops.tpu) for packed causal GQA training.

The XLA path writes [B, G, R, T, T] f32 scores to HBM (forward, recompute, backward); on TPU that
traffic is ~40 % of the MIO-7B step (docs/scaling.md). The splash kernel keeps the scores in VMEM
and skips the blocks the causal mask removes. Packing = `segment_ids` (0 = padding): a query sees
a key only if both are in the same segment and the key is not later, exactly `packed_causal_mask`.

The kernel handles one example ([H, T, K] queries, [G, S, K] keys/values, H % G == 0), so it is
vmapped over the batch and run under `shard_map`: batch over the mesh's batch axes, heads over
`tensor`, as the logical-axis rules (mio_jax/parallel/sharding.py) place them. Off TPU it runs in
Pallas
interpret mode (slow; for tests).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import PartitionSpec as P

LANES = 128  # the kernel's blocks are multiples of this along the sequence
BLOCKS = (512, 256, 128)  # the largest that divides the padded length is used


def target_platform() -> str:
  """The platform being compiled for: the mesh's devices (an AOT compile for TPU from a CPU
  process sets a TPU mesh), else jax's default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def resolve_impl(impl: str) -> str:
  """'auto' → splash on TPU, cuDNN `dot_product_attention` on GPU, plain XLA elsewhere."""
  if impl != "auto":
    return impl
  return {"tpu": "splash", "gpu": "dot_product_attention"}.get(target_platform(), "xla")


def padded_length(t: int) -> tuple[int, int]:
  """(padded sequence length, block size): pad to a multiple of 128 (2,800 → 2,816)."""
  t_pad = -(-t // LANES) * LANES
  return t_pad, next(b for b in BLOCKS if t_pad % b == 0)


def make_kernel(heads: int, t_pad: int, interpret: bool):
  """Causal splash kernel for `heads` query heads over `t_pad` positions. Separate dq and dkv
  backward kernels: the fused one saves two of nine block matmuls but writes an f32 dq partial
  per KV block to HBM, more time than it saves at T = 2,816 on v5p."""
  block = padded_length(t_pad)[1]
  sizes = sa.BlockSizes(
    block_q=block,
    block_kv=block,
    block_kv_compute=block,
    block_q_dkv=block,
    block_kv_dkv=block,
    block_kv_dkv_compute=block,
    block_q_dq=block,
    block_kv_dq=block,
  )
  mask = sa.MultiHeadMask([sa.CausalMask((t_pad, t_pad))] * heads)
  # Output and log-sum-exp (the backward's residuals) are named "attn_out": the remat policies
  # that keep "attn_out" then skip re-running the forward kernel in the backward pass.
  return sa.make_splash_mha(
    mask,
    block_sizes=sizes,
    head_shards=1,
    q_seq_shards=1,
    residual_checkpoint_name="attn_out",
    interpret=interpret,
  )


def _local_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, seg_BxT, *, interpret, kv_slice):
  """One shard: pad to the block grid, scale queries like attend_xla, run the kernel per example."""
  b, t, h, hd = q_BxTxHxK.shape
  if kv_slice is not None:  # K/V replicated over `tensor` but queries split: this shard's heads
    k_BxTxGxK, v_BxTxGxK = (kv_slice(x) for x in (k_BxTxGxK, v_BxTxGxK))
  t_pad, _ = padded_length(t)
  # Extra positions get segment 0: real tokens never see them (another segment, and later).
  pad = ((0, 0), (0, t_pad - t), (0, 0), (0, 0))
  q = (q_BxTxHxK.astype(jnp.float32) * hd**-0.5).astype(q_BxTxHxK.dtype)
  q_BxHxTxK, k_BxGxTxK, v_BxGxTxK = (
    jnp.transpose(jnp.pad(x, pad), (0, 2, 1, 3)) for x in (q, k_BxTxGxK, v_BxTxGxK)
  )
  seg = jnp.pad(seg_BxT.astype(jnp.int32), ((0, 0), (0, t_pad - t)))
  kernel = make_kernel(h, t_pad, interpret)
  out_BxHxTxK = jax.vmap(lambda q, k, v, s: kernel(q, k, v, sa.SegmentIds(q=s, kv=s)))(
    q_BxHxTxK, k_BxGxTxK, v_BxGxTxK, seg
  )
  return jnp.transpose(out_BxHxTxK, (0, 2, 1, 3))[:, :t]


def _kv_heads_for_shard(n_heads: int, n_kv: int, axis: str, shards: int):
  """K/V replicated over `axis` while the H query heads are split: give each shard one K/V head
  per local query head (repeated by group), so the kernel's head → group map stays right."""
  local, r = n_heads // shards, n_heads // n_kv

  def select(x_BxTxGxK):
    start = jax.lax.axis_index(axis) * local
    return jax.lax.dynamic_slice_in_dim(jnp.repeat(x_BxTxGxK, r, axis=2), start, local, axis=2)

  return select


def attend_splash(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segment_ids_BxT):
  """Training attention (queries and keys are the same T positions) with the splash kernel."""
  interpret = target_platform() != "tpu"
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:  # a single device, no mesh: call the kernel directly
    return _local_attention(
      q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segment_ids_BxT, interpret=interpret, kv_slice=None
    )
  # Where the logical-axis rules put these activations (same table as the constraints).
  q_spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "head_dim"))
  kv_spec = nn.logical_to_mesh_axes(("batch", "length", "kv_heads", "head_dim"))
  if q_spec[1] is not None:
    raise ValueError(
      f"splash attention needs the whole sequence per shard; 'length' is sharded over {q_spec[1]!r}"
    )
  batch = q_spec[0] if isinstance(q_spec[0], tuple) else (q_spec[0],)
  shards = math.prod(mesh.shape[a] for a in batch if a is not None)
  if q_BxTxHxK.shape[0] % shards:  # e.g. the 1-example init forward: every shard does it all
    q_spec, kv_spec = P(None, *q_spec[1:]), P(None, *kv_spec[1:])
  seg_spec = P(q_spec[0], None)
  kv_slice = None
  if q_spec[2] is not None and kv_spec[2] is None:
    kv_slice = _kv_heads_for_shard(
      q_BxTxHxK.shape[2], k_BxTxGxK.shape[2], q_spec[2], mesh.shape[q_spec[2]]
    )
  body = functools.partial(_local_attention, interpret=interpret, kv_slice=kv_slice)
  # check_vma off: the Pallas call carries no varying-axis types; the transpose still sums the
  # gradients of inputs replicated over an axis (K/V over `tensor` above), as the tests check.
  return jax.shard_map(
    body,
    mesh=mesh,
    in_specs=(q_spec, kv_spec, kv_spec, seg_spec),
    out_specs=q_spec,
    check_vma=False,
  )(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segment_ids_BxT)
