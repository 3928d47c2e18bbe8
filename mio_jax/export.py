"""`python -m mio_jax.export`: the code is mio_jax/cli/export.py."""

if __name__ == "__main__":
  from mio_jax.cli import export

  export.cli()
