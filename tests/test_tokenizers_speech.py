"""Built-in log-mel RVQ speech tokenizer: mel reconstruction distance, layers, determinism,
errors."""

import shutil
import subprocess

import numpy as np
import pytest

from data_pipelines.tokenizers import SpeechTokenizer, load_tokenizers, read_wav, write_wav
from data_pipelines.tokenizers import audio_features as af
from data_pipelines.tokenizers.speech_rvq import MelRVQSpeechTokenizer, train_speech_rvq
from mio_jax.io.media import resample

# Mean |log-mel| distance (natural log) of a held-out sentence after encode -> decode (Griffin-Lim).
# Measured with espeak-ng (8 training sentences, 4 voices): 4 layers 0.59, content only 0.97,
# Griffin-Lim alone on the exact mel 0.17. Synthetic fallback (no espeak-ng): 0.86, 1.37, GL 0.54.
# (all layers, content only) bounds per source, with margin:
MEL_BOUNDS = {"espeak": (0.75, 1.2), "synthetic": (1.05, 1.6)}

SENTENCES = [
  "The quick brown fox jumps over the lazy dog.",
  "A red square and a blue circle are drawn.",
  "She sells sea shells by the sea shore.",
  "How much wood would a woodchuck chuck?",
  "Please call Stella and ask her to bring these things.",
  "The weather is sunny and warm.",
  "Numbers one two three four five six seven.",
  "I would like a cup of tea with milk.",
]
HELD_OUT = "The green triangle is next to the yellow star."
VOICES = ["en-us+f3", "en-us+m3", "en+f2", "en+m1"]
ESPEAK = shutil.which("espeak-ng")


