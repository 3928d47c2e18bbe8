"""LibriSpeech: `SRC/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `SPEAKER-CHAPTER.trans.txt` (one
`UTTERANCE-ID TRANSCRIPT` line per utterance). SRC is a split folder (e.g. LibriSpeech/
train-clean-100), or its parent with `--split=train-clean-100`.

One row per utterance, direction "both": ASR (speech -> text) and TTS (text -> speech). The
transcript is kept as LibriSpeech writes it (upper case, no punctuation); evaluation normalises.
"""

from __future__ import annotations

import glob
import os

from data_pipelines.converters.common import ConvertOptions, MissingSource, bad, rel, require


def convert(opts: ConvertOptions):
  root = os.path.join(opts.src, opts.split) if opts.split else opts.src
  require(root, "LibriSpeech folder")
  transcripts = sorted(glob.glob(os.path.join(root, "*", "*", "*.trans.txt")))
  if not transcripts:
    raise MissingSource(f"no SPEAKER/CHAPTER/*.trans.txt under {root} (not LibriSpeech?)")
  for trans in transcripts:
    with open(trans, encoding="utf-8") as f:
      lines = f.read().splitlines()
    for n, line in enumerate(lines, 1):
      if not line.strip():
        continue
      where = f"{trans}:{n}"
      uid, _, text = line.strip().partition(" ")
      audio = os.path.join(os.path.dirname(trans), uid + ".flac")
      if not text.strip():
        yield bad("empty_text", f"{where}: no transcript after utterance id {uid!r}")
      elif not os.path.isfile(audio):
        yield bad("missing_audio", f"{where}: audio file not found: {audio}")
      else:
        yield {
          "type": "speech_text",
          "id": f"librispeech_{uid}",
          "direction": "both",
          "audio": rel(audio, opts.out_dir),
          "text": text.strip(),
        }
