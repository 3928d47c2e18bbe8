"""Offline pipelines: raw media -> tokenizers -> shards of token ids.

See docs/architecture.md §1 and docs/data_format.md.
"""
