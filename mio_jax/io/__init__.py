"""Files anywhere (local paths and gs:// URLs, written atomically) and media decoding (images,
audio, video) shared by tokenizers, generation and evaluation."""
