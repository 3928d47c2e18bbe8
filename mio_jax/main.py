"""`python -m mio_jax.main --config=configs/stage1.py`: train (the code is mio_jax/cli/train.py)."""

if __name__ == "__main__":
  from mio_jax.hardware import host_memory

  host_memory.reexec_with_huge_pages()  # before JAX loads its allocator
  from mio_jax.cli import train

  train.cli()
