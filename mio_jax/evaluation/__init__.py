"""Held-out evaluation (`python -m mio_jax.evaluate`): data (JSONL → examples), metrics (WER,
caption attributes, chance levels), shapes (pixel classifier for generated images), tasks."""
