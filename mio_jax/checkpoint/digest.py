"""Checksums that catch damage a checkpoint reader cannot: flipped bits in stored arrays or JSON.

Uncompressed array chunks decode fine with any bit flipped, so a checkpoint records a digest of
every array at save time and restore recomputes it. The array digest is layout-independent (a
restore onto another mesh or process count computes the same value) and runs on device under jit,
one pass over the state, no host copy:

  h = Σ_i f(word_i) · w_i  (mod 2³²),   w_i = odd multiplier derived from the flat index i

with f an invertible bit mix. Two such sums with independent multipliers give 64 bits. Damage to
one word changes f(word_i) by some d ≢ 0, so h changes by d·w_i ≢ 0 (mod 2³²) because w_i is odd
(invertible mod 2³²): every flipped bit, or any damage confined to one 4-byte word, is caught.
"""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHM = "wsum32x2-v1"
_MUL = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77))
_ADD = (np.uint32(0x7F4A7C15), np.uint32(0x165667B1))


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (8-byte elements give two words each)."""
  size = jnp.dtype(x.dtype).itemsize
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  if size == 1:
    return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # adds a trailing axis of 2
  raise TypeError(f"no digest for dtype {x.dtype}")


def _flat_index(shape) -> jax.Array:
  """Row-major flat index of every element, as uint32 (wraps past 2³²; the weight stays odd)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
    stride *= shape[axis]
  return index


def _leaf_digest(x: jax.Array) -> jax.Array:
  words = _words(x)
  # An invertible xorshift: spreads high bits into the low ones (float words of round numbers
  # end in zeros) without losing the guarantee, since any changed word still changes.
  words = words ^ (words >> np.uint32(15))
  index = _flat_index(words.shape)
  sums = [
    jnp.sum(words * ((index * m + a) | np.uint32(1)), dtype=jnp.uint32) for m, a in zip(_MUL, _ADD)
  ]
  return jnp.stack(sums)


@jax.jit
def _digests(leaves: list) -> jax.Array:
  return jnp.stack([_leaf_digest(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def state_digest(tree) -> dict[str, str]:
  """{'params/layers/mlp/up': '0123abcd89ef4567', …} for every array leaf of `tree`."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  named = [
    (_path_name(p), x) for p, x in flat if isinstance(x, (jax.Array, np.ndarray, np.generic))
  ]
  values = np.asarray(jax.device_get(_digests([jnp.asarray(x) for _, x in named])))
  return {name: f"{int(a):08x}{int(b):08x}" for (name, _), (a, b) in zip(named, values)}


def mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
  """Names of saved arrays whose digest differs, or that are missing from `actual`."""
  return sorted(k for k in expected if expected[k] != actual.get(k))


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def json_sha256(obj) -> str:
  """Digest of a JSON-able value, independent of key order."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def seal(record: dict, key: str = "sha256") -> dict:
  """`record` plus its own digest under `key`."""
  return {**record, key: json_sha256(record)}


def unseal(record: dict, where: str, key: str = "sha256") -> dict:
  """`record` without its digest; ChecksumError naming `where` when they disagree."""
  if key not in record:
    raise ChecksumError(f"{where}: no {key!r} digest (written by an older mio_jax, or damaged)")
  body = {k: v for k, v in record.items() if k != key}
  if json_sha256(body) != record[key]:
    raise ChecksumError(f"{where}: content does not match its digest (damaged)")
  return body


class CheckpointDamage(Exception):
  """A checkpoint whose stored bytes are damaged: a digest mismatch, a truncated or unreadable
  file, a missing file. Only these make a restore fall back to an older checkpoint and move the
  damaged one aside; any other error stops the run as itself. (Defined here, the lowest module
  of the checkpoint code, because ChecksumError is one.)"""


class ChecksumError(CheckpointDamage, ValueError):
  """Stored bytes that decode but differ from what was written."""


class CheckpointReadError(CheckpointDamage, OSError):
  """A checkpoint file that cannot be read: truncated, corrupt or unreadable (names the file)."""


class CheckpointDamaged(CheckpointDamage, OSError):
  """A finished checkpoint that lacks one of the files every checkpoint has."""
