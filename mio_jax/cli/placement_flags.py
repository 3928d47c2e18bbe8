"""`--dtype` / `--tensor` for the commands that load a trained model (generate; evaluate can
import and call `define()` too): params sharded over every device and cast
(mio_jax/parallel/placement.py)."""

from __future__ import annotations

from absl import flags

from mio_jax.parallel.placement import DTYPES


def define() -> None:
  flags.DEFINE_enum(
    "dtype",
    None,
    list(DTYPES),
    "param/compute dtype (default: bfloat16 above ~1B params, else float32)",
  )
  flags.DEFINE_integer(
    "tensor",
    None,
    "tensor-parallel size; the other devices form fsdp "
    "(default: 1 when --dtype is given or the model is over ~1B params)",
  )


def kwargs() -> dict:
  """load_model(**kwargs()): None/None keeps the exact f32 single-device path for small models."""
  f = flags.FLAGS
  return {"tensor": f.tensor, "dtype": f.dtype}
