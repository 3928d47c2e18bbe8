"""Tiny datasets in the exact on-disk layouts the converters read (no downloads), and the demo
tokenizers to tokenize their output. Used by tests/test_convert.py and tests/test_media_io.py."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np

RATE = 16000  # the test speech tokenizer's rate; fixture audio is written at 44.1 kHz stereo


def rng(seed=0):
  return np.random.default_rng(seed)


def write_jpeg(path, seed=0, size=(24, 32)):
  from PIL import Image

  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def tone(seconds=0.4, rate=44100, freq=300.0, channels=2):
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.3 * np.sin(2 * np.pi * freq * t)
  return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_flac(path, seconds=0.4, rate=44100, freq=300.0, channels=2):
  import soundfile

  os.makedirs(os.path.dirname(path), exist_ok=True)
  soundfile.write(path, tone(seconds, rate, freq, channels), rate, format="FLAC")


def write_video(path, values, size=32, codec=None, rate=10):
  """A clip whose frame i is the flat grey level values[i] (so time order is checkable)."""
  import av

  os.makedirs(os.path.dirname(path), exist_ok=True)
  codec = codec or ("libvpx" if path.endswith(".webm") else "mpeg4")
  with av.open(path, "w") as c:
    s = c.add_stream(codec, rate=rate)
    s.width = s.height = size
    s.pix_fmt = "yuv420p"
    for v in values:
      frame = np.full((size, size, 3), v, np.uint8)
      for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        c.mux(packet)
    for packet in s.encode():
      c.mux(packet)


def coco(root):
  """SRC/annotations/captions_val2017.json + SRC/val2017/*.jpg; one caption's image missing."""
  images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)]
  for i in (1, 2):
    write_jpeg(os.path.join(root, "val2017", f"{i:012d}.jpg"), seed=i)
  anns = [
    {"id": 10, "image_id": 1, "caption": "a red circle"},
    {"id": 11, "image_id": 1, "caption": "a round red thing"},
    {"id": 12, "image_id": 2, "caption": "a blue square"},
    {"id": 13, "image_id": 3, "caption": "a missing picture"},
  ]
  os.makedirs(os.path.join(root, "annotations"))
  with open(os.path.join(root, "annotations", "captions_val2017.json"), "w") as f:
    json.dump({"images": images, "annotations": anns}, f)
  return {"rows": 3, "bad": {"missing_image": 1}}


def librispeech(root):
  """SRC/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac + .trans.txt; one transcript line has no file."""
  chapter = os.path.join(root, "19", "198")
  for u in range(2):
    write_flac(os.path.join(chapter, f"19-198-{u:04d}.flac"), freq=200 + 100 * u)
  with open(os.path.join(chapter, "19-198.trans.txt"), "w") as f:
    f.write("19-198-0000 A RED CIRCLE\n19-198-0001 A BLUE SQUARE\n19-198-0002 NO SUCH FILE\n")
  return {"rows": 2, "bad": {"missing_audio": 1}}


def webdataset(root):
  """SRC/00000.tar: key.jpg + key.txt, key.png + key.json, and a caption without an image."""
  from PIL import Image

  os.makedirs(root)
  members = {}
  for key, fmt in (("000000000", "JPEG"), ("000000001", "PNG")):
    buf = io.BytesIO()
    Image.fromarray(rng(int(key)).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, fmt)
    members[f"{key}.{'jpg' if fmt == 'JPEG' else 'png'}"] = buf.getvalue()
  members["000000000.txt"] = b"a red circle"
  members["000000001.json"] = json.dumps({"caption": "a blue square", "url": "x"}).encode()
  members["000000002.txt"] = b"caption without an image"
  with tarfile.open(os.path.join(root, "00000.tar"), "w") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return {"rows": 2, "bad": {"missing_image": 1}}


def webvid(root):
  """SRC/results_val.csv (videoid,name,page_dir) + SRC/videos/{videoid}.mp4|webm."""
  write_video(os.path.join(root, "videos", "1001.mp4"), [0, 60, 120, 180, 240, 250])
  write_video(os.path.join(root, "videos", "007", "1002.webm"), [30, 90, 150, 210])
  with open(os.path.join(root, "results_val.csv"), "w") as f:
    f.write(
      "videoid,contentUrl,duration,page_dir,name\n"
      '1001,http://x/1001.mp4,PT00H00M01S,007,"a red circle moves"\n'
      '1002,http://x/1002.mp4,PT00H00M01S,007,"a blue square moves"\n'
      '1003,http://x/1003.mp4,PT00H00M01S,007,"never downloaded"\n'
    )
  return {"rows": 2, "bad": {"missing_video": 1}}


def mmc4(root):
  """SRC/docs.jsonl (text_list, image_info) + SRC/images/; the second doc lost its image."""
  write_jpeg(os.path.join(root, "images", "a.jpg"), seed=3)
  docs = [
    {
      "text_list": ["first a red circle.", "then a blue square."],
      "image_info": [{"image_name": "a.jpg", "matched_text_index": 1}],
    },
    {
      "text_list": ["an orphan sentence."],
      "image_info": [{"image_name": "gone.jpg", "matched_text_index": 0}],
    },
  ]
  with open(os.path.join(root, "docs.jsonl"), "w") as f:
    f.write("\n".join(json.dumps(d) for d in docs) + "\n")
  return {"rows": 1, "bad": {"missing_image": 1}}


def llava(root):
  """SRC/llava.json with images under SRC/coco/; one item names an image that is not there."""
  write_jpeg(os.path.join(root, "coco", "a.jpg"), seed=4)
  items = [
    {
      "id": "q0",
      "image": "coco/a.jpg",
      "conversations": [
        {"from": "human", "value": "<image>\nWhat is in this image?"},
        {"from": "gpt", "value": "a red circle"},
        {"from": "human", "value": "What colour is it?"},
        {"from": "gpt", "value": "red"},
      ],
    },
    {
      "id": "t1",
      "conversations": [
        {"from": "human", "value": "Say hello."},
        {"from": "gpt", "value": "hello world"},
      ],
    },
    {
      "id": "q2",
      "image": "coco/none.jpg",
      "conversations": [{"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "x"}],
    },
  ]
  with open(os.path.join(root, "llava.json"), "w") as f:
    json.dump(items, f)
  return {"rows": 2, "bad": {"missing_image": 1}}


def speech_dialogue(root):
  """SRC/dialogues.jsonl + its audio; the second dialogue's answer audio is missing."""
  for name in ("u0.flac", "a0.flac", "u1.flac"):
    write_flac(os.path.join(root, name), freq=250 + 50 * len(name))
  dialogues = [
    {
      "id": "d0",
      "turns": [
        {"user_audio": "u0.flac", "assistant_audio": "a0.flac", "assistant_text": "a red circle"}
      ],
    },
    {"id": "d1", "turns": [{"user_audio": "u1.flac", "assistant_audio": "gone.flac"}]},
  ]
  with open(os.path.join(root, "dialogues.jsonl"), "w") as f:
    f.write("\n".join(json.dumps(d) for d in dialogues) + "\n")
  return {"rows": 1, "bad": {"missing_audio": 1}}


def vqav2(root):
  """SRC/v2_OpenEnded_mscoco_val2014_questions.json + annotations + val2014/; one question's
  image is missing."""
  for i in (1, 2):
    write_jpeg(os.path.join(root, "val2014", f"COCO_val2014_{i:012d}.jpg"), seed=10 + i)
  questions = [
    {"image_id": 1, "question": "What colour is the circle?", "question_id": 10},
    {"image_id": 2, "question": "Is it square?", "question_id": 20},
    {"image_id": 3, "question": "Where is it?", "question_id": 30},
  ]
  answers = {10: ["red"] * 7 + ["pink"] * 3, 20: ["yes"] * 10, 30: ["left"] * 10}
  annotations = [
    {
      "question_id": q,
      "image_id": q // 10,
      "multiple_choice_answer": a[0],
      "answers": [
        {"answer": x, "answer_confidence": "yes", "answer_id": j + 1} for j, x in enumerate(a)
      ],
    }
    for q, a in answers.items()
  ]
  with open(os.path.join(root, "v2_OpenEnded_mscoco_val2014_questions.json"), "w") as f:
    json.dump({"questions": questions}, f)
  with open(os.path.join(root, "v2_mscoco_val2014_annotations.json"), "w") as f:
    json.dump({"annotations": annotations}, f)
  return {"rows": 2, "bad": {"missing_image": 1}}


def video_qa(root):
  """SRC/test_qa.json (MSRVTT-QA) + SRC/videos/video{N}.mp4; one clip was never downloaded."""
  write_video(os.path.join(root, "videos", "video7010.mp4"), [0, 80, 160, 240])
  write_video(os.path.join(root, "videos", "video7011.mp4"), [200, 120, 40])
  items = [
    {"id": 0, "video_id": 7010, "question": "what gets brighter?", "answer": "screen"},
    {"id": 1, "video_id": 7011, "question": "what gets darker?", "answer": "light"},
    {"id": 2, "video_id": 7012, "question": "what is gone?", "answer": "clip"},
  ]
  with open(os.path.join(root, "test_qa.json"), "w") as f:
    json.dump(items, f)
  return {"rows": 2, "bad": {"missing_video": 1}}


# format -> (fixture writer, --src relative to the fixture root, --split)
FIXTURES = {
  "coco_captions": (coco, "", "val"),
  "librispeech": (librispeech, "", None),
  "webdataset": (webdataset, "", None),
  "webvid": (webvid, "results_val.csv", None),
  "mmc4": (mmc4, "", None),
  "llava": (llava, "llava.json", None),
  "speech_dialogue": (speech_dialogue, "dialogues.jsonl", None),
  "vqav2": (vqav2, "", "val"),
  "video_qa": (video_qa, "test_qa.json", None),
}

TEXTS = [
  "a red circle",
  "a round red thing",
  "a blue square",
  "A RED CIRCLE",
  "A BLUE SQUARE",
  "first a red circle.",
  "then a blue square.",
  "What is in this image?",
  "red",
  "What colour is it?",
  "Say hello.",
  "hello world",
  "a red circle moves",
  "a blue square moves",
  "system\n",
  "user\n",
  "assistant\n",
]


def make_tokenizers(directory: str) -> str:
  """Demo-style tokenizers (sentencepiece + VQ + RVQ at 16 kHz + keyframes), trained in seconds."""
  from data_pipelines.builders.prompt_pools import POOL_TEXTS
  from data_pipelines.tokenizers import Tokenizers, save_tokenizers, train_sentencepiece
  from data_pipelines.tokenizers.image_vq import train_image_vq
  from data_pipelines.tokenizers.speech_rvq import train_speech_rvq
  from data_pipelines.tokenizers.video import KeyframeVideoTokenizer

  text = train_sentencepiece(
    (TEXTS + list(POOL_TEXTS)) * 5, os.path.join(directory, "text"), vocab_size=400
  )
  image = train_image_vq(
    [rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(6)],
    codebook_size=64,
    iters=3,
  )
  speech = train_speech_rvq(
    [tone(1.0, RATE, f, 1)[:, 0] for f in (220, 330)], RATE, codebook_size=32, num_layers=4, iters=3
  )
  save_tokenizers(Tokenizers(text, image, speech, KeyframeVideoTokenizer(image, 3)), directory)
  return directory
