"""`python -m mio_jax.evaluate`: the code is mio_jax/cli/evaluate.py."""

if __name__ == "__main__":
  from mio_jax.cli import evaluate

  evaluate.cli()
