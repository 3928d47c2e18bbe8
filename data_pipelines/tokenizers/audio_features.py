"""Log-mel analysis and Griffin-Lim synthesis in numpy (the built-in speech tokenizer's
front/back end).

Framing: a wave of n samples gives T = ceil(n / hop) frames; frame t is centred on t*hop + hop/2,
so synthesis from T frames returns exactly T*hop samples and 50 frames/s means hop = rate / 50.
"""

from __future__ import annotations

import functools

import numpy as np

LOG_FLOOR = 1e-5  # log(mel) floor: about -100 dB, below 16-bit quantisation noise


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """float32 [n_mels, n_fft//2+1] triangular filters on the HTK mel scale, 0 Hz .. Nyquist."""
  hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  mel_to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
  bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  lo, mid, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
  up = (bins_hz[None] - lo) / (mid - lo)
  down = (hi - bins_hz[None]) / (hi - mid)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
  return np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann: overlap-adds smoothly


def stft(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """complex64 [T, n_fft//2+1], T = ceil(len/hop); zero padding outside the wave."""
  t = -(-len(wave) // hop)
  pad_l = n_fft // 2 - hop // 2
  padded = np.zeros(pad_l + t * hop + n_fft, np.float32)
  padded[pad_l : pad_l + len(wave)] = wave
  idx_TxN = np.arange(t)[:, None] * hop + np.arange(n_fft)[None]
  return np.fft.rfft(padded[idx_TxN] * _window(n_fft), axis=1).astype(np.complex64)


def istft(spec_TxF: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Weighted overlap-add inverse of `stft`: float32 [T*hop]."""
  t = spec_TxF.shape[0]
  win = _window(n_fft)
  frames_TxN = np.fft.irfft(spec_TxF, n=n_fft, axis=1).astype(np.float32) * win
  pad_l = n_fft // 2 - hop // 2
  total = pad_l + t * hop + n_fft
  out, norm = np.zeros(total, np.float32), np.zeros(total, np.float32)
  idx_TxN = np.arange(t)[:, None] * hop + np.arange(n_fft)[None]
  np.add.at(out, idx_TxN, frames_TxN)
  np.add.at(norm, idx_TxN, np.broadcast_to(win * win, frames_TxN.shape))
  return (out / np.maximum(norm, 1e-3))[pad_l : pad_l + t * hop]


def log_mel(wave: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
  """float32 [T, n_mels] natural-log mel magnitudes."""
  mag_TxF = np.abs(stft(wave, n_fft, hop))
  mel_TxM = mag_TxF @ mel_filterbank(sample_rate, n_fft, n_mels).T
  return np.log(np.maximum(mel_TxM, LOG_FLOOR)).astype(np.float32)


def mel_to_magnitude(log_mel_TxM: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
  """Least-squares linear magnitudes [T, F] whose mel projection matches (clipped at 0)."""
  inv_FxM = _pinv(sample_rate, n_fft, log_mel_TxM.shape[1])
  return np.maximum(np.exp(log_mel_TxM) @ inv_FxM.T, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _pinv(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  return np.linalg.pinv(mel_filterbank(sample_rate, n_fft, n_mels)).astype(np.float32)


def griffin_lim(
  mag_TxF: np.ndarray, n_fft: int, hop: int, iters: int = 32, momentum: float = 0.99, seed: int = 0
) -> np.ndarray:
  """Phase recovery by fast Griffin-Lim (Perraudin et al. 2013: momentum on the projections).

  Deterministic (seeded initial phase). float32 [T*hop].
  """
  rng = np.random.default_rng(seed)
  angles = np.exp(2j * np.pi * rng.random(mag_TxF.shape)).astype(np.complex64)
  prev = np.zeros_like(angles)
  for _ in range(iters):
    rebuilt = stft(istft(mag_TxF * angles, n_fft, hop), n_fft, hop)
    accel = rebuilt - (momentum / (1.0 + momentum)) * prev
    angles = accel / np.maximum(np.abs(accel), 1e-8)
    prev = rebuilt
  return istft(mag_TxF * angles, n_fft, hop)


def mel_distance(
  wave_a: np.ndarray,
  wave_b: np.ndarray,
  sample_rate: int,
  n_fft: int = 1024,
  hop: int = 320,
  n_mels: int = 64,
) -> float:
  """Mean |log-mel(a) - log-mel(b)| (natural log; 1.0 ~ 8.7 dB) over the shorter length."""
  n = min(len(wave_a), len(wave_b))
  a = log_mel(wave_a[:n], sample_rate, n_fft, hop, n_mels)
  b = log_mel(wave_b[:n], sample_rate, n_fft, hop, n_mels)
  floor = np.log(1e-3)  # ignore differences deep in silence, where GL leaves faint noise
  return float(np.mean(np.abs(np.maximum(a, floor) - np.maximum(b, floor))))
