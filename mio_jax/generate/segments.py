"""Split generated ids into per-modality segments the CLI can decode to text / PNG / WAV.

    text    → `ids`: text-range ids, for the text tokenizer
    image   → `codes` [N]: image codebook indices (0-based), for the image tokenizer's decoder
    speech  → `codes` [L, n]: one row per speech layer (0 = content), recovered from MIO's
              sequential output layout; an input-style span (content only) gives [1, n]
    special → `ids`: chat/stop specials outside spans (`<|im_end|>` …), usually ignored

A span cut off before its closing token is returned with `complete=False`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mio_jax.tokens.vocab import IMAGE, SPEECH, TEXT, Vocab


@dataclasses.dataclass
class Segment:
  modality: str  # 'text' | 'image' | 'speech' | 'special'
  ids: np.ndarray  # the raw ids of the segment (span markers excluded)
  codes: np.ndarray | None = None  # image [N] or speech [L, n] codes
  complete: bool = True


def _speech_codes(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
  layers = vocab.speech_layer_of(ids)
  if np.any(layers < 0):
    raise ValueError("speech span holds non-speech ids")
  if np.any(np.diff(layers) < 0):
    raise ValueError(f"speech layers out of order in span: {layers.tolist()}")
  present = sorted(set(layers.tolist()))
  if present != list(range(len(present))):
    raise ValueError(f"speech span skips layers: has {present}")
  rows = [vocab.speech_code(ids[layers == l], l) for l in present]
  if len({r.size for r in rows}) > 1:
    raise ValueError(f"speech layer blocks differ in length: {[r.size for r in rows]}")
  return np.stack(rows) if rows else np.zeros((0, 0), np.int32)


def split_segments(ids, vocab: Vocab) -> list[Segment]:
  """Segments in order. Raises on malformed speech spans (unequal blocks, misordered layers)."""
  ids = np.asarray(ids, np.int32).ravel()
  sid = vocab.special_id
  openers = {sid("<image>"): ("image", sid("</image>")), sid("<spch>"): ("speech", sid("</spch>"))}
  modality = vocab.modality_of(ids)
  segments: list[Segment] = []
  i = 0
  while i < ids.size:
    tok = int(ids[i])
    if tok in openers:
      kind, closer = openers[tok]
      j = i + 1
      while j < ids.size and ids[j] != closer:
        j += 1
      body = ids[i + 1 : j]
      want = IMAGE if kind == "image" else SPEECH
      if np.any(vocab.modality_of(body) != want):
        raise ValueError(f"{kind} span at {i} holds non-{kind} ids")
      codes = vocab.image_code(body) if kind == "image" else _speech_codes(vocab, body)
      segments.append(Segment(kind, body, codes, complete=j < ids.size))
      i = j + 1
    elif modality[i] == TEXT:
      j = i
      while j < ids.size and modality[j] == TEXT:
        j += 1
      segments.append(Segment("text", ids[i:j]))
      i = j
    else:
      # Specials outside spans (chat markers, stray closers or raw media ids) pass through as-is.
      segments.append(Segment("special", ids[i : i + 1]))
      i += 1
  return segments
