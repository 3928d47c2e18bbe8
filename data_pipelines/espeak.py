"""Speech for the demo corpus: `espeak-ng` synthesis, two at a time, cached by (voice, text).

espeak-ng is deterministic (same version, voice and text -> same WAV bytes), so cached files are
reused across builds and the corpus stays reproducible. WAVs are 22,050 Hz 16-bit mono.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess

# (voice+variant, words per minute, pitch 0-99): distinct timbres for the timbre layers to carry.
VOICES = (
  ("en-us+f3", 175, 60),
  ("en-us+m3", 165, 40),
  ("en-gb+f2", 180, 70),
  ("en-gb+m1", 170, 35),
  ("en-us+f4", 185, 55),
  ("en-gb-scotland+m2", 160, 45),
)


def espeak_binary() -> str:
  path = shutil.which("espeak-ng")
  if path is None:
    raise RuntimeError(
      "espeak-ng not found on PATH: install it (apt-get install espeak-ng; "
      "launch/setup.sh does) to build the demo corpus's speech"
    )
  return path


def espeak_version(binary: str) -> str:
  return subprocess.run(
    [binary, "--version"], capture_output=True, text=True, check=True
  ).stdout.strip()


def cache_name(text: str, voice: int, version: str) -> str:
  key = f"{version}\n{VOICES[voice]}\n{text}".encode()
  return hashlib.sha256(key).hexdigest()[:24] + ".wav"


def _synth(binary: str, text: str, voice: int, path: str) -> None:
  name, wpm, pitch = VOICES[voice]
  tmp = f"{path}.{os.getpid()}.tmp"
  # Text after "--" so a sentence starting with "-" is never read as an option.
  proc = subprocess.run(
    [binary, "-v", name, "-s", str(wpm), "-p", str(pitch), "-w", tmp, "--", text],
    capture_output=True,
    text=True,
  )
  if proc.returncode != 0 or not os.path.exists(tmp):
    raise RuntimeError(f"espeak-ng failed on {text!r} (voice {name}): {proc.stderr.strip()}")
  os.replace(tmp, path)  # atomic: a half-written WAV never lands in the cache


def synthesize(items, cache_dir: str, workers: int = 2) -> list[str]:
  """items: [(text, voice index)] -> WAV paths in `cache_dir` (synthesised only when missing)."""
  binary = espeak_binary()
  version = espeak_version(binary)
  os.makedirs(cache_dir, exist_ok=True)
  paths = [os.path.join(cache_dir, cache_name(t, v, version)) for t, v in items]
  todo = {p: (t, v) for p, (t, v) in zip(paths, items) if not os.path.exists(p)}
  # Threads suffice: each call waits on its own espeak-ng process, so `workers` run in parallel.
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for future in [pool.submit(_synth, binary, t, v, p) for p, (t, v) in sorted(todo.items())]:
      future.result()
  return paths
