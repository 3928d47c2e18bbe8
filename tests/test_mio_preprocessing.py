"""MIO's preprocessing, checked against MIO's own code paths: the SEED image transform against
torchvision's (MIO's clip_transform.yaml), the float16 default, speech resampling against
torchaudio's documented windowed-sinc arithmetic, and the uniform keyframe rule of extract_frames.
Figures measured on these fixtures are in docs/tokenizers.md ("MIO's preprocessing")."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipelines.tokenizers.video import (
  KeyframeVideoTokenizer,
  mio_scene_cuts,
  mio_scene_indices,
  mio_uniform_indices,
  opencv_hsv,
)
from mio_jax.io.media import read_audio, read_image, resample, resample_sinc_hann, sinc_hann_kernels
from tests import test_seed_tokenizer as seed
from tests.test_seed_tokenizer import TINY

converted = seed.converted  # module-scoped: the tiny SEED checkpoint through convert_weights

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# launch/setup.sh --test installs torchvision here, off sys.path (see there why).
TORCHVISION_DIR = os.path.join(os.path.dirname(sys.executable), "..", "extras", "torchvision")


# ---- images --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv_transforms():
  """torchvision.transforms from PyPI's wheel, whose C ops need CUDA torch: loaded under a bare
  package object (its pure-Python transforms need none of them), then taken out of sys.modules so
  that transformers does not find a half-imported torchvision."""
  root = os.path.join(TORCHVISION_DIR, "torchvision")
  assert os.path.isdir(root), (
    f"torchvision not installed at {TORCHVISION_DIR}: launch/setup.sh --test"
  )
  saved = {
    k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")
  }
  pkg = types.ModuleType("torchvision")
  pkg.__path__ = [root]
  sys.modules["torchvision"] = pkg
  try:
    return importlib.import_module("torchvision.transforms")
  finally:
    for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
      del sys.modules[k]
    sys.modules.update(saved)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
  """Smooth gradients, a disc and mild noise: edges and flat areas, like a photograph."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  img = np.stack([x * 255, y * 255, (1 - x) * 180 + 40], -1)
  img[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.05] = rng.integers(0, 256, 3)
  return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def real_format_images(directory) -> list[str]:
  """JPEG RGB, PNG RGBA, palette, greyscale, 16-bit greyscale: odd and non-square sizes, down and
  up, and one already at 224 x 224."""
  a = photo(301, 199, 1)
  rgba = np.dstack([photo(97, 131, 2), np.random.default_rng(3).integers(0, 256, (97, 131))])
  files = {
    "rgb.jpg": Image.fromarray(a),
    "rgba.png": Image.fromarray(rgba.astype(np.uint8), "RGBA"),
    "palette.png": Image.fromarray(photo(50, 75, 4)).convert("P", palette=Image.Palette.ADAPTIVE),
    "grey.png": Image.fromarray(photo(224, 224, 5)[..., 0], "L"),
    "grey16.png": Image.fromarray(photo(40, 30, 6)[..., 1].astype(np.uint16) * 200),  # I;16
    "tall.jpg": Image.fromarray(photo(640, 17, 7)),
  }
  out = []
  for name, im in files.items():
    im.save(directory / name)
    out.append(str(directory / name))
  return out


def test_seed_pixels_equal_torchvision_transform(tmp_path, tv_transforms):
  """MIO: Image.open(p).convert('RGB') -> Resize((224, 224)) -> ToTensor -> Normalize(CLIP)."""
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer

  T = tv_transforms
  mio = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
  tok32 = SEEDImageTokenizer.from_config({**TINY, "image_size": 224}, device="cpu", dtype="float32")
  tok16 = SEEDImageTokenizer.from_config({**TINY, "image_size": 224}, device="cpu")
  for path in real_format_images(tmp_path):
    with Image.open(path) as im:
      want = mio(im.convert("RGB"))[None]
    ours = read_image(path, rgb="convert")
    got = tok32.pixels(ours)
    assert got.dtype == torch.float32 and got.shape == (1, 3, 224, 224), path
    # Far tighter than 1/255 of a pixel (1/255/std ~ 0.015 here): the same arithmetic.
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6, err_msg=path)
    half = tok16.pixels(ours)
    assert half.dtype == torch.float16
    np.testing.assert_array_equal(half.numpy(), want.half().numpy(), err_msg=path)


def test_convert_rgb_is_mio_and_composite_is_ours(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., :3] = (10, 20, 30)  # fully transparent: MIO keeps the hidden colour, we show white
  Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
  assert tuple(read_image(str(tmp_path / "t.png"), rgb="convert")[0, 0]) == (10, 20, 30)
  assert tuple(read_image(str(tmp_path / "t.png"))[0, 0]) == (255, 255, 255)
  with pytest.raises(ValueError, match="rgb='cmyk' unknown"):
    read_image(str(tmp_path / "t.png"), rgb="cmyk")


