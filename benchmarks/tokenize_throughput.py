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
import sys  # noqa: E402
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


# ---- JAX encoders vs the torch adapters ---------------------------------------------------------
def _median_s(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _speech_wave(u: int, seconds: float, rate: int = 16000) -> np.ndarray:
  """Noise plus a gliding tone under a slow envelope: codes spread over the codebooks."""
  rng = np.random.default_rng(100 + u)
  t = np.arange(int(seconds * rate)) / rate
  phase = 2 * np.pi * np.cumsum(np.linspace(150 + 40 * u, 900 + 80 * u, t.size)) / rate
  wave = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) * np.sin(phase)
  return (wave + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


def calibrated_speech_adapter(directory: str):
  """SpeechTokenizer at its released size with the package's random init made usable, as
  tests/test_encoder_speechtokenizer_jax.py does: weight-norm gains x sqrt(3) (variance-preserving
  convs) and codebooks k-means-initialised on encoder outputs by the package's own training path
  (a fresh model's k-means codebooks are zeros). Saved to `directory` for the JAX loader."""
  import torch

  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter

  tok = SpeechTokenizerAdapter.from_config(SPEECHTOKENIZER_RELEASED, num_layers=4)
  # 12 s = 600 frames: the package's k-means holds a frames x 1,024 x 1,024 float32 difference
  # tensor (2.5 GB here), and 2 iterations instead of its 50 keep the calibration to seconds.
  calibration = np.concatenate([_speech_wave(u, 4.0) for u in (10, 11, 12)])
  for layer in tok.model.quantizer.vq.layers:
    layer._codebook.kmeans_iters = 2
  with torch.no_grad():
    for name, gain in tok.model.encoder.named_parameters():
      if name.endswith("weight_g"):
        gain.mul_(3**0.5)
    features = tok.model.encoder(torch.from_numpy(calibration)[None, None])
    tok.model.quantizer.train()
    tok.model.quantizer(features)  # first training call: k-means init of every layer
    tok.model.quantizer.eval()
  tok.save(directory)
  return tok


def _agreement(a, b) -> float:
  return float(np.mean(np.asarray(a) == np.asarray(b)))


def jax_vs_torch(work: str, images: int, clips: int, clip_s: float, repeats: int) -> dict:
  """The JAX encoders (mio_jax/encoders) against the torch adapters at MIO's released sizes
  (random weights), equal batch and equal threads: throughput ratio (JAX / torch, each the
  median of `repeats` timed calls after a warm-up call, which for JAX is the jit compile) and the
  fraction of equal codes, JAX float32 and bfloat16 vs torch float32.

  Threads: torch.set_num_threads(N) with N = the cores this process may run on; XLA's CPU client
  sizes its intra-op thread pool to the same cores, so both use N threads."""
  import jax
  import torch

  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  out = {
    "threads": threads,
    # Set OMP_WAIT_POLICY=PASSIVE on a shared host: torch's OpenMP threads otherwise spin at
    # every barrier while a busy host has descheduled their partner.
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    "jax_backend": jax.default_backend(),
    "repeats": repeats,
    "batch_images": images,
    "batch_speech_clips": clips,
    "clip_s": clip_s,
  }

  # Speech first: small, and its models are freed (on return) before SEED's 4 GB arrive.
  out |= _compare_speech(work, clips, clip_s, repeats)
  print(json.dumps(out), file=sys.stderr, flush=True)  # partial result: speech is quick, SEED not
  out |= _compare_images(images, repeats)
  return out


def _compare_speech(work: str, clips: int, clip_s: float, repeats: int) -> dict:
  import jax.numpy as jnp
  import torch

  from mio_jax.encoders import speechtokenizer as speech_jax

  tok = calibrated_speech_adapter(os.path.join(work, "speech_released"))
  params, config = speech_jax.load_speech_encoder(os.path.join(work, "speech_released"), 4)
  waves_BxT = np.stack([_speech_wave(u, clip_s) for u in range(clips)])
  with torch.no_grad():
    torch_encode = lambda: tok.model.encode(torch.from_numpy(waves_BxT)[:, None], n_q=4)  # noqa: E731
    torch_codes = torch_encode().numpy().transpose(1, 0, 2)  # [n_q, B, T] -> [B, L, T]
    torch_s = _median_s(torch_encode, repeats)
  wave = jnp.asarray(waves_BxT)
  jax_encode = lambda dt: np.asarray(speech_jax.encode_wave(params, config, wave, dt))  # noqa: E731
  codes_f32 = jax_encode(jnp.float32)  # warm-up: compiles
  jax_s = _median_s(lambda: jax_encode(jnp.float32), repeats)
  codes_bf16 = jax_encode(jnp.bfloat16)
  return {
    "torch_speech_s_per_s": rate(clips * clip_s, torch_s),
    "jax_speech_s_per_s": rate(clips * clip_s, jax_s),
    "jax_vs_torch_speech": round(torch_s / jax_s, 3),
    "agreement_f32_speech": round(_agreement(codes_f32, torch_codes), 4),
    "agreement_bf16_speech": round(_agreement(codes_bf16, torch_codes), 4),
    "speech_codes_compared": int(torch_codes.size),
  }


def _compare_images(images: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import torch

  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer
  from mio_jax.encoders import seed as seed_jax

  image = SEEDImageTokenizer.from_config({}, device="cpu", dtype="float32")
  config = seed_jax.SEEDEncoderConfig.from_dict(image.config.to_dict())
  tensors = {k: v.detach().numpy() for k, v in image.model.state_dict().items()}
  seed_jax.check_tensors(tensors, config, "SEED released-size random weights")
  leaves, tree = jax.tree.flatten(seed_jax.params_from_tensors(tensors, config))
  del tensors
  for i in range(len(leaves)):  # one stacked numpy copy alive at a time, not all 4 GB twice
    leaves[i] = jnp.asarray(leaves[i])
  params = jax.tree.unflatten(tree, leaves)
  del leaves
  pixels_NxCxHxW = np.concatenate([image.pixels(_picture(i, 224)).numpy() for i in range(images)])
  with torch.no_grad():
    model = image.compute_model()
    torch_encode = lambda: model.encode(torch.from_numpy(pixels_NxCxHxW))  # noqa: E731
    torch_codes = torch_encode().numpy()
    torch_s = _median_s(torch_encode, repeats)
  pixels = jnp.asarray(pixels_NxCxHxW)
  jax_encode = lambda dt: np.asarray(seed_jax.encode_pixels(params, config, pixels, dt))  # noqa: E731
  codes_f32 = jax_encode(jnp.float32)
  jax_s = _median_s(lambda: jax_encode(jnp.float32), repeats)
  t0 = time.perf_counter()
  codes_bf16 = jax_encode(jnp.bfloat16)  # agreement only: one call, its compile included
  return {
    "torch_images_per_s": rate(images, torch_s),
    "jax_images_per_s": rate(images, jax_s),
    "jax_vs_torch_images": round(torch_s / jax_s, 3),
    "agreement_f32_images": round(_agreement(codes_f32, torch_codes), 4),
    "agreement_bf16_images": round(_agreement(codes_bf16, torch_codes), 4),
    "image_codes_compared": int(torch_codes.size),
    "jax_bf16_images_first_call_s": round(time.perf_counter() - t0, 1),
  }


def jax_only(images: int, clips: int, clip_s: float, repeats: int) -> dict:
  """The JAX encoders alone at released sizes on jax's default device (a GPU in
  benchmarks/gpu.sh), float32 and bfloat16, random weights made without torch."""
  import jax
  import jax.numpy as jnp

  from benchmarks.encoder_aot import random_seed_params, random_speech_params
  from mio_jax.encoders import seed as seed_jax
  from mio_jax.encoders import speechtokenizer as speech_jax

  out = {
    "jax_backend": jax.default_backend(),
    "device": str(jax.devices()[0].device_kind),
    "repeats": repeats,
    "batch_images": images,
  }
  config = seed_jax.SEEDEncoderConfig()
  params = random_seed_params(config)
  rng = np.random.default_rng(0)
  pixels = jnp.asarray(rng.standard_normal((images, 3, 224, 224), dtype=np.float32))
  for name, dt in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
    run = lambda dt=dt: seed_jax.encode_pixels(params, config, pixels, dt).block_until_ready()  # noqa: E731
    run()
    out[f"jax_{name}_images_per_s"] = rate(images, _median_s(run, repeats))
  del params
  params, config = random_speech_params()
  wave = jnp.asarray(np.stack([_speech_wave(u, clip_s) for u in range(clips)]))
  out |= {"batch_speech_clips": clips, "clip_s": clip_s}
  for name, dt in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
    run = lambda dt=dt: speech_jax.encode_wave(params, config, wave, dt).block_until_ready()  # noqa: E731
    run()
    out[f"jax_{name}_speech_s_per_s"] = rate(clips * clip_s, _median_s(run, repeats))
  return out


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


DEFAULT_OUT = "benchmarks/results/tokenize_throughput.json"
JAX_VS_TORCH_OUT = "benchmarks/results/tokenize_jax_vs_torch.json"
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
  p.add_argument(
    "--only_jax_vs_torch",
    action="store_true",
    help="only the JAX-vs-torch encoder comparison (what --mio_tokenizers runs last)",
  )
  p.add_argument(
    "--jax_only",
    action="store_true",
    help="only the JAX encoders' timing at released sizes on jax's default device (GPU rows)",
  )
  p.add_argument("--jax_images", type=int, default=4, help="batch of the encoder comparison")
  p.add_argument("--jax_clips", type=int, default=4, help="speech clips in that batch")
  p.add_argument("--jax_clip_s", type=float, default=CLIP_S)
  p.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median)")
  p.add_argument("--out", default=None, help=f"default {DEFAULT_OUT}, {JAX_VS_TORCH_OUT} (only)")
  a = p.parse_args(argv)
  start = time.perf_counter()
  if a.only_jax_vs_torch or a.jax_only:
    return encoder_comparison_only(a, start)
  a.out = DEFAULT_OUT if a.out is None else a.out
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
    if a.mio_tokenizers:  # the JAX encoders against these torch ones, same run
      result |= jax_vs_torch(work, a.jax_images, a.jax_clips, a.jax_clip_s, a.repeats)
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
  finish(result, a.out, start)


def finish(result: dict, out: str, start: float) -> None:
  """Prints the result as one JSON line (the last line) and saves it, indented, to `out`."""
  result["wall_s"] = round(time.perf_counter() - start, 1)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result))


def encoder_comparison_only(a, start: float) -> None:
  result = {"benchmark": "tokenize_jax_vs_torch", "cpu": cpu_model(), "cores": os.cpu_count()}
  result["weights"] = "MIO's tokenizers at released sizes, random weights"
  if a.jax_only:
    result["benchmark"] = "tokenize_jax_encoders"
    result |= jax_only(a.jax_images, a.jax_clips, a.jax_clip_s, a.repeats)
    return finish(result, a.out, start)
  work = tempfile.mkdtemp(prefix="mio_jax_vs_torch_")
  try:
    result |= jax_vs_torch(work, a.jax_images, a.jax_clips, a.jax_clip_s, a.repeats)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  finish(result, JAX_VS_TORCH_OUT if a.out is None else a.out, start)


if __name__ == "__main__":
  main()