def espeak(text, voice, path):
  subprocess.run([ESPEAK, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
  return read_wav(str(path))


def synthetic_utterance(seed, rate=16_000, seconds=2.0):
  """Vowel-like fallback: harmonics of a gliding f0 shaped by formants that jump every 0.2 s."""
  rng = np.random.default_rng(seed)
  n = int(rate * seconds)
  t = np.arange(n) / rate
  f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
  phase = 2 * np.pi * np.cumsum(f0) / rate
  seg = (t / 0.2).astype(int)
  formants = rng.uniform([300, 900], [800, 2500], size=(seg.max() + 1, 2))[seg]
  wave = np.zeros(n)
  for h in range(1, 30):
    fh = h * f0
    gain = sum(np.exp(-(((fh - formants[:, i]) / 150.0) ** 2)) for i in range(2)) + 0.02
    wave += gain * np.sin(h * phase) / h
  wave *= np.sin(np.pi * seg / 3) ** 2 + 0.1  # syllable-like loudness
  return (0.3 * wave / np.abs(wave).max()).astype(np.float32), rate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("wav")
  if ESPEAK:
    train = [espeak(s, VOICES[i % 4], d / f"{i}.wav") for i, s in enumerate(SENTENCES)]
    held = espeak(HELD_OUT, "en-us+f4", d / "held.wav")
  else:
    train = [synthetic_utterance(i) for i in range(8)]
    held = synthetic_utterance(100)
  return train, held, "espeak" if ESPEAK else "synthetic"


@pytest.fixture(scope="module")
def tok(data):
  train = data[0]
  rate = train[0][1]
  return train_speech_rvq([w for w, _ in train], rate, codebook_size=256, num_layers=4, seed=0)


def test_interface(tok):
  assert isinstance(tok, SpeechTokenizer)
  assert (tok.sample_rate, tok.frame_rate, tok.codebook_size, tok.num_layers) == (
    16_000,
    50,
    256,
    4,
  )


def test_held_out_mel_distance(tok, data):
  wave, rate = data[1]
  codes = tok.encode(wave, rate)
  seconds = len(wave) / rate
  assert codes.dtype == np.int32 and codes.shape == (4, int(np.ceil(seconds * 50)))
  assert codes.min() >= 0 and codes.max() < 256
  ref = resample(wave, rate, 16_000)
  full = tok.decode(codes)
  content = tok.decode(codes[:1])
  assert full.dtype == np.float32 and len(full) == codes.shape[1] * 320
  d_full, d_content = af.mel_distance(ref, full, 16_000), af.mel_distance(ref, content, 16_000)
  bound_full, bound_content = MEL_BOUNDS[data[2]]
  assert d_full <= bound_full, d_full
  assert d_content <= bound_content, d_content
  assert d_full < d_content  # timbre layers add detail
  # A wave that ignores the codes must be far off (the metric can fail).
  assert af.mel_distance(ref, np.roll(full, len(full) // 2), 16_000) > d_full + 0.2


def test_content_layer_ignores_loudness_and_tilt(tok, data):
  """Layer 0 codes depend on the mean-removed spectrum: a global gain leaves them unchanged."""
  wave, rate = data[1]
  c_loud, c = tok.encode(wave * 0.5, rate), tok.encode(wave, rate)
  voiced = tok.features(wave, rate).max(axis=1) > np.log(1e-2)  # skip silence (log floor clips)
  assert np.mean(c_loud[0][voiced] == c[0][voiced]) > 0.95


def test_resamples_other_rates(tok, data):
  wave, rate = data[1]
  a = tok.encode(resample(wave, rate, 16_000), 16_000)
  b = tok.encode(resample(wave, rate, 48_000), 48_000)
  assert a.shape == b.shape
  assert np.mean(a[0] == b[0]) > 0.8


def test_deterministic_codebooks(data):
  waves = [w for w, _ in data[0][:3]]
  rate = data[0][0][1]
  a = train_speech_rvq(waves, rate, codebook_size=32, seed=3, iters=4)
  b = train_speech_rvq(waves, rate, codebook_size=32, seed=3, iters=4)
  assert a.books_LxKxM.tobytes() == b.books_LxKxM.tobytes()
  assert a.mean_M.tobytes() == b.mean_M.tobytes()


def test_save_load_and_wav_files(tok, data, tmp_path):
  tok.save(str(tmp_path / "speech"))
  loaded = load_tokenizers(str(tmp_path)).speech
  assert isinstance(loaded, MelRVQSpeechTokenizer)
  assert loaded.books_LxKxM.tobytes() == tok.books_LxKxM.tobytes()
  wave, rate = data[1]
  np.testing.assert_array_equal(loaded.encode(wave, rate), tok.encode(wave, rate))
  write_wav(str(tmp_path / "out.wav"), tok.decode(tok.encode(wave, rate)), tok.sample_rate)
  back, back_rate = read_wav(str(tmp_path / "out.wav"))
  assert back_rate == 16_000 and back.dtype == np.float32


def test_bad_inputs(tok, tmp_path):
  (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
  with pytest.raises(ValueError, match="broken.wav"):
    read_wav(str(tmp_path / "broken.wav"))
  with pytest.raises(ValueError, match="not found"):
    read_wav(str(tmp_path / "missing.wav"))
  with pytest.raises(ValueError, match="sample_rate"):
    tok.encode(np.zeros(1600, np.float32), 0)
  with pytest.raises(ValueError, match="empty"):
    tok.encode(np.zeros(0, np.float32), 16_000)
  with pytest.raises(ValueError, match="mono"):
    tok.encode(np.zeros((1600, 2), np.float32), 16_000)
  with pytest.raises(ValueError, match="NaN"):
    tok.encode(np.full(1600, np.nan, np.float32), 16_000)
  with pytest.raises(ValueError, match="float"):
    tok.encode(np.zeros(1600, np.int16), 16_000)
  with pytest.raises(ValueError, match="layers"):
    tok.decode(np.zeros((5, 10), np.int32))
  with pytest.raises(ValueError, match=r"\[0, 256\)"):
    tok.decode(np.full((4, 10), 256))
