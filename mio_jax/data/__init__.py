"""Grain input pipeline over pre-tokenized multimodal shards (see docs/data_format.md): the shard
format (`format.py`), reading and validating sources (`sources.py`), packing (`packing.py`,
`streams.py`), shuffling (`shuffle.py`), config → iterator (`pipeline.py`), and synthetic data
for tests and benchmarks (`synthetic_shards.py`, `synthetic_task.py`)."""
