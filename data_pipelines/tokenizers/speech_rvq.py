"""Built-in speech tokenizer: residual VQ over log-mel frames, decoded with Griffin-Lim (demo only).

Layer 0 ("content") quantises each frame's log-mel *minus the utterance's mean spectrum*, which
removes most of the speaker/channel colouring (cepstral mean normalisation), so layer 0 codes are
largely speaker-independent; decoding layer 0 alone adds back the training-set mean spectrum.
Layers 1.. ("timbre") quantise what is left — including the utterance's own spectral colour.
Frames are 50 per second at 16 kHz (hop 320), as MIO's SpeechTokenizer.

Input at another sample rate is resampled to `sample_rate` (polyphase, scipy), not rejected.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.tokenizers import audio_features as af
from data_pipelines.tokenizers import files
from data_pipelines.tokenizers import kmeans as km
from mio_jax.io import paths
from mio_jax.io.media import check_wave, resample
from mio_jax.tokens.tokenizers import TOKENIZER_JSON
from mio_jax.tokens.vocab import check_codes

KIND = "mel_rvq"
CODEBOOK_FILE = "codebooks.npz"


class MelRVQSpeechTokenizer:
  """`SpeechTokenizer`: [num_layers, T] codes per utterance, `codebook_size` codes per layer."""

  def __init__(
    self,
    books_LxKxM: np.ndarray,
    mean_M: np.ndarray,
    sample_rate: int = 16_000,
    frame_rate: int = 50,
    n_fft: int = 1024,
    griffin_lim_iters: int = 32,
  ):
    books_LxKxM = np.asarray(books_LxKxM, np.float32)
    if books_LxKxM.ndim != 3 or np.shape(mean_M) != books_LxKxM.shape[2:]:
      raise ValueError(f"codebooks {books_LxKxM.shape} and mean {np.shape(mean_M)} do not match")
    if sample_rate % frame_rate:
      raise ValueError(f"sample_rate {sample_rate} must be a multiple of frame_rate {frame_rate}")
    self.books_LxKxM = books_LxKxM
    self.mean_M = np.asarray(mean_M, np.float32)
    self.sample_rate, self.frame_rate = int(sample_rate), int(frame_rate)
    self.n_fft, self.griffin_lim_iters = int(n_fft), int(griffin_lim_iters)
    self.hop = self.sample_rate // self.frame_rate
    self.num_layers, self.codebook_size, self.n_mels = books_LxKxM.shape

  def features(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 [T, n_mels] log-mel at this tokenizer's rate (resampling the input if needed)."""
    wave = resample(check_wave(wave, sample_rate), sample_rate, self.sample_rate)
    return af.log_mel(wave, self.sample_rate, self.n_fft, self.hop, self.n_mels)

  def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    return encode_features(self.features(wave, sample_rate), self.books_LxKxM, self.mean_M)

  def decode(self, codes) -> np.ndarray:
    codes = check_codes(codes, self.codebook_size, "speech codes", ndim=2)
    if codes.shape[0] > self.num_layers:
      raise ValueError(
        f"speech codes: got {codes.shape[0]} layers, tokenizer has {self.num_layers}"
      )
    log_mel_TxM = decode_features(codes, self.books_LxKxM, self.mean_M)
    mag_TxF = af.mel_to_magnitude(log_mel_TxM, self.sample_rate, self.n_fft)
    return af.griffin_lim(mag_TxF, self.n_fft, self.hop, iters=self.griffin_lim_iters)

  # ---- persistence: JSON + npz only ----------------------------------------------------------
  def save(self, directory: str) -> None:
    paths.makedirs(directory)
    files.save_npz(
      paths.join(directory, CODEBOOK_FILE), codebooks=self.books_LxKxM, mean=self.mean_M
    )
    files.write_json(
      paths.join(directory, TOKENIZER_JSON),
      {
        "kind": KIND,
        "format_version": 1,
        "sample_rate": self.sample_rate,
        "frame_rate": self.frame_rate,
        "n_fft": self.n_fft,
        "n_mels": self.n_mels,
        "num_layers": self.num_layers,
        "codebook_size": self.codebook_size,
        "griffin_lim_iters": self.griffin_lim_iters,
      },
    )

  @classmethod
  def load(cls, directory: str) -> MelRVQSpeechTokenizer:
    cfg = files.read_json(paths.join(directory, TOKENIZER_JSON))
    with files.load_npz(paths.join(directory, CODEBOOK_FILE)) as z:
      books, mean = z["codebooks"], z["mean"]
    tok = cls(
      books, mean, cfg["sample_rate"], cfg["frame_rate"], cfg["n_fft"], cfg["griffin_lim_iters"]
    )
    if (tok.num_layers, tok.codebook_size, tok.n_mels) != (
      cfg["num_layers"],
      cfg["codebook_size"],
      cfg["n_mels"],
    ):
      raise ValueError(f"{directory}: codebooks {books.shape} do not match {TOKENIZER_JSON}")
    return tok


def encode_features(x_TxM: np.ndarray, books_LxKxM: np.ndarray, mean_M: np.ndarray) -> np.ndarray:
  """int32 [L, T]: layer 0 on mean-removed frames, layers 1.. residual VQ of the rest."""
  content_TxM = x_TxM - x_TxM.mean(axis=0, keepdims=True)
  c0 = km.nearest_code(content_TxM, books_LxKxM[0])
  residual_TxM = x_TxM - (books_LxKxM[0][c0] + mean_M)
  rest = km.rvq_encode(residual_TxM, books_LxKxM[1:])
  return np.concatenate([c0[None], rest]).astype(np.int32)


def decode_features(
  codes_LxT: np.ndarray, books_LxKxM: np.ndarray, mean_M: np.ndarray
) -> np.ndarray:
  """float32 [T, M] log-mel from the first len(codes_LxT) layers."""
  return km.rvq_decode(codes_LxT, books_LxKxM[: len(codes_LxT)]) + mean_M


def train_speech_rvq(
  waves,
  sample_rate: int,
  codebook_size: int = 256,
  num_layers: int = 4,
  n_mels: int = 64,
  tokenizer_rate: int = 16_000,
  frame_rate: int = 50,
  n_fft: int = 1024,
  seed: int = 0,
  iters: int = 12,
  max_points: int = 20_000,
) -> MelRVQSpeechTokenizer:
  """Trains the per-layer codebooks on float32 waves (all at `sample_rate`)."""
  shell = MelRVQSpeechTokenizer(
    np.zeros((num_layers, 1, n_mels), np.float32),
    np.zeros(n_mels, np.float32),
    tokenizer_rate,
    frame_rate,
    n_fft,
  )
  feats = [shell.features(w, sample_rate) for w in waves]
  if not feats:
    raise ValueError("train_speech_rvq got no waves")
  x_NxM = np.concatenate(feats)
  content_NxM = np.concatenate([f - f.mean(axis=0, keepdims=True) for f in feats])
  # Frame-weighted mean of the utterance means = global mean frame.
  mean_M = x_NxM.mean(axis=0)
  book0 = km.kmeans(content_NxM, codebook_size, seed=seed, iters=iters, max_points=max_points)
  residual_NxM = x_NxM - (book0[km.nearest_code(content_NxM, book0)] + mean_M)
  rest = km.rvq_train(
    residual_NxM, num_layers - 1, codebook_size, seed=seed + 1, iters=iters, max_points=max_points
  )
  books = np.concatenate([book0[None], rest]) if num_layers > 1 else book0[None]
  return MelRVQSpeechTokenizer(books, mean_M, tokenizer_rate, frame_rate, n_fft)
