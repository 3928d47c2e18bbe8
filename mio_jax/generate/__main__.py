"""`python -m mio_jax.generate`: the code is mio_jax/cli/generate.py."""

from mio_jax.cli import generate

generate.cli()