def test_seed_runs_in_float16_by_default_as_mio(converted, tmp_path):
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer

  out, _ = converted
  assert json.loads(open(os.path.join(out, "tokenizer.json")).read())["dtype"] == "float16"
  tok16 = SEEDImageTokenizer.load(out, device="cpu")
  tok32 = SEEDImageTokenizer.load(out, device="cpu", dtype="float32")
  assert (tok16.dtype, tok32.dtype) == ("float16", "float32")
  images = [seed.image(s, size=28) for s in range(8)] + [photo(28, 28, s) for s in range(8)]
  c16 = np.stack([tok16.encode(x) for x in images])
  c32 = np.stack([tok32.encode(x) for x in images])
  assert tok16.model.query_tokens.dtype == torch.float16  # the whole quantizer, as model.half()
  assert c16.dtype == np.int32 and c16.shape == (16, 8)
  # Measured 1.0 on these images (docs/tokenizers.md); a code flips only on a near-tie.
  assert (c16 == c32).mean() >= 0.95
  assert tok16.image_embeds(c16[0]).dtype == torch.float32  # what unCLIP is fed
  # Saving a model that ran in half still writes float32 weights, and the dtype it ran in.
  tok16.save(str(tmp_path / "s"))
  from safetensors import safe_open

  with safe_open(str(tmp_path / "s" / "model.safetensors"), "pt") as f:
    assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
  assert json.loads((tmp_path / "s" / "tokenizer.json").read_text())["dtype"] == "float16"
  with pytest.raises(ValueError, match="dtype 'bfloat16' unknown"):
    SEEDImageTokenizer.load(out, device="cpu", dtype="bfloat16")


