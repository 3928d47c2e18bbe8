"""`python -m mio_jax.aot`: the code is mio_jax/cli/aot.py."""

if __name__ == "__main__":
  from mio_jax.cli import aot

  aot.cli()
