"""Held-out evaluation (`python -m mio_jax.evaluate`): data (JSONL → examples), scores (WER,
CIDEr, chance levels), external judges, batched generation, and the tasks."""
