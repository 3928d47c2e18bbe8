"""Offline tokenization throughput: public dataset layout → converter → tokenizers → shards.

    python -m benchmarks.tokenize_throughput [--images=300] [--speech_s=180] [--videos=8] \
        [--tokenizers=demo_data/tokenizers] [--out=benchmarks/results/tokenize_throughput.json]
    python -m benchmarks.tokenize_throughput --mio_tokenizers --images=8 --speech_s=60 \
        --videos=2 --skip_beam --out=benchmarks/results/tokenize_throughput_mio.json

Makes small synthetic inputs in the layouts the converters read (COCO captions with PNGs,
a LibriSpeech tree of 44.1 kHz stereo FLAC, WebVid CSV + MP4s written with PyAV), then times
`data_pipelines.convert` + tokenization + shard writing per modality, in one process
(`tokenize_jsonl.run`, workers=1) and on the Beam DirectRunner with 2 worker processes
(`beam_tokenize.run`). Figures: images/s, seconds of speech per second, source video frames/s
(each includes the conversion). Beam's fixed start-up (2 SDK worker processes, measured on a
one-line manifest) is reported, and its rates also net of it. Tokenizers: the demo's
(demo_data/tokenizers) when built, else demo-style ones trained here in seconds; with
`--mio_tokenizers`, MIO's own at their released sizes with random weights (nothing downloads):
SEED-Tokenizer (EVA ViT-g + causal Q-Former, 8,192 codes; keyframes of video too) and
SpeechTokenizer (the released config, 4 of 8 RVQ layers), shards in the `mio` vocabulary.
`tokenizer_load_s` is what each run spends loading them; `local_net_*` are the rates without it.
Prints one JSON line and saves it to --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matmuls: BLAS threads only contend

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mio_jax.hardware.cpu_peak import cpu_model  # noqa: E402

DEMO_TOKENIZERS = "demo_data/tokenizers"
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
SHAPES = ("circle", "square", "triangle", "diamond")
CLIP_S, RATE_IN, FPS = 5.0, 44100, 24


def _caption(i: int) -> str:
  return f"a {COLOURS[i % 6]} {SHAPES[i // 6 % 4]} on the left"


def _picture(i: int, size: int = 96) -> np.ndarray:
  """A coloured square on a noisy background: compresses like a photo, not like a flat PNG."""
  rng = np.random.default_rng(i)
  img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
  x, y, w = rng.integers(0, size // 2, 3)
  img[y : y + w + 8, x : x + w + 8] = rng.integers(100, 255, 3)
  return img


def write_coco(root: str, n: int) -> dict:
  from PIL import Image

  os.makedirs(os.path.join(root, "train2017"))
  os.makedirs(os.path.join(root, "annotations"))
  images = [{"id": i, "file_name": f"{i:012d}.png"} for i in range(n)]
  for im in images:
    Image.fromarray(_picture(im["id"])).save(os.path.join(root, "train2017", im["file_name"]))
  anns = [{"id": i, "image_id": i, "caption": _caption(i)} for i in range(n)]
  with open(os.path.join(root, "annotations", "captions_train2017.json"), "w") as f:
    json.dump({"images": images, "annotations": anns}, f)
  return {"format": "coco_captions", "src": root, "split": "train", "units": n}


def write_librispeech(root: str, seconds: float) -> dict:
  import soundfile

  chapter = os.path.join(root, "19", "198")
  os.makedirs(chapter)
  n = max(1, int(round(seconds / CLIP_S)))
  t = np.arange(int(CLIP_S * RATE_IN)) / RATE_IN
  lines = []
  for u in range(n):
    rng = np.random.default_rng(u)
    wave = 0.2 * np.sin(2 * np.pi * (150 + 20 * u) * t) * (1 + np.sin(3 * t)) / 2
    wave = wave + 0.01 * rng.normal(size=t.size)
    soundfile.write(
      os.path.join(chapter, f"19-198-{u:04d}.flac"),
      np.stack([wave, 0.7 * wave], 1).astype(np.float32),
      RATE_IN,
      format="FLAC",
    )
    lines.append(f"19-198-{u:04d} {_caption(u).upper()}")
  with open(os.path.join(chapter, "19-198.trans.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return {"format": "librispeech", "src": root, "split": None, "units": n * CLIP_S}


def write_webvid(root: str, n: int, frames: int = 48, size: int = 64) -> dict:
  import av

  os.makedirs(os.path.join(root, "videos"))
  rows = ["videoid,contentUrl,duration,page_dir,name"]
  for v in range(n):
    with av.open(os.path.join(root, "videos", f"{1000 + v}.mp4"), "w") as c:
      s = c.add_stream("mpeg4", rate=FPS)
      s.width = s.height = size
      s.pix_fmt = "yuv420p"
      for i in range(frames):  # a square that moves, and a scene change halfway
        img = _picture(v * 1000 + (i >= frames // 2), size)
        img = np.roll(img, 2 * i, axis=1)
        for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
          c.mux(packet)
      for packet in s.encode():
        c.mux(packet)
    rows.append(f'{1000 + v},http://x/{v}.mp4,PT00H00M02S,000,"{_caption(v)} moves"')
  with open(os.path.join(root, "results_train.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  return {"format": "webvid", "src": root, "split": "train", "units": n * frames}


def demo_style_tokenizers(directory: str) -> str:
  """Tokenizers of the demo's kinds and sizes (sentencepiece, VQ-512, RVQ 4x at 16 kHz,
  keyframes), trained on the benchmark's own inputs in seconds."""
  from data_pipelines.builders.prompt_pools import POOL_TEXTS
  from data_pipelines.tokenizers import Tokenizers, save_tokenizers, train_sentencepiece
  from data_pipelines.tokenizers.image_vq import train_image_vq
  from data_pipelines.tokenizers.speech_rvq import train_speech_rvq
  from data_pipelines.tokenizers.video import KeyframeVideoTokenizer

  texts = [_caption(i) for i in range(24)] + [_caption(i).upper() for i in range(24)]
  text = train_sentencepiece(
    (texts + list(POOL_TEXTS)) * 3, os.path.join(directory, "text"), vocab_size=600
  )
  image = train_image_vq([_picture(i, 32) for i in range(16)], codebook_size=512, iters=3)
  t = np.arange(16000) / 16000
  speech = train_speech_rvq(
    [0.2 * np.sin(2 * np.pi * f * t) for f in (150, 250, 350)],
    16000,
    codebook_size=128,
    num_layers=4,
    iters=3,
  )
  save_tokenizers(Tokenizers(text, image, speech, KeyframeVideoTokenizer(image, 4)), directory)
  return directory


