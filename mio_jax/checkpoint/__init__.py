"""Checkpoints of a run: the Orbax manager and its resume rules, params-only restores, digests
that catch damage, the data iterator's saved state, the async writer's footprint, and loading a
finished run (or a released HF directory) for inference."""
