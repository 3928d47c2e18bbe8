"""The token space: the vocabulary layout, MIO's token layouts and chat format, and the tokenizer
interfaces and registry."""