BEAM_ARGS = [
  "--runner=DirectRunner",
  "--direct_num_workers=2",
  "--direct_running_mode=multi_processing",
]


def beam_startup_s(tok_dir: str, work: str, model: str = "tiny") -> float:
  """Seconds the DirectRunner takes for a one-line manifest: its fixed cost per pipeline."""
  from data_pipelines import beam_tokenize

  raw = os.path.join(work, "startup", "raw.jsonl")
  os.makedirs(os.path.dirname(raw))
  with open(raw, "w") as f:
    f.write(json.dumps({"type": "text", "text": _caption(0)}) + "\n")
  t0 = time.perf_counter()
  beam_tokenize.run(raw, tok_dir, os.path.join(work, "startup", "out"), BEAM_ARGS, model=model)
  return time.perf_counter() - t0


# SpeechTokenizer's released config (fnlp/SpeechTokenizer speechtokenizer_hubert_avg/config.json),
# the network-shape keys the model reads.
SPEECHTOKENIZER_RELEASED = {
  "n_filters": 64,
  "dimension": 1024,
  "strides": [8, 5, 4, 2],
  "lstm_layers": 2,
  "bidirectional": True,
  "dilation_base": 2,
  "residual_kernel_size": 3,
  "n_residual_layers": 1,
  "activation": "ELU",
  "sample_rate": 16000,
  "n_q": 8,
  "codebook_size": 1024,
  "semantic_dimension": 768,
}


def mio_tokenizers(directory: str) -> str:
  """MIO's tokenizers at their released sizes, random weights: what tokenizing for MIO costs."""
  from data_pipelines.tokenizers import Tokenizers, load_tokenizers, save_tokenizers
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer
  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter
  from data_pipelines.tokenizers.video import KeyframeVideoTokenizer

  demo = demo_style_tokenizers(os.path.join(directory, "demo"))
  image = SEEDImageTokenizer.from_config({}, device="cpu")
  speech = SpeechTokenizerAdapter.from_config(SPEECHTOKENIZER_RELEASED, num_layers=4)
  text = load_tokenizers(demo).text
  save_tokenizers(Tokenizers(text, image, speech, KeyframeVideoTokenizer(image, 4)), directory)
  return directory


