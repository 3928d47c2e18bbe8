"""Hugging Face checkpoints both ways: weight names and shapes, config.json, and the vocabulary
keys of MIO's release."""
