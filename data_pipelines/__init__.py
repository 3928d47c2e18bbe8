"""Offline pipelines: raw media -> tokenizers -> shards of token ids (DESIGN §1, §4)."""
