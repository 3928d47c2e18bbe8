"""Real media decoding (mio_jax/io/media.py, media_decode.py): audio of any libsndfile format and
channel count, resampled to the tokenizer's rate by the raw pipeline; images of any Pillow mode
with EXIF rotation; container video (PyAV) in time order, then keyframes."""

import os

import numpy as np
import pytest

from data_pipelines.builders import Builder, RawOptions, tokenize_raw
from data_pipelines.tokenizers.video import KeyframeVideoTokenizer
from mio_jax.io.media import read_audio, read_image, read_video
from tests import convert_fixtures as fx


# ---- audio ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")]
)
def test_audio_formats_downmix(fmt, ext, tmp_path):
  import soundfile

  if fmt not in soundfile.available_formats():
    pytest.skip(f"this libsndfile has no {fmt}")
  stereo = fx.tone(0.5, 44100, 440.0, channels=2)
  path = str(tmp_path / f"x.{ext}")
  soundfile.write(path, stereo, 44100, format=fmt)
  wave, rate = read_audio(path)
  assert rate == 44100 and wave.ndim == 1 and wave.dtype == np.float32
  assert abs(len(wave) - len(stereo)) < 3000  # MP3 pads its frames
  if fmt in ("WAV", "FLAC"):  # lossless: exactly the channel mean
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-4)


def test_unreadable_audio_names_the_file(tmp_path):
  path = tmp_path / "garbage.flac"
  path.write_bytes(b"not audio at all")
  with pytest.raises(ValueError, match="garbage.flac"):
    read_audio(str(path))


class _Speech:
  """Stands in for a speech tokenizer at 16 kHz and records what it was given."""

  sample_rate, num_layers = fx.RATE, 4

  def __init__(self):
    self.calls = []

  def encode(self, wave, rate):
    self.calls.append((wave, rate))
    return np.zeros((4, 5), np.int32)


def test_flac_44k_stereo_is_resampled_mono_at_tokenizer_rate(tmp_path, monkeypatch):
  from types import SimpleNamespace

  fx.write_flac(str(tmp_path / "a.flac"), seconds=0.5, rate=44100, channels=2)
  speech = _Speech()
  text = SimpleNamespace(
    bos_id=1, eos_id=2, vocab_size=10, encode=lambda s: np.arange(3, 3 + min(len(s), 5))
  )
  from mio_jax.model.sizes import DEMO_VOCAB

  notes = []
  example = {"type": "speech_text", "audio": "a.flac", "text": "hi", "direction": "asr"}
  records = tokenize_raw(
    example,
    0,
    Builder(DEMO_VOCAB, text),
    SimpleNamespace(speech=speech),
    RawOptions(base_dir=str(tmp_path)),
    notes=notes,
  )
  assert len(records) == 1 and notes == ["resampled_audio"]
  ((wave, rate),) = speech.calls
  assert rate == fx.RATE and wave.ndim == 1 and len(wave) == fx.RATE // 2


# ---- images ---------------------------------------------------------------------------------
def _save(tmp_path, im, name, **kw):
  path = str(tmp_path / name)
  im.save(path, **kw)
  return path


def test_cmyk_16bit_palette_modes(tmp_path):
  from PIL import Image

  red = read_image(_save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg"))
  assert red.shape == (8, 8, 3) and (np.abs(red.astype(int) - [255, 0, 0]) < 8).all()
  wide = Image.fromarray(np.full((4, 6), 40000, np.uint16))
  assert wide.mode == "I;16"
  assert (read_image(_save(tmp_path, wide, "w.png")) == 156).all()  # 40000 / 257
  pal = Image.new("P", (4, 4))
  pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
  pal.putpixel((1, 1), 1)
  got = read_image(_save(tmp_path, pal, "p.png"))
  assert tuple(got[1, 1]) == (10, 200, 30) and tuple(got[0, 0]) == (0, 0, 0)
  pal.info["transparency"] = 0  # index 0 transparent -> composited on white
  got = read_image(_save(tmp_path, pal, "pt.png", transparency=0))
  assert tuple(got[0, 0]) == (255, 255, 255) and tuple(got[1, 1]) == (10, 200, 30)


def test_alpha_composited_on_white(tmp_path):
  from PIL import Image

  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (255, 0, 0, 255)  # opaque red
  rgba[0, 1] = (255, 0, 0, 0)  # transparent -> white
  rgba[1, 0] = (0, 0, 0, 128)  # half black -> grey
  got = read_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
  assert tuple(got[0, 0]) == (255, 0, 0) and tuple(got[0, 1]) == (255, 255, 255)
  assert abs(int(got[1, 0, 0]) - 127) <= 1
  la = Image.fromarray(rgba[..., [0, 3]], "LA")
  assert tuple(read_image(_save(tmp_path, la, "la.png"))[0, 1]) == (255, 255, 255)


def test_exif_rotation_applied(tmp_path):
  from PIL import Image

  pixels = np.zeros((2, 3, 3), np.uint8)
  pixels[0, 0] = (255, 0, 0)  # top-left red in the stored (sideways) image
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation 6: display = stored rotated 90 degrees clockwise
  got = read_image(_save(tmp_path, Image.fromarray(pixels), "r.png", exif=exif))
  assert got.shape == (3, 2, 3)
  assert tuple(got[0, 1]) == (255, 0, 0)  # top-left moved to top-right


# ---- video ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "name,codec", [("v.mp4", "libx264"), ("v.webm", "libvpx"), ("v.avi", "mpeg4")]
)
def test_container_video_frames_in_time_order(name, codec, tmp_path):
  values = [10 * i for i in range(16)]
  path = str(tmp_path / name)
  fx.write_video(path, values, codec=codec)  # libx264 uses B-frames: decode order != time order
  frames = read_video(path)
  assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
  means = frames.reshape(16, -1).mean(axis=1)
  assert np.all(np.diff(means) > 0) and np.abs(means - values).max() < 6


def test_mp4_keyframes_uniform_and_scene(tmp_path):
  path = str(tmp_path / "cuts.mp4")
  fx.write_video(path, [20] * 5 + [220] * 5 + [120] * 6)  # two hard cuts, at frames 5 and 10
  frames = read_video(path)
  image = object()  # keyframe selection never touches the image tokenizer
  uniform = KeyframeVideoTokenizer(image, 4, method="uniform").keyframe_indices(frames)
  scene = KeyframeVideoTokenizer(image, 3, method="scene").keyframe_indices(frames)
  assert list(uniform) == [0, 4, 8, 12]
  assert list(scene) == [0, 5, 10]
  kept = KeyframeVideoTokenizer(image, 3, method="scene").keyframes(frames)
  np.testing.assert_allclose([k.mean() for k in kept], [20, 220, 120], atol=6)  # time order


def test_unreadable_video_names_the_file(tmp_path):
  path = tmp_path / "broken.mp4"
  path.write_bytes(os.urandom(256))
  with pytest.raises(ValueError, match="broken.mp4"):
    read_video(str(path))