def timed_run(case: dict, tok_dir: str, work: str, runner: str, model: str = "tiny") -> dict:
  """convert + tokenize + write shards for one modality; -> seconds and counts."""
  from data_pipelines import convert
  from data_pipelines.tokenize_jsonl import run as local_run
  from data_pipelines.tokenize_jsonl import vocab_for

  raw = os.path.join(work, runner, case["format"], "raw.jsonl")
  out = os.path.join(work, runner, case["format"], "shards")
  t0 = time.perf_counter()
  conv = convert.convert(
    case["format"], case["src"], raw, split=case["split"], stream=io.StringIO(), strict=True
  )
  t1 = time.perf_counter()
  if runner == "local":
    report = local_run(
      raw, tok_dir, out, vocab_for(model), strict=True, workers=1, stream=io.StringIO()
    ).as_dict()
  else:
    from data_pipelines import beam_tokenize

    report = beam_tokenize.run(raw, tok_dir, out, BEAM_ARGS, model=model, strict=True)
  t2 = time.perf_counter()
  if report.get("skipped"):
    raise RuntimeError(f"{case['format']} ({runner}): inputs skipped {report['skipped']}")
  total = t2 - t0
  return {
    "rows": conv.processed,
    "records": sum(report["records"].values()),
    "convert_s": round(t1 - t0, 2),
    "tokenize_s": round(t2 - t1, 2),
    "total_s": round(total, 2),
    "per_s": rate(case["units"], total),
  }


def rate(units: float, seconds: float) -> float:
  """units/s to 3 significant digits (MIO's tokenizers on a CPU run well below 1/s)."""
  return float(f"{units / seconds:.3g}")


def load_seconds(tok_dir: str) -> float:
  """What one process spends loading the tokenizers (each run loads them once)."""
  from data_pipelines.tokenizers import load_tokenizers

  t0 = time.perf_counter()
  load_tokenizers(tok_dir)
  return time.perf_counter() - t0


UNITS = {
  "coco_captions": "images_per_s",
  "librispeech": "speech_s_per_s",
  "webvid": "video_frames_per_s",
}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--images", type=int, default=300)
  p.add_argument("--speech_s", type=float, default=180.0)
  p.add_argument("--videos", type=int, default=8)
  p.add_argument("--tokenizers", default=DEMO_TOKENIZERS)
  p.add_argument("--skip_beam", action="store_true")
  p.add_argument(
    "--mio_tokenizers",
    action="store_true",
    help="MIO's SEED-Tokenizer + SpeechTokenizer at released sizes (random weights)",
  )
  p.add_argument("--out", default="benchmarks/results/tokenize_throughput.json")
  a = p.parse_args(argv)
  start = time.perf_counter()
  work = tempfile.mkdtemp(prefix="mio_tok_bench_")
  try:
    cases = [
      write_coco(os.path.join(work, "coco"), a.images),
      write_librispeech(os.path.join(work, "librispeech"), a.speech_s),
      write_webvid(os.path.join(work, "webvid"), a.videos),
    ]
    tok_dir, which, model = a.tokenizers, a.tokenizers, "tiny"
    if a.mio_tokenizers:
      tok_dir = mio_tokenizers(os.path.join(work, "tok"))
      which, model = "MIO's at released sizes, random weights (SEED, SpeechTokenizer)", "small"
    elif not os.path.isdir(os.path.join(tok_dir, "text")):
      tok_dir, which = demo_style_tokenizers(os.path.join(work, "tok")), "demo-style, trained here"
    result = {
      "benchmark": "tokenize_throughput",
      "cpu": cpu_model(),
      "cores": os.cpu_count(),
      "tokenizers": which,
      "inputs": {
        "images": a.images,
        "image_px": 96,
        "speech_s": cases[1]["units"],
        "speech_format": "FLAC 44.1 kHz stereo (resampled to 16 kHz)",
        "videos": a.videos,
        "video_frames": cases[2]["units"],
        "video_format": f"MP4 mpeg4 64x64 {FPS} fps",
      },
    }
    load_s = load_seconds(tok_dir)
    result["tokenizer_load_s"] = round(load_s, 1)
    for runner in ("local",) + (() if a.skip_beam else ("beam_direct_2",)):
      runs = {c["format"]: timed_run(c, tok_dir, work, runner, model) for c in cases}
      result[runner] = runs
      result.update({f"{runner}_{UNITS[f]}": r["per_s"] for f, r in runs.items()})
      if runner == "local":  # net of loading the tokenizers, which a long job pays once
        for c in cases:
          net = runs[c["format"]]["total_s"] - load_s
          result[f"local_net_{UNITS[c['format']]}"] = rate(c["units"], net) if net > 0 else None
    if not a.skip_beam:
      startup = beam_startup_s(tok_dir, work, model)
      result["beam_direct_2_startup_s"] = round(startup, 1)
      for c in cases:  # net of the fixed start-up; None when the run is within it
        net = result["beam_direct_2"][c["format"]]["total_s"] - startup
        result[f"beam_direct_2_net_{UNITS[c['format']]}"] = (
          round(c["units"] / net, 1) if net > 1.0 else None
        )
  finally:
    shutil.rmtree(work, ignore_errors=True)
  result["wall_s"] = round(time.perf_counter() - start, 1)
  line = json.dumps(result)
  if a.out:
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
      f.write(json.dumps(result, indent=2) + "\n")
  print(line)


if __name__ == "__main__":
  main()
