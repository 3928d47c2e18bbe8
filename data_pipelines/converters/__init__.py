"""Converters from public dataset layouts to the raw JSONL of data_pipelines/builders/raw.py.
`python -m data_pipelines.convert --format=NAME ...` looks NAME up here."""

from data_pipelines.converters import (
  coco_captions,
  librispeech,
  llava,
  mmc4,
  speech_dialogue,
  video_qa,
  vqav2,
  webdataset,
  webvid,
)
from data_pipelines.converters.common import ConvertOptions

CONVERTERS = {
  "coco_captions": coco_captions.convert,
  "librispeech": librispeech.convert,
  "webdataset": webdataset.convert,
  "webvid": webvid.convert,
  "mmc4": mmc4.convert,
  "llava": llava.convert,
  "speech_dialogue": speech_dialogue.convert,
  "vqav2": vqav2.convert,
  "video_qa": video_qa.convert,
}

__all__ = ["CONVERTERS", "ConvertOptions"]