# ---- speech --------------------------------------------------------------------------------------
def direct_sinc_hann(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """torchaudio's documented interpolation written per output sample: y[m] = sum_i x[i] h(t),
  t = (i / orig - m / new) * base_freq, h = sinc(pi t) cos^2(pi t / 12) base_freq / orig, |t| <= 6
  (lowpass_filter_width 6, rolloff 0.99, rates reduced by their gcd)."""
  from math import gcd

  g = gcd(rate_in, rate_out)
  orig, new = rate_in // g, rate_out // g
  base = min(orig, new) * 0.99
  i = np.arange(len(x))
  out = []
  for m in range(-(-new * len(x) // orig)):
    t = np.clip((i / orig - m / new) * base, -6, 6)
    h = np.sinc(t) * np.cos(t * np.pi / 12) ** 2 * base / orig
    out.append(np.dot(h, x.astype(np.float64)))
  return np.array(out)


@pytest.mark.parametrize(
  "rate_in,rate_out",
  [(8000, 16000), (22050, 16000), (44100, 16000), (48000, 16000), (16000, 24000)],
)
def test_sinc_hann_resampling_is_torchaudios_arithmetic(rate_in, rate_out):
  x = np.random.default_rng(0).uniform(-0.5, 0.5, 1203).astype(np.float32)
  got = resample_sinc_hann(x, rate_in, rate_out)
  want = direct_sinc_hann(x, rate_in, rate_out)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_sinc_hann_passes_a_tone_and_reports_its_width():
  rate_in, rate_out = 44100, 16000
  t = np.arange(rate_in) / rate_in
  y = resample_sinc_hann(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate_in, rate_out)
  want = np.sin(2 * np.pi * 440 * np.arange(rate_out) / rate_out)
  np.testing.assert_allclose(y[100:-100], want[100:-100], atol=2e-3)
  kernels, width = sinc_hann_kernels(rate_in, rate_out)
  assert kernels.shape == (160, 2 * width + 441) and width == 17  # ceil(6 * 441 / (0.99 * 160))
  with pytest.raises(ValueError, match="method 'fft' unknown"):
    resample(y, 16000, 8000, method="fft")


def espeak_wave(tmp_path):
  exe = shutil.which("espeak-ng")
  assert exe, "espeak-ng is not installed (apt-get install espeak-ng)"
  wav = tmp_path / "espeak.wav"
  subprocess.run(
    [exe, "-w", str(wav), "Tokenizers resample speech before encoding it."], check=True
  )
  return read_audio(str(wav))


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_speechtokenizer_resamples_as_mio_and_downmixes_stereo(tmp_path):
  import soundfile

  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter
  from tests.test_tokenizers_adapters import ST_CONFIG, randomise_codebooks

  tok = SpeechTokenizerAdapter.from_config(ST_CONFIG, num_layers=4)
  randomise_codebooks(tok.model, "_codebook.embed")
  speech, rate = espeak_wave(tmp_path)
  for rate_out, fmt in [(8000, "WAV"), (44100, "FLAC"), (48000, "FLAC")]:
    wave = resample(speech, rate, rate_out)
    path = str(tmp_path / f"s{rate_out}.{fmt.lower()}")
    soundfile.write(path, np.stack([wave, 0.5 * wave], 1), rate_out, format=fmt)  # stereo
    stereo_wave, file_rate = read_audio(path)
    assert file_rate == rate_out and stereo_wave.ndim == 1  # downmixed: mean of the channels
    codes = tok.encode(stereo_wave, file_rate)
    with torch.no_grad():
      mio = tok.model.encode(
        torch.from_numpy(resample_sinc_hann(stereo_wave, rate_out, 16000))[None, None], n_q=4
      )
    np.testing.assert_array_equal(codes, mio[:, 0].numpy())
  # MIO passes torchaudio.load's [channels, n] on: SpeechTokenizer's encoder takes one channel.
  both = torch.from_numpy(np.stack([speech, speech]))[None]
  with pytest.raises(RuntimeError, match="channels"), torch.no_grad():
    tok.model.encode(both, n_q=4)


# ---- video ---------------------------------------------------------------------------------------
def mio_extract_frames_uniform(n: int) -> list[int]:
  """utils.extract_frames' loop (force_uniform or no scene): frame_idx % interval == 0."""
  interval = max(1, n // 10)
  return [i for i in range(n) if i % interval == 0]


@pytest.mark.parametrize("n", [1, 7, 10, 19, 20, 25, 99, 100, 101, 512])
def test_mio_uniform_keyframes_are_extract_frames(n):
  assert mio_uniform_indices(n).tolist() == mio_extract_frames_uniform(n)


def test_mio_uniform_method_ignores_num_keyframes():
  from tests.test_tokenizers_video import three_shot_clip

  frames = three_shot_clip((10, 11, 9))  # 30 frames: every 3rd
  video = KeyframeVideoTokenizer(image=None, num_keyframes=4, method="mio_uniform")
  assert video.keyframe_indices(frames).tolist() == list(range(0, 30, 3))


def test_opencv_hsv_arithmetic():
  """OpenCV's documented 8-bit RGB->HSV: V = max, S = 255 (V - min) / V, H = 60-degree sector
  formula halved into [0, 180), each rounded."""
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90], [255, 128, 0], [0, 0, 0]]])
  hsv = opencv_hsv(rgb.astype(np.uint8))[0].tolist()
  # 128 * 30 / 255 = 15.06 -> 15; magenta-ish hues wrap past 0 to 180 - x.
  assert hsv == [
    [0, 255, 255],
    [60, 255, 255],
    [120, 255, 255],
    [0, 0, 90],
    [15, 255, 255],
    [0, 0, 0],
  ]
  assert opencv_hsv(np.array([[[255, 0, 128]]], np.uint8))[0, 0].tolist() == [165, 255, 255]


def shots(lengths, size=64, seed=0):
  """Flat-coloured shots with a moving square: cuts are large HSV jumps, motion small ones."""
  from tests.test_tokenizers_video import three_shot_clip

  return three_shot_clip(tuple(lengths), size=size, seed=seed)


def test_mio_scene_rule():
  # Cut at 20; the 8-frame shot is a "flash": scenedetect's merge filter drops its cut (28) and
  # cuts once at 68. An AVI with these shot lengths gave PySceneDetect 0.6.4 cuts [20, 68] and
  # middle frames [10, 44, 80] (docs/tokenizers.md).
  clip = shots((20, 8, 40, 25))
  assert mio_scene_cuts(clip) == [20, 68]
  assert mio_scene_indices(clip).tolist() == [10, 44, 80]
  # A cut within the first 15 frames is never emitted; with no cut, the uniform rule.
  clip = shots((10, 50))
  assert mio_scene_cuts(clip) == []
  assert mio_scene_indices(clip).tolist() == mio_extract_frames_uniform(60)
  video = KeyframeVideoTokenizer(image=None, method="mio_scene")
  assert video.keyframe_indices(shots((30, 30, 30))).tolist() == [15, 45, 75]


def test_mio_scene_downscales_wide_frames_as_scenedetect():
  """From 512 px wide scenedetect scores frames shrunk by width // 256: the cuts stay put."""
  wide = np.repeat(np.repeat(shots((20, 30), size=64), 4, axis=1), 9, axis=2)  # 256 x 576
  assert wide.shape[1:3] == (256, 576)
  assert mio_scene_cuts(wide) == [20]
